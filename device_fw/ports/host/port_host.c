/* Host port: the firmware as a POSIX program. The protocol runs over stdin/stdout, which the launcher
 * (hil/targets/host.py) attaches to a pseudo-terminal, so the Python side talks to it like a serial port.
 * Debug output, if any, belongs on stderr: the launcher collects it in a log file. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include "hil_app.h"
#include "hil_port.h"

int hil_port_read(uint8_t *buf, size_t max)
{
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, max);

        if (n >= 0) {
            return (int)n;
        }
        if (errno != EINTR) {
            return 0; /* EIO once the other end of the pty is closed: treat as end of input */
        }
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

static uint64_t monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
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

int main(void)
{
    return hil_app_run();
}
