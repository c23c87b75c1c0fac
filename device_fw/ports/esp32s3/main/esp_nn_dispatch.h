/* ESP-NN dispatch of the ESP32-S3 port (esp_nn_dispatch.c): what ran where, for the bench.
 *
 * Built only with CONFIG_HIL_USE_ESP_NN=y (which defines HIL_USE_ESP_NN for the whole `main` component). The
 * dispatch defines the generic kernel entry points the generated model calls (hil_conv_2d, ...), and each call
 * goes to ESP-NN or to the portable kernel (hil_conv_2d_portable, ...). These counters say which, per op. */
#ifndef HIL_ESP_NN_DISPATCH_H
#define HIL_ESP_NN_DISPATCH_H

#include <stdint.h>

#include "hil_kernels.h"

/* The generic entry points this file defines (hil_kernels.h declares them too when HIL_USE_ESP_NN is defined;
 * a second, identical declaration is harmless and keeps this file self-contained). */
void hil_conv_2d(const hil_conv_2d_params_t *p, const int8_t *input, int8_t *output);
void hil_depthwise_conv_2d(const hil_depthwise_conv_2d_params_t *p, const int8_t *input, int8_t *output);
void hil_fully_connected(const hil_fully_connected_params_t *p, const int8_t *input, int8_t *output);
void hil_add(const hil_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output);
void hil_average_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
void hil_max_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output);
void hil_softmax(const hil_softmax_params_t *p, const int8_t *input, int8_t *output);

/* The ops the dispatch covers (index into the counters below). */
enum {
    HIL_ESP_NN_CONV_2D = 0,
    HIL_ESP_NN_DEPTHWISE_CONV_2D,
    HIL_ESP_NN_FULLY_CONNECTED,
    HIL_ESP_NN_ADD,
    HIL_ESP_NN_AVERAGE_POOL_2D,
    HIL_ESP_NN_MAX_POOL_2D,
    HIL_ESP_NN_SOFTMAX,
    HIL_ESP_NN_N_OPS
};

/* Why a call went to the portable kernel (the last reason per op is kept). */
enum {
    HIL_ESP_NN_OK = 0,           /* ran on ESP-NN */
    HIL_ESP_NN_NO_DILATION,      /* dilation != 1: ESP-NN has no dilated convolutions */
    HIL_ESP_NN_NO_BIAS,          /* no bias tensor: that every ESP-NN kernel takes a NULL bias is unverified */
    HIL_ESP_NN_RANGE,            /* a size or parameter outside what ESP-NN's parameter types hold */
    HIL_ESP_NN_PER_CHANNEL,      /* per-channel FULLY_CONNECTED without CONFIG_HIL_ESP_NN_FC_PER_CHANNEL */
    HIL_ESP_NN_BROADCAST,        /* ADD with broadcasting: ESP-NN adds same-shape tensors only */
    HIL_ESP_NN_SCRATCH,          /* ESP-NN asked for more scratch than CONFIG_HIL_ESP_NN_SCRATCH_BYTES */
    HIL_ESP_NN_SOFTMAX_DEPTH     /* SOFTMAX rows of 512+ values: where TFLM stops on an assertion */
};

typedef struct {
    uint32_t esp_nn_calls[HIL_ESP_NN_N_OPS];
    uint32_t portable_calls[HIL_ESP_NN_N_OPS];
    uint8_t last_fallback[HIL_ESP_NN_N_OPS]; /* HIL_ESP_NN_* reason of the latest portable call, 0 if none */
    uint32_t scratch_bytes;                  /* size of the static scratch area */
    uint32_t scratch_needed_max;             /* the most any ESP-NN call asked for, including refused ones */
    uint32_t scratch_fallbacks;              /* calls sent to the portable kernel for lack of scratch */
} hil_esp_nn_stats_t;

/* Counters since boot (or the last reset). Read and reset from the task that runs the model. */
const hil_esp_nn_stats_t *hil_esp_nn_stats(void);
void hil_esp_nn_stats_reset(void);

#endif
