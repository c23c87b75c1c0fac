/* RELU6: TFLM Relu6Quantized, a clamp to [lower, upper]: the input's quantized 0 and 6 (TFLM's Prepare
 * quantizes both with the input's scale and zero point). TFLM does not requantize, so neither does this:
 * the output has the input's values whatever its own quantization. One loop for int8 and int16. */
#include "hil_kernels.h"
#include "hil_quant.h"

static void relu6(const hil_relu6_params_t *p, const void *input, void *output, int32_t elem_bytes) {
    int32_t i;
    for (i = 0; i < p->size; ++i) {
        const int32_t val = hil_load(input, i, elem_bytes);
        hil_store(output, i, elem_bytes, val > p->upper ? p->upper : (val < p->lower ? p->lower : val));
    }
}

void hil_relu6(const hil_relu6_params_t *p, const int8_t *input, int8_t *output) {
    relu6(p, input, output, 1);
}

void hil_relu6_i16(const hil_relu6_params_t *p, const int16_t *input, int16_t *output) {
    relu6(p, input, output, 2);
}
