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
    .org    0x30
    j       hil_fatal
    .org    0x50
    j       hil_fatal
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
