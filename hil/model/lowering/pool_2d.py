"""AVERAGE_POOL_2D and MAX_POOL_2D -> hil_average_pool_2d / hil_max_pool_2d, sharing hil_pool_params_t.

See device_fw/core/kernels/average_pool_2d.c and max_pool_2d.c.
"""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_pool_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_int8_activation(op, inp, "input")
    common.require_int8_activation(op, out, "output")
    n, ih, iw, c = common.nhwc(op, inp, "input")
    on, oh, ow, oc = common.nhwc(op, out, "output")
    if (on, oc) != (n, c):
        raise UnsupportedModelError(f"{op.describe()}: input and output batch/channels disagree")
    padding = common.padding(op)
    sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
    fh, fw = int(op.options.get("filter_height", 1)), int(op.options.get("filter_width", 1))
    pad_h = common.check_spatial(op, padding, ih, fh, sh, 1, oh, "height")
    pad_w = common.check_spatial(op, padding, iw, fw, sw, 1, ow, "width")
    # Every window must overlap the image (TFLM fails an average over zero taps at run time).
    for o, s, p, f, size in ((oh, sh, pad_h, fh, ih), (ow, sw, pad_w, fw, iw)):
        for k in (0, o - 1):
            start = k * s - p
            if min(f, size - start) - max(0, -start) <= 0:
                raise UnsupportedModelError(f"{op.describe()}: a pooling window lies entirely in the padding")
    act, lo, hi = common.activation(op, out)
    params = {
        "batches": n,
        "input_h": ih,
        "input_w": iw,
        "channels": c,
        "output_h": oh,
        "output_w": ow,
        "filter_h": fh,
        "filter_w": fw,
        "stride_h": sh,
        "stride_w": sw,
        "pad_h": pad_h,
        "pad_w": pad_w,
        "act_min": lo,
        "act_max": hi,
    }
    kernel = "hil_average_pool_2d" if op.opcode == "AVERAGE_POOL_2D" else "hil_max_pool_2d"
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {fh}x{fw} window, "
        f"stride {sh}x{sw}, {padding}, {act}"
    )
    return common.call(op, kernel, "hil_pool_params_t", params, [inp.index], out, graph, summary)
