/* Host-side harness for a compiled model (hil/model/hostrun.py builds it with the kernels and one
 * generated hil_model.c).
 *
 * Reads the raw int8 bytes of every input tensor from stdin, in order, with sizes from
 * hil_model_info; runs hil_model_invoke(); writes every output tensor's bytes to stdout. It repeats
 * for as many complete input sets as stdin holds, so one process can run many inferences.
 * Exit status: 0 after a clean end of input, 1 on a truncated input set, 2 if the model fails,
 * 3 if the arena is not 16-byte aligned. */
#include <stdio.h>
#include <stdint.h>

#include "hil_model.h"

/* The firmware times each operator here; the runner does not. */
void hil_model_op_done(int op_index) {
    (void)op_index;
}

static int read_exact(uint8_t *dst, uint32_t n) {
    uint32_t got = 0;
    while (got < n) {
        const size_t r = fread(dst + got, 1, n - got, stdin);
        if (r == 0) {
            return (int)got; /* end of input (or error) before n bytes */
        }
        got += (uint32_t)r;
    }
    return (int)got;
}

int main(void) {
    int8_t *arena = hil_model_arena();
    if (((uintptr_t)arena & 15u) != 0) {
        fprintf(stderr, "run_model: tensor arena at %p is not 16-byte aligned\n", (void *)arena);
        return 3;
    }
    for (;;) {
        uint8_t i;
        for (i = 0; i < hil_model_info.n_inputs; ++i) {
            const hil_tensor_info_t *t = &hil_model_info.inputs[i];
            const int got = read_exact((uint8_t *)(arena + t->arena_offset), t->bytes);
            if (got != (int)t->bytes) {
                if (i == 0 && got == 0) {
                    return 0; /* clean end between input sets */
                }
                fprintf(stderr, "run_model: input %u truncated (%d of %u bytes)\n", (unsigned)i, got,
                        (unsigned)t->bytes);
                return 1;
            }
        }
        if (hil_model_invoke() != 0) {
            fprintf(stderr, "run_model: hil_model_invoke failed\n");
            return 2;
        }
        for (i = 0; i < hil_model_info.n_outputs; ++i) {
            const hil_tensor_info_t *t = &hil_model_info.outputs[i];
            fwrite(arena + t->arena_offset, 1, t->bytes, stdout);
        }
        fflush(stdout);
        if (hil_model_info.n_inputs == 0) {
            return 0; /* nothing to read: one inference only */
        }
    }
}
