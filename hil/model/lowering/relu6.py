"""RELU6 -> hil_relu6 (device_fw/core/kernels/relu6.c): a clamp to the input's quantized 0 and 6, without
requantization, as TFLM runs it (hil_relu6_i16 for int16 tensors)."""

from __future__ import annotations

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_relu6(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    # TFLM Relu6Prepare: FloatToQuantizedType(6.0f, input scale, input zero point) and the input zero point.
    # TFLM ignores the output quantization (the converter gives RELU6 the input's); so does the kernel.
    params = {
        "size": inp.size,
        "lower": inp.quant.zero_point,
        "upper": qz.quantize_to_type(6.0, inp.quant.scale, inp.quant.zero_point, dtype),
    }
    same = (inp.quant.scale, inp.quant.zero_point) == (out.quant.scale, out.quant.zero_point)
    summary = common.shape_str(inp.shape) + ("" if same else ", output keeps the input's quantization (TFLM)")
    kernel = common.kernel_name("hil_relu6", dtype, "_i16")
    return common.call(op, kernel, "hil_relu6_params_t", params, [inp.index], out, graph, summary)
