"""The ESP32-S3 port's ESP-NN dispatch (device_fw/ports/esp32s3/main/esp_nn_dispatch.c), checked on the host.

ESP-IDF and ESP-NN are not installed here, so the dispatch is compiled against the declarations-only ESP-NN
headers (device_fw/ports/esp32s3/esp_nn_decl/, esp-nn v1.1.x API):

- the declarations type-check: a correct call compiles, calls with a wrong argument type, a missing argument or
  the wrong params struct do not (-Werror);
- the dispatch compiles with the firmware's strict flags for the portable and the ESP32-S3 mapping of ESP-NN's
  generic names, with and without the per-channel FULLY_CONNECTED, and a deliberately broken call in it fails;
- linked against a fake ESP-NN written here, which records every argument and computes the result with the
  portable kernels from a params struct rebuilt out of ESP-NN's arguments alone, each op's cases check which
  path the dispatch took (ESP-NN or the portable fallback, and why), every mapped field against the params
  struct, and that dispatch and portable kernel give the same bytes;
- compiled models (one op each, and the TensorFlow-converted MLPerf Tiny models) run through dispatch + fake
  ESP-NN bit-exact with TFLite Micro.

What this cannot show is that the real ESP-NN computes what TFLM computes: that is the bit-exact check on a board
(device_fw/ports/esp32s3/README.md, "ESP-NN").

The dispatch needs the `*_portable` kernel names that hil_kernels.h declares through HIL_PORTABLE(name) when
HIL_USE_ESP_NN is defined; the tests that compile it skip, saying so, while hil_kernels.h has no HIL_PORTABLE.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil import paths

ESP32S3 = paths.DEVICE_FW / "ports" / "esp32s3"
DISPATCH_C = ESP32S3 / "main" / "esp_nn_dispatch.c"
DECL = ESP32S3 / "esp_nn_decl"
INCLUDE = paths.DEVICE_FW / "core" / "include"
KERNELS = paths.DEVICE_FW / "core" / "kernels"
RUN_MODEL_MAIN = paths.DEVICE_FW / "tests" / "run_model_main.c"
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror"]
SCRATCH_BYTES = 4096  # HIL_ESP_NN_SCRATCH_BYTES of the host builds: small, so that the fallback can be provoked

VARIANTS = {
    "ansi": [],
    "esp32s3": ["-DCONFIG_NN_OPTIMIZED", "-DCONFIG_IDF_TARGET_ESP32S3"],
    "fc-per-channel": ["-DHIL_ESP_NN_FC_PER_CHANNEL"],
}


def _cc() -> str:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        pytest.skip(f"C compiler '{cc}' not found")
    return cc


def _portable_missing() -> str | None:
    header = (INCLUDE / "hil_kernels.h").read_text()
    if "HIL_PORTABLE" not in header:
        return (
            "device_fw/core/include/hil_kernels.h has no HIL_PORTABLE(name) yet: the dispatch calls the portable "
            "kernels as HIL_PORTABLE(hil_conv_2d) (hil_conv_2d_portable with HIL_USE_ESP_NN), which the kernel "
            "rewrite adds"
        )
    return None


needs_portable = pytest.mark.skipif(_portable_missing() is not None, reason=str(_portable_missing()))


def _compile(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_cc(), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _must(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout}{proc.stderr}"


# --------------------------------------------------------------------------------------------------------
# The declarations type-check (no hil_kernels.h needed)

_SNIPPET_HEAD = """
#include <stdint.h>
#include "esp_nn.h"
static int8_t in[64], out[64], filt[64];
static int32_t bias[4], shift[4], mult[4];
void use(void);
void use(void) {
    const data_dims_t dims = {4, 4, 2, 1}, fdims = {1, 1, 0, 0}, odims = {4, 4, 4, 1};
    const conv_params_t cp = {0, 0, {1, 1}, {0, 0}, {1, 1}, {-128, 127}};
    const dw_conv_params_t dp = {0, 0, 2, {1, 1}, {0, 0}, {1, 1}, {-128, 127}};
    const quant_data_t q = {shift, mult};
    (void)dims; (void)fdims; (void)odims; (void)cp; (void)dp; (void)q;
"""

_GOOD_CALLS = """
    esp_nn_set_conv_scratch_buf(in);
    (void)esp_nn_get_conv_scratch_size(&dims, &fdims, &odims, &cp);
    esp_nn_conv_s8(&dims, in, &fdims, filt, bias, &odims, out, &cp, &q);
    esp_nn_depthwise_conv_s8(&dims, in, &fdims, filt, bias, &odims, out, &dp, &q);
    esp_nn_fully_connected_s8(in, 0, 16, filt, 0, bias, out, 4, 0, -8, 1 << 30, -128, 127);
    esp_nn_add_elementwise_s8(in, in, 0, 0, 1 << 30, 1 << 30, -1, -1, 20, out, 0, 1 << 30, -20, -128, 127, 64);
    esp_nn_avg_pool_s8(in, 4, 4, out, 2, 2, 2, 2, 2, 2, 0, 0, -128, 127, 2);
    esp_nn_max_pool_s8(in, 4, 4, out, 2, 2, 2, 2, 2, 2, 0, 0, -128, 127, 2);
    esp_nn_set_softmax_scratch_buf(out);
    (void)esp_nn_get_softmax_scratch_size(10, 1);
    esp_nn_softmax_s8(in, 1, 10, 1 << 30, 20, -100, out);
"""

WRONG_CALLS = {
    "conv-with-depthwise-params": "esp_nn_conv_s8(&dims, in, &fdims, filt, bias, &odims, out, &dp, &q);",
    "conv-filter-and-bias-swapped": "esp_nn_conv_s8(&dims, in, &fdims, bias, filt, &odims, out, &cp, &q);",
    "conv-missing-quant": "esp_nn_conv_s8(&dims, in, &fdims, filt, bias, &odims, out, &cp);",
    "depthwise-quant-by-value": "esp_nn_depthwise_conv_s8(&dims, in, &fdims, filt, bias, &odims, out, &dp, q);",
    "fc-shift-array-to-per-tensor":
        "esp_nn_fully_connected_s8(in, 0, 16, filt, 0, bias, out, 4, 0, shift, mult[0], -128, 127);",
    "add-const-output":
        "esp_nn_add_elementwise_s8(in, in, 0, 0, 1, 1, -1, -1, 20, (const int8_t *)out, 0, 1, -20, -128, 127, 64);",
    "pool-dims-struct": "esp_nn_avg_pool_s8(in, &dims, 4, out, 2, 2, 2, 2, 2, 2, 0, 0, -128, 127, 2);",
    "softmax-int32-input": "esp_nn_softmax_s8(bias, 1, 10, 1 << 30, 20, -100, out);",
}  # fmt: skip


def _snippet(tmp_path: Path, body: str, variant: str = "ansi") -> subprocess.CompletedProcess[str]:
    src = tmp_path / "snippet.c"
    src.write_text(_SNIPPET_HEAD + body + "\n}\n")
    return _compile([*STRICT, *VARIANTS[variant], "-I", str(DECL), "-fsyntax-only", str(src)])


@pytest.mark.parametrize("variant", ["ansi", "esp32s3"])
def test_declarations_accept_the_calls_the_dispatch_makes(variant: str, tmp_path: Path) -> None:
    _must(_snippet(tmp_path, _GOOD_CALLS, variant))


@pytest.mark.parametrize("case", sorted(WRONG_CALLS))
def test_declarations_reject_a_wrong_argument(case: str, tmp_path: Path) -> None:
    proc = _snippet(tmp_path, WRONG_CALLS[case])
    assert proc.returncode != 0, f"{case} compiled: the declarations do not type-check it"
    assert "snippet.c" in proc.stderr and ("error" in proc.stderr), proc.stderr


# --------------------------------------------------------------------------------------------------------
# The dispatch compiles against the declarations


def _dispatch_args(variant: str) -> list[str]:
    return [
        *STRICT,
        "-DHIL_USE_ESP_NN",
        f"-DHIL_ESP_NN_SCRATCH_BYTES={SCRATCH_BYTES}",
        *VARIANTS[variant],
        "-I",
        str(INCLUDE),
        "-I",
        str(DECL),
    ]


@needs_portable
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dispatch_compiles_against_the_declarations(variant: str) -> None:
    # -Wcast-qual, -Wconversion, -Wmissing-prototypes on top: ESP-IDF projects may enable them.
    extra = ["-Wcast-qual", "-Wconversion", "-Wmissing-prototypes", "-Wshadow"]
    _must(_compile([*_dispatch_args(variant), *extra, "-fsyntax-only", str(DISPATCH_C)]))


@needs_portable
def test_dispatch_with_a_broken_call_fails_to_compile(tmp_path: Path) -> None:
    """The same file with the filter and bias of the ESP-NN CONV_2D call swapped must not compile."""
    source = DISPATCH_C.read_text()
    good = "&filter_dims, p->filter, p->bias, &output_dims,\n                           output + b * out_size"
    assert good in source, "the CONV_2D call changed: update this test"
    broken = tmp_path / "esp_nn_dispatch.c"
    shutil.copy(DISPATCH_C.with_name("esp_nn_dispatch.h"), tmp_path / "esp_nn_dispatch.h")
    broken.write_text(source.replace(good, good.replace("p->filter, p->bias", "p->bias, p->filter")))
    proc = _compile([*_dispatch_args("ansi"), "-fsyntax-only", str(broken)])
    assert proc.returncode != 0
    assert "esp_nn_conv_s8" in proc.stderr or "incompatible pointer" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------------------
# A fake ESP-NN: records the arguments, computes with the portable kernels from ESP-NN's arguments alone

FAKE_H = r"""
#ifndef FAKE_ESP_NN_H
#define FAKE_ESP_NN_H
#include "esp_nn.h"

typedef struct {
    int conv, dw, fc, fc_per_ch, add, avg, max, softmax; /* calls */
    int conv_scratch_size, dw_scratch_size, softmax_scratch_size; /* what get_*_scratch_size answers */
    const void *conv_scratch, *dw_scratch; void *softmax_scratch;
    /* the last call's arguments */
    data_dims_t in_dims, filter_dims, out_dims;
    conv_params_t conv_params;
    dw_conv_params_t dw_params;
    quant_data_t quant;
    const int8_t *input, *input2, *filter;
    const int32_t *bias;
    int8_t *output;
    int32_t fc_input_offset, fc_filter_offset, fc_out_offset, fc_out_shift, fc_out_mult, act_min, act_max;
    int32_t row_len, out_channels;
    const int32_t *fc_shifts, *fc_mults;
    int32_t add_args[13]; /* offsets 1/2, mults 1/2, shifts 1/2, left shift, out offset/mult/shift, act min/max, size */
    int32_t pool_args[13]; /* in w/h, out w/h, stride w/h, filter w/h, pad w/h, act min/max, channels */
    int32_t softmax_args[5]; /* height, width, mult, shift, diff_min */
    int errors;
} fake_esp_nn_t;

extern fake_esp_nn_t fake;
#endif
"""

FAKE_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "esp_nn_dispatch.h"
#include "fake_esp_nn.h"
#include "hil_kernels.h"

fake_esp_nn_t fake = {.conv_scratch_size = 1024, .dw_scratch_size = 1024, .softmax_scratch_size = -1};

#define EXPECT(cond) do { if (!(cond)) { \
    fprintf(stderr, "fake ESP-NN: %s:%d: %s\n", __FILE__, __LINE__, #cond); fake.errors++; } } while (0)

static const char *op_names[HIL_ESP_NN_N_OPS] = {"conv_2d", "depthwise_conv_2d", "fully_connected", "add",
                                                 "average_pool_2d", "max_pool_2d", "softmax"};

/* HIL_FAKE_ESP_NN_LOG=file: the counters as JSON at exit (for the model runner, which knows nothing of them). */
static void dump(void) {
    const char *path = getenv("HIL_FAKE_ESP_NN_LOG");
    const hil_esp_nn_stats_t *s = hil_esp_nn_stats();
    FILE *f;
    int i;
    if (path == NULL || (f = fopen(path, "w")) == NULL) return;
    fprintf(f, "{\"errors\": %d, \"scratch_needed_max\": %u, \"ops\": {", fake.errors, (unsigned)s->scratch_needed_max);
    for (i = 0; i < HIL_ESP_NN_N_OPS; ++i) {
        fprintf(f, "%s\"%s\": [%u, %u, %u]", i ? ", " : "", op_names[i], (unsigned)s->esp_nn_calls[i],
                (unsigned)s->portable_calls[i], (unsigned)s->last_fallback[i]);
    }
    fprintf(f, "}}\n");
    fclose(f);
}

__attribute__((constructor)) static void register_dump(void) { atexit(dump); }
static void called(void) {}

static int aligned16(const void *p) { return p != NULL && ((uintptr_t)p & 15u) == 0; }

int esp_nn_get_conv_scratch_size_ansi(const data_dims_t *i, const data_dims_t *f, const data_dims_t *o,
                                      const conv_params_t *c) {
    (void)i; (void)f; (void)o; (void)c;
    return fake.conv_scratch_size;
}
void esp_nn_set_conv_scratch_buf_ansi(const void *buf) { fake.conv_scratch = buf; }
int esp_nn_get_depthwise_conv_scratch_size_ansi(const data_dims_t *i, const data_dims_t *f, const data_dims_t *o,
                                                const dw_conv_params_t *c) {
    (void)i; (void)f; (void)o; (void)c;
    return fake.dw_scratch_size;
}
void esp_nn_set_depthwise_conv_scratch_buf_ansi(const void *buf) { fake.dw_scratch = buf; }
int32_t esp_nn_get_softmax_scratch_size_ansi(const int32_t width, const int32_t height) {
    (void)height;
    return fake.softmax_scratch_size >= 0 ? fake.softmax_scratch_size : 4 * width;
}
void esp_nn_set_softmax_scratch_buf_ansi(void *buffer) { fake.softmax_scratch = buffer; }

void esp_nn_conv_s8_ansi(const data_dims_t *input_dims, const int8_t *input_data, const data_dims_t *filter_dims,
                         const int8_t *filter_data, const int32_t *bias, const data_dims_t *output_dims,
                         int8_t *out_data, const conv_params_t *conv_params, const quant_data_t *quant_data) {
    hil_conv_2d_params_t p;
    called();
    fake.conv++;
    fake.in_dims = *input_dims; fake.filter_dims = *filter_dims; fake.out_dims = *output_dims;
    fake.conv_params = *conv_params; fake.quant = *quant_data;
    fake.input = input_data; fake.filter = filter_data; fake.bias = bias; fake.output = out_data;
    EXPECT(aligned16(fake.conv_scratch));
    EXPECT(input_dims->extra == 1 && output_dims->extra == 1);
    EXPECT(conv_params->dilation.width == 1 && conv_params->dilation.height == 1);
    memset(&p, 0, sizeof p);
    p.batches = 1;
    p.input_h = input_dims->height; p.input_w = input_dims->width; p.input_c = input_dims->channels;
    p.filter_h = filter_dims->height; p.filter_w = filter_dims->width;
    p.output_h = output_dims->height; p.output_w = output_dims->width; p.output_c = output_dims->channels;
    p.stride_h = conv_params->stride.height; p.stride_w = conv_params->stride.width;
    p.dilation_h = 1; p.dilation_w = 1;
    p.pad_h = conv_params->padding.height; p.pad_w = conv_params->padding.width;
    p.input_offset = conv_params->in_offset; p.output_offset = conv_params->out_offset;
    p.act_min = conv_params->activation.min; p.act_max = conv_params->activation.max;
    p.filter = filter_data; p.bias = bias;
    p.output_multiplier = quant_data->mult; p.output_shift = quant_data->shift;
    hil_conv_2d_portable(&p, input_data, out_data);
}

void esp_nn_depthwise_conv_s8_ansi(const data_dims_t *input_dims, const int8_t *input_data,
                                   const data_dims_t *filter_dims, const int8_t *filter_data, const int32_t *bias,
                                   const data_dims_t *output_dims, int8_t *out_data,
                                   const dw_conv_params_t *conv_params, const quant_data_t *quant_data) {
    hil_depthwise_conv_2d_params_t p;
    called();
    fake.dw++;
    fake.in_dims = *input_dims; fake.filter_dims = *filter_dims; fake.out_dims = *output_dims;
    fake.dw_params = *conv_params; fake.quant = *quant_data;
    fake.input = input_data; fake.filter = filter_data; fake.bias = bias; fake.output = out_data;
    EXPECT(aligned16(fake.dw_scratch));
    EXPECT(input_dims->extra == 1 && output_dims->extra == 1);
    EXPECT(output_dims->channels == input_dims->channels * conv_params->ch_mult);
    memset(&p, 0, sizeof p);
    p.batches = 1;
    p.input_h = input_dims->height; p.input_w = input_dims->width; p.input_c = input_dims->channels;
    p.depth_multiplier = conv_params->ch_mult;
    p.filter_h = filter_dims->height; p.filter_w = filter_dims->width;
    p.output_h = output_dims->height; p.output_w = output_dims->width; p.output_c = output_dims->channels;
    p.stride_h = conv_params->stride.height; p.stride_w = conv_params->stride.width;
    p.dilation_h = 1; p.dilation_w = 1;
    p.pad_h = conv_params->padding.height; p.pad_w = conv_params->padding.width;
    p.input_offset = conv_params->in_offset; p.output_offset = conv_params->out_offset;
    p.act_min = conv_params->activation.min; p.act_max = conv_params->activation.max;
    p.filter = filter_data; p.bias = bias;
    p.output_multiplier = quant_data->mult; p.output_shift = quant_data->shift;
    hil_depthwise_conv_2d_portable(&p, input_data, out_data);
}

static void fc_common(const int8_t *input_data, int32_t input_offset, uint16_t row_len, const int8_t *filter_data,
                      int32_t filter_offset, const int32_t *bias, int8_t *out_data, uint16_t out_channels,
                      int32_t out_offset, const int32_t *shifts, const int32_t *mults, int32_t act_min,
                      int32_t act_max) {
    hil_fully_connected_params_t p;
    called();
    fake.input = input_data; fake.fc_input_offset = input_offset; fake.row_len = row_len;
    fake.filter = filter_data; fake.fc_filter_offset = filter_offset; fake.bias = bias; fake.output = out_data;
    fake.out_channels = out_channels; fake.fc_out_offset = out_offset; fake.act_min = act_min; fake.act_max = act_max;
    EXPECT(filter_offset == 0);
    memset(&p, 0, sizeof p);
    p.batches = 1; p.accum_depth = row_len; p.output_depth = out_channels;
    p.input_offset = input_offset; p.output_offset = out_offset; p.act_min = act_min; p.act_max = act_max;
    p.filter = filter_data; p.bias = bias; p.output_multiplier = mults; p.output_shift = shifts;
    hil_fully_connected_portable(&p, input_data, out_data);
}

void esp_nn_fully_connected_s8_ansi(const int8_t *input_data, const int32_t input_offset, const uint16_t row_len,
                                    const int8_t *filter_data, const int32_t filter_offset, const int32_t *bias,
                                    int8_t *out_data, const uint16_t out_channels, const int32_t out_offset,
                                    const int32_t out_shift, const int32_t out_mult, const int32_t activation_min,
                                    const int32_t activation_max) {
    int32_t *shifts = malloc(sizeof(int32_t) * out_channels), *mults = malloc(sizeof(int32_t) * out_channels);
    uint16_t i;
    fake.fc++;
    fake.fc_out_shift = out_shift; fake.fc_out_mult = out_mult;
    for (i = 0; i < out_channels; ++i) { shifts[i] = out_shift; mults[i] = out_mult; }
    fc_common(input_data, input_offset, row_len, filter_data, filter_offset, bias, out_data, out_channels,
              out_offset, shifts, mults, activation_min, activation_max);
    free(shifts); free(mults);
}

void esp_nn_fully_connected_per_ch_s8_ansi(const int8_t *input_data, const int32_t input_offset,
                                           const uint16_t row_len, const int8_t *filter_data,
                                           const int32_t filter_offset, const int32_t *bias, int8_t *out_data,
                                           const uint16_t out_channels, const int32_t out_offset,
                                           const int32_t *out_shift, const int32_t *out_mult,
                                           const int32_t activation_min, const int32_t activation_max) {
    fake.fc_per_ch++;
    fake.fc_shifts = out_shift; fake.fc_mults = out_mult;
    fc_common(input_data, input_offset, row_len, filter_data, filter_offset, bias, out_data, out_channels,
              out_offset, out_shift, out_mult, activation_min, activation_max);
}

void esp_nn_add_elementwise_s8_ansi(const int8_t *input1_data, const int8_t *input2_data,
                                    const int32_t input1_offset, const int32_t input2_offset,
                                    const int32_t input1_mult, const int32_t input2_mult,
                                    const int32_t input1_shift, const int32_t input2_shift,
                                    const int32_t left_shift, int8_t *output, const int32_t out_offset,
                                    const int32_t out_mult, const int32_t out_shift, const int32_t activation_min,
                                    const int32_t activation_max, const int32_t size) {
    hil_add_params_t p;
    const int32_t args[13] = {input1_offset, input2_offset, input1_mult, input2_mult, input1_shift, input2_shift,
                              left_shift, out_offset, out_mult, out_shift, activation_min, activation_max, size};
    called();
    fake.add++;
    memcpy(fake.add_args, args, sizeof args);
    fake.input = input1_data; fake.input2 = input2_data; fake.output = output;
    memset(&p, 0, sizeof p);
    p.dims[0] = 1; p.dims[1] = 1; p.dims[2] = 1; p.dims[3] = size;
    p.input1_strides[3] = 1; p.input2_strides[3] = 1;
    p.input1_offset = input1_offset; p.input2_offset = input2_offset; p.output_offset = out_offset;
    p.left_shift = left_shift;
    p.input1_multiplier = input1_mult; p.input1_shift = input1_shift;
    p.input2_multiplier = input2_mult; p.input2_shift = input2_shift;
    p.output_multiplier = out_mult; p.output_shift = out_shift;
    p.act_min = activation_min; p.act_max = activation_max;
    hil_add_portable(&p, input1_data, input2_data, output);
}

static void pool(int avg, const int8_t *input, uint16_t input_wd, uint16_t input_ht, int8_t *output,
                 uint16_t output_wd, uint16_t output_ht, uint16_t stride_wd, uint16_t stride_ht, uint16_t filter_wd,
                 uint16_t filter_ht, uint16_t pad_wd, uint16_t pad_ht, int32_t activation_min, int32_t activation_max,
                 uint16_t channels) {
    hil_pool_params_t p;
    const int32_t args[13] = {input_wd, input_ht, output_wd, output_ht, stride_wd, stride_ht, filter_wd, filter_ht,
                              pad_wd, pad_ht, activation_min, activation_max, channels};
    called();
    memcpy(fake.pool_args, args, sizeof args);
    fake.input = input; fake.output = output;
    p.batches = 1; p.input_h = input_ht; p.input_w = input_wd; p.channels = channels;
    p.output_h = output_ht; p.output_w = output_wd; p.filter_h = filter_ht; p.filter_w = filter_wd;
    p.stride_h = stride_ht; p.stride_w = stride_wd; p.pad_h = pad_ht; p.pad_w = pad_wd;
    p.act_min = activation_min; p.act_max = activation_max;
    if (avg) hil_average_pool_2d_portable(&p, input, output); else hil_max_pool_2d_portable(&p, input, output);
}

void esp_nn_avg_pool_s8_ansi(const int8_t *input, const uint16_t input_wd, const uint16_t input_ht, int8_t *output,
                             const uint16_t output_wd, const uint16_t output_ht, const uint16_t stride_wd,
                             const uint16_t stride_ht, const uint16_t filter_wd, const uint16_t filter_ht,
                             const uint16_t pad_wd, const uint16_t pad_ht, const int32_t activation_min,
                             const int32_t activation_max, const uint16_t channels) {
    fake.avg++;
    pool(1, input, input_wd, input_ht, output, output_wd, output_ht, stride_wd, stride_ht, filter_wd, filter_ht,
         pad_wd, pad_ht, activation_min, activation_max, channels);
}

void esp_nn_max_pool_s8_ansi(const int8_t *input, const uint16_t input_wd, const uint16_t input_ht, int8_t *output,
                             const uint16_t output_wd, const uint16_t output_ht, const uint16_t stride_wd,
                             const uint16_t stride_ht, const uint16_t filter_wd, const uint16_t filter_ht,
                             const uint16_t pad_wd, const uint16_t pad_ht, const int32_t activation_min,
                             const int32_t activation_max, const uint16_t channels) {
    fake.max++;
    pool(0, input, input_wd, input_ht, output, output_wd, output_ht, stride_wd, stride_ht, filter_wd, filter_ht,
         pad_wd, pad_ht, activation_min, activation_max, channels);
}

void esp_nn_softmax_s8_ansi(const int8_t *input_data, const int32_t height, const int32_t width, const int32_t mult,
                            const int32_t shift, const int32_t diff_min, int8_t *output_data) {
    hil_softmax_params_t p;
    called();
    fake.softmax++;
    fake.softmax_args[0] = height; fake.softmax_args[1] = width; fake.softmax_args[2] = mult;
    fake.softmax_args[3] = shift; fake.softmax_args[4] = diff_min;
    fake.input = input_data; fake.output = output_data;
    EXPECT(aligned16(fake.softmax_scratch));
    memset(&p, 0, sizeof p);
    p.outer = height; p.depth = width; p.input_multiplier = mult; p.input_left_shift = shift; p.diff_min = diff_min;
    hil_softmax_portable(&p, input_data, output_data);
}
"""

# Each case fills a params struct with non-square, non-symmetric values (so that a width/height or
# input1/input2 mix-up changes the result), runs the dispatch and the portable kernel on the same input, and
# checks the path taken, the fallback reason, the mapped arguments and the bytes.
CASES_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "esp_nn_dispatch.h"
#include "fake_esp_nn.h"
#include "hil_kernels.h"

static int failures;
static const char *current = "";
#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s: line %d: CHECK failed: %s\n", current, __LINE__, #cond); failures++; } } while (0)

static uint32_t seed = 12345u;
static int32_t rnd(int32_t lo, int32_t hi) { /* inclusive */
    seed = seed * 1664525u + 1013904223u;
    return lo + (int32_t)((seed >> 8) % (uint32_t)(hi - lo + 1));
}
static void fill8(int8_t *a, int n) { int i; for (i = 0; i < n; ++i) a[i] = (int8_t)rnd(-128, 127); }

static int8_t in[4096], in2[4096], filt[4096], out_d[4096], out_p[4096];
static int32_t bias[256], mult[256], shift[256];

/* ESP-NN or portable, as expected, with the expected fallback reason; and the same bytes as the portable kernel. */
static void path(int op, int expect_esp_nn, int reason, int fake_calls_before, int fake_calls_after,
                 int expected_fake_calls, int n_out) {
    const hil_esp_nn_stats_t *s = hil_esp_nn_stats();
    CHECK(fake.errors == 0);
    if (expect_esp_nn) {
        CHECK(s->esp_nn_calls[op] == 1 && s->portable_calls[op] == 0);
        CHECK(fake_calls_after - fake_calls_before == expected_fake_calls);
    } else {
        CHECK(s->esp_nn_calls[op] == 0 && s->portable_calls[op] == 1);
        CHECK(s->last_fallback[op] == reason);
        CHECK(fake_calls_after == fake_calls_before);
    }
    CHECK(memcmp(out_d, out_p, (size_t)n_out) == 0);
    printf("%s: %s%s\n", current, expect_esp_nn ? "esp-nn" : "portable",
           fake.errors ? " (fake ESP-NN complained)" : "");
}

static void begin(const char *name) {
    current = name;
    hil_esp_nn_stats_reset();
    fake.errors = 0;
    memset(out_d, 0x55, sizeof out_d);
    memset(out_p, 0x2a, sizeof out_p);
}

static void quant(int n, int lo, int hi) {
    int i;
    for (i = 0; i < n; ++i) { mult[i] = rnd(1 << 30, 0x7fffffff); shift[i] = rnd(lo, hi); bias[i] = rnd(-3000, 3000); }
}

static void conv_case(const char *name, int batches, int dil, int with_bias, int scratch, int expect, int reason) {
    hil_conv_2d_params_t p;
    int before, n_out;
    begin(name);
    memset(&p, 0, sizeof p);
    p.batches = batches; p.input_h = 7; p.input_w = 6; p.input_c = 3;
    p.filter_h = 3; p.filter_w = 2; p.stride_h = 2; p.stride_w = 1; p.dilation_h = dil; p.dilation_w = dil;
    p.pad_h = 1; p.pad_w = 0; p.output_c = 5;
    p.output_h = (p.input_h + 2 * p.pad_h - (p.filter_h - 1) * dil - 1) / p.stride_h + 1;
    p.output_w = (p.input_w + 2 * p.pad_w - (p.filter_w - 1) * dil - 1) / p.stride_w + 1;
    p.input_offset = 17; p.output_offset = -9; p.act_min = -100; p.act_max = 120;
    quant(p.output_c, -11, -8);
    p.filter = filt; p.bias = with_bias ? bias : NULL; p.output_multiplier = mult; p.output_shift = shift;
    fake.conv_scratch_size = scratch;
    fake.conv_scratch = NULL;
    n_out = p.batches * p.output_h * p.output_w * p.output_c;
    before = fake.conv;
    hil_conv_2d(&p, in, out_d);
    hil_conv_2d_portable(&p, in, out_p);
    path(HIL_ESP_NN_CONV_2D, expect, reason, before, fake.conv, batches, n_out);
    if (expect) { /* the last batch's call */
        CHECK(fake.in_dims.width == p.input_w && fake.in_dims.height == p.input_h);
        CHECK(fake.in_dims.channels == p.input_c);
        CHECK(fake.out_dims.width == p.output_w && fake.out_dims.height == p.output_h);
        CHECK(fake.out_dims.channels == p.output_c);
        CHECK(fake.filter_dims.width == p.filter_w && fake.filter_dims.height == p.filter_h);
        CHECK(fake.conv_params.in_offset == p.input_offset && fake.conv_params.out_offset == p.output_offset);
        CHECK(fake.conv_params.stride.width == p.stride_w && fake.conv_params.stride.height == p.stride_h);
        CHECK(fake.conv_params.padding.width == p.pad_w && fake.conv_params.padding.height == p.pad_h);
        CHECK(fake.conv_params.activation.min == p.act_min && fake.conv_params.activation.max == p.act_max);
        CHECK(fake.quant.mult == p.output_multiplier && fake.quant.shift == p.output_shift);
        CHECK(fake.filter == p.filter && fake.bias == p.bias);
        CHECK(fake.input == in + (batches - 1) * p.input_h * p.input_w * p.input_c);
        CHECK(fake.output == out_d + (batches - 1) * p.output_h * p.output_w * p.output_c);
    }
    if (reason == HIL_ESP_NN_SCRATCH) {
        CHECK(hil_esp_nn_stats()->scratch_fallbacks == 1);
        CHECK(hil_esp_nn_stats()->scratch_needed_max == (uint32_t)scratch);
    }
    fake.conv_scratch_size = 1024;
}

static void dw_case(const char *name, int batches, int mult_, int dil, int expect, int reason) {
    hil_depthwise_conv_2d_params_t p;
    int before, n_out;
    begin(name);
    memset(&p, 0, sizeof p);
    p.batches = batches; p.input_h = 6; p.input_w = 9; p.input_c = 3; p.depth_multiplier = mult_;
    p.filter_h = 2; p.filter_w = 3; p.stride_h = 1; p.stride_w = 2; p.dilation_h = dil; p.dilation_w = dil;
    p.pad_h = 0; p.pad_w = 1; p.output_c = p.input_c * mult_;
    p.output_h = (p.input_h + 2 * p.pad_h - (p.filter_h - 1) * dil - 1) / p.stride_h + 1;
    p.output_w = (p.input_w + 2 * p.pad_w - (p.filter_w - 1) * dil - 1) / p.stride_w + 1;
    p.input_offset = -3; p.output_offset = 11; p.act_min = -128; p.act_max = 100;
    quant(p.output_c, -10, -7);
    p.filter = filt; p.bias = bias; p.output_multiplier = mult; p.output_shift = shift;
    fake.dw_scratch = NULL;
    n_out = p.batches * p.output_h * p.output_w * p.output_c;
    before = fake.dw;
    hil_depthwise_conv_2d(&p, in, out_d);
    hil_depthwise_conv_2d_portable(&p, in, out_p);
    path(HIL_ESP_NN_DEPTHWISE_CONV_2D, expect, reason, before, fake.dw, batches, n_out);
    if (expect) {
        CHECK(fake.dw_params.ch_mult == p.depth_multiplier);
        CHECK(fake.in_dims.width == p.input_w && fake.in_dims.height == p.input_h);
        CHECK(fake.in_dims.channels == p.input_c);
        CHECK(fake.out_dims.channels == p.output_c && fake.out_dims.width == p.output_w);
        CHECK(fake.filter_dims.width == p.filter_w && fake.filter_dims.height == p.filter_h);
        CHECK(fake.dw_params.in_offset == p.input_offset && fake.dw_params.out_offset == p.output_offset);
        CHECK(fake.dw_params.stride.width == p.stride_w && fake.dw_params.stride.height == p.stride_h);
        CHECK(fake.dw_params.padding.width == p.pad_w && fake.dw_params.padding.height == p.pad_h);
        CHECK(fake.dw_params.activation.min == p.act_min && fake.dw_params.activation.max == p.act_max);
        CHECK(fake.quant.mult == p.output_multiplier && fake.quant.shift == p.output_shift);
    }
}

static void fc_case(const char *name, int batches, int per_channel, int with_bias, int expect, int reason,
                    int expect_per_ch_call) {
    hil_fully_connected_params_t p;
    int before, i, n_out;
    begin(name);
    memset(&p, 0, sizeof p);
    p.batches = batches; p.accum_depth = 21; p.output_depth = 7;
    p.input_offset = 5; p.output_offset = -20; p.act_min = -90; p.act_max = 127;
    quant(p.output_depth, -11, -9);
    if (!per_channel) for (i = 1; i < p.output_depth; ++i) { mult[i] = mult[0]; shift[i] = shift[0]; }
    p.filter = filt; p.bias = with_bias ? bias : NULL; p.output_multiplier = mult; p.output_shift = shift;
    n_out = p.batches * p.output_depth;
    before = fake.fc + fake.fc_per_ch;
    hil_fully_connected(&p, in, out_d);
    hil_fully_connected_portable(&p, in, out_p);
    path(HIL_ESP_NN_FULLY_CONNECTED, expect, reason, before, fake.fc + fake.fc_per_ch, batches, n_out);
    if (expect) {
        CHECK(fake.row_len == p.accum_depth && fake.out_channels == p.output_depth);
        CHECK(fake.fc_input_offset == p.input_offset && fake.fc_out_offset == p.output_offset);
        CHECK(fake.fc_filter_offset == 0 && fake.filter == p.filter && fake.bias == p.bias);
        CHECK(fake.act_min == p.act_min && fake.act_max == p.act_max);
        CHECK(fake.input == in + (batches - 1) * p.accum_depth);
        CHECK(fake.output == out_d + (batches - 1) * p.output_depth);
        if (expect_per_ch_call) {
            CHECK(fake.fc_per_ch == batches);
            CHECK(fake.fc_shifts == p.output_shift && fake.fc_mults == p.output_multiplier);
        } else {
            CHECK(fake.fc_out_shift == p.output_shift[0] && fake.fc_out_mult == p.output_multiplier[0]);
        }
    }
}

static void add_case(const char *name, const int32_t dims[4], const int32_t s1[4], const int32_t s2[4], int expect,
                     int reason) {
    hil_add_params_t p;
    int before, n_out;
    begin(name);
    memset(&p, 0, sizeof p);
    memcpy(p.dims, dims, sizeof p.dims); memcpy(p.input1_strides, s1, sizeof p.input1_strides);
    memcpy(p.input2_strides, s2, sizeof p.input2_strides);
    p.input1_offset = 7; p.input2_offset = -12; p.output_offset = 3; p.left_shift = 20;
    p.input1_multiplier = 1518500250; p.input1_shift = -1; p.input2_multiplier = 1073741824; p.input2_shift = -2;
    p.output_multiplier = 1431655765; p.output_shift = -19; p.act_min = -110; p.act_max = 127;
    n_out = dims[0] * dims[1] * dims[2] * dims[3];
    before = fake.add;
    hil_add(&p, in, in2, out_d);
    hil_add_portable(&p, in, in2, out_p);
    path(HIL_ESP_NN_ADD, expect, reason, before, fake.add, 1, n_out);
    if (expect) {
        const int32_t want[13] = {p.input1_offset, p.input2_offset, p.input1_multiplier, p.input2_multiplier,
                                  p.input1_shift, p.input2_shift, p.left_shift, p.output_offset,
                                  p.output_multiplier, p.output_shift, p.act_min, p.act_max, n_out};
        CHECK(memcmp(fake.add_args, want, sizeof want) == 0);
        CHECK(fake.input == in && fake.input2 == in2 && fake.output == out_d);
    }
}

static void pool_case(const char *name, int avg, int batches, int expect, int reason) {
    hil_pool_params_t p;
    int before, n_out;
    begin(name);
    p.batches = batches; p.input_h = 9; p.input_w = 7; p.channels = 5;
    p.filter_h = 3; p.filter_w = 2; p.stride_h = 2; p.stride_w = 3; p.pad_h = 1; p.pad_w = 0;
    p.output_h = (p.input_h + 2 * p.pad_h - p.filter_h) / p.stride_h + 1;
    p.output_w = (p.input_w + 2 * p.pad_w - p.filter_w) / p.stride_w + 1;
    p.act_min = -100; p.act_max = 90;
    n_out = batches * p.output_h * p.output_w * p.channels;
    before = fake.avg + fake.max;
    if (avg) {
        hil_average_pool_2d(&p, in, out_d);
        hil_average_pool_2d_portable(&p, in, out_p);
    } else {
        hil_max_pool_2d(&p, in, out_d);
        hil_max_pool_2d_portable(&p, in, out_p);
    }
    path(avg ? HIL_ESP_NN_AVERAGE_POOL_2D : HIL_ESP_NN_MAX_POOL_2D, expect, reason, before, fake.avg + fake.max,
         batches, n_out);
    if (expect) {
        const int32_t want[13] = {p.input_w, p.input_h, p.output_w, p.output_h, p.stride_w, p.stride_h, p.filter_w,
                                  p.filter_h, p.pad_w, p.pad_h, p.act_min, p.act_max, p.channels};
        CHECK(memcmp(fake.pool_args, want, sizeof want) == 0);
        CHECK(fake.input == in + (batches - 1) * p.input_h * p.input_w * p.channels);
    }
}

static void softmax_case(const char *name, int outer, int depth, int scratch, int expect, int reason) {
    hil_softmax_params_t p;
    int before;
    begin(name);
    memset(&p, 0, sizeof p);
    p.outer = outer; p.depth = depth;
    p.input_multiplier = SOFTMAX_MULT; p.input_left_shift = SOFTMAX_SHIFT; p.diff_min = SOFTMAX_DIFF_MIN;
    fake.softmax_scratch_size = scratch;
    fake.softmax_scratch = NULL;
    before = fake.softmax;
    hil_softmax(&p, in, out_d);
    hil_softmax_portable(&p, in, out_p);
    path(HIL_ESP_NN_SOFTMAX, expect, reason, before, fake.softmax, 1, outer * depth);
    if (expect) {
        CHECK(fake.softmax_args[0] == outer && fake.softmax_args[1] == depth);
        CHECK(fake.softmax_args[2] == p.input_multiplier && fake.softmax_args[3] == p.input_left_shift);
        CHECK(fake.softmax_args[4] == p.diff_min);
    }
    fake.softmax_scratch_size = -1;
}

int main(void) {
    const int32_t d_same[4] = {2, 3, 4, 5}, s_dense[4] = {60, 20, 5, 1};
    const int32_t d_ones[4] = {1, 1, 6, 7}, s_ones[4] = {0, 0, 7, 1};
    const int32_t s_bcast[4] = {0, 0, 0, 1};
    fill8(in, sizeof in); fill8(in2, sizeof in2); fill8(filt, sizeof filt);
    CHECK(hil_esp_nn_stats()->scratch_bytes == HIL_ESP_NN_SCRATCH_BYTES);

    conv_case("conv", 1, 1, 1, 1024, 1, 0);
    conv_case("conv-2-batches", 2, 1, 1, 1024, 1, 0);
    conv_case("conv-dilated", 1, 2, 1, 1024, 0, HIL_ESP_NN_NO_DILATION);
    conv_case("conv-no-bias", 1, 1, 0, 1024, 0, HIL_ESP_NN_NO_BIAS);
    conv_case("conv-scratch-too-small", 1, 1, 1, HIL_ESP_NN_SCRATCH_BYTES + 1, 0, HIL_ESP_NN_SCRATCH);
    conv_case("conv-scratch-exactly", 1, 1, 1, HIL_ESP_NN_SCRATCH_BYTES, 1, 0);
    conv_case("conv-scratch-error", 1, 1, 1, -1, 0, HIL_ESP_NN_RANGE);
    dw_case("depthwise", 1, 1, 1, 1, 0);
    dw_case("depthwise-multiplier-2-batches-2", 2, 2, 1, 1, 0);
    dw_case("depthwise-dilated", 1, 1, 2, 0, HIL_ESP_NN_NO_DILATION);
#ifdef HIL_ESP_NN_FC_PER_CHANNEL
    fc_case("fc-per-channel", 1, 1, 1, 1, 0, 1);
#else
    fc_case("fc-per-channel", 1, 1, 1, 0, HIL_ESP_NN_PER_CHANNEL, 0);
#endif
    fc_case("fc-per-tensor-3-batches", 3, 0, 1, 1, 0, 0);
    fc_case("fc-no-bias", 1, 0, 0, 0, HIL_ESP_NN_NO_BIAS, 0);
    add_case("add-same-shape", d_same, s_dense, s_dense, 1, 0);
    add_case("add-unit-dims-stride-0", d_ones, s_ones, s_ones, 1, 0);
    add_case("add-broadcast", d_ones, s_ones, s_bcast, 0, HIL_ESP_NN_BROADCAST);
    pool_case("average-pool-2-batches", 1, 2, 1, 0);
    pool_case("max-pool-2-batches", 0, 2, 1, 0);
    softmax_case("softmax", 3, 10, -1, 1, 0);
    softmax_case("softmax-depth-600", 2, 600, -1, 0, HIL_ESP_NN_SOFTMAX_DEPTH);
    softmax_case("softmax-scratch-too-small", 1, 10, HIL_ESP_NN_SCRATCH_BYTES + 16, 0, HIL_ESP_NN_SCRATCH);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all cases passed\n");
    return 0;
}
"""


def _kernel_objects(cc: str, out: Path, defines: list[str]) -> list[Path]:
    """Every kernel compiled with `defines` into out/ (kept there: a second call with the same out/ reuses them)."""
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for k in sorted(KERNELS.glob("*.c")):
        obj = out / (k.stem + ".o")
        if not obj.is_file():
            args = [*STRICT, "-O1", "-DHIL_KERNEL_CHECKS", *defines, "-I", str(INCLUDE), "-c", str(k), "-o", str(obj)]
            _must(_compile(args))
        objs.append(obj)
    return objs


def _fake_sources(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "fake_esp_nn.h").write_text(FAKE_H)
    (where / "fake_esp_nn.c").write_text(FAKE_C)
    return where / "fake_esp_nn.c"


def _softmax_defines() -> list[str]:
    from hil.model import quantization as qz

    multiplier, left_shift = qz.preprocess_softmax_scaling(1.0, 0.0625, 5)
    diff_min = -qz.calculate_input_radius(5, left_shift)
    return [f"-DSOFTMAX_MULT={multiplier}", f"-DSOFTMAX_SHIFT={left_shift}", f"-DSOFTMAX_DIFF_MIN={diff_min}"]


@needs_portable
@pytest.mark.parametrize("variant", ["ansi", "fc-per-channel"])
def test_dispatch_decisions_and_field_mapping(variant: str, tmp_path: Path) -> None:
    cc = _cc()
    defines = [
        "-DHIL_USE_ESP_NN",
        f"-DHIL_ESP_NN_SCRATCH_BYTES={SCRATCH_BYTES}",
        *VARIANTS[variant],
        *_softmax_defines(),
    ]
    objs = _kernel_objects(cc, tmp_path / "kernels", defines)
    fake_c = _fake_sources(tmp_path / "fake")
    cases_c = tmp_path / "fake" / "cases.c"
    cases_c.write_text(CASES_C)
    binary = tmp_path / "cases"
    includes = ["-I", str(INCLUDE), "-I", str(DECL), "-I", str(DISPATCH_C.parent), "-I", str(fake_c.parent)]
    _must(
        _compile(
            [*STRICT, "-O1", *defines, *includes, str(DISPATCH_C), str(fake_c), str(cases_c), *map(str, objs),
             "-o", str(binary)]
        )
    )  # fmt: skip
    proc = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    paths_taken = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert paths_taken["conv"] == "esp-nn" and paths_taken["conv-dilated"] == "portable"
    assert paths_taken["fc-per-channel"] == ("esp-nn" if variant == "fc-per-channel" else "portable")
    assert len(paths_taken) == 21


# --------------------------------------------------------------------------------------------------------
# Compiled models through dispatch + fake ESP-NN, bit-exact with TFLM


def build_dispatch_runner(model_dir: Path, build_dir: Path) -> Path:
    """The host model runner (device_fw/tests/run_model_main.c) of the hil_model.c in model_dir, built with
    HIL_USE_ESP_NN: the model's kernel calls go through the ESP-NN dispatch to the fake ESP-NN (or the portable
    kernels). Writes the sidecar hil.model.hostrun.run_host_many needs; HIL_FAKE_ESP_NN_LOG=file makes the
    binary write the dispatch's counters there as JSON."""
    cc = _cc()
    defines = ["-DHIL_USE_ESP_NN", f"-DHIL_ESP_NN_SCRATCH_BYTES={SCRATCH_BYTES * 64}"]
    build_dir.mkdir(parents=True, exist_ok=True)
    objs = _kernel_objects(cc, build_dir / "kernels", defines)
    fake_c = _fake_sources(build_dir / "fake")
    binary = Path(model_dir) / "run_model_esp_nn"
    includes = ["-I", str(INCLUDE), "-I", str(DECL), "-I", str(DISPATCH_C.parent), "-I", str(fake_c.parent)]
    _must(
        _compile(
            [*STRICT, "-O2", "-DHIL_KERNEL_CHECKS", *defines, *includes, str(RUN_MODEL_MAIN),
             str(Path(model_dir) / "hil_model.c"), str(DISPATCH_C), str(fake_c), *map(str, objs), "-o", str(binary)]
        )
    )  # fmt: skip
    summary = json.loads((Path(model_dir) / "model.json").read_text())
    sidecar = binary.with_name(binary.name + ".json")
    sidecar.write_text(json.dumps({"inputs": summary["inputs"], "outputs": summary["outputs"]}))
    return binary


