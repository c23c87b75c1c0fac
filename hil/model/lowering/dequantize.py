"""DEQUANTIZE -> hil_dequantize (device_fw/core/kernels/dequantize.c): int8/int16 to a float32 tensor, as the
converter writes a float graph output. The device protocol has no float32 tensors (device_fw/PROTOCOL.md),
so such a model runs through the host model runner only."""

from __future__ import annotations

import numpy as np

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_dequantize(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    if out.dtype != "float32":
        raise UnsupportedModelError(f"{op.describe()}: output {out.describe()} must be float32")
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    params = {
        "size": inp.size,
        "zero_point": inp.quant.zero_point,
        "scale": float(inp.quant.scale),
        "input_bytes": np.dtype(inp.dtype).itemsize,
    }
    summary = f"{common.shape_str(inp.shape)}, {inp.dtype} -> float32"
    return common.call(op, "hil_dequantize", "hil_dequantize_params_t", params, [inp.index], out, graph, summary)
