"""The specialised kernels (hil/model/lowering/fast.py, device_fw/core/kernels) are bit-exact with TensorFlow
Lite Micro, and `hil bench runtime` measures them.

Each case is a one-operator model (CONV_2D: 1x1, padded borders, strides, dilation, blocks of 4 and 16 output
channels; DEPTHWISE_CONV_2D: 3x3 unrolled and the general kernel, depth multipliers; FULLY_CONNECTED; int8 and
16x8; ADD of same-shape inputs) with random weights, zero points and multipliers, compiled with specialisation on
(the case asserts which specialised kernel runs), run natively on random full-range inputs and compared with the
tflite-micro runtime. Every case also runs through a host build with HIL_SLOW_MUL64=1, the lx106's 32-bit
requantization paths, and the convolutions through one with HIL_UNROLL=1 as well, the lx106's loop shapes, so the
qemu build's arithmetic is checked here without an emulator. No timing assertions: the bench test only checks that
figures are printed.
"""

from __future__ import annotations

import re
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_models import mismatch_report, random_input_sets

from hil import paths
from hil.bench.runtime import build_bench_runner
from hil.model import tflite_builder
from hil.model.compiler import compile_tflite
from hil.model.hostrun import INCLUDE, build_host_runner, run_host_many
from hil.model.reference import TflmReference
from hil.model.synthetic import TfliteBuilder, builtin_options, make_single_op_model
from hil.model.tflite_builder import ACTIVATIONS, PADDINGS

# The flatbuffer builder writes int8/int16/int32/float32 tensors; 16x8 biases are int64.
tflite_builder._DTYPES.setdefault("int64", (tflite_builder.schema.TensorType.INT64, np.int64))


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fast-models")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fast-build")


# --------------------------------------------------------------------------------------------------------
# 16x8 single-op models (int16 activations with zero point 0, int8 weights, int64 bias)


def _conv16(
    op: str,
    rng: np.random.Generator,
    *,
    height: int = 7,
    width: int = 6,
    in_channels: int = 3,
    out_channels: int = 5,
    depth_multiplier: int = 1,
    kernel: tuple[int, int] = (3, 3),
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    padding: str = "SAME",
    activation: str = "NONE",
    batches: int = 1,
) -> bytes:
    from hil.model.quantization import compute_out_size

    b = TfliteBuilder()
    kh, kw = kernel
    oh = compute_out_size(padding, height, kh, stride[0], dilation[0])
    ow = compute_out_size(padding, width, kw, stride[1], dilation[1])
    depthwise = op == "DEPTHWISE_CONV_2D"
    oc = in_channels * depth_multiplier if depthwise else out_channels
    in_scale = float(np.float32(10 ** rng.uniform(-4.5, -3.0)))
    f_scales = np.float32(10 ** rng.uniform(-3, -1.5, size=oc)).astype(np.float32)
    taps = kh * kw * (1 if depthwise else in_channels)
    out_scale = float(
        np.float32(in_scale * float(np.mean(f_scales)) * np.sqrt(taps) * 73 * 2 * 10 ** rng.uniform(-0.3, 0.3))
    )
    x = b.tensor([batches, height, width, in_channels], "int16", scale=in_scale, zero_point=0, name="input")
    f_shape = [1, kh, kw, oc] if depthwise else [oc, kh, kw, in_channels]
    f = b.tensor(f_shape, scale=f_scales, zero_point=0, data=rng.integers(-127, 128, f_shape),
                 axis=3 if depthwise else 0, name="filter")  # fmt: skip
    bias_scales = (np.float32(in_scale) * f_scales).astype(np.float32)
    bias = b.tensor(
        [oc],
        "int64",
        scale=bias_scales,
        zero_point=0,
        data=rng.normal(0, np.sqrt(taps) * 20000 * 73, size=oc).round().astype(np.int64),
        name="bias",
    )
    y = b.tensor([batches, oh, ow, oc], "int16", scale=out_scale, zero_point=0, name="output")
    opts = dict(padding=PADDINGS[padding], strideH=stride[0], strideW=stride[1], dilationHFactor=dilation[0],
                dilationWFactor=dilation[1], fusedActivationFunction=ACTIVATIONS[activation])  # fmt: skip
    if depthwise:
        options = builtin_options("DepthwiseConv2DOptionsT", depthMultiplier=depth_multiplier, **opts)
    else:
        options = builtin_options("Conv2DOptionsT", **opts)
    b.op(op, [x, f, bias], [y], options)
    return b.finish([x], [y])