def run_through_dispatch(
    tflite: bytes,
    work_dir: Path,
    build_dir: Path,
    rng: np.random.Generator,
    count: int,
    label: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, dict[str, Any]]:
    """Compiles the model into work_dir (the kernels into build_dir, shared), runs `count` random input sets
    through dispatch + fake ESP-NN and through TFLM, requires identical outputs; returns the CompiledModel and
    the dispatch's counters."""
    from helpers_models import mismatch_report, random_input_sets

    from hil.model.compiler import compile_tflite
    from hil.model.hostrun import run_host_many
    from hil.model.reference import TflmReference

    model_dir = work_dir / "model"
    compiled = compile_tflite(tflite, model_dir, name=label)
    binary = build_dispatch_runner(model_dir, build_dir)
    log = work_dir / "fake-esp-nn.json"
    monkeypatch.setenv("HIL_FAKE_ESP_NN_LOG", str(log))
    reference = TflmReference(tflite)
    input_sets = random_input_sets(reference, rng, count)
    results = run_host_many(binary, input_sets)
    failures = [
        r for i, (x, got) in enumerate(zip(input_sets, results, strict=True))
        if (r := mismatch_report(label, got, reference.run(x), i))
    ]  # fmt: skip
    assert not failures, "\n".join(failures)
    counters = json.loads(log.read_text()) if log.is_file() else {"errors": 0, "ops": {}}
    assert counters["errors"] == 0, counters
    return compiled, counters


