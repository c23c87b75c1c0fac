/* The crash-test variant of the firmware (make HIL_CRASH_TEST=1; hil.firmware.build_firmware(...,
 * crash_test=True)), for testing the host's console capture, crash detection and backtrace decoding for real:
 * a DEBUG request that prints console text, crashes the firmware on purpose or prints a boot loop, and a
 * panic report in ESP-IDF's format whose backtrace is walked from the real call stack. Never part of a build
 * that measures anything: its INFO build id starts with "dbg-", and a default build answers DEBUG with
 * ERROR UNKNOWN_TYPE. */
#ifndef HIL_CRASH_TEST_H
#define HIL_CRASH_TEST_H

#include <stddef.h>
#include <stdint.h>

#include "hil_protocol.h"

#define HIL_T_DEBUG 0x70u
/* DEBUG request payload: u8 operation, then its argument. */
#define HIL_DEBUG_PRINT 0x01u     /* print the rest of the payload as one console line, then reply (empty) */
/* A load from address 0: a real CPU fault (host: SIGSEGV, reported as LoadProhibited; qemu: EXCCAUSE 15,
 * LoadStorePIFAddrError, as the sim machine has no memory there). */
#define HIL_DEBUG_FAULT 0x02u
#define HIL_DEBUG_ABORT 0x03u     /* abort(): "abort() was called at PC ... on core 0" */
#define HIL_DEBUG_BOOT_LOOP 0x04u /* u8 n: print n ROM-style reset and boot texts, then stop */

/* Exit status of a crash-test firmware after its panic report (host: the process's; qemu: QEMU's). */
#define HIL_PANIC_EXIT_STATUS 62

#define HIL_BT_MAX 24

typedef struct {
    uintptr_t pc; /* in a call instruction (a return address less its size), or the faulting instruction */
    uintptr_t sp;
} hil_bt_frame_t;

/* core/crash/crash_test.c */
void hil_crash_test_boot(void);                     /* the boot banner; the port's panic handler */
void hil_crash_test_request(const hil_frame_t *f);  /* a DEBUG request */
/* Panic text, written with hil_port_write() only: no stdio, no heap, safe in a signal or exception handler. */
void hil_panic_str(const char *s);
void hil_panic_hex(uintptr_t v);
void hil_panic_reg(const char *name, uintptr_t v); /* "NAME    : 0x........  " as ESP-IDF's register dump */
void hil_panic_backtrace(const hil_bt_frame_t *frames, int n);
void hil_panic_end(void); /* the trailer, then hil_port_panic_exit(); never returns */

/* The port's part (ports/<port>/panic_<port>.c). */
void hil_port_panic_init(void);                              /* installs the fault handler */
int hil_port_backtrace_here(hil_bt_frame_t *out, int max);   /* out[0]: this function; then its callers */
void hil_port_panic_exit(void);                              /* ends the firmware with HIL_PANIC_EXIT_STATUS */

#endif
