"""SUB -> hil_sub (device_fw/core/kernels/sub.c): elementwise difference with rank-4 broadcasting, ADD's
params; hil_sub_i16 for int16 tensors (16x8)."""

from __future__ import annotations

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.lowering.mul import binary_operands
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_sub(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    a, b, out, dtype, args, consts, shapes = binary_operands(graph, op, prefix)
    # TFLM CalculateOpDataSub, in double like ADD's (float32 arithmetic differs: tests/test_ops_coverage.py).
    left_shift = 20 if dtype == "int8" else 15
    twice_max_input_scale = 2 * max(float(a.quant.scale), float(b.quant.scale))
    try:
        m1, s1 = qz.quantize_multiplier_smaller_than_one_exp(float(a.quant.scale) / twice_max_input_scale)
        m2, s2 = qz.quantize_multiplier_smaller_than_one_exp(float(b.quant.scale) / twice_max_input_scale)
        mo, so = qz.quantize_multiplier_smaller_than_one_exp(
            twice_max_input_scale / ((1 << left_shift) * float(out.quant.scale))
        )
    except ValueError as exc:
        raise UnsupportedModelError(f"{op.describe()}: scales out of TFLM's supported range ({exc})") from exc
    if dtype == "int16":
        m2 = -m2  # TFLM runs int16 SUB as ADD with this multiplier negated
    act, lo, hi = common.activation(op, out)
    params = {
        **shapes,
        "input1_offset": -a.quant.zero_point,
        "input2_offset": -b.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "left_shift": left_shift,
        "input1_multiplier": m1,
        "input1_shift": s1,
        "input2_multiplier": m2,
        "input2_shift": s2,
        "output_multiplier": mo,
        "output_shift": so,
        "act_min": lo,
        "act_max": hi,
    }
    bc = ", broadcast" if list(a.shape) != list(b.shape) else ""
    summary = f"{common.shape_str(a.shape)} - {common.shape_str(b.shape)} -> {common.shape_str(out.shape)}{bc}, {act}"
    kernel = common.kernel_name("hil_sub", dtype, "_i16")
    return common.call(op, kernel, "hil_sub_params_t", params, args, out, graph, summary, consts)
