/* SOFTMAX over the last axis.
 *
 * int8: TFLM reference_ops::Softmax (quantized). Each input's difference from its row's maximum is rescaled
 * by beta * input_scale into Q5.26 and exponentiated with gemmlowp's fixed-point exp; the exps are summed in
 * Q12.19, the sum's reciprocal is taken with GetReciprocal, and each exp times the reciprocal becomes the
 * output at scale 1/256, zero point -128. Differences below diff_min contribute nothing.
 *
 * int16: TFLM reference_ops::SoftmaxInt16. The differences are rescaled so that [-65535, 0] spans
 * [-10, 0], exp() comes from a 513-entry interpolated table, the Q16.15 sum is normalized and its reciprocal
 * comes from a second table of 1/(1+x); output scale 1/32768, zero point 0. The compiler builds both tables
 * with TFLM's gen_lut (hil/model/lowering/softmax.py). */
#include "hil_kernels.h"
#include "hil_quant.h"

enum { kScaledDiffIntegerBits = 5, kAccumulationIntegerBits = 12 };

void HIL_PORTABLE(hil_softmax)(const hil_softmax_params_t *p, const int8_t *input, int8_t *output) {
    int32_t i, c;
    HIL_DCHECK(p->depth > 0 && p->input_left_shift >= 0);
    for (i = 0; i < p->outer; ++i) {
        const int8_t *in_row = input + i * p->depth;
        int8_t *out_row = output + i * p->depth;
        int32_t max_in_row = HIL_INT8_MIN;
        int32_t sum_of_exps = 0; /* Q12.19 */
        int32_t shifted_scale;   /* Q0.31 */
        int num_bits_over_unit;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = hil_max_i32(max_in_row, in_row[c]);
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t input_diff = (int32_t)in_row[c] - max_in_row;
            if (input_diff >= p->diff_min) {
                const int32_t scaled_diff = hil_multiply_by_quantized_multiplier_greater_than_one(
                    input_diff, p->input_multiplier, p->input_left_shift);
                const int32_t exp_in_0 = hil_fp_exp_on_negative_values(scaled_diff, kScaledDiffIntegerBits);
                sum_of_exps += hil_saturating_rounding_multiply_by_pot(exp_in_0, -kAccumulationIntegerBits);
            }
        }
        HIL_DCHECK(sum_of_exps > 0); /* the row's maximum contributes exp(0) = 1 */
        shifted_scale = hil_get_reciprocal(sum_of_exps, kAccumulationIntegerBits, &num_bits_over_unit);
        for (c = 0; c < p->depth; ++c) {
            const int32_t input_diff = (int32_t)in_row[c] - max_in_row;
            int32_t result = HIL_INT8_MIN;
            if (input_diff >= p->diff_min) {
                const int32_t scaled_diff = hil_multiply_by_quantized_multiplier_greater_than_one(
                    input_diff, p->input_multiplier, p->input_left_shift);
                const int32_t exp_in_0 = hil_fp_exp_on_negative_values(scaled_diff, kScaledDiffIntegerBits);
                const int exponent = num_bits_over_unit + 31 - 8;
                /* exponent > 31 only when a row's exps add up to 512 or more (512+ inputs within a fraction
                 * of the maximum): TFLM stops there on an assertion in gemmlowp's RoundingDivideByPOT. Every
                 * output would round to 0; this gives 0 (-128) rather than shift by 32 or more. */
                const int32_t unsat_output =
                    exponent > 31 ? 0 : hil_rounding_divide_by_pot(hil_fp_mul(shifted_scale, exp_in_0), exponent);
                result = hil_clamp_i32(unsat_output + HIL_INT8_MIN, HIL_INT8_MIN, HIL_INT8_MAX);
            }
            out_row[c] = (int8_t)result;
        }
    }
}

/* TFLM generic_int16_table_lookup: the table's 512 intervals over the int16 range, interpolated linearly
 * on the 7 low bits (lut[512] only gives the last slope). */
static int16_t lut_lookup(int16_t value, const int16_t *lut) {
    const int32_t index = 256 + (value >> 7);
    const int32_t offset = value & 0x7f;
    const int32_t base = lut[index];
    const int32_t slope = lut[index + 1] - lut[index];
    const int32_t delta = (slope * offset + 64) >> 7;
    HIL_DCHECK(index >= 0 && index < 512);
    return (int16_t)(base + delta);
}

void hil_softmax_i16(const hil_softmax_params_t *p, const int16_t *input, int16_t *output) {
    int32_t i, c;
    HIL_DCHECK(p->depth > 0 && p->depth < 65536 && p->exp_lut != 0 && p->one_over_one_plus_x_lut != 0);
    for (i = 0; i < p->outer; ++i) {
        const int16_t *in_row = input + i * p->depth;
        int16_t *out_row = output + i * p->depth;
        int32_t max_in_row = HIL_INT16_MIN;
        int32_t sum_of_exps = 0; /* Q16.15 */
        int headroom_plus_one, right_shift;
        int32_t shifted_sum, sym_shifted_sum;
        int16_t reciprocal_scale_q015;
        for (c = 0; c < p->depth; ++c) {
            max_in_row = hil_max_i32(max_in_row, in_row[c]);
        }
        /* exp(input - max), Q0.15, into the output row (each is read back once below) */
        for (c = 0; c < p->depth; ++c) {
            const int32_t input_diff = (int32_t)in_row[c] - max_in_row;
            /* [-65535, 0] corresponds to [-10.0, 0.0] */
            const int32_t scaled_diff =
                hil_multiply_by_quantized_multiplier(input_diff, p->input_multiplier, p->input_left_shift);
            /* recentred to [-32768, 32767] */
            const int32_t sym_scaled_diff = hil_clamp_i32(scaled_diff + 32767, HIL_INT16_MIN, HIL_INT16_MAX);
            out_row[c] = lut_lookup((int16_t)sym_scaled_diff, p->exp_lut);
            sum_of_exps += out_row[c];
        }
        /* 1 / sum: the sum normalized to [1, 2), x = sum - 1 recentred to [-32768, 32767], then 1/(1+x) */
        headroom_plus_one = hil_count_leading_zeros((uint32_t)sum_of_exps);
        shifted_sum = (int32_t)((((int64_t)sum_of_exps << (headroom_plus_one - 1)) + (1 << 13)) >> 14);
        sym_shifted_sum = shifted_sum + (-((1 << 15) + (1 << 16)));
        reciprocal_scale_q015 = lut_lookup(
            (int16_t)hil_clamp_i32(sym_shifted_sum, HIL_INT16_MIN, HIL_INT16_MAX), p->one_over_one_plus_x_lut);
        /* exp * reciprocal: [0, 32767] is [0.0, 1.0] */
        right_shift = 31 - headroom_plus_one;
        for (c = 0; c < p->depth; ++c) {
            const int64_t round = (int64_t)1 << (right_shift - 1);
            const int32_t result =
                (int32_t)(((int64_t)out_row[c] * (int64_t)reciprocal_scale_q015 + round) >> right_shift);
            out_row[c] = (int16_t)hil_clamp_i32(result, 0, HIL_INT16_MAX);
        }
    }
}
