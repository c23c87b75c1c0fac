"""LEAKY_RELU -> hil_leaky_relu (device_fw/core/kernels/leaky_relu.c), hil_leaky_relu_i16 for int16 tensors."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_leaky_relu(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: input {inp.describe()} and output {out.describe()} differ")
    alpha = float(np.float32(op.options.get("alpha", 0.2)))
    # TFLM CalculateOpDataLeakyRelu, in double (float32 arithmetic differs: tests/test_ops_coverage.py).
    m_alpha, s_alpha = qz.quantize_multiplier(float(inp.quant.scale) * alpha / float(out.quant.scale))
    m_id, s_id = qz.quantize_multiplier(float(inp.quant.scale) / float(out.quant.scale))
    if max(s_alpha, s_id) > 15:
        raise UnsupportedModelError(f"{op.describe()}: input scale / output scale is too large")
    params = {
        "size": inp.size,
        "input_zero_point": inp.quant.zero_point,
        "output_zero_point": out.quant.zero_point,
        "output_multiplier_identity": m_id,
        "output_shift_identity": s_id,
        "output_multiplier_alpha": m_alpha,
        "output_shift_alpha": s_alpha,
    }
    kernel = common.kernel_name("hil_leaky_relu", dtype, "_i16")
    summary = f"{common.shape_str(inp.shape)}, alpha {alpha:g}"
    return common.call(op, kernel, "hil_leaky_relu_params_t", params, [inp.index], out, graph, summary)
