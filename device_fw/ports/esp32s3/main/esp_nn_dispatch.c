/* ESP-NN dispatch of the ESP32-S3 port: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, ADD, AVERAGE_POOL_2D,
 * MAX_POOL_2D and SOFTMAX (int8) on Espressif's ESP-NN kernels, everything ESP-NN does not cover on the
 * portable kernels of device_fw/core/kernels.
 *
 * Built only with CONFIG_HIL_USE_ESP_NN=y. main/CMakeLists.txt then defines HIL_USE_ESP_NN for the whole
 * component: hil_kernels.h names the portable kernels of these ops HIL_PORTABLE(hil_conv_2d) (=
 * hil_conv_2d_portable, ...), the generated model keeps calling the generic names, and this file defines the
 * generic names. Each function checks the params struct against what ESP-NN supports; when it does, it maps
 * the struct onto ESP-NN's arguments the way Espressif's esp-tflite-micro integration does (TFLM's Prepare
 * values passed through unchanged: ESP-NN takes TFLM's offset, shift and multiplier conventions), else it calls
 * the portable kernel. Either way the result is meant to be TFLM's, bit for bit: ESP-NN's int8 kernels are
 * written to match TFLM's reference kernels, and the board's bit-exact check (README.md, "ESP-NN") is what
 * proves it for a given ESP-NN version.
 *
 * Falls back to the portable kernel (reason in esp_nn_dispatch.h, counted in hil_esp_nn_stats()):
 * - CONV_2D / DEPTHWISE_CONV_2D with dilation != 1 (ESP-NN has none), without a bias tensor, with a size that
 *   does not fit ESP-NN's 16-bit dimensions, or needing more scratch than the static area holds;
 * - FULLY_CONNECTED without bias, with rows or outputs above 65535, or with per-channel requantization
 *   (different multipliers or shifts per output) unless CONFIG_HIL_ESP_NN_FC_PER_CHANNEL=y: the per-tensor
 *   esp_nn_fully_connected_s8 takes one multiplier and shift; per-tensor models repeat theirs per output;
 * - ADD with broadcasting (ESP-NN adds same-shape tensors only);
 * - pooling with a size or padding above 65535 (uint16_t parameters);
 * - SOFTMAX rows of 512 or more values (the portable kernel defines the result where TFLM asserts), or too
 *   little scratch.
 * The 16x8 kernels (hil_conv_2d_16x8, ...) and every other op are not touched: they are portable only, and
 * ESP-NN has no int16-activation kernels.
 *
 * ESP-NN processes one batch per call; batches are looped here, as esp-tflite-micro does. */
#ifndef HIL_USE_ESP_NN
#error "esp_nn_dispatch.c belongs to builds with HIL_USE_ESP_NN (CONFIG_HIL_USE_ESP_NN=y)"
#endif

#include <stddef.h>
#include <stdint.h>

#include "esp_nn.h"
#include "esp_nn_dispatch.h"
#include "hil_kernels.h"

#ifndef HIL_PORTABLE
#error "hil_kernels.h does not define HIL_PORTABLE(name): the portable kernels cannot be told from the dispatch"
#endif

/* One static area for every ESP-NN call (the ops run one after another). Its size is
 * CONFIG_HIL_ESP_NN_SCRATCH_BYTES, passed as HIL_ESP_NN_SCRATCH_BYTES by main/CMakeLists.txt; a call that
 * needs more runs on the portable kernel, and hil_esp_nn_stats() says how much it wanted. 16-byte aligned for
 * ESP-NN's 128-bit vector loads. */
#ifndef HIL_ESP_NN_SCRATCH_BYTES
#define HIL_ESP_NN_SCRATCH_BYTES (64 * 1024)
#endif

#if defined(__GNUC__) || defined(__clang__)
#define HIL_SCRATCH_ALIGN __attribute__((aligned(16)))
#else
#error "esp_nn_dispatch.c needs a compiler extension to align the scratch area to 16 bytes"
#endif

