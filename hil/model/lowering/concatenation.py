"""CONCATENATION -> hil_concatenation (device_fw/core/kernels/concatenation.c): a byte copy, since TFLM
requires every input to share the output's quantization. Any activation type; constant inputs become
constant arrays."""

from __future__ import annotations

import numpy as np

from hil.model.lowering import common
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import ACTIVATION_NAMES, Graph, Operator, UnsupportedModelError


def lower_concatenation(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    out = common.output(graph, op)
    common.require_activation(op, out, "output")
    inputs = [common.tensor(graph, op, k, f"input {k}") for k in range(len(op.inputs))]
    if not inputs:
        raise UnsupportedModelError(f"{op.describe()} has no inputs")
    act = ACTIVATION_NAMES.get(op.options.get("fused_activation_function", 0), "?")
    if act != "NONE":
        raise UnsupportedModelError(f"{op.describe()}: fused activation {act} is not supported (TFLM has none)")
    rank = len(out.shape)
    axis = int(op.options.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise UnsupportedModelError(f"{op.describe()}: axis {op.options.get('axis')} is invalid for rank {rank}")
    elem_bytes = np.dtype(out.dtype).itemsize
    inner = int(np.prod(out.shape[axis + 1 :], dtype=np.int64))
    outer = int(np.prod(out.shape[:axis], dtype=np.int64))
    consts: list[ConstArray] = []
    pointers: list[int | str] = []
    copy_bytes = []
    for k, t in enumerate(inputs):
        common.require_activation(op, t, f"input {k}", allow_const=True)
        common.same_activation_dtype(op, t, out)
        if (t.quant.scale, t.quant.zero_point) != (out.quant.scale, out.quant.zero_point):
            raise UnsupportedModelError(
                f"{op.describe()}: input {t.describe()} is quantized with ({t.quant.scale!r}, {t.quant.zero_point}) "
                f"but the output with ({out.quant.scale!r}, {out.quant.zero_point}); TFLM requires them equal"
            )
        same_elsewhere = len(t.shape) == rank and all(
            int(t.shape[d]) == int(out.shape[d]) for d in range(rank) if d != axis
        )
        if not same_elsewhere:
            raise UnsupportedModelError(
                f"{op.describe()}: input {t.describe()} does not match output {out.describe()} off axis {axis}"
            )
        if t.is_const:
            sym = f"{prefix}_input{k}"
            ctype = "int8_t" if t.dtype == "int8" else "int16_t"
            consts.append(ConstArray(sym, ctype, t.data.reshape(-1).astype(np.int64), common.shape_str(t.shape)))
            pointers.append(sym)
        else:
            pointers.append(t.index)
        copy_bytes.append(int(t.shape[axis]) * inner * elem_bytes)
    if sum(int(t.shape[axis]) for t in inputs) != int(out.shape[axis]):
        raise UnsupportedModelError(f"{op.describe()}: the inputs' sizes along axis {axis} do not add up")
    consts.append(
        ConstArray(f"{prefix}_copy_bytes", "int32_t", np.array(copy_bytes, dtype=np.int64), "bytes per row, per input")
    )
    params = {"outer": outer, "n_inputs": len(inputs), "copy_bytes": f"{prefix}_copy_bytes"}
    shapes = " ++ ".join(common.shape_str(t.shape) for t in inputs)
    summary = f"{shapes} -> {common.shape_str(out.shape)}, axis {axis}"
    # One argument: the array of input pointers (codegen writes a compound literal).
    return common.call(
        op, "hil_concatenation", "hil_concatenation_params_t", params, [pointers], out, graph, summary, consts
    )
