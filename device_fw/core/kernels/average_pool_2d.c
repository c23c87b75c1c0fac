/* AVERAGE_POOL_2D, int8: TFLM reference_integer_ops::AveragePool. Padding taps are left out of the
 * average (the divisor counts only taps inside the image), and the mean is rounded half away from
 * zero. No rescaling: TFLM assumes input and output quantization are equal. */
#include "hil_kernels.h"
#include "hil_quant.h"

void HIL_PORTABLE(hil_average_pool_2d)(const hil_pool_params_t *p, const int8_t *input, int8_t *output) {
    int32_t b, out_y, out_x, c, fy, fx;
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            const int32_t fy_start = hil_max_i32(0, -in_y_origin);
            const int32_t fy_end = hil_min_i32(p->filter_h, p->input_h - in_y_origin);
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                const int32_t fx_start = hil_max_i32(0, -in_x_origin);
                const int32_t fx_end = hil_min_i32(p->filter_w, p->input_w - in_x_origin);
                /* The compiler rejects geometries where a window misses the image entirely. */
                const int32_t count = (fy_end - fy_start) * (fx_end - fx_start);
                for (c = 0; c < p->channels; ++c) {
                    int32_t acc = 0;
                    for (fy = fy_start; fy < fy_end; ++fy) {
                        for (fx = fx_start; fx < fx_end; ++fx) {
                            const int32_t in_y = in_y_origin + fy;
                            const int32_t in_x = in_x_origin + fx;
                            acc += input[((b * p->input_h + in_y) * p->input_w + in_x) * p->channels + c];
                        }
                    }
                    acc = hil_rounded_div_i32(acc, count);
                    acc = hil_clamp_i32(acc, p->act_min, p->act_max);
                    output[((b * p->output_h + out_y) * p->output_w + out_x) * p->channels + c] = (int8_t)acc;
                }
            }
        }
    }
}
