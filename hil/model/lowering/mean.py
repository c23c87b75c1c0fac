"""MEAN -> hil_mean (device_fw/core/kernels/mean.c): the mean over a contiguous run of axes
(hil_mean_i16 for int16 tensors)."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_mean(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    rank = len(inp.shape)
    axes_raw = common.const_int_list(op, common.tensor(graph, op, 1, "axis"), "the axis input")
    axes = sorted({a + rank if a < 0 else a for a in axes_raw})
    if not axes or any(a < 0 or a >= rank for a in axes):
        raise UnsupportedModelError(f"{op.describe()}: axes {axes_raw} are invalid for rank {rank}")
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise UnsupportedModelError(
            f"{op.describe()}: MEAN over non-adjacent axes {axes} is not supported (only a contiguous run, "
            "such as H,W for GlobalAveragePooling2D)"
        )
    outer = int(np.prod(inp.shape[: axes[0]], dtype=np.int64))
    count = int(np.prod(inp.shape[axes[0] : axes[-1] + 1], dtype=np.int64))
    inner = int(np.prod(inp.shape[axes[-1] + 1 :], dtype=np.int64))
    if out.size != outer * inner or count == 0:
        raise UnsupportedModelError(f"{op.describe()}: output {out.describe()} does not match the reduction")
    # TFLM requantizes even when input and output quantization are identical (see kernels/mean.c).
    mult, shift = qz.mean_multiplier(inp.quant.scale, out.quant.scale, count)
    params = {
        "outer": outer,
        "count": count,
        "inner": inner,
        "input_zero_point": inp.quant.zero_point,
        "output_zero_point": out.quant.zero_point,
        "multiplier": mult,
        "shift": shift,
    }
    summary = f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, axes {axes}"
    kernel = common.kernel_name("hil_mean", dtype, "_i16")
    return common.call(op, kernel, "hil_mean_params_t", params, [inp.index], out, graph, summary)
