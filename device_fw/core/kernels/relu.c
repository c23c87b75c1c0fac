/* RELU: TFLM ReluQuantized. The input is requantized to the output scale and clamped below at the output's
 * quantized 0 (act_min) and above at the type's maximum (act_max). One loop for int8 and int16. */
#include "hil_kernels.h"
#include "hil_quant.h"

static void relu(const hil_relu_params_t *p, const void *input, void *output, int32_t elem_bytes) {
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t val = hil_load(input, i, elem_bytes);
        const int32_t clamped = p->output_zero_point +
                                hil_multiply_by_quantized_multiplier(val - p->input_zero_point,
                                                                     p->output_multiplier, p->output_shift);
        hil_store(output, i, elem_bytes, hil_clamp_i32(clamped, p->act_min, p->act_max));
    }
}

void hil_relu(const hil_relu_params_t *p, const int8_t *input, int8_t *output) {
    relu(p, input, output, 1);
}

void hil_relu_i16(const hil_relu_params_t *p, const int16_t *input, int16_t *output) {
    relu(p, input, output, 2);
}
