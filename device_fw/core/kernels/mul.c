/* MUL: TFLM reference_integer_ops::Mul / BroadcastMul6DSlow (int8) and their int16 instances (16x8).
 * output = output_offset + MultiplyByQuantizedMultiplier((x1 - zp1) * (x2 - zp2)), clamped to the fused
 * activation's range. Broadcasting as in ADD: each input has a stride of 0 along the dimensions it
 * broadcasts. One loop serves both element types. */
#include "hil_kernels.h"
#include "hil_quant.h"

static void mul(const hil_mul_params_t *p, const void *input1, const void *input2, void *output,
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
                    const int32_t unclamped_result =
                        p->output_offset + hil_multiply_by_quantized_multiplier(input1_val * input2_val,
                                                                                p->output_multiplier,
                                                                                p->output_shift);
                    hil_store(output, out++, elem_bytes, hil_clamp_i32(unclamped_result, p->act_min, p->act_max));
                }
            }
        }
    }
}

void hil_mul(const hil_mul_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output) {
    mul(p, input1, input2, output, 1);
}

void hil_mul_i16(const hil_mul_params_t *p, const int16_t *input1, const int16_t *input2, int16_t *output) {
    HIL_DCHECK(p->input1_offset == 0 && p->input2_offset == 0 && p->output_offset == 0);
    mul(p, input1, input2, output, 2);
}
