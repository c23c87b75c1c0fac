"""Synthetic int8 models: the project's default device model and small models for kernel tests.

- `make_extractor_model(seed)`: a random-weights, full-integer int8 model with the AgileNN feature
  extractor's shape, converted by TensorFlow (imported lazily: only model generation needs it).
- `write_synthetic_model(out_dir, seed)`: writes models/synthetic-extractor (model.tflite, hil_model.c,
  model.json, card.json, README.md).
- `make_single_op_model(op, rng, **params)`: a one-operator int8 .tflite written directly with the
  flatbuffer schema (no TensorFlow, milliseconds per model) with random weights and quantization
  parameters, for bit-exactness tests of each kernel against TFLite Micro. `TfliteBuilder` builds
  arbitrary small graphs the same way.
- `convert_keras_int8(model, representative)`: TFLiteConverter with full-integer int8 settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hil.model.quantization import compute_out_size

EXTRACTOR_INPUT_SHAPE = (96, 96, 3)
EXTRACTOR_LOCAL_CHANNELS = 5  # x[..., :5] feeds the local head, x[..., 5:] is sent to the remote side
EXTRACTOR_CLASSES = 10

_ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
_PADDINGS = {"SAME": 0, "VALID": 1}
_DTYPES = {
    "int8": (schema.TensorType.INT8, np.int8),
    "int16": (schema.TensorType.INT16, np.int16),
    "int32": (schema.TensorType.INT32, np.int32),
    "float32": (schema.TensorType.FLOAT32, np.float32),
}


# --------------------------------------------------------------------------------------------------------
# Flatbuffer models without TensorFlow


class TfliteBuilder:
    """Builds a single-subgraph .tflite with the schema's object API."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [schema.BufferT()]  # buffer 0: the schema's empty sentinel
        self.opcodes: dict[tuple[int, int], int] = {}
        self.operator_codes: list[Any] = []
        self.operators: list[Any] = []

    def tensor(
        self,
        shape: Sequence[int],
        dtype: str = "int8",
        scale: float | Sequence[float] | None = None,
        zero_point: int | Sequence[int] = 0,
        data: np.ndarray | None = None,
        axis: int = 0,
        name: str | None = None,
    ) -> int:
        t = schema.TensorT()
        t.shape = np.array(shape, dtype=np.int32)
        t.type, np_dtype = _DTYPES[dtype]
        t.name = (name or f"t{len(self.tensors)}").encode()
        if scale is not None:
            q = schema.QuantizationParametersT()
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            if zps.size == 1 and scales.size > 1:
                zps = np.repeat(zps, scales.size)
            q.scale, q.zeroPoint, q.quantizedDimension = scales, zps, axis
            t.quantization = q
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=np_dtype).reshape(tuple(shape)))
            b = schema.BufferT()
            b.data = np.frombuffer(arr.astype(np.dtype(np_dtype).newbyteorder("<")).tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        opcode: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        options_type: str | None = None,
        version: int = 1,
    ) -> None:
        code = getattr(schema.BuiltinOperator, opcode)
        key = (code, version)
        if key not in self.opcodes:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self.opcodes[key] = len(self.operator_codes)
            self.operator_codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = self.opcodes[key]
        o.inputs = np.array(inputs, dtype=np.int32)
        o.outputs = np.array(outputs, dtype=np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(schema.BuiltinOptions, options_type or type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)

    def finish(self, inputs: Sequence[int], outputs: Sequence[int], description: str = "hil synthetic") -> bytes:
        sg = schema.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = np.array(inputs, dtype=np.int32), np.array(outputs, dtype=np.int32)
        sg.name = b"main"
        m = schema.ModelT()
        m.version = 3
        m.operatorCodes, m.subgraphs, m.buffers = self.operator_codes, [sg], self.buffers
        m.description = description.encode()
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def builtin_options(cls_name: str, **fields: Any) -> Any:
    o = getattr(schema, cls_name)()
    for k, v in fields.items():
        if not hasattr(o, k):
            raise AttributeError(f"{cls_name} has no field {k}")
        setattr(o, k, v)
    return o


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
        padding=_PADDINGS[padding],
        strideH=stride[0],
        strideW=stride[1],
        dilationHFactor=dilation[0],
        dilationWFactor=dilation[1],
        fusedActivationFunction=_ACTIVATIONS[activation],
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
        builtin_options("FullyConnectedOptionsT", fusedActivationFunction=_ACTIVATIONS[activation]),
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
            padding=_PADDINGS[padding],
            strideH=stride[0],
            strideW=stride[1],
            filterHeight=filter[0],
            filterWidth=filter[1],
            fusedActivationFunction=_ACTIVATIONS[activation],
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
    b.op("ADD", [x1, x2], [y], builtin_options("AddOptionsT", fusedActivationFunction=_ACTIVATIONS[activation]))
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


# --------------------------------------------------------------------------------------------------------
# TensorFlow-converted models


def convert_keras_int8(model: Any, representative: Callable[[], Iterable[list[np.ndarray]]]) -> bytes:
    """Full-integer int8 conversion: int8 weights, activations, inputs and outputs, builtin int8 ops only."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def randomize_weights(model: Any, rng: np.random.Generator) -> None:
    """Non-trivial biases and batch-norm statistics, so that folding them into the convolutions matters."""
    import tensorflow as tf

    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = weights
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0.0, 0.2, beta.shape).astype(np.float32),
                    rng.normal(0.0, 0.3, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
                ]
            )
        else:
            # Keep the initializer's kernels; give every bias (initialized to zero) random values.
            layer.set_weights([rng.normal(0.0, 0.1, w.shape).astype(np.float32) if w.ndim == 1 else w for w in weights])


def random_images(seed: int, count: int, shape: Sequence[int] = EXTRACTOR_INPUT_SHAPE) -> np.ndarray:
    """Float images in [-1, 1] with some spatial structure (waves plus noise), shape (count, *shape)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    images = np.empty((count, h, w, c), dtype=np.float32)
    for i in range(count):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi, size=c)
        base = np.sin(2 * np.pi * (fx * xx[..., None] + fy * yy[..., None]) + phase)
        images[i] = np.clip(0.7 * base + rng.normal(0, 0.3, size=(h, w, c)), -1, 1)
    return images


