"""Compiles a full-integer int8 .tflite into C for the portable kernel core (device_fw/core).

Public API: `compile_tflite(tflite, out_dir, name=None) -> CompiledModel`, which writes `hil_model.c`
(see codegen.py) and `model.json` into out_dir. `lower_graph()` is the same translation without
writing files.

Every operator is lowered to one kernel call with a fully precomputed params struct (TFLM's Prepare step,
done at compile time with TFLM's exact arithmetic, see quantization.py), or to an alias for the ops that
only relabel bytes (RESHAPE, SQUEEZE, EXPAND_DIMS). Anything else raises UnsupportedModelError naming the
operator or tensor and what to change.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.model import quantization as qz
from hil.model.planner import ArenaPlan, plan_arena
from hil.model.tflite_reader import (
    ACTIVATION_NAMES,
    PADDING_NAMES,
    Graph,
    Operator,
    Tensor,
    UnsupportedModelError,
    read_tflite,
)

__all__ = [
    "CompiledModel",
    "ConstArray",
    "KernelCall",
    "LoweredModel",
    "OpSummary",
    "TensorSummary",
    "UnsupportedModelError",
    "compile_tflite",
    "lower_graph",
]

SUPPORTED_OPS = (
    "ADD",
    "AVERAGE_POOL_2D",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "EXPAND_DIMS",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "MEAN",
    "PAD",
    "PADV2",
    "RESHAPE",
    "SQUEEZE",
    "STRIDED_SLICE",
)


@dataclass
class ConstArray:
    """A constant array emitted into flash (weights, biases, multipliers, shifts)."""

    symbol: str
    ctype: str  # "int8_t" or "int32_t"
    values: np.ndarray  # 1-D
    comment: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * (1 if self.ctype == "int8_t" else 4)


@dataclass
class KernelCall:
    """One operator lowered to `kernel(&params, args..., output)`, or an alias when kernel is None."""

    op_index: int
    opcode: str
    kernel: str | None  # C function, None for an alias (no code, shared bytes)
    params_type: str | None
    params: dict[str, Any]  # field -> int, list[int] (C array) or str (symbol or NULL)
    args: list[int | str]  # arena tensor indices or const array symbols, in kernel argument order
    outputs: list[int]
    consts: list[ConstArray] = field(default_factory=list)
    macs: int = 0
    summary: str = ""
    input_shapes: list[list[int]] = field(default_factory=list)
    output_shapes: list[list[int]] = field(default_factory=list)


@dataclass
class TensorSummary:
    name: str
    index: int
    shape: list[int]
    dtype: str
    zero_point: int
    scale: float
    bytes: int
    arena_offset: int


@dataclass
class OpSummary:
    index: int
    op: str
    kernel: str | None
    inputs: list[list[int]]
    outputs: list[list[int]]
    macs: int
    summary: str


@dataclass
class LoweredModel:
    graph: Graph
    calls: list[KernelCall]
    plan: ArenaPlan
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]

    @property
    def weights_bytes(self) -> int:
        return sum(c.nbytes for call in self.calls for c in call.consts)

    @property
    def macs(self) -> int:
        return sum(call.macs for call in self.calls)


@dataclass
class CompiledModel:
    name: str
    sha256: str
    arena_bytes: int
    weights_bytes: int
    macs: int
    ops: list[OpSummary]
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    c_path: Path | None = None
    json_path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "arena_bytes": self.arena_bytes,
            "weights_bytes": self.weights_bytes,
            "macs": self.macs,
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "ops": [asdict(o) for o in self.ops],
        }


# --------------------------------------------------------------------------------------------------------
# Checks shared by the lowerings


def _tensor(graph: Graph, op: Operator, pos: int, what: str) -> Tensor:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        raise UnsupportedModelError(f"{op.describe()} has no {what} input")
    return graph.tensors[op.inputs[pos]]


def _optional(graph: Graph, op: Operator, pos: int) -> Tensor | None:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        return None
    return graph.tensors[op.inputs[pos]]


def _output(graph: Graph, op: Operator) -> Tensor:
    if len(op.outputs) != 1:
        raise UnsupportedModelError(f"{op.describe()} has {len(op.outputs)} outputs; expected 1")
    return graph.tensors[op.outputs[0]]


def _require_int8_activation(op: Operator, t: Tensor, role: str, allow_const: bool = False) -> None:
    if t.dtype != "int8":
        raise UnsupportedModelError(
            f"{op.describe()}: {role} {t.describe()} is {t.dtype}, but only int8 activations are supported; "
            "convert with full-integer quantization (representative dataset, "
            "supported_ops=[TFLITE_BUILTINS_INT8], inference_input_type/inference_output_type=int8)"
        )
    if t.quant is None:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} has no quantization parameters")
    if t.quant.per_channel:
        raise UnsupportedModelError(
            f"{op.describe()}: {role} {t.describe()} is quantized per channel; activations must be per tensor"
        )
    if t.is_const and not allow_const:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} is a constant")


def _require_weights(op: Operator, t: Tensor, axis: int, channels: int) -> None:
    if t.dtype != "int8" or not t.is_const:
        raise UnsupportedModelError(
            f"{op.describe()}: weights {t.describe()} must be constant int8 "
            "(hybrid, int4 or float weights are not supported)"
        )
    if t.quant is None:
        raise UnsupportedModelError(f"{op.describe()}: weights {t.describe()} have no quantization parameters")
    if any(z != 0 for z in t.quant.zero_points):
        raise UnsupportedModelError(
            f"{op.describe()}: weights {t.describe()} have a non-zero zero point; TFLM requires symmetric weights"
        )
    if t.quant.per_channel and (t.quant.axis != axis or len(t.quant.scales) != channels):
        raise UnsupportedModelError(
            f"{op.describe()}: weights {t.describe()} are quantized per channel along axis {t.quant.axis} "
            f"with {len(t.quant.scales)} scales; expected axis {axis} with {channels}"
        )


def _bias(op: Operator, t: Tensor | None, channels: int) -> np.ndarray | None:
    if t is None:
        return None
    if t.dtype != "int32" or not t.is_const:
        raise UnsupportedModelError(
            f"{op.describe()}: bias {t.describe()} must be a constant int32 (int64 bias is for 16x8 models)"
        )
    if t.size != channels:
        raise UnsupportedModelError(f"{op.describe()}: bias {t.describe()} does not have {channels} values")
    return t.data.reshape(-1).astype(np.int64)


def _activation(op: Operator, out: Tensor) -> tuple[str, int, int]:
    name = ACTIVATION_NAMES.get(op.options.get("fused_activation_function", 0), "?")
    if name not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        raise UnsupportedModelError(
            f"{op.describe()}: fused activation {name} is not supported (only NONE, RELU, RELU6, RELU_N1_TO_1)"
        )
    lo, hi = qz.activation_range(name, out.quant.scale, out.quant.zero_point)
    return name, lo, hi


def _padding(op: Operator) -> str:
    name = PADDING_NAMES.get(op.options.get("padding", -1))
    if name not in ("SAME", "VALID"):
        raise UnsupportedModelError(f"{op.describe()}: unknown padding {op.options.get('padding')}")
    return name


def _nhwc(op: Operator, t: Tensor, role: str) -> tuple[int, int, int, int]:
    if len(t.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} must be 4-D (NHWC)")
    n, h, w, c = t.shape
    return int(n), int(h), int(w), int(c)


def _check_spatial(op: Operator, padding: str, in_size: int, f: int, stride: int, dil: int, out: int, axis: str):
    if stride < 1 or dil < 1:
        raise UnsupportedModelError(f"{op.describe()}: stride and dilation must be >= 1")
    expected = qz.compute_out_size(padding, in_size, f, stride, dil)
    if expected != out:
        raise UnsupportedModelError(f"{op.describe()}: output {axis} is {out} but {padding} padding gives {expected}")
    return qz.compute_padding(stride, dil, in_size, f, out)


def _shape_str(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def _const_int_list(op: Operator, t: Tensor | None, what: str) -> list[int]:
    if t is None or not t.is_const or t.dtype not in ("int32", "int64"):
        raise UnsupportedModelError(f"{op.describe()}: {what} must be a constant int32 tensor")
    return [int(v) for v in t.data.reshape(-1)]


def _call(
    op: Operator,
    kernel: str,
    params_type: str,
    params: dict[str, Any],
    args: list[int | str],
    out: Tensor,
    graph: Graph,
    summary: str,
    consts: list[ConstArray] | None = None,
    macs: int = 0,
) -> KernelCall:
    return KernelCall(
        op_index=op.index,
        opcode=op.opcode,
        kernel=kernel,
        params_type=params_type,
        params=params,
        args=args,
        outputs=[out.index],
        consts=consts or [],
        macs=macs,
        summary=summary,
        input_shapes=[list(graph.tensors[i].shape) for i in op.inputs if i >= 0],
        output_shapes=[list(out.shape)],
    )


def _requant_arrays(prefix: str, multipliers: list[int], shifts: list[int]) -> list[ConstArray]:
    return [
        ConstArray(
            f"{prefix}_multiplier",
            "int32_t",
            np.array(multipliers, dtype=np.int64),
            "Q0.31 requantization multipliers",
        ),
        ConstArray(
            f"{prefix}_shift",
            "int32_t",
            np.array(shifts, dtype=np.int64),
            "requantization shifts (> 0: left)",
        ),
    ]


# --------------------------------------------------------------------------------------------------------
# Lowerings, one per operator


def _lower_conv_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = _tensor(graph, op, 0, "input"), _tensor(graph, op, 1, "filter"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    n, ih, iw, ic = _nhwc(op, inp, "input")
    on, oh, ow, oc = _nhwc(op, out, "output")
    if len(filt.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: filter {filt.describe()} must be 4-D (OHWI)")
    fo, fh, fw, fi = (int(d) for d in filt.shape)
    if fi != ic:
        raise UnsupportedModelError(
            f"{op.describe()}: filter depth {fi} != input depth {ic} (grouped convolution is not supported)"
        )
    if fo != oc or on != n:
        raise UnsupportedModelError(f"{op.describe()}: filter/output shapes disagree")
    _require_weights(op, filt, 0, oc)
    bias = _bias(op, _optional(graph, op, 2), oc)
    padding = _padding(op)
    sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
    dh, dw = int(op.options.get("dilation_h_factor", 1)), int(op.options.get("dilation_w_factor", 1))
    pad_h = _check_spatial(op, padding, ih, fh, sh, dh, oh, "height")
    pad_w = _check_spatial(op, padding, iw, fw, sw, dw, ow, "width")
    act, lo, hi = _activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, oc)
    consts = [
        ConstArray(
            f"{prefix}_filter",
            "int8_t",
            filt.data.reshape(-1).astype(np.int64),
            f"[{oc}][{fh}][{fw}][{ic}] (OHWI)",
        )
    ]
    if bias is not None:
        consts.append(ConstArray(f"{prefix}_bias", "int32_t", bias, f"[{oc}]"))
    consts += _requant_arrays(prefix, mult, shift)
    params = {
        "batches": n,
        "input_h": ih,
        "input_w": iw,
        "input_c": ic,
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
        f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, {fh}x{fw} filter, stride {sh}x{sw}{dil}, {padding}, {act}"
    )
    return _call(
        op,
        "hil_conv_2d",
        "hil_conv_2d_params_t",
        params,
        [inp.index],
        out,
        graph,
        summary,
        consts,
        macs=n * oh * ow * oc * fh * fw * ic,
    )


def _lower_depthwise_conv_2d(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = _tensor(graph, op, 0, "input"), _tensor(graph, op, 1, "filter"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    n, ih, iw, ic = _nhwc(op, inp, "input")
    on, oh, ow, oc = _nhwc(op, out, "output")
    if len(filt.shape) != 4 or filt.shape[0] != 1:
        raise UnsupportedModelError(f"{op.describe()}: filter {filt.describe()} must be [1, H, W, C*M]")
    _, fh, fw, fc = (int(d) for d in filt.shape)
    if fc != oc or oc % ic != 0 or on != n:
        raise UnsupportedModelError(f"{op.describe()}: filter/input/output channel counts disagree")
    dm = oc // ic
    opt_dm = int(op.options.get("depth_multiplier", dm))
    if opt_dm not in (0, dm):
        raise UnsupportedModelError(f"{op.describe()}: depth_multiplier option {opt_dm} != output/input channels {dm}")
    _require_weights(op, filt, 3, oc)
    bias = _bias(op, _optional(graph, op, 2), oc)
    padding = _padding(op)
    sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
    dh, dw = int(op.options.get("dilation_h_factor", 1)), int(op.options.get("dilation_w_factor", 1))
    pad_h = _check_spatial(op, padding, ih, fh, sh, dh, oh, "height")
    pad_w = _check_spatial(op, padding, iw, fw, sw, dw, ow, "width")
    act, lo, hi = _activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, oc)
    consts = [
        ConstArray(f"{prefix}_filter", "int8_t", filt.data.reshape(-1).astype(np.int64), f"[1][{fh}][{fw}][{oc}]")
    ]
    if bias is not None:
        consts.append(ConstArray(f"{prefix}_bias", "int32_t", bias, f"[{oc}]"))
    consts += _requant_arrays(prefix, mult, shift)
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
        f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, {fh}x{fw} filter, depth multiplier {dm}, "
        f"stride {sh}x{sw}{dil}, {padding}, {act}"
    )
    return _call(
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


def _lower_fully_connected(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, filt, out = _tensor(graph, op, 0, "input"), _tensor(graph, op, 1, "weights"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    if op.options.get("weights_format", 0) != 0:
        raise UnsupportedModelError(f"{op.describe()}: shuffled weights format is not supported")
    if len(filt.shape) != 2:
        raise UnsupportedModelError(f"{op.describe()}: weights {filt.describe()} must be 2-D [outputs, depth]")
    units, depth = (int(d) for d in filt.shape)
    _require_weights(op, filt, 0, units)
    if depth == 0 or inp.size % depth != 0:
        raise UnsupportedModelError(f"{op.describe()}: input size {inp.size} is not a multiple of depth {depth}")
    batches = inp.size // depth
    if out.size != batches * units:
        raise UnsupportedModelError(f"{op.describe()}: output {out.describe()} is not {batches}x{units}")
    bias = _bias(op, _optional(graph, op, 2), units)
    act, lo, hi = _activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, units)
    consts = [ConstArray(f"{prefix}_filter", "int8_t", filt.data.reshape(-1).astype(np.int64), f"[{units}][{depth}]")]
    if bias is not None:
        consts.append(ConstArray(f"{prefix}_bias", "int32_t", bias, f"[{units}]"))
    consts += _requant_arrays(prefix, mult, shift)
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
    summary = f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, {depth} -> {units}, {per} weights, {act}"
    return _call(
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


def _lower_pool(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = _tensor(graph, op, 0, "input"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    n, ih, iw, c = _nhwc(op, inp, "input")
    on, oh, ow, oc = _nhwc(op, out, "output")
    if (on, oc) != (n, c):
        raise UnsupportedModelError(f"{op.describe()}: input and output batch/channels disagree")
    padding = _padding(op)
    sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
    fh, fw = int(op.options.get("filter_height", 1)), int(op.options.get("filter_width", 1))
    pad_h = _check_spatial(op, padding, ih, fh, sh, 1, oh, "height")
    pad_w = _check_spatial(op, padding, iw, fw, sw, 1, ow, "width")
    # Every window must overlap the image (TFLM fails an average over zero taps at run time).
    for o, s, p, f, size in ((oh, sh, pad_h, fh, ih), (ow, sw, pad_w, fw, iw)):
        for k in (0, o - 1):
            start = k * s - p
            if min(f, size - start) - max(0, -start) <= 0:
                raise UnsupportedModelError(f"{op.describe()}: a pooling window lies entirely in the padding")
    act, lo, hi = _activation(op, out)
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
        f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, {fh}x{fw} window, stride {sh}x{sw}, {padding}, {act}"
    )
    return _call(op, kernel, "hil_pool_params_t", params, [inp.index], out, graph, summary)


def _lower_mean(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = _tensor(graph, op, 0, "input"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    rank = len(inp.shape)
    axes_raw = _const_int_list(op, _tensor(graph, op, 1, "axis"), "the axis input")
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
    summary = f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, axes {axes}"
    return _call(op, "hil_mean", "hil_mean_params_t", params, [inp.index], out, graph, summary)


def _broadcast_strides(op: Operator, shape: tuple[int, ...], out4: list[int]) -> list[int]:
    dims = [1] * (4 - len(shape)) + [int(d) for d in shape]
    strides = [0, 0, 0, 0]
    step = 1
    for i in range(3, -1, -1):
        if dims[i] == out4[i]:
            strides[i] = step if dims[i] > 1 else 0
        elif dims[i] == 1:
            strides[i] = 0
        else:
            raise UnsupportedModelError(f"{op.describe()}: shape {list(shape)} does not broadcast to {out4}")
        step *= dims[i]
    return strides


def _lower_add(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    a, b, out = _tensor(graph, op, 0, "first"), _tensor(graph, op, 1, "second"), _output(graph, op)
    _require_int8_activation(op, out, "output")
    consts: list[ConstArray] = []
    args: list[int | str] = []
    for k, t in enumerate((a, b), start=1):
        _require_int8_activation(op, t, f"input {k}", allow_const=True)
        if t.is_const:
            sym = f"{prefix}_input{k}"
            consts.append(ConstArray(sym, "int8_t", t.data.reshape(-1).astype(np.int64), _shape_str(t.shape)))
            args.append(sym)
        else:
            args.append(t.index)
    if max(len(a.shape), len(b.shape), len(out.shape)) > 4:
        raise UnsupportedModelError(f"{op.describe()}: ADD above rank 4 is not supported")
    out4 = [1] * (4 - len(out.shape)) + [int(d) for d in out.shape]
    s1, s2 = _broadcast_strides(op, a.shape, out4), _broadcast_strides(op, b.shape, out4)
    left_shift = 20
    twice_max = 2 * max(a.quant.scale, b.quant.scale)
    try:
        m1, sh1 = qz.quantize_multiplier_smaller_than_one_exp(a.quant.scale / twice_max)
        m2, sh2 = qz.quantize_multiplier_smaller_than_one_exp(b.quant.scale / twice_max)
        mo, sho = qz.quantize_multiplier_smaller_than_one_exp(twice_max / ((1 << left_shift) * out.quant.scale))
    except ValueError as exc:
        raise UnsupportedModelError(f"{op.describe()}: scales out of TFLM's supported range ({exc})") from exc
    act, lo, hi = _activation(op, out)
    params = {
        "dims": out4,
        "input1_strides": s1,
        "input2_strides": s2,
        "input1_offset": -a.quant.zero_point,
        "input2_offset": -b.quant.zero_point,
        "output_offset": out.quant.zero_point,
        "left_shift": left_shift,
        "input1_multiplier": m1,
        "input1_shift": sh1,
        "input2_multiplier": m2,
        "input2_shift": sh2,
        "output_multiplier": mo,
        "output_shift": sho,
        "act_min": lo,
        "act_max": hi,
    }
    bc = ", broadcast" if list(a.shape) != list(b.shape) else ""
    summary = f"{_shape_str(a.shape)} + {_shape_str(b.shape)} -> {_shape_str(out.shape)}{bc}, {act}"
    return _call(op, "hil_add", "hil_add_params_t", params, args, out, graph, summary, consts)


def _lower_strided_slice(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = _tensor(graph, op, 0, "input"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    begin = _const_int_list(op, _tensor(graph, op, 1, "begin"), "begin")
    end = _const_int_list(op, _tensor(graph, op, 2, "end"), "end")
    strides = _const_int_list(op, _tensor(graph, op, 3, "strides"), "strides")
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
    summary = f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, [{box}]"
    return _call(op, "hil_strided_slice", "hil_strided_slice_params_t", params, [inp.index], out, graph, summary)


def _lower_pad(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = _tensor(graph, op, 0, "input"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    rank = len(inp.shape)
    pads = _const_int_list(op, _tensor(graph, op, 1, "paddings"), "paddings")
    if rank > 4 or len(pads) != 2 * rank:
        raise UnsupportedModelError(f"{op.describe()}: paddings for rank {rank} are not supported")
    before, after = pads[0::2], pads[1::2]
    if any(p < 0 for p in pads):
        raise UnsupportedModelError(f"{op.describe()}: negative paddings are not supported")
    out_shape = [int(d) + b + a for d, b, a in zip(inp.shape, before, after, strict=True)]
    if out_shape != list(out.shape):
        raise UnsupportedModelError(f"{op.describe()}: padded shape {out_shape} != {out.describe()}")
    pad_value = out.quant.zero_point
    cv = _optional(graph, op, 2)
    if op.opcode == "PADV2" and cv is not None:
        if cv.dtype != "int8" or not cv.is_const or cv.size != 1:
            raise UnsupportedModelError(f"{op.describe()}: constant_values must be one constant int8 value")
        pad_value = int(cv.data.reshape(-1)[0])
    p4 = 4 - rank
    params = {
        "input_dims": [1] * p4 + [int(d) for d in inp.shape],
        "pad_before": [0] * p4 + before,
        "output_dims": [1] * p4 + out_shape,
        "pad_value": pad_value,
    }
    summary = f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, before {before}, after {after}, value {pad_value}"
    return _call(op, "hil_pad", "hil_pad_params_t", params, [inp.index], out, graph, summary)


def _lower_alias(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = _tensor(graph, op, 0, "input"), _output(graph, op)
    _require_int8_activation(op, inp, "input")
    _require_int8_activation(op, out, "output")
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: {inp.describe()} and {out.describe()} differ in size")
    return KernelCall(
        op_index=op.index,
        opcode=op.opcode,
        kernel=None,
        params_type=None,
        params={},
        args=[inp.index],
        outputs=[out.index],
        summary=f"{_shape_str(inp.shape)} -> {_shape_str(out.shape)}, same bytes (alias)",
        input_shapes=[list(inp.shape)],
        output_shapes=[list(out.shape)],
    )


_LOWERINGS = {
    "CONV_2D": _lower_conv_2d,
    "DEPTHWISE_CONV_2D": _lower_depthwise_conv_2d,
    "FULLY_CONNECTED": _lower_fully_connected,
    "AVERAGE_POOL_2D": _lower_pool,
    "MAX_POOL_2D": _lower_pool,
    "MEAN": _lower_mean,
    "ADD": _lower_add,
    "STRIDED_SLICE": _lower_strided_slice,
    "PAD": _lower_pad,
    "PADV2": _lower_pad,
    "RESHAPE": _lower_alias,
    "SQUEEZE": _lower_alias,
    "EXPAND_DIMS": _lower_alias,
}


def _io_summary(graph: Graph, index: int, plan: ArenaPlan, role: str) -> TensorSummary:
    t = graph.tensors[index]
    if t.dtype != "int8" or t.quant is None:
        raise UnsupportedModelError(
            f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 tensors only. Convert with "
            "inference_input_type=tf.int8 and inference_output_type=tf.int8"
        )
    if t.is_const:
        raise UnsupportedModelError(f"graph {role} {t.describe()} is a constant")
    if not 1 <= len(t.shape) <= 4:
        raise UnsupportedModelError(f"graph {role} {t.describe()} must have rank 1 to 4")
    if t.quant.per_channel:
        raise UnsupportedModelError(f"graph {role} {t.describe()} is quantized per channel")
    return TensorSummary(
        name=graph.io_name(t.index),
        index=t.index,
        shape=[int(d) for d in t.shape],
        dtype="int8",
        zero_point=int(t.quant.zero_point),
        scale=float(t.quant.scale),
        bytes=t.nbytes,
        arena_offset=plan.offsets[t.index],
    )


def lower_graph(graph: Graph) -> LoweredModel:
    """Lowers every operator, plans the arena and describes the graph's inputs and outputs."""
    for role, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for i in indices:
            t = graph.tensors[i]
            if t.dtype != "int8":
                raise UnsupportedModelError(
                    f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 tensors only. "
                    "Convert with inference_input_type=tf.int8 and inference_output_type=tf.int8"
                )
    calls: list[KernelCall] = []
    for op in graph.operators:
        lower = _LOWERINGS.get(op.opcode)
        if lower is None:
            hint = ""
            if op.opcode in ("QUANTIZE", "DEQUANTIZE"):
                hint = " (the model converts between float and int8 inside the graph; convert with int8 input/output)"
            raise UnsupportedModelError(
                f"{op.describe()} is not supported by the int8 kernel core{hint}. Supported ops: "
                f"{', '.join(SUPPORTED_OPS)}. Remove the op from the model or add a kernel in "
                "device_fw/core/kernels/"
            )
        calls.append(lower(graph, op, f"op{op.index}"))

    arena_tensors: set[int] = set(graph.inputs) | set(graph.outputs)
    for call in calls:
        arena_tensors.update(a for a in call.args if isinstance(a, int))
        arena_tensors.update(call.outputs)
    for t in sorted(arena_tensors):
        if graph.tensors[t].is_const:
            raise UnsupportedModelError(
                f"{graph.tensors[t].describe()} is a constant used where the kernels expect an activation"
            )
    sizes = {t: graph.tensors[t].nbytes for t in arena_tensors}
    steps = [([a for a in c.args if isinstance(a, int)], c.outputs) for c in calls if c.kernel is not None]
    aliases = [(c.args[0], c.outputs[0]) for c in calls if c.kernel is None]
    # Aliases have no step of their own: the planner gives each alias group the union of its lifetimes.
    plan = plan_arena(sizes, steps, list(graph.inputs), list(graph.outputs), aliases)
    inputs = [_io_summary(graph, i, plan, "input") for i in graph.inputs]
    outputs = [_io_summary(graph, i, plan, "output") for i in graph.outputs]
    return LoweredModel(graph=graph, calls=calls, plan=plan, inputs=inputs, outputs=outputs)


