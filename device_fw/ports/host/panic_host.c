/* Panic handler of the host port's crash-test variant (hil_crash_test.h; make HIL_CRASH_TEST=1, which also
 * builds with frame pointers and without PIE, so that the addresses printed are the ELF's own).
 *
 * A fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE) is reported like ESP-IDF's panic handler does: "Guru Meditation
 * Error: Core  0 panic'ed (LoadProhibited)", a register dump, and "Backtrace: PC:SP ..." walked along the frame
 * pointer chain of the faulting context, on an alternate signal stack. Then the program exits with
 * HIL_PANIC_EXIT_STATUS. Only async-signal-safe calls (write(2) through hil_port_write, _exit). */
#define _GNU_SOURCE

#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "hil_crash_test.h"
#include "hil_port.h"

/* The frame of main(): the walk stops there (the C library's frames above it have no frame pointers). Set by
 * port_host.c's main(). */
uintptr_t hil_host_main_frame;

static uint8_t alt_stack[64 * 1024];

/* Walks the frame pointer chain: [fp] is the caller's fp, [fp + 1 word] the return address into the caller. */
static int walk(uintptr_t pc, uintptr_t sp, uintptr_t fp, hil_bt_frame_t *out, int max)
{
    int n = 0;

    out[n].pc = pc;
    out[n].sp = sp;
    n++;
    while (n < max && fp >= sp && fp <= hil_host_main_frame && fp % sizeof(uintptr_t) == 0) {
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0];
        uintptr_t ra = frame[1];

        if (ra == 0 || fp == hil_host_main_frame) {
            break; /* main() called from the C library, which has no frame pointers */
        }
        out[n].pc = ra - 1; /* inside the call instruction, so the caller's line is reported */
        out[n].sp = fp + 2 * sizeof(uintptr_t);
        n++;
        if (next <= fp) {
            break;
        }
        fp = next;
    }
    return n;
}

int hil_port_backtrace_here(hil_bt_frame_t *out, int max)
{
    const uintptr_t *frame = (const uintptr_t *)__builtin_frame_address(0);
    uintptr_t ra = (uintptr_t)__builtin_return_address(0);

    if (max < 1) {
        return 0;
    }
    /* out[0]: this function; then the caller, where it called this one, and the caller's chain. */
    out[0].pc = (uintptr_t)&hil_port_backtrace_here;
    out[0].sp = (uintptr_t)frame;
    return 1 + walk(ra - 1, (uintptr_t)(frame + 2), frame[0], out + 1, max - 1);
}

static const char *cause_of(int sig, const siginfo_t *info, uintptr_t pc, int write)
{
    switch (sig) {
    case SIGSEGV:
        if ((uintptr_t)info->si_addr == pc) {
            return "InstrFetchProhibited";
        }
        return write ? "StoreProhibited" : "LoadProhibited";
    case SIGBUS:
        return "LoadStoreAlignment";
    case SIGILL:
        return "IllegalInstruction";
    case SIGFPE:
        return "IntegerDivideByZero";
    default:
        return "Unhandled signal";
    }
}

static void on_fault(int sig, siginfo_t *info, void *context)
{
    const ucontext_t *uc = (const ucontext_t *)context;
    hil_bt_frame_t bt[HIL_BT_MAX];
    uintptr_t pc, sp, fp;
    int write = 0;
    int n;

#if defined(__x86_64__)
    pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
    sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
    fp = (uintptr_t)uc->uc_mcontext.gregs[REG_RBP];
    write = (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#elif defined(__aarch64__)
    pc = (uintptr_t)uc->uc_mcontext.pc;
    sp = (uintptr_t)uc->uc_mcontext.sp;
    fp = (uintptr_t)uc->uc_mcontext.regs[29];
#else
#error "the host crash-test build knows x86-64 and aarch64 signal contexts only"
#endif
    hil_panic_str("\r\nGuru Meditation Error: Core  0 panic'ed (");
    hil_panic_str(cause_of(sig, info, pc, write));
    hil_panic_str("). Exception was unhandled.\r\n\r\nCore  0 register dump:\r\n");
    hil_panic_reg("PC", pc);
    hil_panic_reg("SP", sp);
    hil_panic_reg("FP", fp);
    hil_panic_reg("EXCVADDR", (uintptr_t)info->si_addr);
    n = walk(pc, sp, fp, bt, HIL_BT_MAX);
    hil_panic_backtrace(bt, n);
    hil_panic_end();
}

void hil_port_panic_init(void)
{
    static const int signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    struct sigaction sa;
    stack_t ss;
    size_t i;

    /* An alternate stack, so that a stack overflow is reported too. */
    ss.ss_sp = alt_stack;
    ss.ss_size = sizeof alt_stack;
    ss.ss_flags = 0;
    sigaltstack(&ss, NULL);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND; /* a fault inside the handler kills the program */
    sigemptyset(&sa.sa_mask);
    for (i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        sigaction(signals[i], &sa, NULL);
    }
}

void hil_port_panic_exit(void)
{
    _exit(HIL_PANIC_EXIT_STATUS);
}
