/* LEAKY_RELU: TFLM reference_ops::QuantizeLeakyRelu. x - input zero point is requantized with
 * input_scale / output_scale where it is >= 0 and with alpha * input_scale / output_scale where it is
 * negative, then offset by the output zero point and saturated. One loop for int8 and int16. */
#include "hil_kernels.h"
#include "hil_quant.h"

static void leaky_relu(const hil_leaky_relu_params_t *p, const void *input, void *output, int32_t elem_bytes) {
    const int32_t quantized_min = elem_bytes == 1 ? HIL_INT8_MIN : HIL_INT16_MIN;
    const int32_t quantized_max = elem_bytes == 1 ? HIL_INT8_MAX : HIL_INT16_MAX;
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t input_value = hil_load(input, i, elem_bytes) - p->input_zero_point;
        int32_t unclamped_output;
        if (input_value >= 0) {
            unclamped_output = p->output_zero_point +
                               hil_multiply_by_quantized_multiplier(input_value, p->output_multiplier_identity,
                                                                    p->output_shift_identity);
        } else {
            unclamped_output = p->output_zero_point +
                               hil_multiply_by_quantized_multiplier(input_value, p->output_multiplier_alpha,
                                                                    p->output_shift_alpha);
        }
        hil_store(output, i, elem_bytes, hil_clamp_i32(unclamped_output, quantized_min, quantized_max));
    }
}

void hil_leaky_relu(const hil_leaky_relu_params_t *p, const int8_t *input, int8_t *output) {
    leaky_relu(p, input, output, 1);
}

void hil_leaky_relu_i16(const hil_leaky_relu_params_t *p, const int16_t *input, int16_t *output) {
    leaky_relu(p, input, output, 2);
}
