"""PAD and PADV2 -> hil_pad (device_fw/core/kernels/pad.c)."""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_pad(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_int8_activation(op, inp, "input")
    common.require_int8_activation(op, out, "output")
    rank = len(inp.shape)
    pads = common.const_int_list(op, common.tensor(graph, op, 1, "paddings"), "paddings")
    if rank > 4 or len(pads) != 2 * rank:
        raise UnsupportedModelError(f"{op.describe()}: paddings for rank {rank} are not supported")
    before, after = pads[0::2], pads[1::2]
    if any(p < 0 for p in pads):
        raise UnsupportedModelError(f"{op.describe()}: negative paddings are not supported")
    out_shape = [int(d) + b + a for d, b, a in zip(inp.shape, before, after, strict=True)]
    if out_shape != list(out.shape):
        raise UnsupportedModelError(f"{op.describe()}: padded shape {out_shape} != {out.describe()}")
    pad_value = out.quant.zero_point
    cv = common.optional(graph, op, 2)
    if op.opcode == "PADV2" and cv is not None:
        if cv.dtype != "int8" or not cv.is_const or cv.size != 1:
            raise UnsupportedModelError(f"{op.describe()}: constant_values must be one constant int8 value")
        pad_value = int(cv.data.reshape(-1)[0])
    p4 = 4 - rank
    params = {
        "input_dims": [1] * p4 + [int(d) for d in inp.shape],
        "pad_before": [0] * p4 + before,
        "output_dims": [1] * p4 + out_shape,
        "pad_value": pad_value,
    }
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, "
        f"before {before}, after {after}, value {pad_value}"
    )
    return common.call(op, "hil_pad", "hil_pad_params_t", params, [inp.index], out, graph, summary)
