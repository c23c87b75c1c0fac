"""SOFTMAX -> hil_softmax (device_fw/core/kernels/softmax.c): softmax over the last axis; hil_softmax_i16 for
int16 tensors (16x8), with the exp and 1/(1+x) tables TFLM's Prepare builds, built here."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError

_SCALED_DIFF_INTEGER_BITS = 5  # TFLM's Q5.26 input to exp()


def lower_softmax(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    if out.dtype != inp.dtype:
        raise UnsupportedModelError(
            f"{op.describe()}: {inp.dtype} input with {out.dtype} output {out.describe()} is not supported "
            "(only int8 -> int8 and int16 -> int16, as the converter writes SOFTMAX)"
        )
    common.require_activation(op, out, "output")
    dtype = inp.dtype
    if not inp.shape or list(inp.shape) != list(out.shape):
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    depth = int(inp.shape[-1])
    outer = inp.size // depth if depth else 0
    beta = float(np.float32(op.options.get("beta", 1.0)))
    consts: list[ConstArray] = []
    if dtype == "int8":
        # TFLM's int8 SOFTMAX requires exactly this output quantization (scale 1/256, zero point -128).
        if out.quant.zero_point != -128 or out.quant.scale != 1.0 / 256:
            raise UnsupportedModelError(
                f"{op.describe()}: int8 output {out.describe()} must have scale 1/256 and zero point -128 "
                f"(has {out.quant.scale!r}, {out.quant.zero_point}), as TFLite's converter writes it"
            )
        try:
            multiplier, left_shift = qz.preprocess_softmax_scaling(beta, inp.quant.scale, _SCALED_DIFF_INTEGER_BITS)
        except ValueError as exc:
            raise UnsupportedModelError(f"{op.describe()}: beta {beta} and input scale out of range ({exc})") from exc
        if left_shift > 30:
            raise UnsupportedModelError(f"{op.describe()}: beta * input scale is too large (left shift {left_shift})")
        diff_min = -qz.calculate_input_radius(_SCALED_DIFF_INTEGER_BITS, left_shift)
        exp_lut, one_lut = "NULL", "NULL"
    else:
        # TFLM: zero points 0 and an output scale within 0.1% of 1/32768.
        if abs(out.quant.scale - 1.0 / 32768) > 0.001 / 32768:
            raise UnsupportedModelError(f"{op.describe()}: int16 output {out.describe()} must have scale 1/32768")
        multiplier, left_shift = qz.quantize_multiplier(float(inp.quant.scale) * beta / (10.0 / 65535.0))
        diff_min = 0
        exp_values, one_values = qz.softmax_int16_luts()
        consts = [
            ConstArray(f"{prefix}_exp_lut", "int16_t", exp_values, "exp(x) on [-10, 0], Q0.15 (TFLM gen_lut)"),
            ConstArray(f"{prefix}_one_over_one_plus_x_lut", "int16_t", one_values, "1/(1+x) on [0, 1], Q0.15"),
        ]
        exp_lut, one_lut = f"{prefix}_exp_lut", f"{prefix}_one_over_one_plus_x_lut"
    params = {
        "outer": outer,
        "depth": depth,
        "input_multiplier": multiplier,
        "input_left_shift": left_shift,
        "diff_min": diff_min,
        "exp_lut": exp_lut,
        "one_over_one_plus_x_lut": one_lut,
    }
    summary = f"{common.shape_str(inp.shape)}, over the last axis ({depth}), beta {beta:g}"
    kernel = common.kernel_name("hil_softmax", dtype, "_i16")
    return common.call(op, kernel, "hil_softmax_params_t", params, [inp.index], out, graph, summary, consts)
