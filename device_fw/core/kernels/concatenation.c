/* CONCATENATION: TFLM reference_ops::Concatenation. TFLM requires every int8 input to share the output's
 * scale and zero point (the compiler checks this for int16 too), so no value changes: for each of the
 * `outer` rows (the dimensions before the axis), each input's slice is copied in turn. */
#include <string.h>

#include "hil_kernels.h"
#include "hil_quant.h"

void hil_concatenation(const hil_concatenation_params_t *p, const void *const *inputs, void *output) {
    uint8_t *out = (uint8_t *)output;
    int32_t row, k;
    HIL_DCHECK(p->outer >= 0 && p->n_inputs >= 1);
    for (row = 0; row < p->outer; ++row) {
        for (k = 0; k < p->n_inputs; ++k) {
            const int32_t n = p->copy_bytes[k];
            HIL_DCHECK(n >= 0);
            memcpy(out, (const uint8_t *)inputs[k] + (size_t)row * (size_t)n, (size_t)n);
            out += n;
        }
    }
}
