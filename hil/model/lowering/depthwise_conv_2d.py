"""DEPTHWISE_CONV_2D -> hil_depthwise_conv_2d (device_fw/core/kernels/depthwise_conv_2d.c)."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_depthwise_conv_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = (
        common.tensor(graph, op, 0, "input"),
        common.tensor(graph, op, 1, "filter"),
        common.output(graph, op),
    )
    common.require_int8_activation(op, inp, "input")
    common.require_int8_activation(op, out, "output")
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
    bias = common.bias(op, common.optional(graph, op, 2), oc)
    padding = common.padding(op)
    sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
    dh, dw = int(op.options.get("dilation_h_factor", 1)), int(op.options.get("dilation_w_factor", 1))
    pad_h = common.check_spatial(op, padding, ih, fh, sh, dh, oh, "height")
    pad_w = common.check_spatial(op, padding, iw, fw, sw, dw, ow, "width")
    act, lo, hi = common.activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, oc)
    consts = [
        ConstArray(f"{prefix}_filter", "int8_t", filt.data.reshape(-1).astype(np.int64), f"[1][{fh}][{fw}][{oc}]")
    ]
    if bias is not None:
        consts.append(ConstArray(f"{prefix}_bias", "int32_t", bias, f"[{oc}]"))
    consts += common.requant_arrays(prefix, mult, shift)
    params = {
        "batches": n,
        "input_h": ih,
        "input_w": iw,
        "input_c": ic,
        "depth_multiplier": dm,
        "filter_h": fh,
        "filter_w": fw,
        "output_h": oh,
        "output_w": ow,
        "output_c": oc,
        "stride_h": sh,
        "stride_w": sw,
        "dilation_h": dh,
        "dilation_w": dw,
        "pad_h": pad_h,
        "pad_w": pad_w,
        "input_offset": -inp.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "act_min": lo,
        "act_max": hi,
        "filter": f"{prefix}_filter",
        "bias": f"{prefix}_bias" if bias is not None else "NULL",
        "output_multiplier": f"{prefix}_multiplier",
        "output_shift": f"{prefix}_shift",
    }
    dil = f", dilation {dh}x{dw}" if (dh, dw) != (1, 1) else ""
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {fh}x{fw} filter, depth multiplier {dm}, "
        f"stride {sh}x{sw}{dil}, {padding}, {act}"
    )
    return common.call(
        op,
        "hil_depthwise_conv_2d",
        "hil_depthwise_conv_2d_params_t",
        params,
        [inp.index],
        out,
        graph,
        summary,
        consts,
        macs=n * oh * ow * oc * fh * fw,
    )
