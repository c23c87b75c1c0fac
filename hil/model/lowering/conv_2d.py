"""CONV_2D -> hil_conv_2d (device_fw/core/kernels/conv_2d.c): int8 convolution with per-channel requantization;
hil_conv_2d_16x8 (conv_2d_16x8.c) for int16 activations."""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import ConvGeometry, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_conv_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = common.weighted_tensors(graph, op, "filter")
    n, ih, iw, ic = common.nhwc(op, inp, "input")
    on, oh, ow, oc = common.nhwc(op, out, "output")
    if len(filt.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: filter {filt.describe()} must be 4-D (OHWI)")
    fo, fh, fw, fi = (int(d) for d in filt.shape)
    if fi != ic:
        raise UnsupportedModelError(
            f"{op.describe()}: filter depth {fi} != input depth {ic} (grouped convolution is not supported)"
        )
    if fo != oc or on != n:
        raise UnsupportedModelError(f"{op.describe()}: filter/output shapes disagree")
    common.require_weights(op, filt, 0, oc)
    bias = common.bias(op, common.optional(graph, op, 2), oc, inp.dtype)
    geo = ConvGeometry.of(op, (n, ih, iw, ic), (fh, fw), (on, oh, ow, oc))
    layout = f"[{oc}][{fh}][{fw}][{ic}] (OHWI)"
    act, consts, requant = common.requantization(op, prefix, inp, filt, out, bias, oc, layout)
    params = {**geo.params(), **requant}
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {fh}x{fw} filter, {geo.summary()}, {act}"
    )
    kernel, macs = common.kernel_name("hil_conv_2d", inp.dtype), n * oh * ow * oc * fh * fw * ic
    return common.call(op, kernel, f"{kernel}_params_t", params, [inp.index], out, graph, summary, consts, macs)
