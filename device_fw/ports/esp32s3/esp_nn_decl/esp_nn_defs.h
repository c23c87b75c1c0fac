/* DECLARATIONS ONLY, for type-checking the ESP32-S3 port's ESP-NN dispatch on a host without ESP-IDF.
 *
 * Written from Espressif's esp-nn repository (github.com/espressif/esp-nn, Apache-2.0), include/esp_nn_defs.h,
 * following the API of esp-nn v1.1.x (the `espressif/esp-nn` managed component, main/idf_component.yml). It is
 * NOT a copy of the real header and no ESP-NN code is here: the device build never sees this directory (ESP-IDF
 * puts the real component's include/ on the path). Check it against the real component on a bench: a field
 * order or a parameter type that differs there makes the device build fail (or, for a swapped field of the
 * same type, the bit-exact check fail) and this file must follow the real one. */
#pragma once

#include <stdint.h>

/* Dimensions of an input, output or filter tensor. `extra` is the batch (1) for activations; the integration
 * in Espressif's esp-tflite-micro passes {width, height, 0, 0} for filters. */
typedef struct data_dims {
    int32_t width;
    int32_t height;
    int32_t channels;
    int32_t extra;
} data_dims_t;

/* A (width, height) pair: strides, paddings, dilations. */
typedef struct data_2d {
    int32_t width;
    int32_t height;
} data_2d_t;

/* Clamp range of the fused activation, in the output's quantized values. */
typedef struct act_params {
    int32_t min;
    int32_t max;
} act_params_t;

/* Per output channel requantization: as many shifts and multipliers as output channels. Not const in ESP-NN,
 * although no kernel writes them. */
typedef struct quant_data {
    int32_t *shift;
    int32_t *mult;
} quant_data_t;

/* CONV_2D. in_offset is TFLM's input_offset (the negated input zero point, added to each input), out_offset
 * the output zero point. padding is the top/left padding. */
typedef struct conv_params {
    int32_t in_offset;
    int32_t out_offset;
    data_2d_t stride;
    data_2d_t padding;
    data_2d_t dilation; /* not implemented by ESP-NN: callers use it only with dilation 1 */
    act_params_t activation;
} conv_params_t;

/* DEPTHWISE_CONV_2D: as conv_params_t, with the channel multiplier (in_ch * ch_mult = out_ch). */
typedef struct dw_conv_params {
    int32_t in_offset;
    int32_t out_offset;
    int32_t ch_mult;
    data_2d_t stride;
    data_2d_t padding;
    data_2d_t dilation; /* not implemented by ESP-NN */
    act_params_t activation;
} dw_conv_params_t;
