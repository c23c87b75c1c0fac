/* CONV_2D 16x8 (int16 activations, int8 per-channel weights, int64 bias): TFLM
 * reference_integer_ops::ConvPerChannel for int16 input. The zero points are 0, so no offsets; the 64-bit
 * accumulator is requantized with the 64-bit MultiplyByQuantizedMultiplier. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_conv_2d_16x8(const hil_conv_2d_16x8_params_t *p, const int16_t *input, int16_t *output) {
    int32_t b, out_y, out_x, out_c, filter_y, filter_x, in_c;
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                for (out_c = 0; out_c < p->output_c; ++out_c) {
                    int64_t acc = 0;
                    int32_t scaled;
                    for (filter_y = 0; filter_y < p->filter_h; ++filter_y) {
                        const int32_t in_y = in_y_origin + p->dilation_h * filter_y;
                        if (in_y < 0 || in_y >= p->input_h) {
                            continue; /* zero padding: taps outside the image add nothing */
                        }
                        for (filter_x = 0; filter_x < p->filter_w; ++filter_x) {
                            const int32_t in_x = in_x_origin + p->dilation_w * filter_x;
                            const int16_t *in_px;
                            const int8_t *f_px;
                            if (in_x < 0 || in_x >= p->input_w) {
                                continue;
                            }
                            in_px = input + ((b * p->input_h + in_y) * p->input_w + in_x) * p->input_c;
                            f_px = p->filter +
                                   ((out_c * p->filter_h + filter_y) * p->filter_w + filter_x) * p->input_c;
                            for (in_c = 0; in_c < p->input_c; ++in_c) {
                                /* |f * x| < 2^22: a 32-bit product, summed in 64 bits as TFLM does */
                                acc += (int32_t)f_px[in_c] * (int32_t)in_px[in_c];
                            }
                        }
                    }
                    if (p->bias != 0) {
                        acc += p->bias[out_c];
                    }
                    scaled = hil_multiply_by_quantized_multiplier_i64(acc, p->output_multiplier[out_c],
                                                                     p->output_shift[out_c]);
                    scaled = hil_clamp_i32(scaled, p->act_min, p->act_max);
                    output[((b * p->output_h + out_y) * p->output_w + out_x) * p->output_c + out_c] =
                        (int16_t)scaled;
                }
            }
        }
    }
}
