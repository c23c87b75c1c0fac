/* CONV_2D, int8 and 16x8 (int16 activations, int8 weights, int64 bias), per-channel weights.
 *
 * Generic kernels (any geometry, what TFLM does, and what a port that dispatches to a vendor library wraps):
 *   HIL_PORTABLE(hil_conv_2d)  TFLM reference_integer_ops::ConvPerChannel, int8
 *   hil_conv_2d_16x8           the same for int16 input: no offsets, a 64-bit accumulator and requantization
 * Specialised kernels (hil/model/codegen.py picks them where the compiler has proved them exact; see
 * hil_kernels.h, hil_conv_fast_params_t):
 *   hil_conv_2d_1x1[_16x8]     1x1 filter without padding: a matrix product, pixel by pixel
 *   hil_conv_2d_patch[_16x8]   any other filter: each output pixel's patch gathered into a scratch vector
 *                              (padded taps read the input zero point), then the same matrix product
 * Both compute four output channels at once, keeping four accumulators in registers while one input value is
 * loaded, with the input zero point folded into the bias at compile time and the requantization done in one
 * step (hil_requantize_s32 / hil_requantize_16x8). FULLY_CONNECTED's specialised form is hil_conv_2d_1x1
 * (fully_connected.c).
 *   hil_conv_2d_1x1_u8,        what the compiler emits for int8 from a depth of 16 (the two above stay for
 *   hil_conv_2d_patch_u8       shallower ones and for models compiled before): inputs copied to scratch as
 *                              x + 128, blocks of 16 output channels (below the template).
 *
 * The int8 and 16x8 kernels are one source: this file includes itself once per element type; the second
 * part (below HIL_TEMPLATE_PASS) is compiled twice with HIL_16X8 = 0 and 1. */
#ifndef HIL_TEMPLATE_PASS
#include <string.h>

#include "hil_kernels.h"
#include "hil_quant.h"

#define HIL_TEMPLATE_PASS
#define HIL_16X8 0
#include "conv_2d.c"
#undef HIL_16X8
#define HIL_16X8 1
#include "conv_2d.c"
#undef HIL_16X8
#undef HIL_TEMPLATE_PASS

/* ---- int8 on unsigned operands: hil_conv_2d_1x1_u8, hil_conv_2d_patch_u8 --------------------------------
 * What the compiler emits for int8 convolutions and FULLY_CONNECTED (the kernels above stay for models compiled
 * before them). Each output pixel's inputs are first copied to a scratch vector as u = x + 128 (x ^ 0x80, a
 * word at a time where aligned; a padded tap reads the input zero point + 128), so that both operands of every
 * product are unsigned bytes: the lx106 loads them without sign extension (one l8ui instead of three
 * instructions) and a product fits 16 unsigned bits. With the weights stored + 128:
 *   sum w * (x - zp) + bias = sum (w + 128) * u - 128 * sum u + [bias - (zp + 128) * sum w]
 * where the bracket is the compile-time bias (hil_conv_fast_params_t.bias for these kernels) and 128 * sum u is
 * subtracted once per pixel. The filter is in blocks of p->block output channels (4, or 16 where there are at
 * least 16): [ceil(output_c / block)][depth][block]. Targets with registers to spare (HIL_UNROLL >= 2: hosts) run
 * a block of 16 as one loop over the 16 channels per input, which the compiler may vectorize (plain C, no
 * intrinsics); the lx106 runs every block as groups of four channels kept in registers, four inputs per step. */

#if defined(__GNUC__)
#if UINTPTR_MAX > 0xFFFFFFFFu
typedef uint64_t __attribute__((may_alias)) conv_word_t;
#define CONV_WORD_FLIP 0x8080808080808080ull
#else
typedef uint32_t __attribute__((may_alias)) conv_word_t;
#define CONV_WORD_FLIP 0x80808080u
#endif
#define CONV_NOINLINE __attribute__((noinline))
#else
#define CONV_NOINLINE
#endif