def _fc16(rng: np.random.Generator, *, batches: int = 1, depth: int = 24, units: int = 7,
          activation: str = "NONE") -> bytes:  # fmt: skip
    b = TfliteBuilder()
    in_scale = float(np.float32(10 ** rng.uniform(-4.5, -3.0)))
    f_scales = np.float32(10 ** rng.uniform(-3, -1.5, size=units)).astype(np.float32)
    out_scale = float(np.float32(in_scale * float(np.mean(f_scales)) * np.sqrt(depth) * 73 * 2))
    x = b.tensor([batches, depth], "int16", scale=in_scale, zero_point=0, name="input")
    f = b.tensor([units, depth], scale=f_scales, zero_point=0, data=rng.integers(-127, 128, (units, depth)),
                 name="weights")  # fmt: skip
    bias = b.tensor([units], "int64", scale=(np.float32(in_scale) * f_scales).astype(np.float32), zero_point=0,
                    data=rng.integers(-10**6, 10**6, units), name="bias")  # fmt: skip
    y = b.tensor([batches, units], "int16", scale=out_scale, zero_point=0, name="output")
    b.op("FULLY_CONNECTED", [x, f, bias], [y],
         builtin_options("FullyConnectedOptionsT", fusedActivationFunction=ACTIVATIONS[activation]))  # fmt: skip
    return b.finish([x], [y])


# --------------------------------------------------------------------------------------------------------
# Cases: (op, dtype, params, the specialised kernel that must run)


