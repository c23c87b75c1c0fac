/* Entry of the QEMU port. `-M sim -cpu lx106` starts executing at 0x50000000 (the sim machine's sysrom),
 * not at the ELF entry, and picolibc's crt0 does not set the stack pointer: this stub, linked first at
 * 0x50000000 by qemu.ld, sets a1, points VECBASE at a table that turns any CPU exception into a QEMU exit
 * (instead of running off into zeroed memory), and jumps to picolibc's _start. */

    .section .reset.text, "ax"
    .global _reset
    .type _reset, @function
_reset:
    j       1f
    /* l32r loads only from lower addresses, so the constants sit between the jump and their use. */
    .balign 4
.Lstack_top:
    .word   __stack
.Lvectors:
    .word   _hil_vectors
.Lstart:
    .word   _start
1:
    l32r    a1, .Lstack_top
    l32r    a2, .Lvectors
    wsr.vecbase a2
    /* PS: INTLEVEL 15 (no interrupts, none are used), UM 1 so exceptions take the user vector, EXCM 0. */
    movi    a2, 0x2F
    wsr.ps  a2
    rsync
    l32r    a0, .Lstart
    jx      a0
    .size _reset, . - _reset

/* lx106 vector offsets from VECBASE: debug 0x10, NMI 0x20, kernel 0x30, user 0x50, double 0x70. */
    .section .vectors.text, "ax"
    .balign 4096
    .global _hil_vectors
_hil_vectors:
    .org    0x10
    j       hil_debug_exit
    .org    0x20
    j       hil_debug_exit
#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
    /* The crash-test variant reports the exception first, as ESP-IDF's panic handler (panic_qemu.c). */
    .org    0x30
    j       hil_panic_entry
    .org    0x50
    j       hil_panic_entry
#else
    .org    0x30
    j       hil_fatal
    .org    0x50
    j       hil_fatal
#endif
    .org    0x70
    j       hil_fatal
    .org    0x80
/* Guest exit status 64 + EXCCAUSE, so the launcher can tell a crash from a normal exit (0). */
hil_fatal:
    rsr.exccause a3
    addi    a3, a3, 64
    j       hil_exit
/* Debug exceptions (a `break`, which __builtin_trap() emits) and NMI set no EXCCAUSE: status 63. */
hil_debug_exit:
    movi    a3, 63
hil_exit:
    movi    a2, 1           /* semihosting SYS_exit */
    simcall
2:
    j       2b

#if defined(HIL_CRASH_TEST) && HIL_CRASH_TEST
/* Saves the interrupted context in hil_panic_regs (a0..a15, EPC1, EXCCAUSE, EXCVADDR, PS), moves to the panic
 * stack and calls hil_qemu_panic(regs), which never returns. Still in exception mode (PS.EXCM): a fault in
 * the handler takes the double exception vector to hil_fatal. */
    .balign 4
.Lpanic_regs:
    .word   hil_panic_regs
.Lpanic_stack_top:
    .word   hil_panic_stack + 4096
.Lpanic_handler:
    .word   hil_qemu_panic
hil_panic_entry:
    wsr.excsave1 a0
    l32r    a0, .Lpanic_regs
    s32i    a1, a0, 4
    s32i    a2, a0, 8
    s32i    a3, a0, 12
    s32i    a4, a0, 16
    s32i    a5, a0, 20
    s32i    a6, a0, 24
    s32i    a7, a0, 28
    s32i    a8, a0, 32
    s32i    a9, a0, 36
    s32i    a10, a0, 40
    s32i    a11, a0, 44
    s32i    a12, a0, 48
    s32i    a13, a0, 52
    s32i    a14, a0, 56
    s32i    a15, a0, 60
    rsr.excsave1 a2
    s32i    a2, a0, 0
    rsr.epc1 a2
    s32i    a2, a0, 64
    rsr.exccause a2
    s32i    a2, a0, 68
    rsr.excvaddr a2
    s32i    a2, a0, 72
    rsr.ps  a2
    s32i    a2, a0, 76
    l32r    a1, .Lpanic_stack_top
    mov     a2, a0
    l32r    a0, .Lpanic_handler
    callx0  a0
3:
    j       3b
#endif
