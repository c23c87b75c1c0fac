/* DEPTHWISE_CONV_2D, int8 and 16x8, per-channel weights: output channel = input channel * depth_multiplier + m.
 *
 * Generic kernels (any geometry):
 *   HIL_PORTABLE(hil_depthwise_conv_2d)  TFLM reference_integer_ops::DepthwiseConvPerChannel, int8
 *   hil_depthwise_conv_2d_16x8           the same for int16 input (no offsets, 64-bit accumulator)
 * Specialised kernels (hil/model/codegen.py; hil_kernels.h, hil_depthwise_fast_params_t):
 *   hil_depthwise_conv_2d_3x3[_16x8]   3x3 filter, depth multiplier 1: per output pixel the nine tap pointers
 *                                      are set once (a padded tap points at a row of zero points, so borders
 *                                      need no test per channel), then each channel is nine multiply-adds,
 *                                      unrolled, with its nine weights side by side
 *   hil_depthwise_conv_2d_taps[_16x8]  any filter (up to HIL_DEPTHWISE_MAX_TAPS taps) and depth multiplier,
 *                                      the same scheme with a loop over the taps
 * The input zero point is folded into the bias at compile time and requantization is one step.
 *
 * One source for int8 and 16x8: the part below HIL_TEMPLATE_PASS is compiled twice (see conv_2d.c). */
#ifndef HIL_TEMPLATE_PASS
#include "hil_kernels.h"
#include "hil_quant.h"

#define HIL_TEMPLATE_PASS
#define HIL_16X8 0
#include "depthwise_conv_2d.c"
#undef HIL_16X8
#define HIL_16X8 1
#include "depthwise_conv_2d.c"
#undef HIL_16X8
#undef HIL_TEMPLATE_PASS

#else /* ---- the template ------------------------------------------------------------------------------- */

#if HIL_16X8
#define ELEM int16_t
#define ACC int64_t
#define GENERIC hil_depthwise_conv_2d_16x8
#define GENERIC_PARAMS hil_depthwise_conv_2d_16x8_params_t
#define INPUT_OFFSET(p) 0
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier_i64((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#define OUTPUT_OFFSET(p) 0
#define REQUANT_FAST(acc, m, s, small) hil_requantize_16x8((acc), (m), (s), (small))
#define XV(t, i) ((int32_t)(t)[i])       /* 16x8: the input as it is */
#define MAC(w, x) ((int32_t)(w) * (x))
#define FAST(name) name##_16x8
#else
#define ELEM int8_t
#define ACC int32_t
#define GENERIC HIL_PORTABLE(hil_depthwise_conv_2d)
#define GENERIC_PARAMS hil_depthwise_conv_2d_params_t
#define INPUT_OFFSET(p) ((p)->input_offset)
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#define OUTPUT_OFFSET(p) ((p)->output_offset)
#define REQUANT_FAST(acc, m, s, small) hil_requantize_s32((acc), (m), (s), (small))
#define XV(t, i) HIL_X_MINUS_128((t) + (i)) /* int8: x - 128, folded into the bias by the compiler */
#define MAC(w, x) hil_mul16((w), (x))
#define FAST(name) name
#endif

void GENERIC(const GENERIC_PARAMS *p, const ELEM *input, ELEM *output) {
    int32_t b, out_y, out_x, in_c, m, filter_y, filter_x;
    HIL_DCHECK(p->output_c == p->input_c * p->depth_multiplier);
    HIL_DCHECK((p->output_h - 1) * p->stride_h + (p->filter_h - 1) * p->dilation_h < p->input_h + 2 * p->pad_h + 1);
    HIL_DCHECK((p->output_w - 1) * p->stride_w + (p->filter_w - 1) * p->dilation_w < p->input_w + 2 * p->pad_w + 1);
    HIL_DCHECK(p->filter != 0 && p->output_multiplier != 0 && p->output_shift != 0);
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                for (in_c = 0; in_c < p->input_c; ++in_c) {
                    for (m = 0; m < p->depth_multiplier; ++m) {
                        const int32_t out_c = in_c * p->depth_multiplier + m;
                        ACC acc = 0;
                        int32_t scaled;
                        for (filter_y = 0; filter_y < p->filter_h; ++filter_y) {
                            const int32_t in_y = in_y_origin + p->dilation_h * filter_y;
                            if (in_y < 0 || in_y >= p->input_h) {
                                continue; /* zero padding */
                            }
                            for (filter_x = 0; filter_x < p->filter_w; ++filter_x) {
                                const int32_t in_x = in_x_origin + p->dilation_w * filter_x;
                                int32_t in_val, f_val;
                                if (in_x < 0 || in_x >= p->input_w) {
                                    continue;
                                }
                                in_val = input[((b * p->input_h + in_y) * p->input_w + in_x) * p->input_c + in_c];
                                f_val = p->filter[(filter_y * p->filter_w + filter_x) * p->output_c + out_c];
                                acc += f_val * (in_val + INPUT_OFFSET(p));
                            }
                        }
                        if (p->bias != 0) {
                            acc += p->bias[out_c];
                        }
                        scaled = REQUANT_GENERIC(p, acc, out_c) + OUTPUT_OFFSET(p);
                        scaled = hil_clamp_i32(scaled, p->act_min, p->act_max);
                        output[((b * p->output_h + out_y) * p->output_w + out_x) * p->output_c + out_c] =
                            (ELEM)scaled;
                    }
                }
            }
        }
    }
}

