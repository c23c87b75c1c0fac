"""FULLY_CONNECTED -> hil_fully_connected (device_fw/core/kernels/fully_connected.c);
hil_fully_connected_16x8 for int16 activations."""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_fully_connected(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = common.weighted_tensors(graph, op, "weights")
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
    bias = common.bias(op, common.optional(graph, op, 2), units, inp.dtype)
    act, consts, requant = common.requantization(op, prefix, inp, filt, out, bias, units, f"[{units}][{depth}]")
    params = {"batches": batches, "accum_depth": depth, "output_depth": units, **requant}
    per = "per-channel" if filt.quant.per_channel else "per-tensor"
    summary = (
        f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, {depth} -> {units}, {per} weights, {act}"
    )
    kernel, macs = common.kernel_name("hil_fully_connected", inp.dtype), batches * units * depth
    return common.call(op, kernel, f"{kernel}_params_t", params, [inp.index], out, graph, summary, consts, macs)
