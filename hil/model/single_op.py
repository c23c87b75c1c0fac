"""Single-operator int8 test models, written directly with the flatbuffer schema (see tflite_builder.py).

`make_single_op_model(op, rng, **params)` gives a one-operator int8 .tflite with random weights and
quantization parameters drawn from rng, for bit-exactness tests of each kernel against TFLite Micro.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

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
}


def make_single_op_model(op: str, rng: np.random.Generator, **params: Any) -> bytes:
    """A one-operator int8 model with random weights and quantization (drawn from rng).

    op is a TFLite builtin name (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D,
    MEAN, ADD, STRIDED_SLICE, PAD, RESHAPE); params are that maker's keyword arguments (shapes, strides,
    padding "SAME"/"VALID", activation "NONE"/"RELU"/"RELU6"/"RELU_N1_TO_1", ...; PAD with constant=v
    gives PADV2).
    """
    try:
        maker = _SINGLE_OP_MAKERS[op]
    except KeyError:
        raise ValueError(f"no single-op maker for {op}; choose from {sorted(_SINGLE_OP_MAKERS)}") from None
    return maker(rng, **params)
