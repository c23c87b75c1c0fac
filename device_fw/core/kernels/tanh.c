/* TANH.
 *
 * int8: TFLM reference_integer_ops::Tanh. An input within input_range_radius of the zero point is rescaled
 * to Q4.27 and run through gemmlowp's fixed-point tanh; the Q0.31 result is rounded to 1/128 steps (output
 * zero point 0). Inputs further out saturate to -128 or 127.
 *
 * int16: TFLM reference_integer_ops::Tanh (int16), which uses the sigmoid table of LOGISTIC:
 * tanh(x) = 2 * sigmoid(2x) - 1, so the same rescaled input is looked up with one bit less (>> 8).
 * Output scale 1/32768. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_tanh(const hil_tanh_params_t *p, const int8_t *input, int8_t *output) {
    enum { kInputIntegerBits = 4, kOutputScale = 7 };
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t x = (int32_t)input[i] - p->input_zero_point;
        int32_t result;
        if (x <= -p->input_range_radius) {
            result = HIL_INT8_MIN;
        } else if (x >= p->input_range_radius) {
            result = HIL_INT8_MAX;
        } else {
            const int32_t input_in_q4 =
                hil_multiply_by_quantized_multiplier(x, p->input_multiplier, p->input_left_shift);
            const int32_t output_in_q0 = hil_fp_tanh(input_in_q4, kInputIntegerBits);
            const int32_t output_in_q24 = hil_rounding_divide_by_pot(output_in_q0, 31 - kOutputScale);
            result = hil_clamp_i32(output_in_q24, HIL_INT8_MIN, HIL_INT8_MAX);
        }
        output[i] = (int8_t)result;
    }
}

void hil_tanh_i16(const hil_tanh_params_t *p, const int16_t *input, int16_t *output) {
    int32_t input_multiplier = p->input_multiplier;
    int32_t input_left_shift = p->input_left_shift;
    int32_t round, i;
    HIL_DCHECK(input_left_shift >= 0 && input_left_shift <= 31);
    if (input_multiplier == 0) { /* power-of-two input scale */
        input_multiplier = 3 << input_left_shift;
        input_left_shift = 0;
    }
    round = input_left_shift > 0 ? 1 << (input_left_shift - 1) : 0;
    for (i = 0; i < p->size; ++i) {
        const int32_t input_data = ((int32_t)input[i] * input_multiplier + round) >> input_left_shift;
        const uint32_t abs_input_data = (uint32_t)(input_data < 0 ? -input_data : input_data);
        const uint32_t uh = abs_input_data >> 8;
        int32_t result;
        if (uh >= 255) {
            result = 0xFFFF << 8; /* saturate */
        } else {
            const uint32_t ua = hil_sigmoid_table_uint16(uh);
            const uint32_t ub = hil_sigmoid_table_uint16(uh + 1);
            const uint32_t ut = abs_input_data & 0xFF;
            result = (int32_t)((ua << 8) + ut * (ub - ua));
        }
        result = input_data >= 0 ? (result - (1 << (14 + 9)) + (1 << (9 - 2)))
                                 : (-result + (1 << (14 + 9)) + (1 << (9 - 2)) - 1);
        output[i] = (int16_t)(result >> (9 - 1)); /* arithmetic shift, as in TFLM */
    }
}
