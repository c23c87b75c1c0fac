/* STRIDED_SLICE with unit strides, int8 and int16: a copy of a box of the input. The compiler resolves
 * TFLite's begin/end masks, negative indices and shrink_axis_mask into begin and output_dims, so what is left
 * is copying contiguous rows of the innermost dimension.
 *
 * The output may share the input's bytes (the arena planner runs a slice in place when its input dies
 * there): each output row starts at or before the input row it copies, and rows go in order, so a forward
 * copy (memmove) never reads a byte already overwritten. One loop for both element sizes. */
#include <string.h>

#include "hil_kernels.h"
#include "hil_quant.h"

/* Rows up to this many bytes are copied in a loop: on the lx106 (picolibc's memmove) up to about 32 bytes, on a
 * host (glibc's vector memmove) up to about 8. */
#ifndef HIL_SHORT_COPY
#if defined(__XTENSA__)
#define HIL_SHORT_COPY 32u
#else
#define HIL_SHORT_COPY 8u
#endif
#endif

static void strided_slice(const hil_strided_slice_params_t *p, const void *input, void *output, int32_t elem_bytes) {
    const int32_t *in_dims = p->input_dims;
    const size_t row_bytes = (size_t)p->output_dims[3] * (size_t)elem_bytes;
    const uint8_t *in = (const uint8_t *)input;
    uint8_t *out = (uint8_t *)output;
    int32_t i0, i1, i2;
    HIL_DCHECK(p->begin[3] + p->output_dims[3] <= in_dims[3]);
    for (i0 = 0; i0 < p->output_dims[0]; ++i0) {
        for (i1 = 0; i1 < p->output_dims[1]; ++i1) {
            for (i2 = 0; i2 < p->output_dims[2]; ++i2) {
                const int32_t in_row = ((p->begin[0] + i0) * in_dims[1] + (p->begin[1] + i1)) * in_dims[2] +
                                       (p->begin[2] + i2);
                const uint8_t *src = in + ((size_t)in_row * (size_t)in_dims[3] + (size_t)p->begin[3]) * (size_t)elem_bytes;
                HIL_DCHECK(out <= src || out >= src + row_bytes);
                if (row_bytes <= HIL_SHORT_COPY) {
                    /* short rows (channel slices): a call costs more than the copy; forward, like memmove here */
                    size_t k;
                    for (k = 0; k < row_bytes; ++k) {
                        out[k] = src[k];
                    }
                } else {
                    memmove(out, src, row_bytes);
                }
                out += row_bytes;
            }
        }
    }
}

void hil_strided_slice(const hil_strided_slice_params_t *p, const int8_t *input, int8_t *output) {
    strided_slice(p, input, output, 1);
}

void hil_strided_slice_i16(const hil_strided_slice_params_t *p, const int16_t *input, int16_t *output) {
    strided_slice(p, input, output, 2);
}
