/* Portable int8 kernels: one params struct and one function per TFLite op, bit-exact with the
 * TensorFlow Lite Micro reference kernels. The *_16x8 / *_i16 variants run TFLite's 16x8 quantization (int16
 * activations with zero point 0, int8 weights, int64 bias); each shares its source with the int8 kernel.
 *
 * Tensors are NHWC int8 in row-major order. The model compiler (hil/model/codegen.py) fills every
 * params struct at compile time: shapes, padding, zero points, the fused activation as a clamp
 * range and all requantization multipliers and shifts, so the kernels do integer arithmetic only
 * and never allocate. Offsets follow TFLM's naming: an input_offset is the negated input zero
 * point (added to each input value), an output_offset is the output zero point.
 *
 * Two kinds of kernel:
 * - generic kernels (the first part of this file): any geometry the op allows, TFLM's loops;
 * - specialised kernels ("Specialised kernels" below): the compiler knows every shape, zero point and
 *   multiplier, folds the input zero point into the bias, packs the weights for the loop and picks one of
 *   these where it has proved it exact (accumulator range); a generated hil_model.c calls them by default.
 *
 * Vendor kernels. A port that dispatches some ops to a vendor library (the ESP32-S3 port with Espressif's
 * ESP-NN, built with HIL_USE_ESP_NN) takes the generic entry points' names for its dispatchers: with
 * HIL_USE_ESP_NN defined, the portable CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, pooling and
 * SOFTMAX kernels are compiled as <name>_portable (HIL_PORTABLE), the port defines <name> (falling back to
 * <name>_portable for what the library cannot do), and a generated hil_model.c calls <name> with a filled
 * params struct for those ops instead of the specialised kernels. The arena plan may run ADD in place
 * (output == input1; each element is read before the same index is written). */
#ifndef HIL_KERNELS_H
#define HIL_KERNELS_H

#include <stdint.h>

#ifdef HIL_USE_ESP_NN
#define HIL_PORTABLE(name) name##_portable
#else
#define HIL_PORTABLE(name) name
#endif

/* CONV_2D with per-channel int8 weights (a per-tensor model gets the same multiplier per channel). */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;             /* top and left padding (SAME puts any odd row/column last) */
    int32_t input_offset;             /* -input zero point */
    int32_t output_offset;            /* output zero point */
    int32_t act_min, act_max;         /* fused activation, as an int8 clamp range */
    const int8_t *filter;             /* [output_c][filter_h][filter_w][input_c], zero point 0 */
    const int32_t *bias;              /* [output_c] or NULL */
    const int32_t *output_multiplier; /* [output_c], Q0.31 */
    const int32_t *output_shift;      /* [output_c] */
} hil_conv_2d_params_t;

void hil_conv_2d(const hil_conv_2d_params_t *p, const int8_t *input, int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_conv_2d_portable(const hil_conv_2d_params_t *p, const int8_t *input, int8_t *output);
#endif

/* DEPTHWISE_CONV_2D: output channel = input channel * depth_multiplier + m. */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t depth_multiplier;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c; /* output_c == input_c * depth_multiplier */
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int8_t *filter;             /* [1][filter_h][filter_w][output_c], zero point 0 */
    const int32_t *bias;              /* [output_c] or NULL */
    const int32_t *output_multiplier; /* [output_c] */
    const int32_t *output_shift;      /* [output_c] */
} hil_depthwise_conv_2d_params_t;

