/* STRIDED_SLICE with unit strides on int16 tensors: strided_slice.c with 2-byte elements. */
#include <string.h>

#include "hil_kernels.h"

void hil_strided_slice_i16(const hil_strided_slice_params_t *p, const int16_t *input, int16_t *output) {
    const int32_t *in_dims = p->input_dims;
    int32_t i0, i1, i2;
    for (i0 = 0; i0 < p->output_dims[0]; ++i0) {
        for (i1 = 0; i1 < p->output_dims[1]; ++i1) {
            for (i2 = 0; i2 < p->output_dims[2]; ++i2) {
                const int32_t in_row = ((p->begin[0] + i0) * in_dims[1] + (p->begin[1] + i1)) * in_dims[2] +
                                       (p->begin[2] + i2);
                memcpy(output, input + in_row * in_dims[3] + p->begin[3],
                       (size_t)p->output_dims[3] * sizeof(int16_t));
                output += p->output_dims[3];
            }
        }
    }
}