def make_extractor_model(seed: int = 0) -> bytes:
    """Random-weights int8 model with the AgileNN extractor's shape.

    input 1x96x96x3 -> SeparableConv2D(4, 3x3, stride 3, same) + BN + ReLU6
    -> SeparableConv2D(24, 3x3, same) + BN + ReLU6 -> x;
    outputs: local_logits = Dense(10)(GlobalAveragePooling2D(x[..., :5])) as (1, 10) (logits, no softmax)
    and remote_features = x[..., 5:] as (1, 32, 32, 19), in that order.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input(EXTRACTOR_INPUT_SHAPE, batch_size=1, name="image")
    x = layers.SeparableConv2D(4, 3, strides=3, padding="same", name="sep_conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(6.0, name="relu6_1")(x)
    x = layers.SeparableConv2D(24, 3, padding="same", name="sep_conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(6.0, name="relu6_2")(x)
    local = x[..., :EXTRACTOR_LOCAL_CHANNELS]
    remote = x[..., EXTRACTOR_LOCAL_CHANNELS:]
    local = layers.GlobalAveragePooling2D(name="gap")(local)
    logits = layers.Dense(EXTRACTOR_CLASSES, name="local_head")(local)
    # Named outputs: the converter orders a dict's outputs by name, which puts the logits first.
    model = tf.keras.Model(inp, {"local_logits": logits, "remote_features": remote}, name="synthetic_extractor")
    randomize_weights(model, np.random.default_rng(seed))

    images = random_images(seed + 1, 64)

    def representative() -> Iterable[list[np.ndarray]]:
        for img in images:
            yield [img[None]]

    return convert_keras_int8(model, representative)


SYNTHETIC_README = """# synthetic-extractor

A **random-weights stand-in** for the AgileNN feature extractor, used as the default device model until the
trained AgileNN model exists. It has the extractor's shape and operators but its outputs mean nothing.

- input: 1x96x96x3 int8 image
- SeparableConv2D(4, 3x3, stride 3, same) + BatchNorm + ReLU6
- SeparableConv2D(24, 3x3, same) + BatchNorm + ReLU6
- output 0 `local_logits` (1x10): x[..., :5] -> GlobalAveragePooling2D -> Dense(10), logits
- output 1 `remote_features` (1x32x32x19): x[..., 5:], the channels sent to the remote side

Full-integer int8 (weights, activations, inputs, outputs), converted by TensorFlow with a representative
dataset of random images. Files: `model.tflite` (source of truth), `hil_model.c` and `model.json` generated
from it by `hil.model.compiler`, `card.json` (hashes and device cost).

Regenerate with `hil.model.synthetic.write_synthetic_model(out_dir, seed=0)`.
"""


def write_synthetic_model(out_dir: Path, seed: int = 0, name: str = "synthetic-extractor") -> Any:
    """Generates the default device model into out_dir and returns its CompiledModel.

    Writes model.tflite, hil_model.c, model.json, card.json and README.md. The same seed gives the same
    files as far as TensorFlow's conversion is deterministic.
    """
    from hil.model.compiler import compile_tflite

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tflite = make_extractor_model(seed)
    (out_dir / "model.tflite").write_bytes(tflite)
    (out_dir / "README.md").write_text(SYNTHETIC_README)
    compiled = compile_tflite(tflite, out_dir, name=name)
    card = {
        "name": name,
        "kind": "synthetic",
        "dataset": "none (random weights)",
        "seed": seed,
        "artifacts": {
            f: hashlib.sha256((out_dir / f).read_bytes()).hexdigest()
            for f in ("model.tflite", "hil_model.c", "model.json")
        },
        "device": {
            "weights_bytes": compiled.weights_bytes,
            "arena_bytes": compiled.arena_bytes,
            "macs": compiled.macs,
        },
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return compiled