static int8_t s_scratch[HIL_ESP_NN_SCRATCH_BYTES] HIL_SCRATCH_ALIGN;
static hil_esp_nn_stats_t s_stats = {{0}, {0}, {0}, HIL_ESP_NN_SCRATCH_BYTES, 0, 0};

const hil_esp_nn_stats_t *hil_esp_nn_stats(void)
{
    return &s_stats;
}

void hil_esp_nn_stats_reset(void)
{
    int i;
    for (i = 0; i < HIL_ESP_NN_N_OPS; ++i) {
        s_stats.esp_nn_calls[i] = 0;
        s_stats.portable_calls[i] = 0;
        s_stats.last_fallback[i] = HIL_ESP_NN_OK;
    }
    s_stats.scratch_needed_max = 0;
    s_stats.scratch_fallbacks = 0;
}

/* 0 when a call may go to ESP-NN, else the reason it may not. */
static int note(int op, int reason)
{
    if (reason == HIL_ESP_NN_OK) {
        s_stats.esp_nn_calls[op]++;
    } else {
        s_stats.portable_calls[op]++;
        s_stats.last_fallback[op] = (uint8_t)reason;
        if (reason == HIL_ESP_NN_SCRATCH) {
            s_stats.scratch_fallbacks++;
        }
    }
    return reason;
}

/* Whether `needed` bytes of scratch (an ESP-NN get_*_scratch_size result) fit the static area. */
static int scratch_check(int32_t needed)
{
    if (needed < 0) {
        return HIL_ESP_NN_RANGE;
    }
    if ((uint32_t)needed > s_stats.scratch_needed_max) {
        s_stats.scratch_needed_max = (uint32_t)needed;
    }
    return (uint32_t)needed <= (uint32_t)sizeof s_scratch ? HIL_ESP_NN_OK : HIL_ESP_NN_SCRATCH;
}

/* ESP-NN keeps sizes, strides and paddings in uint16_t (pooling's parameters, the convolutions' internals). */
static int fits_u16(int32_t v)
{
    return v >= 0 && v <= 65535;
}

/* ESP-NN's quant_data_t points at non-const arrays; it only reads them. */
static int32_t *unconst(const int32_t *p)
{
    return (int32_t *)(uintptr_t)p;
}

/* ---- CONV_2D --------------------------------------------------------------------------------------------- */

static int conv_supported(const hil_conv_2d_params_t *p)
{
    if (p->dilation_h != 1 || p->dilation_w != 1) {
        return HIL_ESP_NN_NO_DILATION;
    }
    if (p->bias == NULL) {
        return HIL_ESP_NN_NO_BIAS;
    }
    if (!fits_u16(p->input_h) || !fits_u16(p->input_w) || !fits_u16(p->input_c) || !fits_u16(p->output_h) ||
        !fits_u16(p->output_w) || !fits_u16(p->output_c) || !fits_u16(p->filter_h) || !fits_u16(p->filter_w) ||
        !fits_u16(p->stride_h) || !fits_u16(p->stride_w) || !fits_u16(p->pad_h) || !fits_u16(p->pad_w) ||
        p->batches < 0) {
        return HIL_ESP_NN_RANGE;
    }
    return HIL_ESP_NN_OK;
}

void hil_conv_2d(const hil_conv_2d_params_t *p, const int8_t *input, int8_t *output)
{
    int reason = conv_supported(p);
    /* As esp-tflite-micro's conv.cc: activations {w, h, c, batch 1}, the filter {w, h, 0, 0}. */
    const data_dims_t input_dims = {p->input_w, p->input_h, p->input_c, 1};
    const data_dims_t filter_dims = {p->filter_w, p->filter_h, 0, 0};
    const data_dims_t output_dims = {p->output_w, p->output_h, p->output_c, 1};
    const conv_params_t conv_params = {
        p->input_offset,             /* in_offset: TFLM's input_offset, -input zero point */
        p->output_offset,            /* out_offset: the output zero point */
        {p->stride_w, p->stride_h},  /* stride {width, height} */
        {p->pad_w, p->pad_h},        /* padding: left, top */
        {1, 1},                      /* dilation (1 only, checked above) */
        {p->act_min, p->act_max},    /* activation {min, max} */
    };
    const quant_data_t quant_data = {unconst(p->output_shift), unconst(p->output_multiplier)};
    if (reason == HIL_ESP_NN_OK) {
        reason = scratch_check(esp_nn_get_conv_scratch_size(&input_dims, &filter_dims, &output_dims, &conv_params));
    }
    if (note(HIL_ESP_NN_CONV_2D, reason) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_conv_2d)(p, input, output);
        return;
    }
    {
        const int32_t in_size = p->input_h * p->input_w * p->input_c;
        const int32_t out_size = p->output_h * p->output_w * p->output_c;
        int32_t b;
        esp_nn_set_conv_scratch_buf(s_scratch);
        for (b = 0; b < p->batches; ++b) {
            esp_nn_conv_s8(&input_dims, input + b * in_size, &filter_dims, p->filter, p->bias, &output_dims,
                           output + b * out_size, &conv_params, &quant_data);
        }
    }
}

