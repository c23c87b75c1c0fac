/* Panic handler of the QEMU port's crash-test variant (hil_crash_test.h; make HIL_CRASH_TEST=1).
 *
 * A CPU exception enters hil_panic_entry (reset.S), which saves a0..a15, EPC1, EXCCAUSE, EXCVADDR and PS in
 * hil_panic_regs, switches to a stack of its own and calls hil_qemu_panic(). That prints what ESP-IDF's panic
 * handler prints: "Guru Meditation Error: Core  0 panic'ed (<cause>)", the register dump and "Backtrace: PC:SP
 * ...", then exits QEMU with HIL_PANIC_EXIT_STATUS.
 *
 * The backtrace walks the call0 ABI stack the way the ESP8266 SDK's panic handler does: there are no frame
 * pointers or unwind tables at run time, so for each frame the function's prologue is found by scanning the
 * code backwards from the PC (`addi a1, a1, -N`, or `movi aT, N; sub a1, a1, aT` for large frames), the slot
 * where it saved its return address by scanning forwards from there (`s32i a0, a1, off` or s32i.n), and the
 * caller's frame is at sp + N. A function with no prologue before the PC (a leaf) still has its return address
 * in a0, which is only known for the faulting frame. A heuristic: good for gcc's call0 code, which is all this
 * firmware has; it stops at the first frame it cannot explain. */
#include <stdint.h>
#include <unistd.h>

#include "hil_crash_test.h"
#include "hil_port.h"

enum { R_A0 = 0, R_A1 = 1, R_EPC1 = 16, R_EXCCAUSE = 17, R_EXCVADDR = 18, R_PS = 19, R_COUNT = 20 };

uint32_t hil_panic_regs[R_COUNT];                          /* written by hil_panic_entry (reset.S) */
uint8_t hil_panic_stack[4096] __attribute__((aligned(16))); /* its top is the handler's stack */

extern char _reset[];     /* start of the code (qemu.ld: flash origin) */
extern char __text_end[]; /* end of the code */
extern char __stack[];    /* top of the stack */

#define PROLOGUE_SCAN_BYTES 4096u
#define RA_SAVE_SCAN_BYTES 96u
#define STACK_WINDOW_BYTES 0x100000u /* the stack is 64 KB below __stack (Makefile: __stack_size) */

static int in_text(uint32_t a)
{
    return a >= (uint32_t)(uintptr_t)_reset && a + 6u <= (uint32_t)(uintptr_t)__text_end;
}

static int in_stack(uint32_t a)
{
    uint32_t top = (uint32_t)(uintptr_t)__stack;

    return a < top && top - a <= STACK_WINDOW_BYTES && a % 4u == 0;
}

/* The prologue of the function holding pc: its frame size and where a0 was saved (-1: not saved). Returns 0
 * when a function end (ret, ret.n) comes before any prologue: pc is in a leaf without a frame. */
static int find_frame(uint32_t pc, uint32_t *size, int32_t *ra_offset)
{
    uint32_t lo = (uint32_t)(uintptr_t)_reset;
    uint32_t a;

    if (pc - lo > PROLOGUE_SCAN_BYTES) {
        lo = pc - PROLOGUE_SCAN_BYTES;
    }
    *size = 0;
    *ra_offset = -1;
    for (a = pc - 1u; a >= lo; a--) {
        const uint8_t *b = (const uint8_t *)(uintptr_t)a;
        uint32_t body = 0;

        if ((b[0] == 0x0d && b[1] == 0xf0) || (b[0] == 0x80 && b[1] == 0x00 && b[2] == 0x00)) {
            return 0; /* ret.n / ret */
        }
        if (b[0] == 0x12 && b[1] == 0xc1 && (b[2] & 0x80u) != 0) { /* addi a1, a1, -N */
            *size = 256u - b[2];
            body = a + 3u;
        } else if ((b[0] & 0x0fu) == 0x02 && (b[1] & 0xf8u) == 0xa0 && b[3] == (b[0] & 0xf0u) && b[4] == 0x11 &&
                   b[5] == 0xc0) { /* movi aT, N; sub a1, a1, aT */
            *size = ((uint32_t)(b[1] & 0x07u) << 8) | b[2];
            body = a + 6u;
        }
        if (body != 0) {
            uint32_t end = body + RA_SAVE_SCAN_BYTES < pc ? body + RA_SAVE_SCAN_BYTES : pc;
            for (a = body; a + 2u <= end; a++) {
                b = (const uint8_t *)(uintptr_t)a;
                if (b[0] == 0x02 && b[1] == 0x61) { /* s32i a0, a1, 4 * imm8 */
                    *ra_offset = 4 * (int32_t)b[2];
                    break;
                }
                if (b[0] == 0x09 && (b[1] & 0x0fu) == 0x01) { /* s32i.n a0, a1, 4 * imm4 */
                    *ra_offset = 4 * (int32_t)(b[1] >> 4);
                    break;
                }
            }
            return 1;
        }
        if (a == lo) {
            break;
        }
    }
    return 0;
}

