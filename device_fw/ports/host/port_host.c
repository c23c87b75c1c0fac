/* Host port: the firmware as a POSIX program. The protocol runs over stdin/stdout, which the launcher
 * (hil/targets/host.py) attaches to a pseudo-terminal, so the Python side talks to it like a serial port.
 * Console text (the crash-test variant's boot line and panic reports) shares stdout with the frames, as on the
 * board's UART0, and only ever between frames; other debug output belongs on stderr, which the launcher
 * collects in a log file. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "hil_app.h"
#include "hil_port.h"

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int hil_port_read_timeout(uint8_t *buf, size_t max, uint32_t timeout_us)
{
    uint64_t deadline = monotonic_ns() + (uint64_t)timeout_us * 1000u;

    for (;;) {
        struct pollfd pfd;
        int wait_ms = -1;
        int ready;
        ssize_t n;

        if (timeout_us != HIL_PORT_FOREVER) {
            uint64_t now = monotonic_ns();
            /* Rounded up, so a timeout never ends early. */
            wait_ms = now >= deadline ? 0 : (int)((deadline - now + 999999u) / 1000000u);
        }
        pfd.fd = STDIN_FILENO;
        pfd.events = POLLIN;
        pfd.revents = 0;
        ready = poll(&pfd, 1, wait_ms);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (ready == 0) {
            if (wait_ms == 0) {
                return 0;
            }
            continue; /* woken early: recompute the time left */
        }
        /* POLLHUP/POLLERR fall through to read(), which reports them (EIO once the pty's other end is closed). */
        n = read(STDIN_FILENO, buf, max);
        if (n > 0) {
            return (int)n;
        }
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        return -1; /* end of input, or EIO: the other end of the pty is closed */
    }
}

void hil_port_write(const uint8_t *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = write(STDOUT_FILENO, buf, n);

        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* nobody is listening any more; the next read ends the program */
        }
        buf += k;
        n -= (size_t)k;
    }
}

void hil_port_flush(void)
{
    /* write(2) is unbuffered. */
}

/* NOT CPU cycles: the host has no portable cycle counter, so "cycles" are CLOCK_MONOTONIC nanoseconds and
 * hil_port_clock_hz() says 1 GHz. Wall-clock time of a host process; only a rough relative measure. */
uint64_t hil_port_cycles(void)
{
    return monotonic_ns();
}

uint32_t hil_port_clock_hz(void)
{
    return 1000000000u;
}

uint64_t hil_port_time_us(void)
{
    return monotonic_ns() / 1000u;
}

int hil_port_cycles_deterministic(void)
{
    return 0;
}

void hil_port_marker(int on)
{
    (void)on; /* no marker pin on a host */
}

const char *hil_port_name(void)
{
    return "host";
}

const char *hil_port_kernels(void)
{
    return "kernels portable";
}

#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
extern uintptr_t hil_host_main_frame; /* panic_host.c: where its backtrace stops */
#endif

int main(void)
{
#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
    hil_host_main_frame = (uintptr_t)__builtin_frame_address(0);
#endif
    return hil_app_run();
}
