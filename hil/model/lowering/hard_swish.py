"""HARD_SWISH -> hil_hard_swish (device_fw/core/kernels/hard_swish.c), int8 only (TFLM has no 16x8
HARD_SWISH and the converter emits none)."""

from __future__ import annotations

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_hard_swish(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_int8_activation(op, inp, "input")
    common.require_int8_activation(op, out, "output")
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    fixed = qz.hard_swish_params(inp.quant.scale, out.quant.scale)
    if fixed["output_multiplier_exponent"] > 0:  # TFLM's Prepare requires this
        raise UnsupportedModelError(
            f"{op.describe()}: output scale {out.quant.scale!r} is below input scale / 128; TFLM cannot run it"
        )
    if fixed["output_multiplier_exponent"] < -15 or not -15 <= fixed["reluish_multiplier_exponent"] <= 15:
        raise UnsupportedModelError(f"{op.describe()}: input/output scales too far apart for 16-bit fixed point")
    params = {
        "size": inp.size,
        "input_zero_point": inp.quant.zero_point,
        "output_zero_point": out.quant.zero_point,
        "reluish_multiplier_exponent": fixed["reluish_multiplier_exponent"],
        "output_multiplier_exponent": fixed["output_multiplier_exponent"],
        "reluish_multiplier_fixedpoint_int16": fixed["reluish_multiplier_fixedpoint_int16"],
        "output_multiplier_fixedpoint_int16": fixed["output_multiplier_fixedpoint_int16"],
    }
    summary = common.shape_str(inp.shape)
    return common.call(op, "hil_hard_swish", "hil_hard_swish_params_t", params, [inp.index], out, graph, summary)
