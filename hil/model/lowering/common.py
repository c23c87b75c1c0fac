"""What the per-operator lowerings share: the lowered-call records and the checks every lowering uses.

`KernelCall` is one operator lowered to a kernel call (or an alias); `ConstArray` is a constant it emits into
flash. The helpers fetch an operator's tensors and raise UnsupportedModelError, naming the operator or tensor
and what to change, for anything the int8 kernel core cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hil.model import quantization as qz
from hil.model.tflite_reader import (
    ACTIVATION_NAMES,
    PADDING_NAMES,
    Graph,
    Operator,
    Tensor,
    UnsupportedModelError,
)


@dataclass
class ConstArray:
    """A constant array emitted into flash (weights, biases, multipliers, shifts)."""

    symbol: str
    ctype: str  # "int8_t", "uint8_t", "int16_t", "int32_t" or "int64_t" (the 16x8 kernels' biases)
    values: np.ndarray  # 1-D
    comment: str = ""

    @property
    def nbytes(self) -> int:
        return int(self.values.size) * CTYPE_BYTES[self.ctype]


CTYPE_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}
# Activation types the kernel core runs: int8, and int16 for TFLite's 16x8 quantization (int16 activations
# with zero point 0, int8 weights, int64 biases), which keeps about 128 times finer activation steps.
ACTIVATION_DTYPES = ("int8", "int16")


@dataclass
class KernelCall:
    """One operator lowered to `kernel(&params, args..., output)`, or an alias when kernel is None."""

    op_index: int
    opcode: str
    kernel: str | None  # C function, None for an alias (no code, shared bytes)
    params_type: str | None
    params: dict[str, Any]  # field -> int, float (C float), list[int] (C array) or str (symbol or NULL)
    # arena tensor indices or const array symbols, in kernel argument order; a list is one argument, an array of
    # pointers (CONCATENATION's inputs)
    args: list[int | str | list[int | str]]
    outputs: list[int]
    consts: list[ConstArray] = field(default_factory=list)
    macs: int = 0
    summary: str = ""
    input_shapes: list[list[int]] = field(default_factory=list)
    output_shapes: list[list[int]] = field(default_factory=list)
    # The specialised kernel's call (hil/model/lowering/fast.py), which a generated model runs by default; None
    # where the generic kernel runs. Its consts replace this call's in a default build.
    fast: KernelCall | None = None
    scratch_bytes: int = 0  # arena bytes the kernel needs during its step only (planned by the compiler)


# --------------------------------------------------------------------------------------------------------
# Checks shared by the lowerings


def tensor(graph: Graph, op: Operator, pos: int, what: str) -> Tensor:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        raise UnsupportedModelError(f"{op.describe()} has no {what} input")
    return graph.tensors[op.inputs[pos]]


def optional(graph: Graph, op: Operator, pos: int) -> Tensor | None:
    if pos >= len(op.inputs) or op.inputs[pos] < 0:
        return None
    return graph.tensors[op.inputs[pos]]


def output(graph: Graph, op: Operator) -> Tensor:
    if len(op.outputs) != 1:
        raise UnsupportedModelError(f"{op.describe()} has {len(op.outputs)} outputs; expected 1")
    return graph.tensors[op.outputs[0]]


def require_int8_activation(op: Operator, t: Tensor, role: str, allow_const: bool = False) -> None:
    require_activation(op, t, role, ("int8",), allow_const)


def require_activation(
    op: Operator, t: Tensor, role: str, dtypes: tuple[str, ...] = ACTIVATION_DTYPES, allow_const: bool = False
) -> None:
    """t is a per-tensor quantized activation of one of `dtypes`; int16 ones must have zero point 0 (TFLM)."""
    if t.dtype not in dtypes:
        kinds = " or ".join(dtypes)
        raise UnsupportedModelError(
            f"{op.describe()}: {role} {t.describe()} is {t.dtype}, but this op runs {kinds} activations only; "
            "convert with full-integer quantization (representative dataset, "
            "supported_ops=[TFLITE_BUILTINS_INT8], inference_input_type/inference_output_type=int8; or the 16x8 "
            "scheme EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8 with int16 input/output)"
        )
    if t.quant is None:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} has no quantization parameters")
    if t.quant.per_channel:
        raise UnsupportedModelError(
            f"{op.describe()}: {role} {t.describe()} is quantized per channel; activations must be per tensor"
        )
    if t.is_const and not allow_const:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} is a constant")
    if t.dtype == "int16" and t.quant.zero_point != 0:
        raise UnsupportedModelError(
            f"{op.describe()}: {role} {t.describe()} is int16 with zero point {t.quant.zero_point}; "
            "TFLM's 16x8 kernels need symmetric int16 activations (zero point 0)"
        )


def same_activation_dtype(op: Operator, inp: Tensor, out: Tensor) -> str:
    """The activation type an op runs in: its input's, which the output must share (no mixed int8/int16)."""
    if out.dtype != inp.dtype:
        raise UnsupportedModelError(
            f"{op.describe()}: input {inp.describe()} is {inp.dtype} but output {out.describe()} is {out.dtype}; "
            "mixed int8/int16 operators are not supported"
        )
    return inp.dtype