/* ---- DEPTHWISE_CONV_2D ----------------------------------------------------------------------------------- */

static int depthwise_supported(const hil_depthwise_conv_2d_params_t *p)
{
    if (p->dilation_h != 1 || p->dilation_w != 1) {
        return HIL_ESP_NN_NO_DILATION;
    }
    if (p->bias == NULL) {
        return HIL_ESP_NN_NO_BIAS;
    }
    if (!fits_u16(p->input_h) || !fits_u16(p->input_w) || !fits_u16(p->input_c) || !fits_u16(p->output_h) ||
        !fits_u16(p->output_w) || !fits_u16(p->output_c) || !fits_u16(p->filter_h) || !fits_u16(p->filter_w) ||
        !fits_u16(p->stride_h) || !fits_u16(p->stride_w) || !fits_u16(p->pad_h) || !fits_u16(p->pad_w) ||
        !fits_u16(p->depth_multiplier) || p->batches < 0) {
        return HIL_ESP_NN_RANGE;
    }
    return HIL_ESP_NN_OK;
}

void hil_depthwise_conv_2d(const hil_depthwise_conv_2d_params_t *p, const int8_t *input, int8_t *output)
{
    int reason = depthwise_supported(p);
    const data_dims_t input_dims = {p->input_w, p->input_h, p->input_c, 1};
    const data_dims_t filter_dims = {p->filter_w, p->filter_h, 0, 0};
    const data_dims_t output_dims = {p->output_w, p->output_h, p->output_c, 1};
    const dw_conv_params_t conv_params = {
        p->input_offset,             /* in_offset */
        p->output_offset,            /* out_offset */
        p->depth_multiplier,         /* ch_mult: output_c = input_c * ch_mult */
        {p->stride_w, p->stride_h},  /* stride */
        {p->pad_w, p->pad_h},        /* padding */
        {1, 1},                      /* dilation */
        {p->act_min, p->act_max},    /* activation */
    };
    const quant_data_t quant_data = {unconst(p->output_shift), unconst(p->output_multiplier)};
    if (reason == HIL_ESP_NN_OK) {
        reason = scratch_check(
            esp_nn_get_depthwise_conv_scratch_size(&input_dims, &filter_dims, &output_dims, &conv_params));
    }
    if (note(HIL_ESP_NN_DEPTHWISE_CONV_2D, reason) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_depthwise_conv_2d)(p, input, output);
        return;
    }
    {
        const int32_t in_size = p->input_h * p->input_w * p->input_c;
        const int32_t out_size = p->output_h * p->output_w * p->output_c;
        int32_t b;
        esp_nn_set_depthwise_conv_scratch_buf(s_scratch);
        for (b = 0; b < p->batches; ++b) {
            esp_nn_depthwise_conv_s8(&input_dims, input + b * in_size, &filter_dims, p->filter, p->bias,
                                     &output_dims, output + b * out_size, &conv_params, &quant_data);
        }
    }
}

/* ---- FULLY_CONNECTED ------------------------------------------------------------------------------------- */

