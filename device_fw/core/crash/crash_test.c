/* The crash-test variant's DEBUG request and panic text (hil_crash_test.h). Compiled only with
 * HIL_CRASH_TEST=1. The functions on the way to a crash are kept out of line and out of tail position, so that
 * each appears in the backtrace under its own name. */
#include "hil_crash_test.h"

#include <string.h>

#include "hil_port.h"

#define NOINLINE __attribute__((noinline))

/* Where HIL_DEBUG_FAULT loads from: 0, behind a volatile so that the compiler cannot see the NULL. */
volatile uintptr_t hil_crash_address;
volatile uint32_t hil_crash_sink;

void hil_panic_str(const char *s)
{
    hil_port_write((const uint8_t *)s, strlen(s));
}

void hil_panic_hex(uintptr_t v)
{
    static const char hex[] = "0123456789abcdef";
    char s[2 + 2 * sizeof v + 1];
    int digits = 8; /* at least 8, as ESP-IDF prints 32-bit values; more for a 64-bit host address */
    int i;

    while (digits < (int)(2 * sizeof v) && (v >> (4 * digits)) != 0) {
        digits++;
    }
    s[0] = '0';
    s[1] = 'x';
    for (i = 0; i < digits; i++) {
        s[2 + i] = hex[(v >> (4 * (digits - 1 - i))) & 0xFu];
    }
    s[2 + digits] = '\0';
    hil_panic_str(s);
}

void hil_panic_reg(const char *name, uintptr_t v)
{
    char pad[9];
    size_t n = strlen(name);

    hil_panic_str(name);
    memset(pad, ' ', sizeof pad);
    pad[n < 8 ? 8 - n : 0] = '\0';
    hil_panic_str(pad);
    hil_panic_str(": ");
    hil_panic_hex(v);
    hil_panic_str("  ");
}

void hil_panic_backtrace(const hil_bt_frame_t *frames, int n)
{
    int i;

    hil_panic_str("\r\n\r\nBacktrace:");
    for (i = 0; i < n; i++) {
        hil_panic_str(" ");
        hil_panic_hex(frames[i].pc);
        hil_panic_str(":");
        hil_panic_hex(frames[i].sp);
    }
    hil_panic_str("\r\n\r\n");
}

void hil_panic_end(void)
{
    hil_panic_str("\r\nhil crash-test firmware (");
    hil_panic_str(hil_port_name());
    hil_panic_str(" port): stopping with exit status 62 instead of rebooting\r\n");
    hil_port_flush();
    hil_port_panic_exit();
}

void hil_crash_test_boot(void)
{
    hil_port_panic_init();
    hil_panic_str("I (0) hil: crash-test firmware on the ");
    hil_panic_str(hil_port_name());
    hil_panic_str(" port: DEBUG requests enabled\r\n");
}

/* ---- the ways to crash ---- */

NOINLINE static uint32_t crash_mix(uint32_t v)
{
    hil_crash_sink = v;
    return v * 2654435761u;
}

/* The C function that crashes: a load from address 0. The load sits between two calls, so that it runs inside
 * the function's own stack frame, as in most code (the return address is on the stack). */
NOINLINE uint32_t hil_crash_load_prohibited(uint32_t salt)
{
    const volatile uint32_t *p = (const volatile uint32_t *)hil_crash_address;
    uint32_t v = crash_mix(salt);

    v = crash_mix(v + *p);
    return v;
}

/* abort(), as ESP-IDF reports it: the caller's PC, then the backtrace from here. */
NOINLINE void hil_abort(void)
{
    hil_bt_frame_t bt[HIL_BT_MAX];
    int n = hil_port_backtrace_here(bt, HIL_BT_MAX); /* bt[0]: the walker, bt[1]: here, bt[2]: the caller */

    hil_panic_str("\r\nabort() was called at PC ");
    hil_panic_hex(n > 2 ? bt[2].pc : 0);
    hil_panic_str(" on core 0");
    hil_panic_backtrace(bt, n);
    hil_panic_end();
}

NOINLINE static uint32_t crash_in_model_code(uint8_t op, uint32_t salt)
{
    uint32_t v;

    if (op == HIL_DEBUG_ABORT) {
        hil_abort();
        v = 0;
    } else {
        v = hil_crash_load_prohibited(salt);
    }
    hil_crash_sink = v; /* not a tail call: this frame stays on the stack */
    return v;
}

static void boot_loop(uint8_t n)
{
    uint8_t i;

    for (i = 0; i < n; i++) {
        hil_panic_str("\r\nESP-ROM:esp32s3-20210327 (hil crash-test: simulated boot text, not a real reset)\r\n");
        hil_panic_str("rst:0x3 (SW_RESET),boot:0x8 (SPI_FAST_FLASH_BOOT)\r\n");
        hil_panic_str("load:0x3fce3810,len:0x178c\r\n");
        hil_panic_str("entry 0x403c9914\r\n");
        hil_panic_str("I (27) boot: ESP-IDF v5.1 2nd stage bootloader\r\n");
    }
    hil_port_flush();
    hil_port_panic_exit();
}

void hil_crash_test_request(const hil_frame_t *f)
{
    hil_tx_t tx;
    uint8_t op = f->length > 0 ? f->payload[0] : 0;

    switch (op) {
    case HIL_DEBUG_PRINT:
        /* A console line, entirely before the reply frame: text never lands between the bytes of a frame. */
        hil_port_write(f->payload + 1, f->length - 1u);
        hil_panic_str("\r\n");
        hil_tx_begin(&tx, HIL_T_DEBUG | HIL_REPLY_BIT, f->seq, 0);
        hil_tx_end(&tx);
        break;
    case HIL_DEBUG_FAULT:
    case HIL_DEBUG_ABORT:
        hil_crash_sink = crash_in_model_code(op, f->seq);
        break;
    case HIL_DEBUG_BOOT_LOOP:
        boot_loop(f->length > 1 ? f->payload[1] : 3u);
        break;
    default:
        hil_send_error(f->seq, HIL_E_BAD_REQUEST, f->type, "DEBUG: unknown operation");
        break;
    }
}
