/* DECLARATIONS ONLY (see esp_nn_defs.h): the portable C ("ansi") kernels of esp-nn v1.1.x,
 * include/esp_nn_ansi_headers.h. Check against the real component on a bench.
 *
 * Conventions ESP-NN shares with TFLite Micro's reference kernels (and the esp-tflite-micro integration relies
 * on): offsets are TFLM's (input offsets are negated zero points, output offsets are zero points), shifts are
 * TFLM's signed exponents (negative: a right shift), multipliers Q0.31, tensors NHWC int8 of one batch, filters
 * [out_ch][h][w][in_ch] for CONV_2D and [1][h][w][out_ch] for DEPTHWISE_CONV_2D. */
#pragma once

#include <stdint.h>

#include "esp_nn_defs.h"

/* ADD of two same-shape tensors (no broadcasting), `size` elements. */
void esp_nn_add_elementwise_s8_ansi(const int8_t *input1_data,
                                    const int8_t *input2_data,
                                    const int32_t input1_offset,
                                    const int32_t input2_offset,
                                    const int32_t input1_mult,
                                    const int32_t input2_mult,
                                    const int32_t input1_shift,
                                    const int32_t input2_shift,
                                    const int32_t left_shift,
                                    int8_t *output,
                                    const int32_t out_offset,
                                    const int32_t out_mult,
                                    const int32_t out_shift,
                                    const int32_t activation_min,
                                    const int32_t activation_max,
                                    const int32_t size);

/* MUL of two same-shape tensors (no broadcasting). */
void esp_nn_mul_elementwise_s8_ansi(const int8_t *input1_data,
                                    const int8_t *input2_data,
                                    const int32_t input1_offset,
                                    const int32_t input2_offset,
                                    int8_t *output,
                                    const int32_t out_offset,
                                    const int32_t out_mult,
                                    const int32_t out_shift,
                                    const int32_t activation_min,
                                    const int32_t activation_max,
                                    const int32_t size);

/* DEPTHWISE_CONV_2D, one batch, per-channel quantization, no dilation. */
void esp_nn_depthwise_conv_s8_ansi(const data_dims_t *input_dims,
                                   const int8_t *input_data,
                                   const data_dims_t *filter_dims,
                                   const int8_t *filter_data,
                                   const int32_t *bias,
                                   const data_dims_t *output_dims,
                                   int8_t *out_data,
                                   const dw_conv_params_t *conv_params,
                                   const quant_data_t *quant_data);

/* CONV_2D, one batch, per-channel quantization, no dilation. */
void esp_nn_conv_s8_ansi(const data_dims_t *input_dims,
                         const int8_t *input_data,
                         const data_dims_t *filter_dims,
                         const int8_t *filter_data,
                         const int32_t *bias,
                         const data_dims_t *output_dims,
                         int8_t *out_data,
                         const conv_params_t *conv_params,
                         const quant_data_t *quant_data);

/* Scratch memory the convolutions need for these shapes (bytes), and where it is: set before each call. */
int esp_nn_get_conv_scratch_size_ansi(const data_dims_t *input_dims,
                                      const data_dims_t *filter_dims,
                                      const data_dims_t *output_dims,
                                      const conv_params_t *conv_params);
void esp_nn_set_conv_scratch_buf_ansi(const void *buf);

int esp_nn_get_depthwise_conv_scratch_size_ansi(const data_dims_t *input_dims,
                                                const data_dims_t *filter_dims,
                                                const data_dims_t *output_dims,
                                                const dw_conv_params_t *conv_params);
void esp_nn_set_depthwise_conv_scratch_buf_ansi(const void *buf);

/* RELU6 in place on a quantized tensor whose 6 is 6 (not used by the port: TFLM's RELU6 clamps at the quantized
 * 0 and 6 of the input scale). */
void esp_nn_relu6_s8_ansi(int8_t *data, uint16_t size);

