/* PAD / PADV2, int8: TFLM reference_ops::Pad. PAD fills with the output zero point (the quantized
 * 0.0), PADV2 with its constant value; the compiler puts either into pad_value. */
#include <string.h>

#include "hil_kernels.h"

void hil_pad(const hil_pad_params_t *p, const int8_t *input, int8_t *output) {
    const int32_t *out_dims = p->output_dims;
    const int32_t *in_dims = p->input_dims;
    int32_t i0, i1, i2;
    memset(output, p->pad_value,
           (size_t)out_dims[0] * (size_t)out_dims[1] * (size_t)out_dims[2] * (size_t)out_dims[3]);
    for (i0 = 0; i0 < in_dims[0]; ++i0) {
        for (i1 = 0; i1 < in_dims[1]; ++i1) {
            for (i2 = 0; i2 < in_dims[2]; ++i2) {
                const int32_t out_row =
                    ((p->pad_before[0] + i0) * out_dims[1] + (p->pad_before[1] + i1)) * out_dims[2] +
                    (p->pad_before[2] + i2);
                memcpy(output + out_row * out_dims[3] + p->pad_before[3], input, (size_t)in_dims[3]);
                input += in_dims[3];
            }
        }
    }
}
