/* QEMU port: the firmware on qemu-system-xtensa -M sim -cpu lx106 with -semihosting.
 *
 * The protocol runs over semihosting read/write on file descriptors 0 and 1, which are QEMU's own
 * stdin/stdout; the launcher (hil/targets/qemu.py) attaches those to a pseudo-terminal. Semihosting is the
 * `simcall` instruction: a2 = call number, a3..a5 = arguments, result in a2. */
#include <stdio.h>
#include <stdlib.h>

#include "hil_app.h"
#include "hil_port.h"

#define SYS_EXIT 1
#define SYS_READ 3
#define SYS_WRITE 4
#define SYS_SELECT_ONE 29
#define SELECT_ONE_READ 1

/* Longest single wait inside QEMU (see hil_port_read_timeout). */
#define WAIT_SLICE_MS 50u

static int simcall(int nr, int arg1, int arg2, int arg3)
{
    register int a2 __asm__("a2") = nr;
    register int a3 __asm__("a3") = arg1;
    register int a4 __asm__("a4") = arg2;
    register int a5 __asm__("a5") = arg3;

    __asm__ __volatile__("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

/* Waits up to `ms` for input on fd 0 with semihosting select_one; 1 when readable (or hung up: the read that
 * follows reports it), 0 when the time ran out, negative on error. The wait happens in QEMU (poll(2) on its
 * stdin, host wall-clock time); the guest executes nothing meanwhile. Checked on QEMU 7.2 (Debian 12): the
 * timeout is honoured (an idle firmware uses no CPU; tests/test_protocol_resync.py measures the 100 ms gap). A
 * QEMU whose select_one returned at once would make every silence look immediate. */
static int wait_readable(uint32_t ms)
{
    struct {
        int32_t tv_sec;
        int32_t tv_usec;
    } tv;

    tv.tv_sec = (int32_t)(ms / 1000u);
    tv.tv_usec = (int32_t)((ms % 1000u) * 1000u);
    return simcall(SYS_SELECT_ONE, 0, SELECT_ONE_READ, (int)(uintptr_t)&tv);
}

int hil_port_read_timeout(uint8_t *buf, size_t max, uint32_t timeout_us)
{
    /* Never one long blocking simcall: QEMU cannot stop a vCPU that is inside one (a blocking read(2) on its
     * stdin), so it would ignore SIGTERM until input arrived. Waiting in slices of at most WAIT_SLICE_MS lets
     * the vCPU return to QEMU's main loop between slices; a shutdown request then takes effect within one. */
    uint32_t left_ms = timeout_us == HIL_PORT_FOREVER ? 0xFFFFFFFFu : (timeout_us + 999u) / 1000u;

    for (;;) {
        uint32_t slice = left_ms < WAIT_SLICE_MS ? left_ms : WAIT_SLICE_MS;
        int ready = wait_readable(slice);
        int n;

        if (ready < 0) {
            return -1;
        }
        if (ready == 0) {
            if (timeout_us != HIL_PORT_FOREVER) {
                left_ms -= slice;
                if (left_ms == 0) {
                    return 0;
                }
            }
            continue;
        }
        /* Readable: returns what has arrived, up to max; 0 at end of input, -1 on error (EIO once the pty's
         * other end is closed). */
        n = simcall(SYS_READ, 0, (int)(uintptr_t)buf, (int)max);
        return n > 0 ? n : -1;
    }
}

void hil_port_write(const uint8_t *buf, size_t n)
{
    while (n > 0) {
        int k = simcall(SYS_WRITE, 1, (int)(uintptr_t)buf, (int)n);

        if (k <= 0) {
            return; /* the host end is gone; the next read ends the program */
        }
        buf += k;
        n -= (size_t)k;
    }
}

void hil_port_flush(void)
{
    /* semihosting writes are unbuffered */
}

uint32_t hil_qemu_ccount_aligned(void); /* ccount.S */

/* CCOUNT is 32 bits and wraps after 2^32 / 40 MHz = 107 s of guest time; extend it in software. Correct as
 * long as it is read at least once per wrap, which holds for any inference shorter than 107 s. Read
 * phase-aligned (ccount.S) so that the difference of two reads repeats exactly from run to run. */
uint64_t hil_port_cycles(void)
{
    static uint32_t last;
    static uint32_t high;
    uint32_t now = hil_qemu_ccount_aligned();

    if (now < last) {
        high++;
    }
    last = now;
    return ((uint64_t)high << 32) | now;
}

/* QEMU models the lx106 clock at 40 MHz. The launcher runs QEMU with -icount shift=0,sleep=off: virtual time
 * advances 1 ns per guest instruction, so CCOUNT advances 1 per 25 instructions and (read aligned) is
 * deterministic. A relative measure on an emulated LX106, not an ESP32-S3 latency. */
uint32_t hil_port_clock_hz(void)
{
    return 40000000u;
}

uint64_t hil_port_time_us(void)
{
    return 0; /* no timer independent of CCOUNT */
}

int hil_port_cycles_deterministic(void)
{
    return 1;
}

void hil_port_marker(int on)
{
    (void)on;
}

const char *hil_port_name(void)
{
    return "qemu";
}

const char *hil_port_kernels(void)
{
    return "kernels portable";
}

/* picolibc ends every program through _exit(); here it is the semihosting exit, whose status becomes
 * QEMU's exit status. */
void _exit(int status)
{
    for (;;) {
        simcall(SYS_EXIT, status, 0, 0);
    }
}

/* picolibc's stdio has no Xtensa glue. Diagnostic printf output goes to semihosting fd 2 (QEMU's stderr,
 * collected in the launcher's log); stdout is the protocol channel, so it must never carry text. */
static int stderr_putc(char c, FILE *f)
{
    (void)f;
    return simcall(SYS_WRITE, 2, (int)(uintptr_t)&c, 1) == 1 ? (unsigned char)c : EOF;
}

static int stdin_getc(FILE *f)
{
    (void)f;
    return _FDEV_EOF;
}

static FILE diag_out = FDEV_SETUP_STREAM(stderr_putc, NULL, NULL, _FDEV_SETUP_WRITE);
static FILE no_in = FDEV_SETUP_STREAM(NULL, stdin_getc, NULL, _FDEV_SETUP_READ);
FILE *const stdin = &no_in;
FILE *const stdout = &diag_out;
FILE *const stderr = &diag_out;

int main(void)
{
    /* picolibc's crt0 spins after main() returns, so leave through exit() (status 0 at end of input). */
    exit(hil_app_run());
}