def kernel_name(base: str, dtype: str, suffix16: str = "_16x8") -> str:
    """The C kernel for an activation type: hil_conv_2d (int8) or hil_conv_2d_16x8 (int16)."""
    return base if dtype == "int8" else base + suffix16


def require_weights(op: Operator, t: Tensor, axis: int, channels: int) -> None:
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


def bias(op: Operator, t: Tensor | None, channels: int, activations: str = "int8") -> np.ndarray | None:
    """The bias values; int32 for int8 activations, int64 for 16x8."""
    if t is None:
        return None
    want = "int32" if activations == "int8" else "int64"
    if t.dtype != want or not t.is_const:
        raise UnsupportedModelError(
            f"{op.describe()}: bias {t.describe()} must be a constant {want} for {activations} activations"
        )
    if t.size != channels:
        raise UnsupportedModelError(f"{op.describe()}: bias {t.describe()} does not have {channels} values")
    return t.data.reshape(-1).astype(np.int64)


def activation(op: Operator, out: Tensor) -> tuple[str, int, int]:
    name = ACTIVATION_NAMES.get(op.options.get("fused_activation_function", 0), "?")
    if name not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        raise UnsupportedModelError(
            f"{op.describe()}: fused activation {name} is not supported (only NONE, RELU, RELU6, RELU_N1_TO_1)"
        )
    lo, hi = qz.activation_range(name, out.quant.scale, out.quant.zero_point, out.dtype)
    return name, lo, hi


def padding(op: Operator) -> str:
    name = PADDING_NAMES.get(op.options.get("padding", -1))
    if name not in ("SAME", "VALID"):
        raise UnsupportedModelError(f"{op.describe()}: unknown padding {op.options.get('padding')}")
    return name


def nhwc(op: Operator, t: Tensor, role: str) -> tuple[int, int, int, int]:
    if len(t.shape) != 4:
        raise UnsupportedModelError(f"{op.describe()}: {role} {t.describe()} must be 4-D (NHWC)")
    n, h, w, c = t.shape
    return int(n), int(h), int(w), int(c)


def check_spatial(op: Operator, padding: str, in_size: int, f: int, stride: int, dil: int, out: int, axis: str):
    if stride < 1 or dil < 1:
        raise UnsupportedModelError(f"{op.describe()}: stride and dilation must be >= 1")
    expected = qz.compute_out_size(padding, in_size, f, stride, dil)
    if expected != out:
        raise UnsupportedModelError(f"{op.describe()}: output {axis} is {out} but {padding} padding gives {expected}")
    return qz.compute_padding(stride, dil, in_size, f, out)


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def const_int_list(op: Operator, t: Tensor | None, what: str) -> list[int]:
    if t is None or not t.is_const or t.dtype not in ("int32", "int64"):
        raise UnsupportedModelError(f"{op.describe()}: {what} must be a constant int32 tensor")
    return [int(v) for v in t.data.reshape(-1)]