/* dst[i] = src[i] + 128 as uint8 (x ^ 0x80), for n values. */
static void conv_u8_copy(uint8_t *dst, const int8_t *src, int32_t n) {
    int32_t i = 0;
#ifdef CONV_WORD_FLIP
    if ((((uintptr_t)dst | (uintptr_t)src) & (sizeof(conv_word_t) - 1)) == 0) {
        conv_word_t *d = (conv_word_t *)(void *)dst;
        const conv_word_t *s = (const conv_word_t *)(const void *)src;
        const int32_t words = n / (int32_t)sizeof(conv_word_t);
        for (; i < words; ++i) {
            d[i] = s[i] ^ CONV_WORD_FLIP;
        }
        i *= (int32_t)sizeof(conv_word_t);
    }
#endif
    for (; i < n; ++i) {
        dst[i] = (uint8_t)((uint8_t)src[i] ^ 0x80u);
    }
}

/* Four output channels over `depth` inputs: acc[j] += sum_k w[k * S + j] * v[k], with S (the block) a constant
 * so that every load has an immediate offset; four inputs per step, a barrier between them (HIL_STEP_BARRIER:
 * on the lx106 gcc would otherwise hoist every load to the top and spill). The _sum form also returns sum v. */
#define CONV_U8_STEP(S, J)                                                                                      \
    do {                                                                                                     \
        const int32_t x = v[J];                                                                              \
        a0 += w[(J) * (S) + 0] * x;                                                                          \
        a1 += w[(J) * (S) + 1] * x;                                                                          \
        a2 += w[(J) * (S) + 2] * x;                                                                          \
        a3 += w[(J) * (S) + 3] * x;                                                                          \
        CONV_U8_SUM(x);                                                                                      \
        HIL_STEP_BARRIER();                                                                                  \
    } while (0)

#define CONV_U8_DOT4(NAME, S, RET, SUM_DECL, SUM_RET)                                                           \
    static CONV_NOINLINE RET NAME(const uint8_t *w, const uint8_t *v, int32_t depth, int32_t *acc) {          \
        int32_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;                                                              \
        const uint8_t *end = v + (depth & ~7);                                                               \
        SUM_DECL;                                                                                            \
        for (; v != end; v += 8, w += 8 * (S)) {                                                             \
            CONV_U8_STEP(S, 0);                                                                              \
            CONV_U8_STEP(S, 1);                                                                              \
            CONV_U8_STEP(S, 2);                                                                              \
            CONV_U8_STEP(S, 3);                                                                              \
            CONV_U8_STEP(S, 4);                                                                              \
            CONV_U8_STEP(S, 5);                                                                              \
            CONV_U8_STEP(S, 6);                                                                              \
            CONV_U8_STEP(S, 7);                                                                              \
        }                                                                                                    \
        for (end = v + (depth & 7); v != end; ++v, w += (S)) {                                               \
            CONV_U8_STEP(S, 0);                                                                              \
        }                                                                                                    \
        acc[0] = a0;                                                                                         \
        acc[1] = a1;                                                                                         \
        acc[2] = a2;                                                                                         \
        acc[3] = a3;                                                                                         \
        SUM_RET;                                                                                             \
    }

#define CONV_U8_SUM(x) ((void)0)
CONV_U8_DOT4(conv_u8_dot4_s4, 4, void, (void)0, (void)0)
CONV_U8_DOT4(conv_u8_dot4_s16, 16, void, (void)0, (void)0)
#undef CONV_U8_SUM
#define CONV_U8_SUM(x) (sum += (x))
CONV_U8_DOT4(conv_u8_dot4_sum_s4, 4, int32_t, int32_t sum = 0, return sum)
CONV_U8_DOT4(conv_u8_dot4_sum_s16, 16, int32_t, int32_t sum = 0, return sum)
#undef CONV_U8_SUM

#if HIL_UNROLL >= 2
/* Sixteen output channels over `depth` inputs, one input at a time (a vector of sixteen on hosts: each
 * product is below 2^16). */
