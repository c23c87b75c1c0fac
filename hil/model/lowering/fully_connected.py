"""FULLY_CONNECTED -> hil_fully_connected (device_fw/core/kernels/fully_connected.c)."""

from __future__ import annotations

import numpy as np

from hil.model import quantization as qz
from hil.model.lowering import common
from hil.model.lowering.common import ConstArray, KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_fully_connected(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = (
        common.tensor(graph, op, 0, "input"),
        common.tensor(graph, op, 1, "weights"),
        common.output(graph, op),
    )
    common.require_int8_activation(op, inp, "input")
    common.require_int8_activation(op, out, "output")
    if op.options.get("weights_format", 0) != 0:
        raise UnsupportedModelError(f"{op.describe()}: shuffled weights format is not supported")
    if len(filt.shape) != 2:
        raise UnsupportedModelError(f"{op.describe()}: weights {filt.describe()} must be 2-D [outputs, depth]")
    units, depth = (int(d) for d in filt.shape)
    common.require_weights(op, filt, 0, units)
    if depth == 0 or inp.size % depth != 0:
        raise UnsupportedModelError(f"{op.describe()}: input size {inp.size} is not a multiple of depth {depth}")
    batches = inp.size // depth
    if out.size != batches * units:
        raise UnsupportedModelError(f"{op.describe()}: output {out.describe()} is not {batches}x{units}")
    bias = common.bias(op, common.optional(graph, op, 2), units)
    act, lo, hi = common.activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, units)
    consts = [ConstArray(f"{prefix}_filter", "int8_t", filt.data.reshape(-1).astype(np.int64), f"[{units}][{depth}]")]
    if bias is not None:
        consts.append(ConstArray(f"{prefix}_bias", "int32_t", bias, f"[{units}]"))
    consts += common.requant_arrays(prefix, mult, shift)
    params = {
        "batches": batches,
        "accum_depth": depth,
        "output_depth": units,
        "input_offset": -inp.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "act_min": lo,
        "act_max": hi,
        "filter": f"{prefix}_filter",
        "bias": f"{prefix}_bias" if bias is not None else "NULL",
        "output_multiplier": f"{prefix}_multiplier",
        "output_shift": f"{prefix}_shift",
    }
    per = "per-channel" if filt.quant.per_channel else "per-tensor"
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {depth} -> {units}, {per} weights, {act}"
    )
    return common.call(
        op,
        "hil_fully_connected",
        "hil_fully_connected_params_t",
        params,
        [inp.index],
        out,
        graph,
        summary,
        consts,
        macs=batches * units * depth,
    )
