/* FULLY_CONNECTED 16x8 (int16 activations, int8 weights, int64 bias): TFLM
 * reference_integer_ops::FullyConnectedPerChannel / FullyConnected for int16 input (a per-tensor model
 * passes its single multiplier once per output: the same arithmetic). */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_fully_connected_16x8(const hil_fully_connected_16x8_params_t *p, const int16_t *input,
                              int16_t *output) {
    int32_t b, out_c, d;
    for (b = 0; b < p->batches; ++b) {
        const int16_t *in_row = input + b * p->accum_depth;
        for (out_c = 0; out_c < p->output_depth; ++out_c) {
            const int8_t *f_row = p->filter + out_c * p->accum_depth;
            int64_t acc = 0;
            int32_t scaled;
            for (d = 0; d < p->accum_depth; ++d) {
                acc += (int32_t)f_row[d] * (int32_t)in_row[d];
            }
            if (p->bias != 0) {
                acc += p->bias[out_c];
            }
            scaled = hil_multiply_by_quantized_multiplier_i64(acc, p->output_multiplier[out_c],
                                                             p->output_shift[out_c]);
            scaled = hil_clamp_i32(scaled, p->act_min, p->act_max);
            output[b * p->output_depth + out_c] = (int16_t)scaled;
        }
    }
}