static CONV_NOINLINE void conv_u8_dot16(const uint8_t *w, const uint8_t *v, int32_t depth, int32_t *acc) {
    int32_t a[16] = {0};
    int32_t k, c;
    for (k = 0; k < depth; ++k) {
        const uint16_t x = v[k];
        for (c = 0; c < 16; ++c) {
            a[c] += (uint16_t)(w[c] * x);
        }
        w += 16;
    }
    memcpy(acc, a, sizeof a);
}
#endif

/* Requantizes and stores output channels c .. c + n - 1 (n <= 16) from acc (without the bias and the -128 sum u
 * correction, `fold` below). */
static void conv_u8_store(const hil_conv_fast_params_t *p, int32_t c, int8_t *out, const int32_t *acc, int32_t n,
                          int32_t correction) {
    const int32_t *bias = p->bias + c;
    int32_t j;
    for (j = 0; j < n; j += 4) {
        conv_store4(p, c + j, out, acc[j] + bias[j] - correction, acc[j + 1] + bias[j + 1] - correction,
                    acc[j + 2] + bias[j + 2] - correction, acc[j + 3] + bias[j + 3] - correction);
    }
}

/* One output pixel from its inputs u (depth bytes, x + 128). */
static void conv_u8_pixel(const hil_conv_fast_params_t *p, const uint8_t *u, int32_t depth, int8_t *out) {
    const int32_t out_c = p->output_c, block = p->block;
    int32_t c, correction = 0, acc[16];
#if HIL_UNROLL >= 2
    if (block == 16) {
        const uint8_t *w = p->filter;
        int32_t k, sum = 0;
        for (k = 0; k < depth; ++k) {
            sum += u[k];
        }
        correction = 128 * sum;
        for (c = 0; c < out_c; c += 16, w += 16 * depth) {
            conv_u8_dot16(w, u, depth, acc);
            conv_u8_store(p, c, out, acc, out_c - c < 16 ? out_c - c : 16, correction);
        }
        return;
    }
#endif
    for (c = 0; c < out_c; c += 4) {
        /* channels c .. c + 3: group c % block of block c / block */
        const uint8_t *w = p->filter + (c / block) * block * depth + c % block;
        if (block == 16) {
            if (c == 0) {
                correction = 128 * conv_u8_dot4_sum_s16(w, u, depth, acc);
            } else {
                conv_u8_dot4_s16(w, u, depth, acc);
            }
        } else if (c == 0) {
            correction = 128 * conv_u8_dot4_sum_s4(w, u, depth, acc);
        } else {
            conv_u8_dot4_s4(w, u, depth, acc);
        }
        conv_u8_store(p, c, out, acc, 4, correction);
    }
}

static void conv_u8_check(const hil_conv_fast_params_t *p) {
    (void)p;
    check_fast_params(p);
    HIL_DCHECK(p->block == 4 || p->block == 16);
}

void hil_conv_2d_1x1_u8(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output, int8_t *scratch) {
    const int32_t in_c = p->input_c, out_c = p->output_c;
    uint8_t *u = (uint8_t *)scratch;
    int32_t b, out_y, out_x;
    conv_u8_check(p);
    HIL_DCHECK(scratch != 0);
    HIL_DCHECK(p->filter_h == 1 && p->filter_w == 1 && p->pad_h == 0 && p->pad_w == 0);
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int8_t *in_row = input + ((b * p->input_h) + out_y * p->stride_h) * p->input_w * in_c;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                conv_u8_copy(u, in_row + out_x * p->stride_w * in_c, in_c);
                conv_u8_pixel(p, u, in_c, output);
                output += out_c;
            }
        }
    }
}

