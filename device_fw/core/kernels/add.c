/* ADD, int8: TFLM reference_integer_ops::Add / BroadcastAdd. Both inputs are shifted left by 20
 * bits to keep precision, brought to a common scale (2 * the larger input scale) with multipliers
 * below one, summed, and the sum is requantized to the output scale.
 *
 * Generic kernel: HIL_PORTABLE(hil_add), any broadcast. Specialised (hil_add_table, same shapes): the rescaled
 * input of each of the 256 int8 values comes from a table the compiler computed, and the sum is requantized in
 * one step (hil_quant.h), which the compiler checked is exact (a right shift, no int32 overflow). */
#include "hil_kernels.h"
#include "hil_quant.h"

static int8_t add_element(const hil_add_params_t *p, int8_t x, int8_t y) {
    const int32_t input1_val = p->input1_offset + x;
    const int32_t input2_val = p->input2_offset + y;
    const int32_t shifted_input1_val = input1_val * (1 << p->left_shift);
    const int32_t shifted_input2_val = input2_val * (1 << p->left_shift);
    const int32_t scaled_input1_val = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
        shifted_input1_val, p->input1_multiplier, p->input1_shift);
    const int32_t scaled_input2_val = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
        shifted_input2_val, p->input2_multiplier, p->input2_shift);
    const int32_t raw_sum = scaled_input1_val + scaled_input2_val;
    const int32_t raw_output = hil_multiply_by_quantized_multiplier_smaller_than_one_exp(
                                   raw_sum, p->output_multiplier, p->output_shift) +
                               p->output_offset;
    return (int8_t)hil_clamp_i32(raw_output, p->act_min, p->act_max);
}

void HIL_PORTABLE(hil_add)(const hil_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
    int32_t i0, i1, i2, i3;
    for (i0 = 0; i0 < p->dims[0]; ++i0) {
        for (i1 = 0; i1 < p->dims[1]; ++i1) {
            for (i2 = 0; i2 < p->dims[2]; ++i2) {
                const int8_t *row1 = input1 + i0 * p->input1_strides[0] + i1 * p->input1_strides[1] +
                                     i2 * p->input1_strides[2];
                const int8_t *row2 = input2 + i0 * p->input2_strides[0] + i1 * p->input2_strides[1] +
                                     i2 * p->input2_strides[2];
                for (i3 = 0; i3 < p->dims[3]; ++i3) {
                    *output++ = add_element(p, row1[i3 * p->input1_strides[3]], row2[i3 * p->input2_strides[3]]);
                }
            }
        }
    }
}

void hil_add_table(const hil_add_fast_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
    const int32_t *t1 = p->table1, *t2 = p->table2;
    const int32_t m = p->output_multiplier, n = p->output_shift, zp = p->output_offset;
    const int32_t lo = p->act_min, hi = p->act_max;
    const uint8_t *a = (const uint8_t *)input1, *b = (const uint8_t *)input2;
    int32_t i;
    HIL_DCHECK(p->size >= 0 && t1 != 0 && t2 != 0 && n > 31 && lo <= hi);
    for (i = 0; i < p->size; ++i) {
        const int32_t y = hil_requantize_s32(t1[a[i]] + t2[b[i]], m, n, 0) + zp;
        output[i] = (int8_t)(y < lo ? lo : (y > hi ? hi : y));
    }
}
