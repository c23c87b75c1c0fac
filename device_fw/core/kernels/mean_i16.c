/* MEAN on int16 tensors: the int8 kernel's arithmetic (TFLM reference_ops::QuantizedMeanOrSum with an
 * int32 sum, see mean.c), saturated to the int16 range. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_mean_i16(const hil_mean_params_t *p, const int16_t *input, int16_t *output) {
    int32_t o, i, k;
    for (o = 0; o < p->outer; ++o) {
        const int16_t *in_block = input + o * p->count * p->inner;
        for (i = 0; i < p->inner; ++i) {
            int32_t sum = 0;
            int32_t result;
            for (k = 0; k < p->count; ++k) {
                sum += in_block[k * p->inner + i];
            }
            result = hil_multiply_by_quantized_multiplier(sum - p->input_zero_point * p->count,
                                                          p->multiplier, p->shift);
            result = hil_clamp_i32(result + p->output_zero_point, HIL_INT16_MIN, HIL_INT16_MAX);
            output[o * p->inner + i] = (int16_t)result;
        }
    }
}