static void FAST(check_depthwise_fast)(const hil_depthwise_fast_params_t *p) {
    (void)p;
    HIL_DCHECK(p->output_c == p->input_c * p->depth_multiplier);
    HIL_DCHECK(p->filter_h * p->filter_w <= HIL_DEPTHWISE_MAX_TAPS);
    HIL_DCHECK((p->output_h - 1) * p->stride_h + (p->filter_h - 1) * p->dilation_h < p->input_h + 2 * p->pad_h + 1);
    HIL_DCHECK((p->output_w - 1) * p->stride_w + (p->filter_w - 1) * p->dilation_w < p->input_w + 2 * p->pad_w + 1);
    HIL_DCHECK(p->filter != 0 && p->bias != 0 && p->output_multiplier != 0 && p->output_shift != 0);
    HIL_DCHECK(p->pad_row != 0 && p->act_min <= p->act_max);
}

/* The input pixel each tap of output pixel (out_y, out_x) reads, or the zero-point row for a padded tap.
 * offsets[k] is tap k's distance in elements from the window's first tap (the same for every pixel). */
static inline void FAST(tap_pointers)(const hil_depthwise_fast_params_t *p, const ELEM *image, int32_t out_y,
                                      int32_t out_x, const int32_t *offsets, const ELEM **taps) {
    const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
    const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
    const int32_t n_taps = p->filter_h * p->filter_w;
    int32_t fy, fx, k;
    if (in_y_origin >= 0 && in_y_origin + (p->filter_h - 1) * p->dilation_h < p->input_h && in_x_origin >= 0 &&
        in_x_origin + (p->filter_w - 1) * p->dilation_w < p->input_w) {
        /* the whole window is inside the image */
        const ELEM *origin = image + (in_y_origin * p->input_w + in_x_origin) * p->input_c;
        for (k = 0; k < n_taps; ++k) {
            taps[k] = origin + offsets[k];
        }
        return;
    }
    for (fy = 0; fy < p->filter_h; ++fy) {
        const int32_t in_y = in_y_origin + fy * p->dilation_h;
        for (fx = 0; fx < p->filter_w; ++fx) {
            const int32_t in_x = in_x_origin + fx * p->dilation_w;
            *taps++ = (in_y >= 0 && in_y < p->input_h && in_x >= 0 && in_x < p->input_w)
                          ? image + (in_y * p->input_w + in_x) * p->input_c
                          : (const ELEM *)p->pad_row;
        }
    }
}

static void FAST(tap_offsets)(const hil_depthwise_fast_params_t *p, int32_t *offsets) {
    int32_t fy, fx;
    for (fy = 0; fy < p->filter_h; ++fy) {
        for (fx = 0; fx < p->filter_w; ++fx) {
            *offsets++ = (fy * p->dilation_h * p->input_w + fx * p->dilation_w) * p->input_c;
        }
    }
}

/* Requantizes, clamps and stores the accumulators of channels c .. c+count-1 (count 1 to 4). */
static inline void FAST(dw_store)(const hil_depthwise_fast_params_t *p, int32_t c, int32_t count, ELEM *out,
                                   int32_t a0, int32_t a1, int32_t a2, int32_t a3) {
    const int32_t *mult = p->output_multiplier + c, *shift = p->output_shift + c;
    const int32_t zp = p->output_offset, lo = p->act_min, hi = p->act_max, small = p->small_acc;
    int32_t y;
    out += c;
    y = REQUANT_FAST(a0, mult[0], shift[0], small) + zp;
    out[0] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    if (count < 4) {
        return;
    }
    y = REQUANT_FAST(a1, mult[1], shift[1], small) + zp;
    out[1] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    y = REQUANT_FAST(a2, mult[2], shift[2], small) + zp;
    out[2] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    y = REQUANT_FAST(a3, mult[3], shift[3], small) + zp;
    out[3] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
}