/* AVERAGE_POOL_2D / MAX_POOL_2D, one batch; padding taps are left out (the average divides by the taps inside
 * the image and rounds half away from zero, as TFLM). */
void esp_nn_avg_pool_s8_ansi(const int8_t *input,
                             const uint16_t input_wd,
                             const uint16_t input_ht,
                             int8_t *output,
                             const uint16_t output_wd,
                             const uint16_t output_ht,
                             const uint16_t stride_wd,
                             const uint16_t stride_ht,
                             const uint16_t filter_wd,
                             const uint16_t filter_ht,
                             const uint16_t pad_wd,
                             const uint16_t pad_ht,
                             const int32_t activation_min,
                             const int32_t activation_max,
                             const uint16_t channels);

void esp_nn_max_pool_s8_ansi(const int8_t *input,
                             const uint16_t input_wd,
                             const uint16_t input_ht,
                             int8_t *output,
                             const uint16_t output_wd,
                             const uint16_t output_ht,
                             const uint16_t stride_wd,
                             const uint16_t stride_ht,
                             const uint16_t filter_wd,
                             const uint16_t filter_ht,
                             const uint16_t pad_wd,
                             const uint16_t pad_ht,
                             const int32_t activation_min,
                             const int32_t activation_max,
                             const uint16_t channels);

/* FULLY_CONNECTED, one batch row, per-tensor quantization. Note the order: out_shift BEFORE out_mult. */
void esp_nn_fully_connected_s8_ansi(const int8_t *input_data,
                                    const int32_t input_offset,
                                    const uint16_t row_len,
                                    const int8_t *filter_data,
                                    const int32_t filter_offset,
                                    const int32_t *bias,
                                    int8_t *out_data,
                                    const uint16_t out_channels,
                                    const int32_t out_offset,
                                    const int32_t out_shift,
                                    const int32_t out_mult,
                                    const int32_t activation_min,
                                    const int32_t activation_max);

/* FULLY_CONNECTED with per-output-channel shifts and multipliers: in newer esp-nn releases only (it came with
 * TFLM's per-channel FULLY_CONNECTED). The port calls it only with CONFIG_HIL_ESP_NN_FC_PER_CHANNEL=y (which
 * defines HIL_ESP_NN_FC_PER_CHANNEL); check that the component in use has it before enabling that. */
void esp_nn_fully_connected_per_ch_s8_ansi(const int8_t *input_data,
                                           const int32_t input_offset,
                                           const uint16_t row_len,
                                           const int8_t *filter_data,
                                           const int32_t filter_offset,
                                           const int32_t *bias,
                                           int8_t *out_data,
                                           const uint16_t out_channels,
                                           const int32_t out_offset,
                                           const int32_t *out_shift,
                                           const int32_t *out_mult,
                                           const int32_t activation_min,
                                           const int32_t activation_max);

/* SOFTMAX int8 -> int8 over rows of `width` values, `height` rows; mult / shift / diff_min as TFLM's Prepare
 * computes them (input_multiplier, input_left_shift, diff_min). The _opt variant needs a scratch buffer. */
int32_t esp_nn_get_softmax_scratch_size_ansi(const int32_t width, const int32_t height);
int32_t esp_nn_get_softmax_scratch_size_opt(const int32_t width, const int32_t height);
void esp_nn_set_softmax_scratch_buf_ansi(void *buffer);
void esp_nn_set_softmax_scratch_buf_opt(void *buffer);
void esp_nn_softmax_s8_ansi(const int8_t *input_data,
                            const int32_t height,
                            const int32_t width,
                            const int32_t mult,
                            const int32_t shift,
                            const int32_t diff_min,
                            int8_t *output_data);
void esp_nn_softmax_s8_opt(const int8_t *input_data,
                           const int32_t height,
                           const int32_t width,
                           const int32_t mult,
                           const int32_t shift,
                           const int32_t diff_min,
                           int8_t *output_data);
