/* DECLARATIONS ONLY, for type-checking device_fw/ports/esp32s3/main/esp_nn_dispatch.c on a host without
 * ESP-IDF (tests/test_esp_nn_dispatch.py). Follows esp-nn v1.1.x (github.com/espressif/esp-nn, Apache-2.0),
 * include/esp_nn.h: the generic names (esp_nn_conv_s8, ...) map to the ESP32-S3 kernels when the component is
 * built with CONFIG_NN_OPTIMIZED for an ESP32-S3, and to the portable C ("ansi") kernels otherwise. No ESP-NN
 * code is here and the firmware never includes this directory: on the device the real component's headers are
 * used. To be checked against the real component on a bench (see README.md next to this file). */
#pragma once

#if defined(CONFIG_NN_OPTIMIZED)
#ifdef CONFIG_IDF_TARGET_ESP32S3
#define ARCH_ESP32_S3 1
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

#include "esp_nn_defs.h"
/* reference kernels, always declared */
#include "esp_nn_ansi_headers.h"

#if defined(CONFIG_NN_OPTIMIZED) && defined(ARCH_ESP32_S3)
#include "esp_nn_esp32s3.h"
#elif defined(CONFIG_NN_OPTIMIZED)
#error "declarations-only esp_nn.h: only the ESP32-S3 optimized kernels and the ansi kernels are declared"
#else
#include "esp_nn_ansi_c.h"
#endif

#ifdef __cplusplus
}
#endif