void hil_conv_2d_patch_u8(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output, int8_t *scratch) {
    const int32_t in_c = p->input_c;
    const int32_t depth = p->filter_h * p->filter_w * in_c;
    const uint8_t pad = (uint8_t)(p->pad_value + 128);
    uint8_t *u = (uint8_t *)scratch;
    int32_t b, out_y, out_x, fy, fx, i;
    conv_u8_check(p);
    HIL_DCHECK(scratch != 0);
    for (b = 0; b < p->batches; ++b) {
        const int8_t *image = input + b * p->input_h * p->input_w * in_c;
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                uint8_t *s = u;
                for (fy = 0; fy < p->filter_h; ++fy) {
                    const int32_t in_y = in_y_origin + fy * p->dilation_h;
                    const int row_ok = in_y >= 0 && in_y < p->input_h;
                    if (row_ok && p->dilation_w == 1 && in_x_origin >= 0 && in_x_origin + p->filter_w <= p->input_w) {
                        /* the whole filter row is inside the image: one contiguous run */
                        const int32_t n = p->filter_w * in_c;
                        conv_u8_copy(s, image + (in_y * p->input_w + in_x_origin) * in_c, n);
                        s += n;
                        continue;
                    }
                    for (fx = 0; fx < p->filter_w; ++fx) {
                        const int32_t in_x = in_x_origin + fx * p->dilation_w;
                        if (row_ok && in_x >= 0 && in_x < p->input_w) {
                            conv_u8_copy(s, image + (in_y * p->input_w + in_x) * in_c, in_c);
                        } else {
                            for (i = 0; i < in_c; ++i) {
                                s[i] = pad; /* the zero point: adds nothing after the folded bias */
                            }
                        }
                        s += in_c;
                    }
                }
                conv_u8_pixel(p, u, depth, output);
                output += p->output_c;
            }
        }
    }
}

#else /* ---- the template: ELEM is the activation type ---------------------------------------------- */

#if HIL_16X8
#define ELEM int16_t
#define ACC int64_t
#define GENERIC hil_conv_2d_16x8
#define GENERIC_PARAMS hil_conv_2d_16x8_params_t
#define INPUT_OFFSET(p) 0
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier_i64((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#define OUTPUT_OFFSET(p) 0
#define REQUANT_FAST(acc, m, s, small) hil_requantize_16x8((acc), (m), (s), (small))
#define FAST(name) name##_16x8
#else
#define ELEM int8_t
#define ACC int32_t
#define GENERIC HIL_PORTABLE(hil_conv_2d)
#define GENERIC_PARAMS hil_conv_2d_params_t
#define INPUT_OFFSET(p) ((p)->input_offset)
#define REQUANT_GENERIC(p, acc, c)                                                                            \
    hil_multiply_by_quantized_multiplier((acc), (p)->output_multiplier[c], (p)->output_shift[c])
#define OUTPUT_OFFSET(p) ((p)->output_offset)
#define REQUANT_FAST(acc, m, s, small) hil_requantize_s32((acc), (m), (s), (small))
#define FAST(name) name
#endif

void GENERIC(const GENERIC_PARAMS *p, const ELEM *input, ELEM *output) {
    int32_t b, out_y, out_x, out_c, filter_y, filter_x, in_c;
    /* the last window ends inside the padded image (SAME puts an odd padding row/column at the end) */
    HIL_DCHECK((p->output_h - 1) * p->stride_h + (p->filter_h - 1) * p->dilation_h < p->input_h + 2 * p->pad_h + 1);
    HIL_DCHECK((p->output_w - 1) * p->stride_w + (p->filter_w - 1) * p->dilation_w < p->input_w + 2 * p->pad_w + 1);
    HIL_DCHECK(p->filter != 0 && p->output_multiplier != 0 && p->output_shift != 0);
    HIL_DCHECK(p->act_min <= p->act_max);
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                for (out_c = 0; out_c < p->output_c; ++out_c) {
                    ACC acc = 0;
                    int32_t scaled;
                    for (filter_y = 0; filter_y < p->filter_h; ++filter_y) {
                        const int32_t in_y = in_y_origin + p->dilation_h * filter_y;
                        if (in_y < 0 || in_y >= p->input_h) {
                            continue; /* zero padding: taps outside the image add nothing */
                        }
                        for (filter_x = 0; filter_x < p->filter_w; ++filter_x) {
                            const int32_t in_x = in_x_origin + p->dilation_w * filter_x;
                            const ELEM *in_px;
                            const int8_t *f_px;
                            if (in_x < 0 || in_x >= p->input_w) {
                                continue;
                            }
                            in_px = input + ((b * p->input_h + in_y) * p->input_w + in_x) * p->input_c;
                            f_px = p->filter +
                                   ((out_c * p->filter_h + filter_y) * p->filter_w + filter_x) * p->input_c;
                            for (in_c = 0; in_c < p->input_c; ++in_c) {
                                /* 16x8: |f * x| < 2^22, a 32-bit product summed in 64 bits as TFLM does */
                                acc += (int32_t)f_px[in_c] * ((int32_t)in_px[in_c] + INPUT_OFFSET(p));
                            }
                        }
                    }
                    if (p->bias != 0) {
                        acc += p->bias[out_c];
                    }
                    scaled = REQUANT_GENERIC(p, acc, out_c) + OUTPUT_OFFSET(p);
                    scaled = hil_clamp_i32(scaled, p->act_min, p->act_max);
                    output[((b * p->output_h + out_y) * p->output_w + out_x) * p->output_c + out_c] = (ELEM)scaled;
                }
            }
        }
    }
}

