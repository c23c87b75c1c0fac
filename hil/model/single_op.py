"""Single-operator int8 test models, written directly with the flatbuffer schema (see tflite_builder.py).

`make_single_op_model(op, rng, **params)` gives a one-operator int8 .tflite with random weights and
quantization parameters drawn from rng, for bit-exactness tests of each kernel against TFLite Micro.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hil.errors import UsageError
from hil.model.quantization import compute_out_size
from hil.model.tflite_builder import ACTIVATIONS, PADDINGS, TfliteBuilder, builtin_options

__all__ = ["make_single_op_model"]


def _rand_scale(rng: np.random.Generator, lo: float = -3.0, hi: float = -1.0) -> float:
    return float(np.float32(10 ** rng.uniform(lo, hi)))


def _rand_zp(rng: np.random.Generator) -> int:
    return int(rng.integers(-128, 128))


def _weights(rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    return rng.integers(-127, 128, size=tuple(shape)).astype(np.int8)


def _output_scale(rng: np.random.Generator, input_scale: float, filter_scale: float, taps: int) -> float:
    # An int8 operand spans about +-74 (standard deviation of a uniform int8); aim the accumulator's spread
    # at about +-40 output steps, jittered so the tests see saturating and well-scaled outputs alike.
    acc_std = input_scale * filter_scale * math.sqrt(max(taps, 1)) * 74.0 * 73.0
    return float(np.float32(acc_std / 40.0 * 10 ** rng.uniform(-0.4, 0.4)))


def _conv_like(
    op: str,
    rng: np.random.Generator,
    *,
    batches: int = 1,
    height: int = 8,
    width: int = 8,
    in_channels: int = 3,
    out_channels: int = 4,
    depth_multiplier: int = 1,
    kernel: tuple[int, int] = (3, 3),
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    padding: str = "SAME",
    activation: str = "NONE",
    per_channel: bool = True,
    bias: bool = True,
) -> bytes:
    b = TfliteBuilder()
    kh, kw = kernel
    oh = compute_out_size(padding, height, kh, stride[0], dilation[0])
    ow = compute_out_size(padding, width, kw, stride[1], dilation[1])
    if oh <= 0 or ow <= 0:
        raise ValueError(f"{op} geometry gives an empty output ({oh}x{ow})")
    depthwise = op == "DEPTHWISE_CONV_2D"
    oc = in_channels * depth_multiplier if depthwise else out_channels
    in_scale, in_zp = _rand_scale(rng), _rand_zp(rng)
    f_scales = (np.float32(10 ** rng.uniform(-3, -1.5, size=oc if per_channel else 1))).astype(np.float32)
    taps = kh * kw * (1 if depthwise else in_channels)
    out_scale = _output_scale(rng, in_scale, float(np.mean(f_scales)), taps)
    x = b.tensor([batches, height, width, in_channels], scale=in_scale, zero_point=in_zp, name="input")
    f_shape = [1, kh, kw, oc] if depthwise else [oc, kh, kw, in_channels]
    f = b.tensor(
        f_shape,
        scale=f_scales,
        zero_point=0,
        data=_weights(rng, f_shape),
        axis=3 if depthwise else 0,
        name="filter",
    )
    inputs = [x, f]
    if bias:
        bias_scales = (np.float32(in_scale) * np.broadcast_to(f_scales, (oc,))).astype(np.float32)
        acc_std = math.sqrt(taps) * 74 * 73
        bias_data = rng.normal(0, acc_std, size=oc).round().astype(np.int32)
        inputs.append(b.tensor([oc], "int32", scale=bias_scales, zero_point=0, data=bias_data, name="bias"))
    else:
        inputs.append(-1)
    y = b.tensor([batches, oh, ow, oc], scale=out_scale, zero_point=_rand_zp(rng), name="output")
    common = dict(
        padding=PADDINGS[padding],
        strideH=stride[0],
        strideW=stride[1],
        dilationHFactor=dilation[0],
        dilationWFactor=dilation[1],
        fusedActivationFunction=ACTIVATIONS[activation],
    )
    if depthwise:
        b.op(
            op,
            inputs,
            [y],
            builtin_options("DepthwiseConv2DOptionsT", depthMultiplier=depth_multiplier, **common),
        )
    else:
        b.op(op, inputs, [y], builtin_options("Conv2DOptionsT", **common))
    return b.finish([x], [y])


def _fully_connected(
    rng: np.random.Generator,
    *,
    batches: int = 1,
    depth: int = 16,
    units: int = 8,
    input_shape: Sequence[int] | None = None,
    activation: str = "NONE",
    per_channel: bool = False,
    bias: bool = True,
) -> bytes:
    b = TfliteBuilder()
    shape = list(input_shape) if input_shape is not None else [batches, depth]
    batches = int(np.prod(shape)) // depth
    in_scale, in_zp = _rand_scale(rng), _rand_zp(rng)
    f_scales = (np.float32(10 ** rng.uniform(-3, -1.5, size=units if per_channel else 1))).astype(np.float32)
    out_scale = _output_scale(rng, in_scale, float(np.mean(f_scales)), depth)
    x = b.tensor(shape, scale=in_scale, zero_point=in_zp, name="input")
    f = b.tensor([units, depth], scale=f_scales, zero_point=0, data=_weights(rng, [units, depth]), name="weights")
    inputs = [x, f]
    if bias:
        bias_scales = (np.float32(in_scale) * np.broadcast_to(f_scales, (units,))).astype(np.float32)
        if not per_channel:
            bias_scales = bias_scales[:1]
        bias_data = rng.normal(0, math.sqrt(depth) * 74 * 73, size=units).round().astype(np.int32)
        inputs.append(b.tensor([units], "int32", scale=bias_scales, zero_point=0, data=bias_data, name="bias"))
    else:
        inputs.append(-1)
    y = b.tensor([batches, units], scale=out_scale, zero_point=_rand_zp(rng), name="output")
    b.op(
        "FULLY_CONNECTED",
        inputs,
        [y],
        builtin_options("FullyConnectedOptionsT", fusedActivationFunction=ACTIVATIONS[activation]),
    )
    return b.finish([x], [y])


def _pool(
    op: str,
    rng: np.random.Generator,
    *,
    batches: int = 1,
    height: int = 8,
    width: int = 8,
    channels: int = 3,
    filter: tuple[int, int] = (2, 2),
    stride: tuple[int, int] = (2, 2),
    padding: str = "VALID",
    activation: str = "NONE",
) -> bytes:
    b = TfliteBuilder()
    oh = compute_out_size(padding, height, filter[0], stride[0], 1)
    ow = compute_out_size(padding, width, filter[1], stride[1], 1)
    scale, zp = _rand_scale(rng), _rand_zp(rng)  # TFLM pools do not rescale: one quantization for both
    x = b.tensor([batches, height, width, channels], scale=scale, zero_point=zp, name="input")
    y = b.tensor([batches, oh, ow, channels], scale=scale, zero_point=zp, name="output")
    b.op(
        op,
        [x],
        [y],
        builtin_options(
            "Pool2DOptionsT",
            padding=PADDINGS[padding],
            strideH=stride[0],
            strideW=stride[1],
            filterHeight=filter[0],
            filterWidth=filter[1],
            fusedActivationFunction=ACTIVATIONS[activation],
        ),
    )
    return b.finish([x], [y])


def _mean(
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 6, 6, 5),
    axes: Sequence[int] = (1, 2),
    keep_dims: bool = False,
    same_quant: bool = False,
) -> bytes:
    b = TfliteBuilder()
    rank = len(shape)
    resolved = {a % rank for a in axes}
    out_shape = (
        [1 if i in resolved else d for i, d in enumerate(shape)]
        if keep_dims
        else [d for i, d in enumerate(shape) if i not in resolved]
    )
    scale, zp = _rand_scale(rng), _rand_zp(rng)
    if same_quant:
        out_scale, out_zp = scale, zp
    else:
        # A mean has a narrower range than its input: the converter usually picks a smaller output scale.
        out_scale, out_zp = float(np.float32(scale * 10 ** rng.uniform(-0.8, 0.2))), _rand_zp(rng)
    x = b.tensor(list(shape), scale=scale, zero_point=zp, name="input")
    ax = b.tensor([len(axes)], "int32", data=np.array(axes, dtype=np.int32), name="axes")
    y = b.tensor(out_shape, scale=out_scale, zero_point=out_zp, name="output")
    b.op("MEAN", [x, ax], [y], builtin_options("ReducerOptionsT", keepDims=keep_dims))
    return b.finish([x], [y])


def _add(
    rng: np.random.Generator,
    *,
    shape1: Sequence[int] = (1, 4, 4, 3),
    shape2: Sequence[int] = (1, 4, 4, 3),
    activation: str = "NONE",
    const_second: bool = False,
) -> bytes:
    b = TfliteBuilder()
    out_shape = list(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    s1, s2 = _rand_scale(rng), _rand_scale(rng)
    x1 = b.tensor(list(shape1), scale=s1, zero_point=_rand_zp(rng), name="input1")
    data2 = _weights(rng, shape2) if const_second else None
    x2 = b.tensor(list(shape2), scale=s2, zero_point=_rand_zp(rng), data=data2, name="input2")
    out_scale = float(np.float32((s1 + s2) * 10 ** rng.uniform(-0.2, 0.3)))
    y = b.tensor(out_shape, scale=out_scale, zero_point=_rand_zp(rng), name="output")
    b.op("ADD", [x1, x2], [y], builtin_options("AddOptionsT", fusedActivationFunction=ACTIVATIONS[activation]))
    return b.finish([x1] if const_second else [x1, x2], [y])


def _strided_slice(
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 4, 4, 8),
    begin: Sequence[int] = (0, 0, 0, 2),
    end: Sequence[int] = (1, 4, 4, 6),
    strides: Sequence[int] | None = None,
    begin_mask: int = 0,
    end_mask: int = 0,
    shrink_axis_mask: int = 0,
) -> bytes:
    b = TfliteBuilder()
    strides = list(strides) if strides is not None else [1] * len(shape)
    # The output shape from NumPy's slicing, which agrees with TFLite for these masks.
    index: list[Any] = []
    for axis in range(len(shape)):
        if shrink_axis_mask & (1 << axis):
            index.append(begin[axis])
            continue
        start = None if begin_mask & (1 << axis) else begin[axis]
        stop = None if end_mask & (1 << axis) else end[axis]
        index.append(slice(start, stop, strides[axis]))
    out_shape = list(np.empty(tuple(shape), dtype=np.int8)[tuple(index)].shape)
    scale, zp = _rand_scale(rng), _rand_zp(rng)
    x = b.tensor(list(shape), scale=scale, zero_point=zp, name="input")
    consts = [
        b.tensor([len(shape)], "int32", data=np.array(v, dtype=np.int32), name=n)
        for n, v in (("begin", begin), ("end", end), ("strides", strides))
    ]
    y = b.tensor(out_shape, scale=scale, zero_point=zp, name="output")
    b.op(
        "STRIDED_SLICE",
        [x, *consts],
        [y],
        builtin_options(
            "StridedSliceOptionsT", beginMask=begin_mask, endMask=end_mask, shrinkAxisMask=shrink_axis_mask
        ),
    )
    return b.finish([x], [y])


def _pad(
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 4, 4, 3),
    paddings: Sequence[tuple[int, int]] = ((0, 0), (1, 1), (1, 1), (0, 0)),
    constant: int | None = None,
) -> bytes:
    b = TfliteBuilder()
    out_shape = [d + p0 + p1 for d, (p0, p1) in zip(shape, paddings, strict=True)]
    scale, zp = _rand_scale(rng), _rand_zp(rng)
    x = b.tensor(list(shape), scale=scale, zero_point=zp, name="input")
    p = b.tensor([len(shape), 2], "int32", data=np.array(paddings, dtype=np.int32), name="paddings")
    y = b.tensor(out_shape, scale=scale, zero_point=zp, name="output")
    if constant is None:
        b.op("PAD", [x, p], [y], builtin_options("PadOptionsT"))
    else:
        c = b.tensor([1], scale=scale, zero_point=zp, data=np.array([constant], dtype=np.int8), name="constant")
        b.op("PADV2", [x, p, c], [y], builtin_options("PadV2OptionsT"))
    return b.finish([x], [y])


def _reshape(
    rng: np.random.Generator, *, shape: Sequence[int] = (1, 2, 2, 3), new_shape: Sequence[int] = (1, 12)
) -> bytes:
    b = TfliteBuilder()
    scale, zp = _rand_scale(rng), _rand_zp(rng)
    x = b.tensor(list(shape), scale=scale, zero_point=zp, name="input")
    s = b.tensor([len(new_shape)], "int32", data=np.array(new_shape, dtype=np.int32), name="shape")
    y = b.tensor(list(new_shape), scale=scale, zero_point=zp, name="output")
    b.op(
        "RESHAPE",
        [x, s],
        [y],
        builtin_options("ReshapeOptionsT", newShape=np.array(new_shape, dtype=np.int32)),
    )
    return b.finish([x], [y])


# --------------------------------------------------------------------------------------------------------
# Activations, elementwise arithmetic, concatenation and (de)quantization. `dtype` "int16" builds the 16x8
# variant: int16 activations with zero point 0, as the converter's 16x8 scheme emits them.

# The output quantization TFLite fixes for these ops: (scale, zero point) by activation type.
_FIXED_OUTPUT = {
    "SOFTMAX": {"int8": (1.0 / 256, -128), "int16": (1.0 / 32768, 0)},
    "LOGISTIC": {"int8": (1.0 / 256, -128), "int16": (1.0 / 32768, 0)},
    "TANH": {"int8": (1.0 / 128, 0), "int16": (1.0 / 32768, 0)},
}


def _act_zp(rng: np.random.Generator, dtype: str) -> int:
    return _rand_zp(rng) if dtype == "int8" else 0


def _act_scale(rng: np.random.Generator, dtype: str, lo: float = -3.0, hi: float = -1.0) -> float:
    """A random activation scale; int16 steps are 2^8 finer for the same real range."""
    shift = 0.0 if dtype == "int8" else -math.log10(256.0)
    return _rand_scale(rng, lo + shift, hi + shift)


def _fixed_output_activation(
    op: str,
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 10),
    dtype: str = "int8",
    input_scale: float | None = None,
    beta: float = 1.0,
) -> bytes:
    """SOFTMAX, LOGISTIC or TANH: random input quantization, the output quantization TFLite fixes."""
    b = TfliteBuilder()
    scale = input_scale if input_scale is not None else _act_scale(rng, dtype, -2.5, -0.7)
    x = b.tensor(list(shape), dtype, scale=scale, zero_point=_act_zp(rng, dtype), name="input")
    out_scale, out_zp = _FIXED_OUTPUT[op][dtype]
    y = b.tensor(list(shape), dtype, scale=out_scale, zero_point=out_zp, name="output")
    options = builtin_options("SoftmaxOptionsT", beta=beta) if op == "SOFTMAX" else None
    b.op(op, [x], [y], options)
    return b.finish([x], [y])


def _hard_swish(rng: np.random.Generator, *, shape: Sequence[int] = (1, 4, 4, 3)) -> bytes:
    b = TfliteBuilder()
    in_scale = _rand_scale(rng, -2.5, -1.0)
    x = b.tensor(list(shape), scale=in_scale, zero_point=_rand_zp(rng), name="input")
    # hard_swish(x) spans [-0.375, max(x)]: an output scale near the input's.
    out_scale = float(np.float32(in_scale * 10 ** rng.uniform(-0.4, 0.2)))
    y = b.tensor(list(shape), scale=out_scale, zero_point=_rand_zp(rng), name="output")
    b.op("HARD_SWISH", [x], [y], builtin_options("HardSwishOptionsT"))
    return b.finish([x], [y])


def _binary(
    op: str,
    rng: np.random.Generator,
    *,
    shape1: Sequence[int] = (1, 4, 4, 3),
    shape2: Sequence[int] = (1, 4, 4, 3),
    activation: str = "NONE",
    const_second: bool = False,
    dtype: str = "int8",
) -> bytes:
    """MUL or SUB with NumPy-style broadcasting."""
    b = TfliteBuilder()
    out_shape = list(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    s1, s2 = _act_scale(rng, dtype), _act_scale(rng, dtype)
    x1 = b.tensor(list(shape1), dtype, scale=s1, zero_point=_act_zp(rng, dtype), name="input1")
    data2 = None
    if const_second:
        info = np.iinfo(np.dtype(dtype))
        data2 = rng.integers(info.min, info.max + 1, size=tuple(shape2)).astype(dtype)
    x2 = b.tensor(list(shape2), dtype, scale=s2, zero_point=_act_zp(rng, dtype), data=data2, name="input2")
    qmax = 128.0 if dtype == "int8" else 32768.0
    if op == "MUL":  # the product spans about (qmax * s1) * (qmax * s2)
        out_scale = qmax * s1 * s2 * 10 ** rng.uniform(-0.6, 0.3)
    else:
        out_scale = (s1 + s2) * 10 ** rng.uniform(-0.2, 0.3)
    y = b.tensor(out_shape, dtype, scale=float(np.float32(out_scale)), zero_point=_act_zp(rng, dtype), name="output")
    act = ACTIVATIONS[activation]
    if op == "MUL":
        options = builtin_options("MulOptionsT", fusedActivationFunction=act)
    else:  # the converter's 16x8 SUB says its int16 scales are general, not powers of two
        options = builtin_options("SubOptionsT", fusedActivationFunction=act, potScaleInt16=dtype != "int16")
    b.op(op, [x1, x2], [y], options)
    return b.finish([x1] if const_second else [x1, x2], [y])


def _concatenation(
    rng: np.random.Generator,
    *,
    shapes: Sequence[Sequence[int]] = ((1, 4, 4, 3), (1, 4, 4, 5)),
    axis: int = -1,
    dtype: str = "int8",
    const_input: int | None = None,
) -> bytes:
    """CONCATENATION; TFLM's int8 kernel copies bytes, so every input shares the output's quantization."""
    b = TfliteBuilder()
    rank = len(shapes[0])
    ax = axis % rank
    out_shape = list(shapes[0])
    out_shape[ax] = sum(int(s[ax]) for s in shapes)
    scale, zp = _act_scale(rng, dtype), _act_zp(rng, dtype)
    info = np.iinfo(np.dtype(dtype))
    xs = []
    for k, shape in enumerate(shapes):
        data = rng.integers(info.min, info.max + 1, size=tuple(shape)).astype(dtype) if k == const_input else None
        xs.append(b.tensor(list(shape), dtype, scale=scale, zero_point=zp, data=data, name=f"input{k}"))
    y = b.tensor(out_shape, dtype, scale=scale, zero_point=zp, name="output")
    b.op("CONCATENATION", xs, [y], builtin_options("ConcatenationOptionsT", axis=axis))
    return b.finish([x for k, x in enumerate(xs) if k != const_input], [y])


def _quantize(
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 4, 4, 3),
    in_dtype: str = "int8",
    out_dtype: str = "int8",
    same_scale: bool = False,
) -> bytes:
    """QUANTIZE: float32 -> int8/int16, or a requantization between int8/int16 scales and types."""
    b = TfliteBuilder()
    if in_dtype == "float32":
        x = b.tensor(list(shape), "float32", name="input")
        out_scale = _act_scale(rng, out_dtype)
    else:
        in_scale = _act_scale(rng, in_dtype)
        x = b.tensor(list(shape), in_dtype, scale=in_scale, zero_point=_act_zp(rng, in_dtype), name="input")
        # The same real range: an int16 output has 2^8 finer steps than an int8 one and vice versa.
        ratio = {("int8", "int16"): 1 / 256, ("int16", "int8"): 256.0}.get((in_dtype, out_dtype), 1.0)
        out_scale = in_scale * ratio * (1.0 if same_scale else 10 ** rng.uniform(-0.5, 0.5))
    y = b.tensor(
        list(shape), out_dtype, scale=float(np.float32(out_scale)), zero_point=_act_zp(rng, out_dtype), name="output"
    )
    b.op("QUANTIZE", [x], [y], builtin_options("QuantizeOptionsT"))
    return b.finish([x], [y])


def _dequantize(rng: np.random.Generator, *, shape: Sequence[int] = (1, 10), in_dtype: str = "int8") -> bytes:
    """DEQUANTIZE to a float32 graph output."""
    b = TfliteBuilder()
    x = b.tensor(
        list(shape), in_dtype, scale=_act_scale(rng, in_dtype), zero_point=_act_zp(rng, in_dtype), name="input"
    )
    y = b.tensor(list(shape), "float32", name="output")
    b.op("DEQUANTIZE", [x], [y], builtin_options("DequantizeOptionsT"))
    return b.finish([x], [y])


def _relu_like(
    op: str,
    rng: np.random.Generator,
    *,
    shape: Sequence[int] = (1, 4, 4, 3),
    dtype: str = "int8",
    alpha: float = 0.2,
    same_quant: bool = False,
) -> bytes:
    """Standalone RELU, RELU6 or LEAKY_RELU (alpha) with its own output quantization (or the input's)."""
    b = TfliteBuilder()
    scale, zp = _act_scale(rng, dtype), _act_zp(rng, dtype)
    x = b.tensor(list(shape), dtype, scale=scale, zero_point=zp, name="input")
    if same_quant:
        out_scale, out_zp = scale, zp
    else:
        out_scale, out_zp = float(np.float32(scale * 10 ** rng.uniform(-0.5, 0.2))), _act_zp(rng, dtype)
    y = b.tensor(list(shape), dtype, scale=out_scale, zero_point=out_zp, name="output")
    options = builtin_options("LeakyReluOptionsT", alpha=alpha) if op == "LEAKY_RELU" else None
    b.op(op, [x], [y], options)
    return b.finish([x], [y])


_SINGLE_OP_MAKERS: dict[str, Callable[..., bytes]] = {
    "CONV_2D": lambda rng, **kw: _conv_like("CONV_2D", rng, **kw),
    "DEPTHWISE_CONV_2D": lambda rng, **kw: _conv_like("DEPTHWISE_CONV_2D", rng, **kw),
    "FULLY_CONNECTED": _fully_connected,
    "AVERAGE_POOL_2D": lambda rng, **kw: _pool("AVERAGE_POOL_2D", rng, **kw),
    "MAX_POOL_2D": lambda rng, **kw: _pool("MAX_POOL_2D", rng, **kw),
    "MEAN": _mean,
    "ADD": _add,
    "STRIDED_SLICE": _strided_slice,
    "PAD": _pad,
    "RESHAPE": _reshape,
    "SOFTMAX": lambda rng, **kw: _fixed_output_activation("SOFTMAX", rng, **kw),
    "LOGISTIC": lambda rng, **kw: _fixed_output_activation("LOGISTIC", rng, **kw),
    "TANH": lambda rng, **kw: _fixed_output_activation("TANH", rng, **kw),
    "HARD_SWISH": _hard_swish,
    "MUL": lambda rng, **kw: _binary("MUL", rng, **kw),
    "SUB": lambda rng, **kw: _binary("SUB", rng, **kw),
    "CONCATENATION": _concatenation,
    "QUANTIZE": _quantize,
    "DEQUANTIZE": _dequantize,
    "RELU": lambda rng, **kw: _relu_like("RELU", rng, **kw),
    "RELU6": lambda rng, **kw: _relu_like("RELU6", rng, **kw),
    "LEAKY_RELU": lambda rng, **kw: _relu_like("LEAKY_RELU", rng, **kw),
}


def make_single_op_model(op: str, rng: np.random.Generator, **params: Any) -> bytes:
    """A one-operator int8 model with random weights and quantization (drawn from rng).

    op is a TFLite builtin name (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D,
    MEAN, ADD, STRIDED_SLICE, PAD, RESHAPE, SOFTMAX, LOGISTIC, TANH, HARD_SWISH, MUL, SUB, CONCATENATION,
    QUANTIZE, DEQUANTIZE, RELU, RELU6, LEAKY_RELU); params are that maker's keyword arguments
    (shapes, strides, padding "SAME"/"VALID", activation "NONE"/"RELU"/"RELU6"/"RELU_N1_TO_1", ...; PAD with
    constant=v gives PADV2; dtype="int16" gives the 16x8 variant of the ops that have one; QUANTIZE takes
    in_dtype/out_dtype, DEQUANTIZE in_dtype).
    """
    try:
        maker = _SINGLE_OP_MAKERS[op]
    except KeyError:
        raise UsageError(f"no single-op maker for {op}; choose from {sorted(_SINGLE_OP_MAKERS)}") from None
    return maker(rng, **params)
