/* FULLY_CONNECTED, int8 and 16x8 (int16 activations, int8 weights, int64 bias).
 *
 * Generic kernels: HIL_PORTABLE(hil_fully_connected), TFLM reference_integer_ops::FullyConnectedPerChannel
 * (a per-tensor model passes its single multiplier once per output, which is the same arithmetic as
 * FullyConnected), and hil_fully_connected_16x8, the same for int16 input (no offsets, a 64-bit accumulator).
 * The specialised form is a 1x1 convolution over `batches` pixels: the compiler emits a call to
 * hil_conv_2d_1x1_u8 (int8 from a depth of 16), hil_conv_2d_1x1 or hil_conv_2d_1x1_16x8 (conv_2d.c) with the
 * weights packed for it.
 *
 * One source for int8 and 16x8: the part below HIL_TEMPLATE_PASS is compiled twice (see conv_2d.c). */
#ifndef HIL_TEMPLATE_PASS
#include "hil_kernels.h"
#include "hil_quant.h"

#define HIL_TEMPLATE_PASS
#define HIL_16X8 0
#include "fully_connected.c"
#undef HIL_16X8
#define HIL_16X8 1
#include "fully_connected.c"
#undef HIL_16X8
#undef HIL_TEMPLATE_PASS

#else /* ---- the template ------------------------------------------------------------------------------- */

#if HIL_16X8
#define ELEM int16_t
#define ACC int64_t
#define GENERIC hil_fully_connected_16x8
#define GENERIC_PARAMS hil_fully_connected_16x8_params_t
#define INPUT_OFFSET(p) 0
#define OUTPUT_OFFSET(p) 0
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier_i64((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#else
#define ELEM int8_t
#define ACC int32_t
#define GENERIC HIL_PORTABLE(hil_fully_connected)
#define GENERIC_PARAMS hil_fully_connected_params_t
#define INPUT_OFFSET(p) ((p)->input_offset)
#define OUTPUT_OFFSET(p) ((p)->output_offset)
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#endif

void GENERIC(const GENERIC_PARAMS *p, const ELEM *input, ELEM *output) {
    int32_t b, out_c, d;
    HIL_DCHECK(p->batches >= 1 && p->accum_depth >= 1 && p->output_depth >= 1);
    HIL_DCHECK(p->filter != 0 && p->output_multiplier != 0 && p->output_shift != 0 && p->act_min <= p->act_max);
    for (b = 0; b < p->batches; ++b) {
        const ELEM *in_row = input + b * p->accum_depth;
        for (out_c = 0; out_c < p->output_depth; ++out_c) {
            const int8_t *f_row = p->filter + out_c * p->accum_depth;
            ACC acc = 0;
            int32_t scaled;
            for (d = 0; d < p->accum_depth; ++d) {
                acc += (int32_t)f_row[d] * ((int32_t)in_row[d] + INPUT_OFFSET(p));
            }
            if (p->bias != 0) {
                acc += p->bias[out_c];
            }
            scaled = REQUANT_GENERIC(p, acc, out_c) + OUTPUT_OFFSET(p);
            scaled = hil_clamp_i32(scaled, p->act_min, p->act_max);
            output[b * p->output_depth + out_c] = (ELEM)scaled;
        }
    }
}

#undef ELEM
#undef ACC
#undef GENERIC
#undef GENERIC_PARAMS
#undef INPUT_OFFSET
#undef OUTPUT_OFFSET
#undef REQUANT_GENERIC
#endif
