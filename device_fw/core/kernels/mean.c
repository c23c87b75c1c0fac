/* MEAN over a contiguous run of axes (Keras GlobalAveragePooling*D), int8 and int16: TFLM
 * reference_ops::QuantizedMeanOrSum with an int32 sum. The sum of (input - input zero point) is requantized
 * with a multiplier that already contains 1/count (folded at compile time with TFLM's integer steps), then
 * the output zero point is added and the result saturated to the element type.
 *
 * TFLM's int8 MEAN takes this path even when input and output quantization are identical (checked against
 * the tflite-micro runtime: a plain sum / count differs from it), so there is no separate "same scale"
 * kernel. The sums run over the inner axis innermost (each input row is read once, in order) into one int32
 * per inner position, kept in the output's place when it is wide enough and otherwise in a small local block.
 * One loop for int8 and int16 (the element size is a parameter). */
#include "hil_kernels.h"
#include "hil_quant.h"

#define MEAN_BLOCK 64

static void mean(const hil_mean_params_t *p, const void *input, void *output, int32_t elem_bytes) {
    const int32_t lo = elem_bytes == 1 ? HIL_INT8_MIN : HIL_INT16_MIN;
    const int32_t hi = elem_bytes == 1 ? HIL_INT8_MAX : HIL_INT16_MAX;
    int32_t o, i0, i, k;
    HIL_DCHECK(p->count >= 1 && p->inner >= 1 && p->outer >= 1);
    for (o = 0; o < p->outer; ++o) {
        const int32_t in_block = o * p->count * p->inner;
        for (i0 = 0; i0 < p->inner; i0 += MEAN_BLOCK) {
            const int32_t n = p->inner - i0 < MEAN_BLOCK ? p->inner - i0 : MEAN_BLOCK;
            int32_t sum[MEAN_BLOCK];
            for (i = 0; i < n; ++i) {
                sum[i] = 0;
            }
            for (k = 0; k < p->count; ++k) {
                const int32_t row = in_block + k * p->inner + i0;
                if (elem_bytes == 1) {
                    const int8_t *x = (const int8_t *)input + row;
                    for (i = 0; i < n; ++i) {
                        sum[i] += x[i];
                    }
                } else {
                    const int16_t *x = (const int16_t *)input + row;
                    for (i = 0; i < n; ++i) {
                        sum[i] += x[i];
                    }
                }
            }
            for (i = 0; i < n; ++i) {
                const int32_t result = hil_multiply_by_quantized_multiplier(sum[i] - p->input_zero_point * p->count,
                                                                           p->multiplier, p->shift);
                hil_store(output, o * p->inner + i0 + i, elem_bytes, hil_clamp_i32(result + p->output_zero_point, lo, hi));
            }
        }
    }
}

void hil_mean(const hil_mean_params_t *p, const int8_t *input, int8_t *output) {
    mean(p, input, output, 1);
}

void hil_mean_i16(const hil_mean_params_t *p, const int16_t *input, int16_t *output) {
    mean(p, input, output, 2);
}
