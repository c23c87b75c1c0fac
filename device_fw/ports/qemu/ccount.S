/* uint32_t hil_qemu_ccount_aligned(void): CCOUNT, read at a fixed instruction offset after a tick edge.
 *
 * Under -icount shift=0 each guest instruction takes 1 ns of virtual time and CCOUNT is that time at
 * 40 MHz: one tick per 25 instructions. A plain read is therefore off by up to one tick depending on where
 * in the 25-instruction period it lands, and that phase depends on how the host's bytes were split into
 * semihosting reads before the measurement: not repeatable. Waiting for an edge removes the phase, up to
 * the period of the wait loop (2 instructions); a probe 24 instructions after the edge tells which of the
 * two it was, and the paths are evened out, so every caller continues exactly 27 instructions after an
 * edge. The difference of two such reads is then a pure function of the instructions executed between
 * them. Costs at most ~55 instructions (about 2 ticks). call0 ABI: uses a2..a4 only. */

    .text
    .global hil_qemu_ccount_aligned
    .type hil_qemu_ccount_aligned, @function
    .balign 4
hil_qemu_ccount_aligned:
    .begin no-transform
    rsr.ccount a3
1:
    rsr.ccount a2               /* time t; sees the new tick iff t >= edge E; exits with t in {E, E+1} */
    beq     a2, a3, 1b
    nop                         /* t+2 .. t+23: 22 instructions */
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    nop
    rsr.ccount a4               /* t+24: one tick later iff t = E+1 */
    bne     a4, a2, 2f          /* t+25 */
    nop                         /* t = E: t+26, so both paths reach 2: at E+27 */
2:
    .end no-transform
    ret
    .size hil_qemu_ccount_aligned, . - hil_qemu_ccount_aligned