# (op, single-op maker params, ESP-NN expected: ops that must have gone to the fake at least once)
MODEL_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("conv", "CONV_2D", {"height": 9, "width": 7, "in_channels": 3, "out_channels": 6, "kernel": (3, 2),
                         "stride": (2, 1), "padding": "SAME", "activation": "RELU", "batches": 2}, True),
    ("conv-per-tensor", "CONV_2D", {"per_channel": False, "padding": "VALID", "activation": "RELU6"}, True),
    ("conv-dilated", "CONV_2D", {"dilation": (2, 2), "kernel": (3, 3), "padding": "SAME"}, False),
    ("depthwise", "DEPTHWISE_CONV_2D", {"height": 10, "width": 8, "in_channels": 4, "depth_multiplier": 2,
                                        "stride": (2, 2), "padding": "SAME"}, True),
    ("depthwise-dilated", "DEPTHWISE_CONV_2D", {"dilation": (2, 1), "padding": "SAME"}, False),
    ("fc-per-tensor", "FULLY_CONNECTED", {"batches": 3, "depth": 33, "units": 9, "per_channel": False}, True),
    ("fc-per-channel", "FULLY_CONNECTED", {"depth": 20, "units": 5, "per_channel": True}, False),
    ("add", "ADD", {"shape1": (1, 5, 4, 3), "shape2": (1, 5, 4, 3), "activation": "RELU"}, True),
    ("add-broadcast", "ADD", {"shape1": (1, 5, 4, 3), "shape2": (1, 1, 1, 3)}, False),
    ("average-pool", "AVERAGE_POOL_2D", {"height": 9, "width": 7, "channels": 5, "filter": (3, 2),
                                          "stride": (2, 2), "padding": "SAME", "batches": 2}, True),
    ("max-pool", "MAX_POOL_2D", {"height": 8, "width": 9, "channels": 3, "filter": (2, 3), "stride": (2, 3),
                                  "padding": "VALID"}, True),
    ("softmax", "SOFTMAX", {"shape": (3, 12)}, True),
]  # fmt: skip