/* Requantizes, clamps and stores the accumulators of output channels c .. c+3 (those below output_c). */
static inline void FAST(conv_store4)(const hil_conv_fast_params_t *p, int32_t c, ELEM *out, int32_t a0, int32_t a1,
                                      int32_t a2, int32_t a3) {
    const int32_t *mult = p->output_multiplier + c, *shift = p->output_shift + c;
    const int32_t zp = p->output_offset, lo = p->act_min, hi = p->act_max, small = p->small_acc;
    const int32_t n = p->output_c - c;
    int32_t y;
    out += c;
    y = REQUANT_FAST(a0, mult[0], shift[0], small) + zp;
    out[0] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    if (n >= 4) {
        y = REQUANT_FAST(a1, mult[1], shift[1], small) + zp;
        out[1] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
        y = REQUANT_FAST(a2, mult[2], shift[2], small) + zp;
        out[2] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
        y = REQUANT_FAST(a3, mult[3], shift[3], small) + zp;
        out[3] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
        return;
    }
    if (n >= 2) {
        y = REQUANT_FAST(a1, mult[1], shift[1], small) + zp;
        out[1] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    }
    if (n >= 3) {
        y = REQUANT_FAST(a2, mult[2], shift[2], small) + zp;
        out[2] = (ELEM)(y < lo ? lo : (y > hi ? hi : y));
    }
}

#if HIL_UNROLL < 2 && defined(__GNUC__)
/* The lx106's loop for deep blocks: two inputs per iteration, in a function of its own so that its registers
 * do not crowd conv_pixel's (a barrier keeps gcc from hoisting the second input's loads). acc holds the four
 * accumulators. Worth its call from about 24 inputs on. */