def _random_conv_cases(op: str, dtype: str, n: int, seed: int) -> list[tuple[str, dict[str, Any], str]]:
    """Random geometries. 16x8 ones stay below a depth of 170, where the int32 accumulator of the specialised
    kernel is proved exact (hil/model/lowering/fast.py)."""
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        kh, kw = (int(v) for v in rng.integers(1, 5 if dtype == "int8" else 4, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (1, 1) if rng.random() < 0.6 else (int(v) for v in rng.integers(1, 3, 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        eff_h, eff_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        p: dict[str, Any] = {
            "height": int(rng.integers(eff_h, eff_h + 8)),
            "width": int(rng.integers(eff_w, eff_w + 8)),
            "in_channels": int(rng.integers(1, 11 if dtype == "int8" else 7)),
            "kernel": (kh, kw), "stride": (sh, sw), "dilation": (dh, dw), "padding": padding,
            "activation": str(rng.choice(["NONE", "RELU", "RELU6"])),
            "batches": int(rng.choice([1, 1, 2])),
        }  # fmt: skip
        if op == "DEPTHWISE_CONV_2D":
            p["depth_multiplier"] = int(rng.choice([1, 1, 2, 3]))
            three = (kh, kw) == (3, 3) and p["depth_multiplier"] == 1
            kernel = "hil_depthwise_conv_2d_3x3" if three else "hil_depthwise_conv_2d_taps"
        else:
            p["out_channels"] = int(rng.integers(1, 19))
            kernel = "hil_conv_2d_1x1" if (kh, kw) == (1, 1) else "hil_conv_2d_patch"  # a 1x1 filter never pads
            deep = kh * kw * p["in_channels"] >= 16  # shallower int8 dot products keep the signed kernels
            kernel += "_u8" if dtype == "int8" and deep else ""
        if dtype == "int16":
            kernel += "_16x8"
        cases.append((f"{i}-k{kh}x{kw}-s{sh}x{sw}-d{dh}x{dw}-{padding}", p, kernel))
    return cases


FIXED_CASES: list[tuple[str, str, str, dict[str, Any], str]] = [
    # op, dtype, id, params, specialised kernel
    ("CONV_2D", "int8", "pointwise-24to48",
     {"height": 6, "width": 5, "in_channels": 24, "out_channels": 48, "kernel": (1, 1), "padding": "VALID",
      "activation": "RELU6"}, "hil_conv_2d_1x1_u8"),
    ("CONV_2D", "int8", "pointwise-stride2",
     {"height": 9, "width": 8, "in_channels": 5, "out_channels": 7, "kernel": (1, 1), "stride": (2, 2),
      "padding": "VALID"}, "hil_conv_2d_1x1"),
    ("CONV_2D", "int8", "3x3-stride2-same-borders",
     {"height": 11, "width": 10, "in_channels": 3, "out_channels": 24, "stride": (2, 2)}, "hil_conv_2d_patch_u8"),
    ("CONV_2D", "int8", "5x5-dilated-same",
     {"height": 9, "width": 9, "kernel": (5, 5), "dilation": (2, 2)}, "hil_conv_2d_patch_u8"),
    ("CONV_2D", "int8", "kernel-larger-than-input", {"height": 2, "width": 3, "kernel": (5, 5)},
     "hil_conv_2d_patch_u8"),
    ("CONV_2D", "int8", "deep-576",
     {"height": 4, "width": 4, "in_channels": 64, "out_channels": 9}, "hil_conv_2d_patch_u8"),
    ("DEPTHWISE_CONV_2D", "int8", "3x3-same-c13",
     {"height": 7, "width": 9, "in_channels": 13}, "hil_depthwise_conv_2d_3x3"),
    ("DEPTHWISE_CONV_2D", "int8", "3x3-stride3",
     {"height": 12, "width": 12, "in_channels": 3, "stride": (3, 3)}, "hil_depthwise_conv_2d_3x3"),
    ("DEPTHWISE_CONV_2D", "int8", "3x3-dilated-valid",
     {"height": 9, "width": 11, "in_channels": 6, "dilation": (2, 2), "padding": "VALID"},
     "hil_depthwise_conv_2d_3x3"),
    ("DEPTHWISE_CONV_2D", "int8", "5x5-multiplier4",
     {"height": 8, "width": 8, "in_channels": 2, "depth_multiplier": 4, "kernel": (5, 5)},
     "hil_depthwise_conv_2d_taps"),
    ("CONV_2D", "int16", "pointwise",
     {"height": 5, "width": 4, "in_channels": 24, "out_channels": 13, "kernel": (1, 1), "padding": "VALID"},
     "hil_conv_2d_1x1_16x8"),
    ("CONV_2D", "int16", "3x3-stride2",
     {"height": 9, "width": 8, "stride": (2, 2), "activation": "RELU6"}, "hil_conv_2d_patch_16x8"),
    ("CONV_2D", "int16", "3x3-dilated", {"dilation": (2, 2), "padding": "SAME"}, "hil_conv_2d_patch_16x8"),
    ("DEPTHWISE_CONV_2D", "int16", "3x3", {"in_channels": 10}, "hil_depthwise_conv_2d_3x3_16x8"),
    ("DEPTHWISE_CONV_2D", "int16", "3x3-stride2-relu",
     {"in_channels": 5, "stride": (2, 2), "activation": "RELU"}, "hil_depthwise_conv_2d_3x3_16x8"),
    ("DEPTHWISE_CONV_2D", "int16", "2x4-multiplier2",
     {"in_channels": 3, "depth_multiplier": 2, "kernel": (2, 4)}, "hil_depthwise_conv_2d_taps_16x8"),
    ("FULLY_CONNECTED", "int8", "640to128", {"depth": 640, "units": 128, "per_channel": True}, "hil_conv_2d_1x1_u8"),
    ("FULLY_CONNECTED", "int8", "batches3-per-tensor", {"batches": 3, "depth": 37, "units": 10}, "hil_conv_2d_1x1_u8"),
    # int8 blocks of 16 output channels (at least 16 channels), partly padded, and inputs copied bytewise
    ("CONV_2D", "int8", "3x3-block16-c37",
     {"height": 6, "width": 7, "in_channels": 5, "out_channels": 37, "padding": "SAME"}, "hil_conv_2d_patch_u8"),
    ("CONV_2D", "int8", "3x3-block16-deep",
     {"height": 5, "width": 5, "in_channels": 16, "out_channels": 16, "stride": (2, 2), "padding": "SAME",
      "activation": "RELU"}, "hil_conv_2d_patch_u8"),
    ("CONV_2D", "int8", "pointwise-block16-odd-depth",
     {"height": 3, "width": 4, "in_channels": 17, "out_channels": 20, "kernel": (1, 1), "padding": "VALID"},
     "hil_conv_2d_1x1_u8"),
    ("FULLY_CONNECTED", "int8", "19to3", {"depth": 19, "units": 3}, "hil_conv_2d_1x1_u8"),
    ("FULLY_CONNECTED", "int8", "shallow-8to128", {"depth": 8, "units": 128}, "hil_conv_2d_1x1"),
    ("FULLY_CONNECTED", "int8", "128to640-relu", {"depth": 128, "units": 640, "activation": "RELU"},
     "hil_conv_2d_1x1_u8"),
    ("FULLY_CONNECTED", "int16", "24to7", {}, "hil_conv_2d_1x1_16x8"),
    ("FULLY_CONNECTED", "int16", "batches2-relu",
     {"batches": 2, "depth": 50, "units": 9, "activation": "RELU"}, "hil_conv_2d_1x1_16x8"),
]  # fmt: skip

ADD_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    # id, params, specialised kernel (None: the generic kernel runs)
    ("same-shape", {"shape1": (1, 5, 6, 16), "shape2": (1, 5, 6, 16)}, "hil_add_table"),
    ("same-shape-relu", {"shape1": (1, 7, 3, 5), "shape2": (1, 7, 3, 5), "activation": "RELU"}, "hil_add_table"),
    ("rank2-relu6", {"shape1": (9, 33), "shape2": (9, 33), "activation": "RELU6"}, "hil_add_table"),
    ("broadcast", {"shape1": (1, 4, 4, 8), "shape2": (1, 1, 1, 8)}, None),
    ("const-second", {"shape1": (1, 3, 3, 4), "shape2": (1, 3, 3, 4), "const_second": True}, None),
]

CASES = (
    [(op, dt, name, p, k) for op, dt, name, p, k in FIXED_CASES]
    + [("CONV_2D", "int8", f"random-{n}", p, k) for n, p, k in _random_conv_cases("CONV_2D", "int8", 10, 11)]
    + [("DEPTHWISE_CONV_2D", "int8", f"random-{n}", p, k)
       for n, p, k in _random_conv_cases("DEPTHWISE_CONV_2D", "int8", 10, 12)]
    + [("CONV_2D", "int16", f"random-{n}", p, k) for n, p, k in _random_conv_cases("CONV_2D", "int16", 5, 13)]
    + [("DEPTHWISE_CONV_2D", "int16", f"random-{n}", p, k)
       for n, p, k in _random_conv_cases("DEPTHWISE_CONV_2D", "int16", 5, 14)]
)  # fmt: skip


def _model(op: str, dtype: str, params: dict[str, Any], rng: np.random.Generator) -> bytes:
    if dtype == "int8":
        return make_single_op_model(op, rng, **params)
    if op == "FULLY_CONNECTED":
        return _fc16(rng, **params)
    return _conv16(op, rng, **params)


def _check(binary: Path, reference: TflmReference, input_sets: list, label: str) -> None:
    got = run_host_many(binary, input_sets)
    failures = [r for i, (x, g) in enumerate(zip(input_sets, got, strict=True))
                if (r := mismatch_report(label, g, reference.run(x), i))]  # fmt: skip
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("op", "dtype", "params", "kernel"),
    [pytest.param(op, dt, p, k, id=f"{op}-{dt}-{name}") for op, dt, name, p, k in CASES],
)
def test_specialised_kernel_bit_exact(op: str, dtype: str, params: dict[str, Any], kernel: str, work_dir: Path,
                                      build_dir: Path) -> None:  # fmt: skip
    rng = np.random.default_rng(zlib.crc32(f"{op} {dtype} {sorted(params.items())}".encode()))
    tflite = _model(op, dtype, params, rng)
    model_dir = work_dir / f"{zlib.crc32(tflite):08x}"
    compiled = compile_tflite(tflite, model_dir, name="fast")
    (only,) = compiled.ops
    assert only.specialised_kernel is not None, f"{op} {params}: no specialised kernel"
    if kernel:
        assert only.specialised_kernel == kernel
    assert only.specialised_kernel.endswith("_16x8") == (dtype == "int16")
    reference = TflmReference(tflite)
    input_sets = random_input_sets(reference, rng, 3)
    # the host runner (kernel debug checks on), and the lx106's 32-bit requantization paths built for the host
    _check(build_host_runner(model_dir, build_dir), reference, input_sets, f"{op} {params}")
    slow = build_bench_runner(model_dir, build_dir, ["-DHIL_SLOW_MUL64=1", "-DHIL_KERNEL_CHECKS"])
    _check(slow, reference, input_sets, f"{op} {params} (HIL_SLOW_MUL64)")
    # the lx106's loop shapes too (HIL_UNROLL=1: int8 blocks of 16 as four groups of four channels)
    lx106 = build_bench_runner(model_dir, build_dir, ["-DHIL_SLOW_MUL64=1", "-DHIL_UNROLL=1", "-DHIL_KERNEL_CHECKS"])
    _check(lx106, reference, input_sets, f"{op} {params} (HIL_UNROLL=1)")


@pytest.mark.parametrize(("params", "kernel"), [pytest.param(p, k, id=name) for name, p, k in ADD_CASES])
def test_add_table_kernel_bit_exact(params: dict[str, Any], kernel: str | None, work_dir: Path,
                                    build_dir: Path) -> None:  # fmt: skip
    """ADD of two same-shape activations runs hil_add_table (rescaled inputs from compile-time tables, one-step
    requantization); a broadcast or a constant input keeps the generic kernel. Full-range inputs against TFLM."""
    rng = np.random.default_rng(zlib.crc32(f"ADD {sorted(params.items())}".encode()))
    tflite = make_single_op_model("ADD", rng, **params)
    model_dir = work_dir / f"add-{zlib.crc32(tflite):08x}"
    (only,) = compile_tflite(tflite, model_dir, name="fast").ops
    assert only.specialised_kernel == kernel
    reference = TflmReference(tflite)
    input_sets = random_input_sets(reference, rng, 4)
    _check(build_host_runner(model_dir, build_dir), reference, input_sets, f"ADD {params}")
    slow = build_bench_runner(model_dir, build_dir, ["-DHIL_SLOW_MUL64=1", "-DHIL_KERNEL_CHECKS"])
    _check(slow, reference, input_sets, f"ADD {params} (HIL_SLOW_MUL64)")


def test_committed_models_run_on_specialised_kernels() -> None:
    """Every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED of the committed models has a specialised kernel, but
    for the one principled exception: a 16x8 dot product so deep that the specialised kernels' int32 accumulator
    cannot be proven not to overflow (hil/model/lowering/fast.py, _matrix_call), which the generic kernel runs.
    The committed AgileNN has one: its Local NN's stride-2 3x3 convolution over 32 channels (depth 288)."""
    import json
    import math

    generic = []
    for model_json in sorted(paths.MODELS.glob("*/model.json")):
        summary = json.loads(model_json.read_text())
        assert summary["specialised"] is True, model_json
        for o in summary["ops"]:
            if o["op"] not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or o["specialised_kernel"]:
                continue
            where = f"{model_json.parent.name} op {o['index']} runs {o['kernel']}"
            depth = math.prod(o["inputs"][1][1:])  # weights [out][fh][fw][in] or [out][in]
            # the generic kernel's bound: depth * (128 + 255) * 32768 must exceed what an int32 holds
            assert o["kernel"].endswith("_16x8") and depth * (128 + 255) * 32768 > 2**31 - 1, where
            generic.append(where)
    assert len(generic) <= 1, generic


# --------------------------------------------------------------------------------------------------------
# The one-step requantization against TFLM's two steps, in C, on both code paths


REQUANT_TEST = r"""
#include <stdio.h>
#include <stdint.h>
#include "hil_quant.h"

static uint64_t state = 88172645463325252ull;
static uint32_t next(void) { state ^= state << 13; state ^= state >> 7; state ^= state << 17; return (uint32_t)state; }

int main(void) {
    long bad = 0, i;
    for (i = 0; i < 2000000; ++i) {
        const int32_t m = (int32_t)((1u << 30) | (next() & 0x3FFFFFFFu));
        const int32_t shift = -(int32_t)(1 + next() % 21);           /* right shifts: n = 32 .. 52 */
        int32_t x = (int32_t)next() >> (next() % 31);
        int32_t small = 0;
        if (x > -(1 << 20) && x < (1 << 20)) small = 1;
        if (hil_requantize_s32(x, m, 31 - shift, small) != hil_multiply_by_quantized_multiplier(x, m, shift)) ++bad;
        {
            const int32_t r = m < 0x7FFF0000 ? ((m + (1 << 15)) >> 16) : 0x7FFF;
            const int32_t s16 = -(int32_t)(next() % 30);                 /* n = 15 - shift: 15 .. 44 */
            const int32_t n16 = 15 - s16;
            const int32_t want = hil_multiply_by_quantized_multiplier_i64((int64_t)x, m, s16);
            if (hil_requantize_16x8(x, r, n16, n16 >= 17) != want) ++bad;
        }
    }
    printf("%ld\n", bad);
    return bad != 0;
}
"""


@pytest.mark.parametrize("slow_mul", [0, 1], ids=["int64", "HIL_SLOW_MUL64"])
def test_one_step_requantization_equals_tflms_two_steps(slow_mul: int, tmp_path: Path) -> None:
    src = tmp_path / "requant.c"
    src.write_text(REQUANT_TEST)
    exe = tmp_path / "requant"
    subprocess.run(["gcc", "-O2", "-std=c99", "-Wall", "-Werror", f"-DHIL_SLOW_MUL64={slow_mul}", "-I", str(INCLUDE),
                    str(src), "-o", str(exe)], check=True)  # fmt: skip
    proc = subprocess.run([str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "0", proc.stdout


# --------------------------------------------------------------------------------------------------------
# hil bench runtime


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_bench_runtime_prints_its_figures_for_the_synthetic_model(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import argparse
    import json
    import shutil

    if shutil.which("valgrind") is None:
        pytest.skip("valgrind not installed")
    from hil.cli_bench import add_bench_parser

    parser = argparse.ArgumentParser(prog="hil")
    add_bench_parser(parser.add_subparsers(dest="command"))
    qemu = shutil.which("qemu-system-xtensa") is not None and shutil.which("xtensa-lx106-elf-gcc") is not None
    argv = ["bench", "runtime", "--model", str(paths.SYNTHETIC_MODEL), "--images", "4", "--runs", "2",
            "--json", str(tmp_path / "bench.json"), *([] if qemu else ["--no-qemu"])]  # fmt: skip
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"runtime \d+\.\dx fewer instructions than TFLite Micro, .*arena \d\.\d\dx, bit-exact 4/4",
                        out[-1]), out[-1]  # fmt: skip
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert (
        figures["host"]["ours"] > 0
        and figures["host"]["tflm"] > 0
        and figures["host"]["method"].startswith("callgrind")
    )
    assert figures["arena"]["tflm"] == figures["arena"]["tflm_head"] + figures["arena"]["tflm_tail"]
    assert figures["bit_exact"]["host"] == {"matched": 4, "images": 4}
    if qemu:
        assert figures["qemu"]["before_ticks"] > 0 and figures["qemu"]["after_ticks"] > 0
        assert figures["bit_exact"]["qemu"] == {"matched": 4, "images": 4}
