"""ADD -> hil_add (device_fw/core/kernels/add.c): int8 addition with rank-4 broadcasting."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def _broadcast_strides(op: Operator, shape: tuple[int, ...], out4: list[int]) -> list[int]:
    dims = [1] * (4 - len(shape)) + [int(d) for d in shape]
    strides = [0, 0, 0, 0]
    step = 1
    for i in range(3, -1, -1):
        if dims[i] == out4[i]:
            strides[i] = step if dims[i] > 1 else 0
        elif dims[i] == 1:
            strides[i] = 0
        else:
            raise UnsupportedModelError(f"{op.describe()}: shape {list(shape)} does not broadcast to {out4}")
        step *= dims[i]
    return strides


def lower_add(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    a, b, out = common.tensor(graph, op, 0, "first"), common.tensor(graph, op, 1, "second"), common.output(graph, op)
    common.require_int8_activation(op, out, "output")
    consts: list[ConstArray] = []
    args: list[int | str] = []
    for k, t in enumerate((a, b), start=1):
        common.require_int8_activation(op, t, f"input {k}", allow_const=True)
        if t.is_const:
            sym = f"{prefix}_input{k}"
            consts.append(ConstArray(sym, "int8_t", t.data.reshape(-1).astype(np.int64), common.shape_str(t.shape)))
            args.append(sym)
        else:
            args.append(t.index)
    if max(len(a.shape), len(b.shape), len(out.shape)) > 4:
        raise UnsupportedModelError(f"{op.describe()}: ADD above rank 4 is not supported")
    out4 = [1] * (4 - len(out.shape)) + [int(d) for d in out.shape]
    s1, s2 = _broadcast_strides(op, a.shape, out4), _broadcast_strides(op, b.shape, out4)
    left_shift = 20
    twice_max = 2 * max(a.quant.scale, b.quant.scale)
    try:
        m1, sh1 = qz.quantize_multiplier_smaller_than_one_exp(a.quant.scale / twice_max)
        m2, sh2 = qz.quantize_multiplier_smaller_than_one_exp(b.quant.scale / twice_max)
        mo, sho = qz.quantize_multiplier_smaller_than_one_exp(twice_max / ((1 << left_shift) * out.quant.scale))
    except ValueError as exc:
        raise UnsupportedModelError(f"{op.describe()}: scales out of TFLM's supported range ({exc})") from exc
    act, lo, hi = common.activation(op, out)
    params = {
        "dims": out4,
        "input1_strides": s1,
        "input2_strides": s2,
        "input1_offset": -a.quant.zero_point,
        "input2_offset": -b.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "left_shift": left_shift,
        "input1_multiplier": m1,
        "input1_shift": sh1,
        "input2_multiplier": m2,
        "input2_shift": sh2,
        "output_multiplier": mo,
        "output_shift": sho,
        "act_min": lo,
        "act_max": hi,
    }
    bc = ", broadcast" if list(a.shape) != list(b.shape) else ""
    summary = f"{common.shape_str(a.shape)} + {common.shape_str(b.shape)} -> {common.shape_str(out.shape)}{bc}, {act}"
    return common.call(op, "hil_add", "hil_add_params_t", params, args, out, graph, summary, consts)
