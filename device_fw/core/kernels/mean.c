/* MEAN, int8, over a contiguous run of axes (Keras GlobalAveragePooling*D): TFLM
 * reference_ops::QuantizedMeanOrSum. The sum of (input - input zero point) is requantized with a
 * multiplier that already contains 1/count (folded at compile time with TFLM's integer steps), then
 * the output zero point is added and the result saturated.
 *
 * TFLM's int8 MEAN takes this path even when input and output quantization are identical (checked
 * against the tflite-micro runtime: a plain sum / count differs from it), so there is no separate
 * "same scale" kernel. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_mean(const hil_mean_params_t *p, const int8_t *input, int8_t *output) {
    int32_t o, i, k;
    for (o = 0; o < p->outer; ++o) {
        const int8_t *in_block = input + o * p->count * p->inner;
        for (i = 0; i < p->inner; ++i) {
            int32_t sum = 0;
            int32_t result;
            for (k = 0; k < p->count; ++k) {
                sum += in_block[k * p->inner + i];
            }
            result = hil_multiply_by_quantized_multiplier(sum - p->input_zero_point * p->count,
                                                          p->multiplier, p->shift);
            result = hil_clamp_i32(result + p->output_zero_point, HIL_INT8_MIN, HIL_INT8_MAX);
            output[o * p->inner + i] = (int8_t)result;
        }
    }
}