void hil_depthwise_conv_2d(const hil_depthwise_conv_2d_params_t *p, const int8_t *input,
                           int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_depthwise_conv_2d_portable(const hil_depthwise_conv_2d_params_t *p, const int8_t *input,
                           int8_t *output);
#endif

/* FULLY_CONNECTED: output[b][o] = sum_d filter[o][d] * input[b][d], requantized per output. */
typedef struct {
    int32_t batches;
    int32_t accum_depth;
    int32_t output_depth;
    int32_t input_offset;
    int32_t output_offset;
    int32_t act_min, act_max;
    const int8_t *filter;             /* [output_depth][accum_depth], zero point 0 */
    const int32_t *bias;              /* [output_depth] or NULL */
    const int32_t *output_multiplier; /* [output_depth]: per-tensor models repeat one value */
    const int32_t *output_shift;      /* [output_depth] */
} hil_fully_connected_params_t;

void hil_fully_connected(const hil_fully_connected_params_t *p, const int8_t *input,
                         int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_fully_connected_portable(const hil_fully_connected_params_t *p, const int8_t *input,
                         int8_t *output);
#endif

/* AVERAGE_POOL_2D and MAX_POOL_2D. Like TFLM, neither rescales: input and output share quantization. */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, channels;
    int32_t output_h, output_w;
    int32_t filter_h, filter_w;
    int32_t stride_h, stride_w;
    int32_t pad_h, pad_w;
    int32_t act_min, act_max;
} hil_pool_params_t;

void hil_average_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_average_pool_2d_portable(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
#endif
void hil_max_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_max_pool_2d_portable(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
#endif

/* MEAN over a contiguous run of axes: the input is viewed as [outer][count][inner] and the output
 * as [outer][inner]. Keras GlobalAveragePooling2D is outer = batches, count = H * W, inner = C. */
typedef struct {
    int32_t outer, count, inner;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier; /* input_scale / output_scale / count as TFLM folds it, Q0.31 */
    int32_t shift;
} hil_mean_params_t;

void hil_mean(const hil_mean_params_t *p, const int8_t *input, int8_t *output);

/* ADD with NumPy-style broadcasting up to rank 4: the compiler right-aligns both shapes to the
 * output's four dimensions and gives an input a stride of 0 along the dimensions it broadcasts. */
typedef struct {
    int32_t dims[4];         /* output shape */
    int32_t input1_strides[4];
    int32_t input2_strides[4];
    int32_t input1_offset, input2_offset;
    int32_t output_offset;
    int32_t left_shift;      /* 20 for int8, as in TFLM */
    int32_t input1_multiplier, input1_shift;
    int32_t input2_multiplier, input2_shift;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} hil_add_params_t;

void hil_add(const hil_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
/* ADD without broadcasting, specialised (add.c): each input's rescaled value, TFLM's
 * MultiplyByQuantizedMultiplierSmallerThanOneExp((x - zero point) << 20, ...), is a table of its 256 values
 * (indexed by the byte, (uint8_t)x) that the compiler computes; their sum is requantized in one step
 * (hil_requantize_s32, output_shift holding n = 31 - TFLM's shift > 31). */
typedef struct {
    int32_t size;
    int32_t output_offset;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
    const int32_t *table1, *table2; /* [256] */
} hil_add_fast_params_t;

void hil_add_table(const hil_add_fast_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_add_portable(const hil_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
#endif

/* STRIDED_SLICE with unit strides: output[i] = input[begin + i] in each of four dimensions. */
typedef struct {
    int32_t input_dims[4];
    int32_t begin[4];
    int32_t output_dims[4];
} hil_strided_slice_params_t;

void hil_strided_slice(const hil_strided_slice_params_t *p, const int8_t *input, int8_t *output);

/* PAD / PADV2: output = input surrounded by pad_value (PAD pads with the output zero point). */
typedef struct {
    int32_t input_dims[4];
    int32_t pad_before[4];
    int32_t output_dims[4];
    int8_t pad_value;
} hil_pad_params_t;

void hil_pad(const hil_pad_params_t *p, const int8_t *input, int8_t *output);

/* ---- 16x8: int16 activations (symmetric, zero point 0), int8 weights, int64 bias ------------------- */

/* CONV_2D 16x8 (TFLM reference_integer_ops::ConvPerChannel, int16 input). Same geometry as the int8
 * struct; no offsets, since TFLM requires zero points of 0 for int16. */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t act_min, act_max;         /* fused activation, as an int16 clamp range */
    const int8_t *filter;             /* [output_c][filter_h][filter_w][input_c] */
    const int64_t *bias;              /* [output_c] or NULL */
    const int32_t *output_multiplier; /* [output_c], Q0.31 */
    const int32_t *output_shift;      /* [output_c] */
} hil_conv_2d_16x8_params_t;

void hil_conv_2d_16x8(const hil_conv_2d_16x8_params_t *p, const int16_t *input, int16_t *output);

/* DEPTHWISE_CONV_2D 16x8. */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t depth_multiplier;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t act_min, act_max;
    const int8_t *filter;             /* [1][filter_h][filter_w][output_c] */
    const int64_t *bias;              /* [output_c] or NULL */
    const int32_t *output_multiplier; /* [output_c] */
    const int32_t *output_shift;      /* [output_c] */
} hil_depthwise_conv_2d_16x8_params_t;

void hil_depthwise_conv_2d_16x8(const hil_depthwise_conv_2d_16x8_params_t *p, const int16_t *input,
                                int16_t *output);

/* FULLY_CONNECTED 16x8 (per-channel or per-tensor weights, like the int8 kernel). */
typedef struct {
    int32_t batches;
    int32_t accum_depth;
    int32_t output_depth;
    int32_t act_min, act_max;
    const int8_t *filter;             /* [output_depth][accum_depth] */
    const int64_t *bias;              /* [output_depth] or NULL */
    const int32_t *output_multiplier; /* [output_depth] */
    const int32_t *output_shift;      /* [output_depth] */
} hil_fully_connected_16x8_params_t;

void hil_fully_connected_16x8(const hil_fully_connected_16x8_params_t *p, const int16_t *input,
                              int16_t *output);

/* MEAN and STRIDED_SLICE on int16 tensors take the int8 kernels' params. */
void hil_mean_i16(const hil_mean_params_t *p, const int16_t *input, int16_t *output);
void hil_strided_slice_i16(const hil_strided_slice_params_t *p, const int16_t *input, int16_t *output);


/* ---- Activations, elementwise arithmetic, concatenation and (de)quantization -------------------------
 * Each op below has an int8 kernel and, where TFLM has one, an int16 variant (suffix _i16: int16 tensors
 * with zero point 0, as the 16x8 scheme writes them) taking the same params. `size` is the element count. */

/* SOFTMAX over the last axis, viewed as [outer][depth]; beta and the input scale are folded into the input
 * multiplier. int8 (TFLM reference_ops::Softmax): gemmlowp fixed-point exp and reciprocal, the output is
 * scale 1/256 with zero point -128. int16 (reference_ops::SoftmaxInt16): exp and 1/(1+x) by interpolated
 * 513-entry lookup tables that the compiler builds as TFLM's Prepare does; output scale 1/32768. */
typedef struct {
    int32_t outer, depth;
    int32_t input_multiplier;
    int32_t input_left_shift;        /* int8: >= 0 (a left shift); int16: TFLM's signed shift */
    int32_t diff_min;                /* int8: differences from the row's max below this give exp() = 0 */
    const int16_t *exp_lut;          /* int16: exp(x) on [-10, 0], Q0.15, 513 entries; int8: NULL */
    const int16_t *one_over_one_plus_x_lut; /* int16: 1/(1+x) on [0, 1], Q0.15, 513 entries */
} hil_softmax_params_t;

void hil_softmax(const hil_softmax_params_t *p, const int8_t *input, int8_t *output);
#ifdef HIL_USE_ESP_NN
void hil_softmax_portable(const hil_softmax_params_t *p, const int8_t *input, int8_t *output);
#endif
void hil_softmax_i16(const hil_softmax_params_t *p, const int16_t *input, int16_t *output);

/* LOGISTIC and TANH. int8 (TFLM reference_integer_ops::Logistic / Tanh): inputs within input_range_radius
 * of the zero point are rescaled to Q4.27 and run through gemmlowp's fixed-point logistic / tanh, the rest
 * saturate; output scale 1/256, zero point -128 (LOGISTIC) or 1/128, 0 (TANH). int16: TFLM's interpolated
 * sigmoid table, the input rescaled by input_multiplier / 2^input_left_shift (input_multiplier 0: a
 * power-of-two input scale); output scale 1/32768. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;   /* int8 */
    int32_t input_range_radius; /* int8 */
    int32_t input_multiplier;
    int32_t input_left_shift;
} hil_logistic_params_t;

typedef hil_logistic_params_t hil_tanh_params_t;

void hil_logistic(const hil_logistic_params_t *p, const int8_t *input, int8_t *output);
void hil_logistic_i16(const hil_logistic_params_t *p, const int16_t *input, int16_t *output);
void hil_tanh(const hil_tanh_params_t *p, const int8_t *input, int8_t *output);
void hil_tanh_i16(const hil_tanh_params_t *p, const int16_t *input, int16_t *output);

/* HARD_SWISH, int8 only (TFLM reference_ops::HardSwish): x * relu6(x + 3) / 6 in 16-bit fixed point. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t reluish_multiplier_exponent;
    int32_t output_multiplier_exponent; /* <= 0 */
    int16_t reluish_multiplier_fixedpoint_int16;
    int16_t output_multiplier_fixedpoint_int16;
} hil_hard_swish_params_t;

void hil_hard_swish(const hil_hard_swish_params_t *p, const int8_t *input, int8_t *output);

/* MUL with broadcasting up to rank 4 (strides as for ADD): (x1 - zp1) * (x2 - zp2) requantized. */
typedef struct {
    int32_t dims[4];
    int32_t input1_strides[4];
    int32_t input2_strides[4];
    int32_t input1_offset, input2_offset; /* -zero points */
    int32_t output_offset;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} hil_mul_params_t;

void hil_mul(const hil_mul_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void hil_mul_i16(const hil_mul_params_t *p, const int16_t *input1, const int16_t *input2, int16_t *output);

/* SUB: ADD's params and arithmetic with the second input subtracted (left_shift 20 for int8, 15 for int16;
 * for int16 TFLM runs ADD with input2_multiplier negated at Prepare, which the compiler does too). */
typedef hil_add_params_t hil_sub_params_t;

void hil_sub(const hil_sub_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void hil_sub_i16(const hil_sub_params_t *p, const int16_t *input1, const int16_t *input2, int16_t *output);

/* CONCATENATION: inputs and output share one quantization (TFLM), so it copies bytes. The tensors are viewed
 * as [outer][axis * inner]; for each of the `outer` rows, input k contributes copy_bytes[k] bytes. Any
 * element type. */
typedef struct {
    int32_t outer;
    int32_t n_inputs;
    const int32_t *copy_bytes; /* [n_inputs] */
} hil_concatenation_params_t;

void hil_concatenation(const hil_concatenation_params_t *p, const void *const *inputs, void *output);

/* QUANTIZE between integer types and scales (TFLM reference_ops::Requantize): int8 or int16 in and out. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier, shift;         /* input scale / output scale */
    int32_t output_min, output_max;    /* the output type's range */
    int32_t input_bytes, output_bytes; /* 1: int8, 2: int16 */
} hil_requantize_params_t;

void hil_requantize(const hil_requantize_params_t *p, const void *input, void *output);

/* QUANTIZE of float32 (a float graph input; TFLM reference_ops::AffineQuantize): round(x / scale) + zero
 * point, saturated, as int8 or int16. */
typedef struct {
    int32_t size;
    float scale;
    int32_t zero_point;
    int32_t output_min, output_max;
    int32_t output_bytes;
} hil_quantize_params_t;

void hil_quantize(const hil_quantize_params_t *p, const float *input, void *output);

/* DEQUANTIZE to float32 (TFLM reference_ops::Dequantize): scale * (x - zero point). */
typedef struct {
    int32_t size;
    int32_t zero_point;
    float scale;
    int32_t input_bytes;
} hil_dequantize_params_t;

void hil_dequantize(const hil_dequantize_params_t *p, const void *input, float *output);

/* RELU (TFLM ReluQuantized): requantize to the output scale, clamped at the output's quantized 0. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t output_multiplier, output_shift;
    int32_t act_min, act_max;
} hil_relu_params_t;

void hil_relu(const hil_relu_params_t *p, const int8_t *input, int8_t *output);
void hil_relu_i16(const hil_relu_params_t *p, const int16_t *input, int16_t *output);

/* RELU6 (TFLM Relu6Quantized): a clamp to the input's quantized 0 and 6. Like TFLM, no requantization: the
 * output keeps the input's values whatever its quantization. */
typedef struct {
    int32_t size;
    int32_t lower, upper;
} hil_relu6_params_t;

void hil_relu6(const hil_relu6_params_t *p, const int8_t *input, int8_t *output);
void hil_relu6_i16(const hil_relu6_params_t *p, const int16_t *input, int16_t *output);

/* LEAKY_RELU (TFLM reference_ops::QuantizeLeakyRelu): x >= 0 requantized with input/output scale, x < 0
 * with alpha * input/output scale. */
typedef struct {
    int32_t size;
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t output_multiplier_identity, output_shift_identity;
    int32_t output_multiplier_alpha, output_shift_alpha;
} hil_leaky_relu_params_t;

void hil_leaky_relu(const hil_leaky_relu_params_t *p, const int8_t *input, int8_t *output);
void hil_leaky_relu_i16(const hil_leaky_relu_params_t *p, const int16_t *input, int16_t *output);

/* ---- Specialised kernels ------------------------------------------------------------------------------
 * What a generated hil_model.c calls by default. The compiler (hil/model/lowering/fast.py) emits them only where
 * it has proved them bit-exact with the generic kernels: every accumulator, computed from the weights, the
 * folded bias and the input range, stays inside int32 (so a 16x8 kernel accumulates in 32 bits and the
 * requantization is one step, hil_requantize_s32 / hil_requantize_16x8 in hil_quant.h); anything else gets
 * the generic kernel. Per-op data the compiler computes:
 *   bias:    the input zero point folded in: bias - zero point * (sum of the channel's weights), exact wherever
 *            every tap reads the image; a padded tap reads pad_value / pad_row (the input zero point), which
 *            adds 0 after the fold, as TFLM's skipped padded tap does;
 *   filter:  the weights in the order the loop reads them (below). The convolutions store weight + 128 as
 *            uint8 (loads without sign extension: the lx106 has no SEXT), so the kernel subtracts 128 * (the
 *            sum of the pixel's inputs) once per pixel: sum w*x = sum (w+128)*x - 128 * sum x. Depthwise
 *            weights are int16 (one load, no sign extension) and int8 depthwise inputs are read as x - 128
 *            (HIL_X_MINUS_128), so that bias holds bias - (zero point - 128) * sum w;
 *   requantization: output_shift holds the total right shift n of hil_quant.h's one-step forms, 31 - TFLM's
 *            shift for int8 (> 31: the compiler keeps the generic kernel for a channel with a left or no
 *            shift) and 15 - TFLM's shift for 16x8, whose output_multiplier is TFLM's reduced Q0.15 one.
 * Arrays indexed by output channel are padded with zeros to a multiple of 4 where a kernel works on blocks
 * of channels (depth = filter_h * filter_w * input_c). */

/* CONV_2D (and FULLY_CONNECTED as a 1x1 convolution over `batches` pixels). */
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t pad_value;                /* a padded tap's value: the input zero point (0 for int16) */
    int32_t output_offset;            /* output zero point (0 for int16) */
    int32_t act_min, act_max;
    int32_t small_acc;                /* the 32-bit requantization applies (hil_quant.h; 2: per accumulator) */
    const uint8_t *filter;            /* weight + 128, [ceil(output_c / 4)][filter_h * filter_w * input_c][4] */
    const int32_t *bias;              /* [ceil4(output_c)], bias - input zero point * sum of the weights */
    const int32_t *output_multiplier; /* [ceil4(output_c)] (16x8: reduced, Q0.15) */
    const int32_t *output_shift;      /* [ceil4(output_c)], right shifts n (see below) */
    int32_t block;                    /* the _u8 kernels: output channels per filter block, 4 or 16 */
} hil_conv_fast_params_t;

/* 1x1 filter, no padding, any stride: a matrix product pixel by pixel. */
void hil_conv_2d_1x1(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output);
void hil_conv_2d_1x1_16x8(const hil_conv_fast_params_t *p, const int16_t *input, int16_t *output);
/* Any filter, stride, dilation and padding: each output pixel's patch is gathered into scratch
 * (filter_h * filter_w * input_c elements, from the arena), then multiplied like a 1x1 convolution. */
void hil_conv_2d_patch(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output, int8_t *scratch);
void hil_conv_2d_patch_16x8(const hil_conv_fast_params_t *p, const int16_t *input, int16_t *output,
                            int16_t *scratch);
/* int8 on unsigned operands (what the compiler emits for int8; the two above stay for models compiled before):
 * inputs copied to scratch as x + 128 (input_c bytes for 1x1, filter_h * filter_w * input_c for a patch), the
 * filter stored + 128 in blocks of `block` channels, [ceil(output_c / block)][depth][block], arrays indexed by
 * output channel padded to a multiple of block, and bias = bias - (input zero point + 128) * sum of the weights
 * (conv_2d.c). pad_value is the input zero point, as above. */
void hil_conv_2d_1x1_u8(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output, int8_t *scratch);
void hil_conv_2d_patch_u8(const hil_conv_fast_params_t *p, const int8_t *input, int8_t *output, int8_t *scratch);

/* DEPTHWISE_CONV_2D. */
#define HIL_DEPTHWISE_MAX_TAPS 64
typedef struct {
    int32_t batches;
    int32_t input_h, input_w, input_c;
    int32_t depth_multiplier;
    int32_t filter_h, filter_w;
    int32_t output_h, output_w, output_c;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_h, pad_w;
    int32_t output_offset;
    int32_t act_min, act_max;
    int32_t small_acc;                /* the 32-bit requantization applies (hil_quant.h) */
    const int16_t *filter;            /* [output_c][filter_h * filter_w]: each channel's taps side by side */
    const int32_t *bias;              /* [output_c], bias - (zero point - 128) * sum w (16x8: zero point 0) */
    const int32_t *output_multiplier; /* [output_c] (16x8: reduced, Q0.15) */
    const int32_t *output_shift;      /* [output_c], right shifts n (see below) */
    const void *pad_row;              /* input_c elements (int8_t or int16_t) equal to the input zero point */
} hil_depthwise_fast_params_t;

/* 3x3 filter, depth multiplier 1: nine multiply-adds per channel, unrolled. */
void hil_depthwise_conv_2d_3x3(const hil_depthwise_fast_params_t *p, const int8_t *input, int8_t *output);
void hil_depthwise_conv_2d_3x3_16x8(const hil_depthwise_fast_params_t *p, const int16_t *input,
                                    int16_t *output);
/* Any filter up to HIL_DEPTHWISE_MAX_TAPS taps, any depth multiplier. */
void hil_depthwise_conv_2d_taps(const hil_depthwise_fast_params_t *p, const int8_t *input, int8_t *output);
void hil_depthwise_conv_2d_taps_16x8(const hil_depthwise_fast_params_t *p, const int16_t *input,
                                     int16_t *output);

#endif