def call(
    op: Operator,
    kernel: str,
    params_type: str,
    params: dict[str, Any],
    args: list[int | str | list[int | str]],
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


def requant_arrays(prefix: str, multipliers: list[int], shifts: list[int]) -> list[ConstArray]:
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
# Weighted operators (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED): int8 weights, per-channel requantization


def weighted_tensors(graph: Graph, op: Operator, weights: str) -> tuple[Tensor, Tensor, Tensor]:
    """(input, weights, output) of a weighted operator; input and output must be per-tensor activations of
    one type, int8 or int16 (16x8)."""
    inp, filt, out = tensor(graph, op, 0, "input"), tensor(graph, op, 1, weights), output(graph, op)
    require_activation(op, inp, "input")
    require_activation(op, out, "output")
    same_activation_dtype(op, inp, out)
    return inp, filt, out


@dataclass(frozen=True)
class ConvGeometry:
    """The sizes, strides, dilations and pads of a 2-D (depthwise) convolution, checked against its options."""

    batches: int
    input_h: int
    input_w: int
    input_c: int
    filter_h: int
    filter_w: int
    output_h: int
    output_w: int
    output_c: int
    padding: str
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_h: int
    pad_w: int

    @classmethod
    def of(
        cls, op: Operator, nhwc_in: tuple[int, int, int, int], filter_hw: tuple[int, int], nhwc_out: tuple[int, ...]
    ) -> ConvGeometry:
        (n, ih, iw, ic), (fh, fw), (_, oh, ow, oc) = nhwc_in, filter_hw, nhwc_out
        pad = padding(op)
        sh, sw = int(op.options.get("stride_h", 1)), int(op.options.get("stride_w", 1))
        dh, dw = int(op.options.get("dilation_h_factor", 1)), int(op.options.get("dilation_w_factor", 1))
        pad_h = check_spatial(op, pad, ih, fh, sh, dh, oh, "height")
        pad_w = check_spatial(op, pad, iw, fw, sw, dw, ow, "width")
        return cls(n, ih, iw, ic, fh, fw, oh, ow, oc, pad, sh, sw, dh, dw, pad_h, pad_w)

    def params(self, depth_multiplier: int | None = None) -> dict[str, int]:
        """The geometry fields of the kernel's params struct, in its order (depthwise: with depth_multiplier)."""
        params = {"batches": self.batches, "input_h": self.input_h, "input_w": self.input_w, "input_c": self.input_c}
        if depth_multiplier is not None:
            params["depth_multiplier"] = depth_multiplier
        return params | {
            "filter_h": self.filter_h,
            "filter_w": self.filter_w,
            "output_h": self.output_h,
            "output_w": self.output_w,
            "output_c": self.output_c,
            "stride_h": self.stride_h,
            "stride_w": self.stride_w,
            "dilation_h": self.dilation_h,
            "dilation_w": self.dilation_w,
            "pad_h": self.pad_h,
            "pad_w": self.pad_w,
        }

    def summary(self) -> str:
        dil = f", dilation {self.dilation_h}x{self.dilation_w}" if (self.dilation_h, self.dilation_w) != (1, 1) else ""
        return f"stride {self.stride_h}x{self.stride_w}{dil}, {self.padding}"


def requantization(
    op: Operator,
    prefix: str,
    inp: Tensor,
    filt: Tensor,
    out: Tensor,
    bias_values: np.ndarray | None,
    channels: int,
    layout: str,
) -> tuple[str, list[ConstArray], dict[str, Any]]:
    """(activation name, const arrays, params) of a weighted kernel: the fused activation's range, the weights
    (`layout`: their C comment), the bias, the per-channel Q0.31 multipliers and shifts, and the params fields
    every weighted kernel ends with (offsets, activation range, the arrays' symbols)."""
    act, lo, hi = activation(op, out)
    mult, shift = qz.per_channel_multipliers(inp.quant.scale, filt.quant.scales, out.quant.scale, channels)
    consts = [ConstArray(f"{prefix}_filter", "int8_t", filt.data.reshape(-1).astype(np.int64), layout)]
    bias_ctype = "int32_t" if inp.dtype == "int8" else "int64_t"
    if bias_values is not None:
        consts.append(ConstArray(f"{prefix}_bias", bias_ctype, bias_values, f"[{channels}]"))
    if inp.dtype == "int16" and not all(-31 <= s_ <= 7 for s_ in shift):
        # TFLM's 64-bit requantization asserts this range (its rounding shift is 15 - shift).
        raise UnsupportedModelError(f"{op.describe()}: a 16x8 requantization shift is outside [-31, 7]: {shift}")
    consts += requant_arrays(prefix, mult, shift)
    # The 16x8 kernels' structs have no offsets: int16 zero points are 0 (require_activation).
    offsets = {} if inp.dtype == "int16" else {
        "input_offset": -inp.quant.zero_point,
        "output_offset": out.quant.zero_point,
    }
    params = {
        **offsets,
        "act_min": lo,
        "act_max": hi,
        "filter": f"{prefix}_filter",
        "bias": f"{prefix}_bias" if bias_values is not None else "NULL",
        "output_multiplier": f"{prefix}_multiplier",
        "output_shift": f"{prefix}_shift",
    }
    return act, consts, params