void FAST(hil_depthwise_conv_2d_3x3)(const hil_depthwise_fast_params_t *p, const ELEM *input, ELEM *output) {
    const int32_t channels = p->input_c;
    const int32_t *bias = p->bias;
    int32_t offsets[9];
    int32_t b, out_y, out_x, c;
/* tap k of four channels c..c+3: their weights are 9 apart ([channel][9]), their inputs adjacent */
#define HIL_DW_TAP4(k)                                                                                        \
    do {                                                                                                      \
        const ELEM *x_ = t[k] + c;                                                                            \
        a0 += MAC(w[(k)], XV(x_, 0));                                                                         \
        a1 += MAC(w[9 + (k)], XV(x_, 1));                                                                     \
        a2 += MAC(w[18 + (k)], XV(x_, 2));                                                                    \
        a3 += MAC(w[27 + (k)], XV(x_, 3));                                                                    \
        HIL_STEP_BARRIER();                                                                                   \
    } while (0)
    FAST(check_depthwise_fast)(p);
    HIL_DCHECK(p->filter_h == 3 && p->filter_w == 3 && p->depth_multiplier == 1);
    FAST(tap_offsets)(p, offsets);
    for (b = 0; b < p->batches; ++b) {
        const ELEM *image = input + b * p->input_h * p->input_w * channels;
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const ELEM *t[9];
                const int16_t *w = p->filter;
                FAST(tap_pointers)(p, image, out_y, out_x, offsets, t);
                /* four channels at a time: each tap pointer is loaded once per four multiply-adds */
                for (c = 0; c + 4 <= channels; c += 4, w += 36) {
                    int32_t a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3];
                    HIL_DW_TAP4(0);
                    HIL_DW_TAP4(1);
                    HIL_DW_TAP4(2);
                    HIL_DW_TAP4(3);
                    HIL_DW_TAP4(4);
                    HIL_DW_TAP4(5);
                    HIL_DW_TAP4(6);
                    HIL_DW_TAP4(7);
                    HIL_DW_TAP4(8);
                    FAST(dw_store)(p, c, 4, output, a0, a1, a2, a3);
                }
                if (c + 2 <= channels) { /* two of the last three channels */
                    int32_t a0 = bias[c], a1 = bias[c + 1];
                    int32_t k;
                    for (k = 0; k < 9; ++k) {
                        const ELEM *x_ = t[k] + c;
                        a0 += MAC(w[k], XV(x_, 0));
                        a1 += MAC(w[9 + k], XV(x_, 1));
                    }
                    FAST(dw_store)(p, c, 1, output, a0, 0, 0, 0);
                    FAST(dw_store)(p, c + 1, 1, output, a1, 0, 0, 0);
                    c += 2;
                    w += 18;
                }
                if (c < channels) { /* the last one */
                    int32_t acc = bias[c];
                    int32_t k;
                    for (k = 0; k < 9; ++k) {
                        acc += MAC(w[k], XV(t[k], c));
                    }
                    FAST(dw_store)(p, c, 1, output, acc, 0, 0, 0);
                }
                output += channels;
            }
        }
    }
#undef HIL_DW_TAP4
}

void FAST(hil_depthwise_conv_2d_taps)(const hil_depthwise_fast_params_t *p, const ELEM *input, ELEM *output) {
    const int32_t n_taps = p->filter_h * p->filter_w;
    const int32_t dm = p->depth_multiplier;
    const int32_t zp = p->output_offset, lo = p->act_min, hi = p->act_max;
    const int32_t *bias = p->bias, *mult = p->output_multiplier, *shift = p->output_shift;
    const int32_t small = p->small_acc;
    int32_t offsets[HIL_DEPTHWISE_MAX_TAPS];
    int32_t b, out_y, out_x, c, m, k;
    FAST(check_depthwise_fast)(p);
    FAST(tap_offsets)(p, offsets);
    for (b = 0; b < p->batches; ++b) {
        const ELEM *image = input + b * p->input_h * p->input_w * p->input_c;
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const ELEM *t[HIL_DEPTHWISE_MAX_TAPS];
                const int16_t *w = p->filter;
                int32_t out_c = 0;
                FAST(tap_pointers)(p, image, out_y, out_x, offsets, t);
                for (c = 0; c < p->input_c; ++c) {
                    for (m = 0; m < dm; ++m, ++out_c) {
                        int32_t acc = bias[out_c];
                        int32_t y;
                        for (k = 0; k < n_taps; ++k) {
                            acc += MAC(w[k], XV(t[k], c));
                        }
                        w += n_taps;
                        y = REQUANT_FAST(acc, mult[out_c], shift[out_c], small) + zp;
                        output[out_c] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
                    }
                }
                output += p->output_c;
            }
        }
    }
}

#undef ELEM
#undef ACC
#undef GENERIC
#undef GENERIC_PARAMS
#undef INPUT_OFFSET
#undef REQUANT_GENERIC
#undef OUTPUT_OFFSET
#undef REQUANT_FAST
#undef FAST
#undef XV
#undef MAC
#endif
