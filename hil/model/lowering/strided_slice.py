"""STRIDED_SLICE -> hil_strided_slice (device_fw/core/kernels/strided_slice.c): stride-1 slices
(hil_strided_slice_i16 for int16 tensors)."""

from __future__ import annotations

import numpy as np

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_strided_slice(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    dtype = common.same_activation_dtype(op, inp, out)
    begin = common.const_int_list(op, common.tensor(graph, op, 1, "begin"), "begin")
    end = common.const_int_list(op, common.tensor(graph, op, 2, "end"), "end")
    strides = common.const_int_list(op, common.tensor(graph, op, 3, "strides"), "strides")
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0):
        raise UnsupportedModelError(
            f"{op.describe()}: ellipsis_mask/new_axis_mask are not supported; index every axis explicitly"
        )
    if any(s != 1 for s in strides):
        raise UnsupportedModelError(
            f"{op.describe()}: strides {strides} are not supported (only stride-1 slices such as "
            "x[..., a:b]); slice with step 1 or use a pooling/convolution with a stride instead"
        )
    rank = len(inp.shape)
    if not (len(begin) == len(end) == len(strides) == rank) or rank > 4:
        raise UnsupportedModelError(f"{op.describe()}: slice of rank {rank} with {len(begin)} indices is not supported")
    begin_mask, end_mask = int(o.get("begin_mask", 0)), int(o.get("end_mask", 0))
    shrink_mask, offset = int(o.get("shrink_axis_mask", 0)), bool(o.get("offset", False))
    starts, sizes = [], []
    for axis in range(rank):
        size = int(inp.shape[axis])
        # TFLM StridedSliceStartForAxis / StridedSliceEndForAxis with a positive stride.
        start = begin[axis] + size if begin[axis] < 0 else begin[axis]
        start = min(max(start, 0), size)
        if begin_mask & (1 << axis):
            start = 0
        if shrink_mask & (1 << axis):
            stop = start if start >= size else start + 1
        else:
            stop = end[axis] + (start if offset else 0)
            stop = stop + size if stop < 0 else stop
            stop = min(max(stop, 0), size)
            if end_mask & (1 << axis):
                stop = size
        starts.append(start)
        sizes.append(max(stop - start, 0))
    if int(np.prod(sizes, dtype=np.int64)) != out.size:
        raise UnsupportedModelError(f"{op.describe()}: slice size {sizes} does not match {out.describe()}")
    pad = 4 - rank
    params = {
        "input_dims": [1] * pad + [int(d) for d in inp.shape],
        "begin": [0] * pad + starts,
        "output_dims": [1] * pad + sizes,
    }
    box = ", ".join(f"{s}:{s + n}" for s, n in zip(starts, sizes, strict=True))
    summary = f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, [{box}]"
    kernel = common.kernel_name("hil_strided_slice", dtype, "_i16")
    return common.call(op, kernel, "hil_strided_slice_params_t", params, [inp.index], out, graph, summary)
