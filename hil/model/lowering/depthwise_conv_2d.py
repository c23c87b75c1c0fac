"""DEPTHWISE_CONV_2D -> hil_depthwise_conv_2d (device_fw/core/kernels/depthwise_conv_2d.c);
hil_depthwise_conv_2d_16x8 for int16 activations."""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import ConvGeometry, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_depthwise_conv_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = common.weighted_tensors(graph, op, "filter")
    n, ih, iw, ic = common.nhwc(op, inp, "input")
    on, oh, ow, oc = common.nhwc(op, out, "output")
    if len(filt.shape) != 4 or filt.shape[0] != 1:
        raise UnsupportedModelError(f"{op.describe()}: filter {filt.describe()} must be [1, H, W, C*M]")
    _, fh, fw, fc = (int(d) for d in filt.shape)
    if fc != oc or oc % ic != 0 or on != n:
        raise UnsupportedModelError(f"{op.describe()}: filter/input/output channel counts disagree")
    dm = oc // ic
    opt_dm = int(op.options.get("depth_multiplier", dm))
    if opt_dm not in (0, dm):
        raise UnsupportedModelError(f"{op.describe()}: depth_multiplier option {opt_dm} != output/input channels {dm}")
    common.require_weights(op, filt, 3, oc)
    bias = common.bias(op, common.optional(graph, op, 2), oc, inp.dtype)
    geo = ConvGeometry.of(op, (n, ih, iw, ic), (fh, fw), (on, oh, ow, oc))
    act, consts, requant = common.requantization(op, prefix, inp, filt, out, bias, oc, f"[1][{fh}][{fw}][{oc}]")
    params = {**geo.params(depth_multiplier=dm), **requant}
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {fh}x{fw} filter, depth multiplier {dm}, "
        f"{geo.summary()}, {act}"
    )
    kernel, macs = common.kernel_name("hil_depthwise_conv_2d", inp.dtype), n * oh * ow * oc * fh * fw
    return common.call(op, kernel, f"{kernel}_params_t", params, [inp.index], out, graph, summary, consts, macs)