_OP_KEYS = {
    "CONV_2D": "conv_2d",
    "DEPTHWISE_CONV_2D": "depthwise_conv_2d",
    "FULLY_CONNECTED": "fully_connected",
    "ADD": "add",
    "AVERAGE_POOL_2D": "average_pool_2d",
    "MAX_POOL_2D": "max_pool_2d",
    "SOFTMAX": "softmax",
}


@pytest.fixture(scope="module")
def dispatch_build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("esp-nn-dispatch-build")


@needs_portable
@pytest.mark.parametrize(("op", "params", "on_esp_nn"), [pytest.param(o, p, e, id=t) for t, o, p, e in MODEL_CASES])
def test_single_op_models_through_the_dispatch_bit_exact(
    op: str,
    params: dict[str, Any],
    on_esp_nn: bool,
    tmp_path: Path,
    dispatch_build_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hil.model.synthetic import make_single_op_model

    rng = np.random.default_rng(zlib.crc32(f"{op} {sorted(params.items())}".encode()))
    tflite = make_single_op_model(op, rng, **params)
    label = f"{op} {params}"
    compiled, counters = run_through_dispatch(tflite, tmp_path, dispatch_build_dir, rng, 4, label, monkeypatch)
    esp_nn_calls, portable_calls, _ = counters["ops"][_OP_KEYS[op]]
    if on_esp_nn:
        assert esp_nn_calls > 0 and portable_calls == 0, counters
    else:
        assert esp_nn_calls == 0 and portable_calls > 0, counters
    assert [o.kernel for o in compiled.ops] == [f"hil_{_OP_KEYS[op]}"]