/* One multiplier and shift for every output: a per-tensor model (the compiler repeats its one value). */
static int fc_per_tensor(const hil_fully_connected_params_t *p)
{
    int32_t o;
    for (o = 1; o < p->output_depth; ++o) {
        if (p->output_multiplier[o] != p->output_multiplier[0] || p->output_shift[o] != p->output_shift[0]) {
            return 0;
        }
    }
    return 1;
}

static int fc_supported(const hil_fully_connected_params_t *p, int per_tensor)
{
    if (p->bias == NULL) {
        return HIL_ESP_NN_NO_BIAS;
    }
    if (!fits_u16(p->accum_depth) || !fits_u16(p->output_depth) || p->output_depth < 1 || p->batches < 0) {
        return HIL_ESP_NN_RANGE;
    }
#ifndef HIL_ESP_NN_FC_PER_CHANNEL
    if (!per_tensor) {
        return HIL_ESP_NN_PER_CHANNEL;
    }
#else
    (void)per_tensor;
#endif
    return HIL_ESP_NN_OK;
}

void hil_fully_connected(const hil_fully_connected_params_t *p, const int8_t *input, int8_t *output)
{
    const int per_tensor = p->output_depth >= 1 && fc_per_tensor(p);
    int32_t b;
    if (note(HIL_ESP_NN_FULLY_CONNECTED, fc_supported(p, per_tensor)) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_fully_connected)(p, input, output);
        return;
    }
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in_row = input + b * p->accum_depth;
        int8_t *out_row = output + b * p->output_depth;
        if (per_tensor) {
            /* esp-tflite-micro's order: ..., out_offset, out_shift, out_mult, act_min, act_max. The filter's
             * zero point is 0 (TFLM requires it for int8 weights), so filter_offset is 0. */
            esp_nn_fully_connected_s8(in_row, p->input_offset, (uint16_t)p->accum_depth, p->filter, 0, p->bias,
                                      out_row, (uint16_t)p->output_depth, p->output_offset, p->output_shift[0],
                                      p->output_multiplier[0], p->act_min, p->act_max);
        }
#ifdef HIL_ESP_NN_FC_PER_CHANNEL
        else {
            esp_nn_fully_connected_per_ch_s8(in_row, p->input_offset, (uint16_t)p->accum_depth, p->filter, 0,
                                             p->bias, out_row, (uint16_t)p->output_depth, p->output_offset,
                                             p->output_shift, p->output_multiplier, p->act_min, p->act_max);
        }
#endif
    }
}

/* ---- ADD ------------------------------------------------------------------------------------------------- */

/* An input that is stored densely in the output's shape: no broadcasting along any dimension. */
static int add_dense(const int32_t dims[4], const int32_t strides[4])
{
    int32_t expected = 1;
    int i;
    for (i = 3; i >= 0; --i) {
        if (dims[i] > 1 && strides[i] != expected) {
            return 0;
        }
        expected *= dims[i];
    }
    return 1;
}

void hil_add(const hil_add_params_t *p, const int8_t *input1, const int8_t *input2, int8_t *output)
{
    int reason = HIL_ESP_NN_OK;
    if (!add_dense(p->dims, p->input1_strides) || !add_dense(p->dims, p->input2_strides)) {
        reason = HIL_ESP_NN_BROADCAST;
    } else if (p->dims[0] < 0 || p->dims[1] < 0 || p->dims[2] < 0 || p->dims[3] < 0) {
        reason = HIL_ESP_NN_RANGE;
    }
    if (note(HIL_ESP_NN_ADD, reason) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_add)(p, input1, input2, output);
        return;
    }
    /* esp-tflite-micro's add.cc passes TFLM's OpData as it is: offsets, multipliers, shifts (<= 0: right
     * shifts), left_shift 20, then the output's, the clamp range and the element count. The arena plan may run
     * ADD in place (output == input1, hil_kernels.h); an elementwise kernel reads each element before it writes
     * that index, ESP-NN's vector loop block by block: the bench's bit-exact run on a residual model (ResNet-8)
     * is what confirms it. */
    esp_nn_add_elementwise_s8(input1, input2, p->input1_offset, p->input2_offset, p->input1_multiplier,
                              p->input2_multiplier, p->input1_shift, p->input2_shift, p->left_shift, output,
                              p->output_offset, p->output_multiplier, p->output_shift, p->act_min, p->act_max,
                              p->dims[0] * p->dims[1] * p->dims[2] * p->dims[3]);
}