static __attribute__((noinline)) const uint8_t *FAST(conv_dot4_deep)(const uint8_t *w, const ELEM *v, int32_t depth,
                                                                    int32_t *acc) {
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    const ELEM *end = v + (depth & ~1);
    for (; v != end; v += 2) {
        int32_t x0 = v[0];
        a0 += w[0] * x0;
        a1 += w[1] * x0;
        a2 += w[2] * x0;
        a3 += w[3] * x0;
        HIL_STEP_BARRIER();
        x0 = v[1];
        a0 += w[4] * x0;
        a1 += w[5] * x0;
        a2 += w[6] * x0;
        a3 += w[7] * x0;
        w += 8;
    }
    if (depth & 1) {
        const int32_t x0 = v[0];
        a0 += w[0] * x0;
        a1 += w[1] * x0;
        a2 += w[2] * x0;
        a3 += w[3] * x0;
        w += 4;
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
    return w;
}
#define HIL_DEEP_DEPTH 24
#endif

/* One output pixel: out[c] = requantized(bias[c] + sum_k filter[c][k] * v[k]) for every output channel, with
 * the filter packed in blocks of four channels, [output_c / 4][depth][4] (hil_conv_fast_params_t): four
 * accumulators stay in registers while each input value is loaded once. (Blocks of eight do not fit the
 * lx106's registers.) Weights are stored + 128, unsigned loads; 128 * the sum of the inputs corrects for it
 * (hil_kernels.h). */
static inline void FAST(conv_pixel)(const hil_conv_fast_params_t *p, const ELEM *v, int32_t depth, ELEM *out) {
    const uint8_t *w = p->filter;
    const int32_t *bias = p->bias;
    const int32_t out_c = p->output_c;
    int32_t c, k, sum = 0;
    /* the first block also sums the inputs (for the correction of the later blocks and its own) */
    {
        int32_t a0 = bias[0], a1 = bias[1], a2 = bias[2], a3 = bias[3];
        for (k = 0; k < depth; ++k) {
            const int32_t x0 = v[k];
            sum += x0;
            a0 += w[0] * x0;
            a1 += w[1] * x0;
            a2 += w[2] * x0;
            a3 += w[3] * x0;
            w += 4;
        }
        sum *= 128;
        FAST(conv_store4)(p, 0, out, a0 - sum, a1 - sum, a2 - sum, a3 - sum);
    }
    c = 4;
#if HIL_UNROLL >= 2
    /* Where registers allow (not the lx106), two blocks at once: eight accumulators per input load. */
    for (; c + 4 < out_c; c += 8) {
        const uint8_t *u = w + 4 * depth; /* the next block */
        int32_t a0 = bias[c] - sum, a1 = bias[c + 1] - sum, a2 = bias[c + 2] - sum, a3 = bias[c + 3] - sum;
        int32_t a4 = bias[c + 4] - sum, a5 = bias[c + 5] - sum, a6 = bias[c + 6] - sum, a7 = bias[c + 7] - sum;
        for (k = 0; k + 2 <= depth; k += 2) {
            const int32_t x0 = v[k], x1 = v[k + 1];
            a0 += w[0] * x0 + w[4] * x1;
            a1 += w[1] * x0 + w[5] * x1;
            a2 += w[2] * x0 + w[6] * x1;
            a3 += w[3] * x0 + w[7] * x1;
            a4 += u[0] * x0 + u[4] * x1;
            a5 += u[1] * x0 + u[5] * x1;
            a6 += u[2] * x0 + u[6] * x1;
            a7 += u[3] * x0 + u[7] * x1;
            w += 8;
            u += 8;
        }
        if (k < depth) {
            const int32_t x0 = v[k];
            a0 += w[0] * x0;
            a1 += w[1] * x0;
            a2 += w[2] * x0;
            a3 += w[3] * x0;
            a4 += u[0] * x0;
            a5 += u[1] * x0;
            a6 += u[2] * x0;
            a7 += u[3] * x0;
            u += 4;
        }
        w = u;
        FAST(conv_store4)(p, c, out, a0, a1, a2, a3);
        FAST(conv_store4)(p, c + 4, out, a4, a5, a6, a7);
    }
#endif
    for (; c < out_c; c += 4) {
        int32_t a0 = bias[c] - sum, a1 = bias[c + 1] - sum, a2 = bias[c + 2] - sum, a3 = bias[c + 3] - sum;
#ifdef HIL_DEEP_DEPTH
        if (depth >= HIL_DEEP_DEPTH) {
            int32_t acc[4];
            acc[0] = a0;
            acc[1] = a1;
            acc[2] = a2;
            acc[3] = a3;
            w = FAST(conv_dot4_deep)(w, v, depth, acc);
            FAST(conv_store4)(p, c, out, acc[0], acc[1], acc[2], acc[3]);
            continue;
        }
#endif
        for (k = 0; k < depth; ++k) {
            const int32_t x0 = v[k];
            a0 += w[0] * x0;
            a1 += w[1] * x0;
            a2 += w[2] * x0;
            a3 += w[3] * x0;
            w += 4;
        }
        FAST(conv_store4)(p, c, out, a0, a1, a2, a3);
    }
}

static void FAST(check_fast_params)(const hil_conv_fast_params_t *p) {
    (void)p;
    HIL_DCHECK(p->batches >= 1 && p->input_c >= 1 && p->output_c >= 1);
    HIL_DCHECK(p->filter_h >= 1 && p->filter_w >= 1 && p->stride_h >= 1 && p->stride_w >= 1);
    HIL_DCHECK(p->dilation_h >= 1 && p->dilation_w >= 1 && p->pad_h >= 0 && p->pad_w >= 0);
    HIL_DCHECK((p->output_h - 1) * p->stride_h + (p->filter_h - 1) * p->dilation_h < p->input_h + 2 * p->pad_h + 1);
    HIL_DCHECK((p->output_w - 1) * p->stride_w + (p->filter_w - 1) * p->dilation_w < p->input_w + 2 * p->pad_w + 1);
    HIL_DCHECK(p->filter != 0 && p->bias != 0 && p->output_multiplier != 0 && p->output_shift != 0);
    HIL_DCHECK(p->act_min <= p->act_max);
}

void FAST(hil_conv_2d_1x1)(const hil_conv_fast_params_t *p, const ELEM *input, ELEM *output) {
    const int32_t in_c = p->input_c, out_c = p->output_c;
    int32_t b, out_y, out_x;
    FAST(check_fast_params)(p);
    HIL_DCHECK(p->filter_h == 1 && p->filter_w == 1 && p->pad_h == 0 && p->pad_w == 0);
    if (p->stride_h == 1 && p->stride_w == 1) {
        /* every input pixel, in order: one run over batches * height * width pixels */
        const int32_t pixels = p->batches * p->output_h * p->output_w;
        int32_t i;
        HIL_DCHECK(p->output_h == p->input_h && p->output_w == p->input_w);
        for (i = 0; i < pixels; ++i) {
            FAST(conv_pixel)(p, input + i * in_c, in_c, output + i * out_c);
        }
        return;
    }
    for (b = 0; b < p->batches; ++b) {
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const ELEM *in_row = input + ((b * p->input_h) + out_y * p->stride_h) * p->input_w * in_c;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                FAST(conv_pixel)(p, in_row + out_x * p->stride_w * in_c, in_c, output);
                output += out_c;
            }
        }
    }
}

