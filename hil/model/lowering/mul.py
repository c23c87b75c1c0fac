"""MUL -> hil_mul (device_fw/core/kernels/mul.c): elementwise product with rank-4 broadcasting; hil_mul_i16
for int16 tensors (16x8). `binary_operands()` is shared with SUB."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.add import _broadcast_strides
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import Graph, Operator, Tensor, UnsupportedModelError


def binary_operands(
    graph: Graph, op: Operator, prefix: str
) -> tuple[Tensor, Tensor, Tensor, str, list[int | str], list[ConstArray], dict[str, list[int]]]:
    """(input1, input2, output, activation type, kernel args, constant arrays, broadcast params) of a binary
    elementwise op: both inputs and the output one activation type (int16: zero point 0); a constant input
    becomes a constant array; shapes right-aligned to the output's four dimensions, broadcast inputs getting
    stride 0."""
    a, b, out = common.tensor(graph, op, 0, "first"), common.tensor(graph, op, 1, "second"), common.output(graph, op)
    common.require_activation(op, out, "output")
    dtype = out.dtype
    consts: list[ConstArray] = []
    args: list[int | str] = []
    for k, t in enumerate((a, b), start=1):
        common.require_activation(op, t, f"input {k}", allow_const=True)
        common.same_activation_dtype(op, t, out)
        if t.is_const:
            sym = f"{prefix}_input{k}"
            ctype = "int8_t" if dtype == "int8" else "int16_t"
            consts.append(ConstArray(sym, ctype, t.data.reshape(-1).astype(np.int64), common.shape_str(t.shape)))
            args.append(sym)
        else:
            args.append(t.index)
    if max(len(a.shape), len(b.shape), len(out.shape)) > 4:
        raise UnsupportedModelError(f"{op.describe()}: {op.opcode} above rank 4 is not supported")
    out4 = [1] * (4 - len(out.shape)) + [int(d) for d in out.shape]
    try:
        broadcast = [int(d) for d in np.broadcast_shapes((1,) * 4, tuple(a.shape), tuple(b.shape))]
    except ValueError:
        broadcast = []
    if broadcast != out4:
        raise UnsupportedModelError(
            f"{op.describe()}: output {out.describe()} is not the broadcast of {list(a.shape)} and {list(b.shape)}"
        )
    shapes = {
        "dims": out4,
        "input1_strides": _broadcast_strides(op, a.shape, out4),
        "input2_strides": _broadcast_strides(op, b.shape, out4),
    }
    return a, b, out, dtype, args, consts, shapes


def lower_mul(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    a, b, out, dtype, args, consts, shapes = binary_operands(graph, op, prefix)
    # TFLM CalculateOpDataMul: double(s1) * double(s2) / double(s_out).
    multiplier, shift = qz.quantize_multiplier(float(a.quant.scale) * float(b.quant.scale) / float(out.quant.scale))
    act, lo, hi = common.activation(op, out)
    params = {
        **shapes,
        "input1_offset": -a.quant.zero_point,
        "input2_offset": -b.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "output_multiplier": multiplier,
        "output_shift": shift,
        "act_min": lo,
        "act_max": hi,
    }
    bc = ", broadcast" if list(a.shape) != list(b.shape) else ""
    summary = f"{common.shape_str(a.shape)} * {common.shape_str(b.shape)} -> {common.shape_str(out.shape)}{bc}, {act}"
    kernel = common.kernel_name("hil_mul", dtype, "_i16")
    return common.call(op, kernel, "hil_mul_params_t", params, args, out, graph, summary, consts)