/* ---- AVERAGE_POOL_2D / MAX_POOL_2D ----------------------------------------------------------------------- */

static int pool_supported(const hil_pool_params_t *p)
{
    if (!fits_u16(p->input_h) || !fits_u16(p->input_w) || !fits_u16(p->channels) || !fits_u16(p->output_h) ||
        !fits_u16(p->output_w) || !fits_u16(p->filter_h) || !fits_u16(p->filter_w) || !fits_u16(p->stride_h) ||
        !fits_u16(p->stride_w) || !fits_u16(p->pad_h) || !fits_u16(p->pad_w) || p->batches < 0) {
        return HIL_ESP_NN_RANGE;
    }
    return HIL_ESP_NN_OK;
}

void hil_average_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t in_size = p->input_h * p->input_w * p->channels;
    const int32_t out_size = p->output_h * p->output_w * p->channels;
    int32_t b;
    if (note(HIL_ESP_NN_AVERAGE_POOL_2D, pool_supported(p)) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_average_pool_2d)(p, input, output);
        return;
    }
    for (b = 0; b < p->batches; ++b) {
        esp_nn_avg_pool_s8(input + b * in_size, (uint16_t)p->input_w, (uint16_t)p->input_h, output + b * out_size,
                           (uint16_t)p->output_w, (uint16_t)p->output_h, (uint16_t)p->stride_w,
                           (uint16_t)p->stride_h, (uint16_t)p->filter_w, (uint16_t)p->filter_h, (uint16_t)p->pad_w,
                           (uint16_t)p->pad_h, p->act_min, p->act_max, (uint16_t)p->channels);
    }
}

void hil_max_pool_2d(const hil_pool_params_t *p, const int8_t *input, int8_t *output)
{
    const int32_t in_size = p->input_h * p->input_w * p->channels;
    const int32_t out_size = p->output_h * p->output_w * p->channels;
    int32_t b;
    if (note(HIL_ESP_NN_MAX_POOL_2D, pool_supported(p)) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_max_pool_2d)(p, input, output);
        return;
    }
    for (b = 0; b < p->batches; ++b) {
        esp_nn_max_pool_s8(input + b * in_size, (uint16_t)p->input_w, (uint16_t)p->input_h, output + b * out_size,
                           (uint16_t)p->output_w, (uint16_t)p->output_h, (uint16_t)p->stride_w,
                           (uint16_t)p->stride_h, (uint16_t)p->filter_w, (uint16_t)p->filter_h, (uint16_t)p->pad_w,
                           (uint16_t)p->pad_h, p->act_min, p->act_max, (uint16_t)p->channels);
    }
}

/* ---- SOFTMAX (int8; hil_softmax_i16 stays portable) ------------------------------------------------------ */

void hil_softmax(const hil_softmax_params_t *p, const int8_t *input, int8_t *output)
{
    int reason = HIL_ESP_NN_OK;
    if (p->depth >= 512) {
        reason = HIL_ESP_NN_SOFTMAX_DEPTH;
    } else if (p->depth < 1 || p->outer < 0 || p->input_left_shift < 0) {
        reason = HIL_ESP_NN_RANGE;
    } else {
        /* esp-tflite-micro: scratch for (width = depth, height = outer) */
        reason = scratch_check(esp_nn_get_softmax_scratch_size(p->depth, p->outer));
    }
    if (note(HIL_ESP_NN_SOFTMAX, reason) != HIL_ESP_NN_OK) {
        HIL_PORTABLE(hil_softmax)(p, input, output);
        return;
    }
    esp_nn_set_softmax_scratch_buf(s_scratch);
    /* (input, height = rows, width = depth, input_multiplier, input_left_shift, diff_min, output) */
    esp_nn_softmax_s8(input, p->outer, p->depth, p->input_multiplier, p->input_left_shift, p->diff_min, output);
}
