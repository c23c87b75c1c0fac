/* FULLY_CONNECTED, int8: TFLM reference_integer_ops::FullyConnectedPerChannel (a per-tensor model
 * passes its single multiplier once per output, which is the same arithmetic as FullyConnected). */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_fully_connected(const hil_fully_connected_params_t *p, const int8_t *input,
                         int8_t *output) {
    int32_t b, out_c, d;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_row = input + b * p->accum_depth;
        for (out_c = 0; out_c < p->output_depth; ++out_c) {
            const int8_t *f_row = p->filter + out_c * p->accum_depth;
            int32_t acc = 0;
            for (d = 0; d < p->accum_depth; ++d) {
                acc += (int32_t)f_row[d] * ((int32_t)in_row[d] + p->input_offset);
            }
            if (p->bias != 0) {
                acc += p->bias[out_c];
            }
            acc = hil_multiply_by_quantized_multiplier(acc, p->output_multiplier[out_c],
                                                       p->output_shift[out_c]);
            acc += p->output_offset;
            acc = hil_clamp_i32(acc, p->act_min, p->act_max);
            output[b * p->output_depth + out_c] = (int8_t)acc;
        }
    }
}
