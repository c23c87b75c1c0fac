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

static int simcall(int nr, int arg1, int arg2, int arg3)
{
    register int a2 __asm__("a2") = nr;
    register int a3 __asm__("a3") = arg1;
    register int a4 __asm__("a4") = arg2;
    register int a5 __asm__("a5") = arg3;

    __asm__ __volatile__("simcall" : "+r"(a2), "+r"(a3) : "r"(a4), "r"(a5) : "memory");
    return a2;
}

int hil_port_read(uint8_t *buf, size_t max)
{
    /* Blocks in QEMU until the pty has bytes; 0 at end of input, -1 on error (both end the main loop). */
    int n = simcall(SYS_READ, 0, (int)(uintptr_t)buf, (int)max);

    return n > 0 ? n : 0;
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