def json_text(obj: Any) -> str:
    """Indented JSON with lists of plain numbers (shapes) kept on one line."""
    text = json.dumps(obj, indent=2)
    text = re.sub(
        r"\[\s*(-?[0-9][-0-9.e+, \n]*?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    return text + "\n"


def compile_tflite(tflite: Path | bytes, out_dir: Path, name: str | None = None) -> CompiledModel:
    """Compiles an int8 .tflite into out_dir/hil_model.c and out_dir/model.json.

    name defaults to the .tflite's file stem (or "model" for bytes). Raises UnsupportedModelError for ops,
    tensor types or options the kernel core does not support.
    """
    from hil.model import codegen

    if isinstance(tflite, bytes | bytearray):
        data = bytes(tflite)
        default_name = "model"
    else:
        path = Path(tflite)
        data = path.read_bytes()
        default_name = path.stem
    name = name or default_name
    sha256 = hashlib.sha256(data).hexdigest()
    lowered = lower_graph(read_tflite(data))
    source = codegen.generate_c(lowered, name=name, sha256=sha256)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ops = [
        OpSummary(
            index=c.op_index,
            op=c.opcode,
            kernel=c.kernel,
            inputs=c.input_shapes,
            outputs=c.output_shapes,
            macs=c.macs,
            summary=c.summary,
        )
        for c in lowered.calls
    ]
    compiled = CompiledModel(
        name=name,
        sha256=sha256,
        arena_bytes=lowered.plan.arena_bytes,
        weights_bytes=lowered.weights_bytes,
        macs=lowered.macs,
        ops=ops,
        inputs=lowered.inputs,
        outputs=lowered.outputs,
        c_path=out_dir / "hil_model.c",
        json_path=out_dir / "model.json",
    )
    compiled.c_path.write_text(source)
    # model.json last: its presence marks a complete model directory (see hil.model.artifacts).
    compiled.json_path.write_text(json_text(compiled.to_json()))
    return compiled