/* From a frame (pc, sp) whose a0 is known only for the first one. */
static int walk(uint32_t pc, uint32_t sp, uint32_t a0, hil_bt_frame_t *out, int max)
{
    int n = 0;

    while (n < max) {
        uint32_t size;
        int32_t ra_offset;
        uint32_t ra;

        out[n].pc = pc;
        out[n].sp = sp;
        n++;
        if (!in_text(pc) || !in_stack(sp)) {
            break;
        }
        if (find_frame(pc, &size, &ra_offset) && ra_offset >= 0) {
            if (!in_stack(sp + (uint32_t)ra_offset)) {
                break;
            }
            ra = *(const uint32_t *)(uintptr_t)(sp + (uint32_t)ra_offset);
        } else if (n == 1) {
            ra = a0; /* the faulting function had not saved it (or never does): still in a0 */
        } else {
            break;
        }
        sp += size;
        if (!in_text(ra) || sp >= (uint32_t)(uintptr_t)__stack) {
            break;
        }
        pc = ra - 3u; /* in the call0 instruction, as ESP-IDF reports return addresses */
    }
    return n;
}

static uint32_t current_pc(void) __attribute__((noinline));
static uint32_t current_pc(void)
{
    return (uint32_t)(uintptr_t)__builtin_return_address(0);
}

int hil_port_backtrace_here(hil_bt_frame_t *out, int max)
{
    uint32_t sp;
    uint32_t pc = current_pc();

    __asm__ __volatile__("mov %0, a1" : "=r"(sp));
    return walk(pc, sp, 0, out, max);
}

/* EXCCAUSE names, as ESP-IDF's panic handler prints them. */
static const char *cause_name(uint32_t cause)
{
    static const char *const names[] = {
        "IllegalInstruction",    "Syscall",           "InstructionFetchError", "LoadStoreError",
        "Level1Interrupt",       "Alloca",            "IntegerDivideByZero",   "PCValue",
        "Privileged",            "LoadStoreAlignment", "res",                  "res",
        "InstrPDAddrError",      "LoadStorePIFDataError", "InstrPIFAddrError", "LoadStorePIFAddrError",
        "InstTLBMiss",           "InstTLBMultiHit",   "InstFetchPrivilege",    "res",
        "InstrFetchProhibited",  "res",               "res",                   "res",
        "LoadStoreTLBMiss",      "LoadStoreTLBMultihit", "LoadStorePrivilege", "res",
        "LoadProhibited",        "StoreProhibited",
    };

    return cause < sizeof names / sizeof names[0] ? names[cause] : "Unknown exception";
}

void hil_qemu_panic(const uint32_t *regs);
void hil_qemu_panic(const uint32_t *regs)
{
    static const char *const names[16] = {"A0", "A1", "A2",  "A3",  "A4",  "A5",  "A6",  "A7",
                                          "A8", "A9", "A10", "A11", "A12", "A13", "A14", "A15"};
    hil_bt_frame_t bt[HIL_BT_MAX];
    int i;
    int n;

    hil_panic_str("\r\nGuru Meditation Error: Core  0 panic'ed (");
    hil_panic_str(cause_name(regs[R_EXCCAUSE]));
    hil_panic_str("). Exception was unhandled.\r\n\r\nCore  0 register dump:\r\n");
    hil_panic_reg("PC", regs[R_EPC1]);
    hil_panic_reg("PS", regs[R_PS]);
    for (i = 0; i < 16; i++) {
        hil_panic_reg(names[i], regs[i]);
        if (i % 4 == 1) {
            hil_panic_str("\r\n");
        }
    }
    hil_panic_reg("EXCCAUSE", regs[R_EXCCAUSE]);
    hil_panic_reg("EXCVADDR", regs[R_EXCVADDR]);
    n = walk(regs[R_EPC1], regs[R_A1], regs[R_A0], bt, HIL_BT_MAX);
    hil_panic_backtrace(bt, n);
    hil_panic_end();
}

void hil_port_panic_init(void)
{
    /* Nothing to install: the exception vectors of this build lead to hil_panic_entry (reset.S). */
}

void hil_port_panic_exit(void)
{
    _exit(HIL_PANIC_EXIT_STATUS);
}