void FAST(hil_conv_2d_patch)(const hil_conv_fast_params_t *p, const ELEM *input, ELEM *output, ELEM *scratch) {
    const int32_t in_c = p->input_c;
    const int32_t depth = p->filter_h * p->filter_w * in_c;
    const ELEM pad = (ELEM)p->pad_value;
    int32_t b, out_y, out_x, fy, fx, i;
    FAST(check_fast_params)(p);
    HIL_DCHECK(scratch != 0);
    for (b = 0; b < p->batches; ++b) {
        const ELEM *image = input + b * p->input_h * p->input_w * in_c;
        for (out_y = 0; out_y < p->output_h; ++out_y) {
            const int32_t in_y_origin = out_y * p->stride_h - p->pad_h;
            for (out_x = 0; out_x < p->output_w; ++out_x) {
                const int32_t in_x_origin = out_x * p->stride_w - p->pad_w;
                ELEM *s = scratch;
                for (fy = 0; fy < p->filter_h; ++fy) {
                    const int32_t in_y = in_y_origin + fy * p->dilation_h;
                    const int row_ok = in_y >= 0 && in_y < p->input_h;
                    if (row_ok && p->dilation_w == 1 && in_x_origin >= 0 && in_x_origin + p->filter_w <= p->input_w) {
                        /* the whole filter row is inside the image: one contiguous run */
                        const int32_t n = p->filter_w * in_c;
                        memcpy(s, image + (in_y * p->input_w + in_x_origin) * in_c, (size_t)n * sizeof(ELEM));
                        s += n;
                        continue;
                    }
                    for (fx = 0; fx < p->filter_w; ++fx) {
                        const int32_t in_x = in_x_origin + fx * p->dilation_w;
                        if (row_ok && in_x >= 0 && in_x < p->input_w) {
                            memcpy(s, image + (in_y * p->input_w + in_x) * in_c, (size_t)in_c * sizeof(ELEM));
                        } else {
                            for (i = 0; i < in_c; ++i) {
                                s[i] = pad; /* reads as the zero point: adds nothing after the folded bias */
                            }
                        }
                        s += in_c;
                    }
                }
                FAST(conv_pixel)(p, scratch, depth, output);
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
#undef HIL_DEEP_DEPTH
#endif
