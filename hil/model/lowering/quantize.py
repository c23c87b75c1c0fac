"""QUANTIZE -> hil_requantize (device_fw/core/kernels/quantize.c) between int8/int16 scales and types, or
hil_quantize from a float32 tensor (a float graph input, as the converter writes it for float I/O)."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_quantize(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, out, "output")
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    qmin, qmax = qz.INT_RANGES[out.dtype]
    out_bytes = np.dtype(out.dtype).itemsize
    if inp.dtype == "float32":
        if inp.is_const:
            raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} is a constant")
        params = {
            "size": inp.size,
            "scale": float(out.quant.scale),  # TFLM divides by the float32 scale
            "zero_point": out.quant.zero_point,
            "output_min": qmin,
            "output_max": qmax,
            "output_bytes": out_bytes,
        }
        summary = f"{common.shape_str(inp.shape)}, float32 -> {out.dtype}"
        return common.call(op, "hil_quantize", "hil_quantize_params_t", params, [inp.index], out, graph, summary)
    common.require_activation(op, inp, "input")
    # TFLM PrepareQuantizeReference: double(input scale) / double(output scale).
    multiplier, shift = qz.quantize_multiplier(float(inp.quant.scale) / float(out.quant.scale))
    if shift > 15:
        raise UnsupportedModelError(
            f"{op.describe()}: input scale / output scale = {inp.quant.scale / out.quant.scale:g} is too large "
            "(the int32 rescale would overflow)"
        )
    params = {
        "size": inp.size,
        "input_zero_point": inp.quant.zero_point,
        "output_zero_point": out.quant.zero_point,
        "multiplier": multiplier,
        "shift": shift,
        "output_min": qmin,
        "output_max": qmax,
        "input_bytes": np.dtype(inp.dtype).itemsize,
        "output_bytes": out_bytes,
    }
    rescale = inp.quant.scale / out.quant.scale
    summary = f"{common.shape_str(inp.shape)}, {inp.dtype} -> {out.dtype}, rescale {rescale:.6g}"
    return common.call(op, "hil_requantize", "hil_requantize_params_t", params, [inp.index], out, graph, summary)
