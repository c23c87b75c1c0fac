/* DEQUANTIZE to float32: TFLM reference_ops::Dequantize, output = float(double(scale) * (x - zero point)).
 * The exact product of a float32 scale and an integer below 2^17 fits in a double, so TFLM's double product
 * rounded to float equals the single-precision product computed here (one IEEE rounding of the same exact
 * value), without double arithmetic on a CPU that has no FPU for it. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_dequantize(const hil_dequantize_params_t *p, const void *input, float *output) {
    int32_t i;
    HIL_DCHECK(p->input_bytes == 1 || p->input_bytes == 2);
    for (i = 0; i < p->size; ++i) {
        const int32_t x = hil_load(input, i, p->input_bytes) - p->zero_point;
        output[i] = p->scale * (float)x;
    }
}
