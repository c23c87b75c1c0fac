/* SUB: TFLM reference_ops::Sub / BroadcastQuantSubSlow (int8) and, for int16, TFLM's SUB kernel, which
 * runs reference_ops::Add (general scales) with the second input's multiplier negated at Prepare.
 *
 * Both inputs are shifted left by left_shift bits (20 for int8, 15 for int16), brought to twice the larger
 * input scale with multipliers below one, combined and requantized to the output scale, as in ADD.
 * int8 subtracts the scaled second input; int16 adds it scaled by the negated multiplier. The two differ
 * when a product rounds at an exact tie (SaturatingRoundingDoublingHighMul rounds ties up, not away from
 * zero), so each variant keeps TFLM's form. Broadcasting as in ADD. */
#include "hil_kernels.h"
#include "hil_quant.h"

static void sub(const hil_sub_params_t *p, const void *input1, const void *input2, void *output,
                int32_t elem_bytes) {
    const int32_t *s1 = p->input1_strides;
    const int32_t *s2 = p->input2_strides;
    int32_t i0, i1, i2, i3, out = 0;
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int32_t row1 = i0 * s1[0] + i1 * s1[1] + i2 * s1[2];
                const int32_t row2 = i0 * s2[0] + i1 * s2[1] + i2 * s2[2];
                for (i3 = 0; i3 < p->dims[3]; ++i3) {
                    const int32_t input1_val = p->input1_offset + hil_load(input1, row1 + i3 * s1[3], elem_bytes);
                    const int32_t input2_val = p->input2_offset + hil_load(input2, row2 + i3 * s2[3], elem_bytes);
                    const int32_t shifted_input1_val = input1_val * (1 << p->left_shift);
                    const int32_t shifted_input2_val = input2_val * (1 << p->left_shift);
                    const int32_t scaled_input1_val = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
                        shifted_input1_val, p->input1_multiplier, p->input1_shift);
                    const int32_t scaled_input2_val = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
                        shifted_input2_val, p->input2_multiplier, p->input2_shift);
                    /* int16: input2_multiplier is already negative (TFLM's Add form) */
                    const int32_t raw_sub = elem_bytes == 1 ? scaled_input1_val - scaled_input2_val
                                                            : scaled_input1_val + scaled_input2_val;
                    const int32_t raw_output = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
                                                   raw_sub, p->output_multiplier, p->output_shift) +
                                               p->output_offset;
                    hil_store(output, out++, elem_bytes, hil_clamp_i32(raw_output, p->act_min, p->act_max));
                }
            }
        }
    }
}

void hil_sub(const hil_sub_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
    HIL_DCHECK(p->left_shift == 20 && p->input2_multiplier >= 0);
    sub(p, input1, input2, output, 1);
}

void hil_sub_i16(const hil_sub_params_t *p, const int16_t *input1, const int16_t *input2, int16_t *output) {
    HIL_DCHECK(p->left_shift == 15 && p->input2_multiplier <= 0);
    sub(p, input1, input2, output, 2);
}
