/* HARD_SWISH, int8: TFLM reference_ops::HardSwish, x * relu6(x + 3) / 6 in 16-bit fixed point.
 *
 * The input (minus its zero point) is shifted left by 7 bits ("hires" scale). One copy is brought to the
 * output scale (before the final right shift) with a Q0.15 multiplier; another is rescaled so that 3.0 is
 * 32768 ("reluish", saturating) and mapped from [-1, 1] to [0, 1]. Their product (rounding toward zero, as
 * TFLM does to cancel the other roundings' bias) is shifted right to the output scale, offset and
 * saturated. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_hard_swish(const hil_hard_swish_params_t *p, const int8_t *input, int8_t *output) {
    int32_t i;
    HIL_DCHECK(p->output_multiplier_exponent <= 0 && p->output_multiplier_exponent > -16);
    HIL_DCHECK(p->reluish_multiplier_exponent > -16 && p->reluish_multiplier_exponent < 16);
    for (i = 0; i < p->size; ++i) {
        const int16_t input_value = (int16_t)(input[i] - p->input_zero_point);
        const int16_t input_value_on_hires_input_scale = (int16_t)(input_value * (1 << 7));
        const int16_t input_value_on_preshift_output_scale = hil_saturating_rounding_doubling_high_mul_i16(
            input_value_on_hires_input_scale, p->output_multiplier_fixedpoint_int16);
        int16_t reluish_value = input_value_on_hires_input_scale;
        int16_t preshift_output_value, output_value;
        /* Rescale to [-3, 3] -> [-32768, 32767]: shift left by all but one bit (saturating), multiply by the
         * Q0.15 multiplier, then the last bit, so that any saturation shows in the result. */
        if (p->reluish_multiplier_exponent > 0) {
            reluish_value = hil_saturating_left_shift_i16(reluish_value, p->reluish_multiplier_exponent - 1);
        }
        reluish_value =
            hil_saturating_rounding_doubling_high_mul_i16(reluish_value, p->reluish_multiplier_fixedpoint_int16);
        if (p->reluish_multiplier_exponent > 0) {
            reluish_value = hil_saturating_left_shift_i16(reluish_value, 1);
        }
        if (p->reluish_multiplier_exponent < 0) {
            reluish_value = (int16_t)hil_rounding_divide_by_pot(reluish_value, -p->reluish_multiplier_exponent);
        }
        /* [-1, 1] -> [0, 1] */
        reluish_value = (int16_t)((reluish_value + (1 << 15)) >> 1);
        preshift_output_value =
            hil_saturating_doubling_high_mul_i16(reluish_value, input_value_on_preshift_output_scale);
        output_value = (int16_t)hil_rounding_divide_by_pot(preshift_output_value, -p->output_multiplier_exponent);
        output_value = (int16_t)(output_value + p->output_zero_point); /* int16 arithmetic, as in TFLM */
        output[i] = (int8_t)hil_clamp_i32(output_value, HIL_INT8_MIN, HIL_INT8_MAX);
    }
}
