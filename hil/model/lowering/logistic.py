"""LOGISTIC -> hil_logistic (device_fw/core/kernels/logistic.c): gemmlowp's fixed-point sigmoid for int8,
TFLM's interpolated sigmoid table for int16 (hil_logistic_i16)."""

from __future__ import annotations

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, Tensor, UnsupportedModelError

# The output quantization TFLite fixes for LOGISTIC and TANH, by activation type: (scale, zero point).
OUTPUT_QUANT = {
    "LOGISTIC": {"int8": (1.0 / 256, -128), "int16": (1.0 / 32768, 0)},
    "TANH": {"int8": (1.0 / 128, 0), "int16": (1.0 / 32768, 0)},
}


def sigmoid_like_params(op: Operator, inp: Tensor, out: Tensor, dtype: str) -> dict[str, int]:
    """The params of hil_logistic / hil_tanh: TFLM's Prepare for either op."""
    want_scale, want_zp = OUTPUT_QUANT[op.opcode][dtype]
    # TFLM checks the zero point (and, for int16, that the scale is 2^-15); its int8 kernels assume the scale.
    if out.quant.scale != want_scale or out.quant.zero_point != want_zp:
        raise UnsupportedModelError(
            f"{op.describe()}: {dtype} output {out.describe()} must have scale {want_scale!r} and zero point "
            f"{want_zp} (has {out.quant.scale!r}, {out.quant.zero_point}), as TFLite's converter writes it"
        )
    if dtype == "int8":
        multiplier, left_shift, radius = qz.fixed_point_input_rescale(inp.quant.scale, 4)
        if not 0 <= left_shift <= 30:
            raise UnsupportedModelError(f"{op.describe()}: input scale {inp.quant.scale!r} is out of range")
        return {
            "input_zero_point": inp.quant.zero_point,
            "input_range_radius": radius,
            "input_multiplier": multiplier,
            "input_left_shift": left_shift,
        }
    pot_shifts = (0,) if op.opcode == "LOGISTIC" else (0, 1)
    multiplier, left_shift = qz.sigmoid_lut_input_rescale(inp.quant.scale, pot_shifts)
    if multiplier > 32767 or not 0 <= left_shift <= 31:
        raise UnsupportedModelError(f"{op.describe()}: int16 input scale {inp.quant.scale!r} is too large")
    return {
        "input_zero_point": 0,
        "input_range_radius": 0,
        "input_multiplier": multiplier,
        "input_left_shift": left_shift,
    }


def lower_sigmoid_like(graph: Graph, op: Operator, prefix: str, base: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    params = {"size": inp.size, **sigmoid_like_params(op, inp, out, dtype)}
    kernel = common.kernel_name(base, dtype, "_i16")
    summary = f"{common.shape_str(inp.shape)}, {'fixed point' if dtype == 'int8' else 'sigmoid table'}"
    return common.call(op, kernel, f"{base}_params_t", params, [inp.index], out, graph, summary)


def lower_logistic(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    return lower_sigmoid_like(graph, op, prefix, "hil_logistic")
