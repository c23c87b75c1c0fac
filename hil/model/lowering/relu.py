"""RELU -> hil_relu (device_fw/core/kernels/relu.c): a standalone ReLU that requantizes to its output's scale
(hil_relu_i16 for int16 tensors)."""

from __future__ import annotations

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_relu(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    # TFLM CalculateReluOpData: double(input scale) / double(output scale); clamp at the output's quantized 0.
    multiplier, shift = qz.quantize_multiplier(float(inp.quant.scale) / float(out.quant.scale))
    if shift > 15:
        raise UnsupportedModelError(f"{op.describe()}: input scale / output scale is too large")
    lo, hi = qz.activation_range("RELU", out.quant.scale, out.quant.zero_point, dtype)
    params = {
        "size": inp.size,
        "input_zero_point": inp.quant.zero_point,
        "output_zero_point": out.quant.zero_point,
        "output_multiplier": multiplier,
        "output_shift": shift,
        "act_min": lo,
        "act_max": hi,
    }
    kernel = common.kernel_name("hil_relu", dtype, "_i16")
    summary = common.shape_str(inp.shape)
    return common.call(op, kernel, "hil_relu_params_t", params, [inp.index], out, graph, summary)
