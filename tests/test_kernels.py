"""Every int8 kernel bit-exact with TensorFlow Lite Micro.

Each case builds a one-operator model with random weights and quantization (hil.model.synthetic, written
directly as a flatbuffer: no TensorFlow, milliseconds per model), compiles it to C, runs it natively through
the host runner and compares every output value with the tflite-micro runtime. Shapes, strides, paddings,
dilations, depth multipliers, zero points, per-channel/per-tensor weights and fused activations are drawn
from seeded generators, so the cases are the same on every run. The tests marked `tf` do the same for
models converted by TensorFlow from Keras layers.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_models import assert_bit_exact, compile_and_build, mismatch_report

from hil import paths
from hil.model.hostrun import run_host_many
from hil.model.reference import TflmReference
from hil.model.synthetic import TfliteBuilder, builtin_options, make_single_op_model

ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kernel-models")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host-build")


# --------------------------------------------------------------------------------------------------------
# Case generators (seeded: the same cases every run)


def _spatial(rng: np.random.Generator, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """An input size for which the output is non-empty; odd and even sizes alike."""
    effective = (kernel - 1) * dilation + 1
    low = effective if padding == "VALID" else 1
    return int(rng.integers(low, low + 10))


def _conv_cases(op: str, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        dh, dw = (1, 1) if rng.random() < 0.6 else (int(v) for v in rng.integers(1, 4, 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        params: dict[str, Any] = {
            "batches": int(rng.choice([1, 1, 1, 2])),
            "height": _spatial(rng, kh, sh, dh, padding),
            "width": _spatial(rng, kw, sw, dw, padding),
            "in_channels": int(rng.integers(1, 9)),
            "kernel": (kh, kw),
            "stride": (sh, sw),
            "dilation": (dh, dw),
            "padding": padding,
            "activation": str(rng.choice(ACTIVATIONS)),
            "per_channel": bool(rng.random() < 0.75),
            # The tflite-micro runtime crashes on a DEPTHWISE_CONV_2D without bias (the converter always
            # emits one), so only CONV_2D cases drop it.
            "bias": bool(rng.random() < 0.85) or op == "DEPTHWISE_CONV_2D",
        }
        if op == "DEPTHWISE_CONV_2D":
            params["depth_multiplier"] = int(rng.choice([1, 1, 2, 3]))
        else:
            params["out_channels"] = int(rng.integers(1, 13))
        tag = f"{i}-k{kh}x{kw}-s{sh}x{sw}-d{dh}x{dw}-{padding}-{params['activation']}"
        cases.append((tag, params))
    return cases


# Shapes of the AgileNN extractor, scaled down, and the edges random draws may miss.
CONV_FIXED = [
    (
        "pointwise",
        {
            "height": 8,
            "width": 8,
            "in_channels": 4,
            "out_channels": 24,
            "kernel": (1, 1),
            "padding": "VALID",
            "activation": "RELU6",
        },
    ),
    ("stride3-same", {"height": 12, "width": 12, "in_channels": 3, "out_channels": 4, "stride": (3, 3)}),
    (
        "even-same-stride2",
        {"height": 8, "width": 6, "in_channels": 3, "out_channels": 5, "stride": (2, 2), "kernel": (4, 4)},
    ),
    ("per-tensor-no-bias", {"per_channel": False, "bias": False, "activation": "RELU"}),
    ("kernel-larger-than-input-same", {"height": 2, "width": 3, "kernel": (5, 5)}),
    ("deep-accumulator", {"height": 4, "width": 4, "in_channels": 64, "out_channels": 8}),
]
DEPTHWISE_FIXED = [
    ("extractor-stride3", {"height": 12, "width": 12, "in_channels": 3, "stride": (3, 3)}),
    ("extractor-second", {"height": 8, "width": 8, "in_channels": 4}),
    (
        "multiplier4-dilated",
        {
            "height": 9,
            "width": 11,
            "in_channels": 2,
            "depth_multiplier": 4,
            "dilation": (2, 2),
            "padding": "VALID",
        },
    ),
    ("per-tensor", {"per_channel": False, "activation": "RELU6"}),
]


def _fc_cases(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        depth, units = int(rng.integers(1, 40)), int(rng.integers(1, 20))
        params: dict[str, Any] = {
            "batches": int(rng.choice([1, 1, 3])),
            "depth": depth,
            "units": units,
            "activation": str(rng.choice(ACTIVATIONS)),
            "per_channel": bool(rng.random() < 0.5),
            "bias": bool(rng.random() < 0.8),
        }
        cases.append((f"{i}-{depth}to{units}-{'pc' if params['per_channel'] else 'pt'}", params))
    cases.append(("4d-input-flattened", {"input_shape": (2, 3, 2, 4), "depth": 12, "units": 5}))
    cases.append(("extractor-head", {"depth": 5, "units": 10, "per_channel": True}))
    return cases


def _pool_cases(n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        fh, fw = (int(v) for v in rng.integers(1, 5, 2))
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        padding = str(rng.choice(["SAME", "VALID"]))
        params = {
            "batches": int(rng.choice([1, 2])),
            "height": _spatial(rng, fh, sh, 1, padding),
            "width": _spatial(rng, fw, sw, 1, padding),
            "channels": int(rng.integers(1, 6)),
            "filter": (fh, fw),
            "stride": (sh, sw),
            "padding": padding,
            "activation": str(rng.choice(ACTIVATIONS)),
        }
        cases.append((f"{i}-f{fh}x{fw}-s{sh}x{sw}-{padding}-{params['activation']}", params))
    return cases


MEAN_CASES = [
    ("gap-hw", {"shape": (1, 6, 6, 5), "axes": (1, 2)}),
    ("gap-hw-same-quant", {"shape": (1, 6, 6, 5), "axes": (1, 2), "same_quant": True}),
    ("gap-extractor", {"shape": (1, 32, 32, 5), "axes": (1, 2)}),
    ("gap-extractor-same-quant", {"shape": (1, 32, 32, 5), "axes": (1, 2), "same_quant": True}),
    ("gap-keepdims-batch2", {"shape": (2, 5, 7, 3), "axes": (1, 2), "keep_dims": True}),
    ("gap-axes-reversed-negative", {"shape": (1, 4, 3, 6), "axes": (-2, 1)}),
    ("gap1d", {"shape": (1, 10, 6), "axes": (1,)}),
    ("last-axis", {"shape": (2, 3, 7), "axes": (2,)}),
    ("one-element", {"shape": (1, 1, 1, 4), "axes": (1, 2), "same_quant": True}),
    ("prime-count", {"shape": (1, 7, 11, 2), "axes": (1, 2)}),
    ("large-count", {"shape": (1, 64, 64, 2), "axes": (1, 2)}),
]

ADD_CASES = [
    ("same-shape", {"shape1": (1, 4, 4, 3), "shape2": (1, 4, 4, 3)}),
    ("same-shape-relu6", {"shape1": (1, 5, 3, 8), "shape2": (1, 5, 3, 8), "activation": "RELU6"}),
    ("relu", {"shape1": (2, 3, 3, 2), "shape2": (2, 3, 3, 2), "activation": "RELU"}),
    ("broadcast-channel-vector", {"shape1": (1, 4, 4, 3), "shape2": (1, 1, 1, 3)}),
    ("broadcast-both-ways", {"shape1": (2, 1, 4, 3), "shape2": (1, 5, 1, 3)}),
    ("broadcast-rank1", {"shape1": (1, 3, 3, 6), "shape2": (6,)}),
    ("constant-operand", {"shape1": (1, 2, 2, 3), "shape2": (3,), "const_second": True}),
    ("rank2", {"shape1": (3, 7), "shape2": (3, 7), "activation": "RELU_N1_TO_1"}),
]

SLICE_CASES = [
    (
        "extractor-local",
        {"shape": (1, 6, 6, 24), "begin": (0, 0, 0, 0), "end": (0, 0, 0, 5), "begin_mask": 15, "end_mask": 7},
    ),
    (
        "extractor-remote",
        {"shape": (1, 6, 6, 24), "begin": (0, 0, 0, 5), "end": (0, 0, 0, 0), "begin_mask": 7, "end_mask": 15},
    ),
    ("plain-box", {"shape": (1, 4, 4, 8), "begin": (0, 1, 0, 2), "end": (1, 3, 4, 6)}),
    ("negative-indices", {"shape": (2, 5, 4, 6), "begin": (0, -3, 0, -4), "end": (2, -1, 4, -1)}),
    ("clamped-end", {"shape": (1, 4, 4, 3), "begin": (0, 0, 1, 0), "end": (1, 100, 3, 3)}),
    ("shrink-axis", {"shape": (3, 4, 5), "begin": (1, 0, 1), "end": (2, 4, 4), "shrink_axis_mask": 1}),
    ("rank2", {"shape": (4, 9), "begin": (1, 2), "end": (3, 9)}),
]

PAD_CASES = [
    ("zero-padding2d", {"shape": (1, 4, 4, 3), "paddings": ((0, 0), (1, 1), (1, 1), (0, 0))}),
    ("asymmetric", {"shape": (1, 3, 5, 2), "paddings": ((0, 0), (2, 0), (0, 3), (0, 0))}),
    ("channels-and-batch", {"shape": (2, 2, 2, 3), "paddings": ((1, 0), (0, 1), (1, 1), (2, 1))}),
    ("padv2-constant", {"shape": (1, 4, 4, 3), "paddings": ((0, 0), (1, 2), (2, 1), (0, 0)), "constant": -7}),
    ("rank2", {"shape": (3, 4), "paddings": ((1, 2), (0, 3))}),
]

RESHAPE_CASES = [
    ("flatten", {"shape": (1, 2, 2, 3), "new_shape": (1, 12)}),
    ("expand", {"shape": (1, 10), "new_shape": (1, 1, 1, 10)}),
]

SINGLE_OP_CASES: list[tuple[str, str, dict[str, Any]]] = (
    [("CONV_2D", t, p) for t, p in _conv_cases("CONV_2D", 24, seed=101) + CONV_FIXED]
    + [("DEPTHWISE_CONV_2D", t, p) for t, p in _conv_cases("DEPTHWISE_CONV_2D", 16, seed=202) + DEPTHWISE_FIXED]
    + [("FULLY_CONNECTED", t, p) for t, p in _fc_cases(10, seed=303)]
    + [("AVERAGE_POOL_2D", t, p) for t, p in _pool_cases(10, seed=404)]
    + [("MAX_POOL_2D", t, p) for t, p in _pool_cases(8, seed=505)]
    + [("MEAN", t, p) for t, p in MEAN_CASES]
    + [("ADD", t, p) for t, p in ADD_CASES]
    + [("STRIDED_SLICE", t, p) for t, p in SLICE_CASES]
    + [("PAD", t, p) for t, p in PAD_CASES]
    + [("RESHAPE", t, p) for t, p in RESHAPE_CASES]
)


@pytest.mark.parametrize(
    ("op", "params"),
    [pytest.param(op, p, id=f"{op}-{tag}") for op, tag, p in SINGLE_OP_CASES],
)
def test_single_op_bit_exact(op: str, params: dict[str, Any], work_dir: Path, build_dir: Path) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{op} {sorted(params.items())}".encode()))  # same every run
    tflite = make_single_op_model(op, rng, **params)
    assert_bit_exact(tflite, work_dir, build_dir, rng, count=3, label=f"{op} {params}")


# --------------------------------------------------------------------------------------------------------
# Small graphs: lifetimes, aliases and several outputs through the arena planner


def _graph_conv_reshape_fc(rng: np.random.Generator) -> bytes:
    """conv -> reshape -> fully connected, plus a second output that keeps the conv result alive."""
    b = TfliteBuilder()
    x = b.tensor([1, 6, 6, 2], scale=0.02, zero_point=3, name="x")
    f = b.tensor([4, 3, 3, 2], scale=[0.01, 0.02, 0.015, 0.03], data=rng.integers(-127, 128, (4, 3, 3, 2)))
    bias = b.tensor([4], "int32", scale=[2e-4, 4e-4, 3e-4, 6e-4], data=rng.integers(-500, 500, 4))
    c = b.tensor([1, 6, 6, 4], scale=0.05, zero_point=-10, name="conv")
    b.op(
        "CONV_2D",
        [x, f, bias],
        [c],
        builtin_options("Conv2DOptionsT", padding=0, strideH=1, strideW=1, fusedActivationFunction=1),
    )
    shape = b.tensor([2], "int32", data=np.array([1, 144]))
    flat = b.tensor([1, 144], scale=0.05, zero_point=-10, name="flat")
    b.op(
        "RESHAPE",
        [c, shape],
        [flat],
        builtin_options("ReshapeOptionsT", newShape=np.array([1, 144], np.int32)),
    )
    w = b.tensor([7, 144], scale=0.004, data=rng.integers(-127, 128, (7, 144)))
    y = b.tensor([1, 7], scale=0.3, zero_point=5, name="logits")
    b.op("FULLY_CONNECTED", [flat, w, -1], [y], builtin_options("FullyConnectedOptionsT"))
    return b.finish([x], [y, c])


def _graph_residual(rng: np.random.Generator) -> bytes:
    """x -> depthwise -> add(x, depthwise) -> mean: the graph input stays live across two kernels."""
    b = TfliteBuilder()
    x = b.tensor([1, 8, 8, 3], scale=0.03, zero_point=-5, name="x")
    f = b.tensor([1, 3, 3, 3], scale=[0.02, 0.01, 0.03], axis=3, data=rng.integers(-127, 128, (1, 3, 3, 3)))
    bias = b.tensor([3], "int32", scale=[6e-4, 3e-4, 9e-4], data=rng.integers(-900, 900, 3))
    d = b.tensor([1, 8, 8, 3], scale=0.04, zero_point=2, name="dw")
    b.op(
        "DEPTHWISE_CONV_2D",
        [x, f, bias],
        [d],
        builtin_options(
            "DepthwiseConv2DOptionsT",
            padding=0,
            strideH=1,
            strideW=1,
            depthMultiplier=1,
            fusedActivationFunction=3,
        ),
    )
    s = b.tensor([1, 8, 8, 3], scale=0.05, zero_point=-1, name="sum")
    b.op("ADD", [x, d], [s], builtin_options("AddOptionsT", fusedActivationFunction=0))
    axes = b.tensor([2], "int32", data=np.array([1, 2]))
    m = b.tensor([1, 3], scale=0.02, zero_point=0, name="mean")
    b.op("MEAN", [s, axes], [m], builtin_options("ReducerOptionsT", keepDims=False))
    return b.finish([x], [m])


def _graph_two_inputs(rng: np.random.Generator) -> bytes:
    """Two graph inputs, a pad, an add and a max pool; the pooled output and the padded tensor both out."""
    b = TfliteBuilder()
    a = b.tensor([1, 4, 4, 2], scale=0.1, zero_point=0, name="a")
    c = b.tensor([1, 6, 6, 2], scale=0.07, zero_point=9, name="c")
    pads = b.tensor([4, 2], "int32", data=np.array([[0, 0], [1, 1], [1, 1], [0, 0]]))
    p = b.tensor([1, 6, 6, 2], scale=0.1, zero_point=0, name="padded")
    b.op("PAD", [a, pads], [p], builtin_options("PadOptionsT"))
    s = b.tensor([1, 6, 6, 2], scale=0.2, zero_point=-3, name="sum")
    b.op("ADD", [p, c], [s], builtin_options("AddOptionsT", fusedActivationFunction=1))
    m = b.tensor([1, 3, 3, 2], scale=0.2, zero_point=-3, name="pooled")
    b.op(
        "MAX_POOL_2D",
        [s],
        [m],
        builtin_options("Pool2DOptionsT", padding=1, strideH=2, strideW=2, filterHeight=2, filterWidth=2),
    )
    return b.finish([a, c], [m, p])


def _graph_squeeze_expand(rng: np.random.Generator) -> bytes:
    """Global average (keep dims) -> SQUEEZE -> FULLY_CONNECTED -> EXPAND_DIMS: two aliases around kernels."""
    b = TfliteBuilder()
    x = b.tensor([1, 5, 5, 6], scale=0.02, zero_point=-20, name="x")
    axes = b.tensor([2], "int32", data=np.array([1, 2]))
    m = b.tensor([1, 1, 1, 6], scale=0.015, zero_point=-3, name="gap")
    b.op("MEAN", [x, axes], [m], builtin_options("ReducerOptionsT", keepDims=True))
    sq = b.tensor([1, 6], scale=0.015, zero_point=-3, name="squeezed")
    b.op("SQUEEZE", [m], [sq], builtin_options("SqueezeOptionsT", squeezeDims=np.array([1, 2], np.int32)))
    w = b.tensor([4, 6], scale=0.01, data=rng.integers(-127, 128, (4, 6)))
    bias = b.tensor([4], "int32", scale=1.5e-4, data=rng.integers(-300, 300, 4))
    y = b.tensor([1, 4], scale=0.01, zero_point=7, name="fc")
    b.op("FULLY_CONNECTED", [sq, w, bias], [y], builtin_options("FullyConnectedOptionsT"))
    axis = b.tensor([1], "int32", data=np.array([1]))
    e = b.tensor([1, 1, 4], scale=0.01, zero_point=7, name="expanded")
    b.op("EXPAND_DIMS", [y, axis], [e], builtin_options("ExpandDimsOptionsT"))
    return b.finish([x], [e, sq])


@pytest.mark.parametrize(
    "make",
    [_graph_conv_reshape_fc, _graph_residual, _graph_two_inputs, _graph_squeeze_expand],
    ids=["conv-reshape-fc", "residual-add-mean", "two-inputs-pad-add-pool", "mean-squeeze-fc-expand"],
)
def test_small_graphs_bit_exact(make: Any, work_dir: Path, build_dir: Path) -> None:
    rng = np.random.default_rng(7)
    assert_bit_exact(make(rng), work_dir, build_dir, rng, count=5, label=make.__name__)


# --------------------------------------------------------------------------------------------------------
# The default device model, 200 random images


def test_synthetic_extractor_bit_exact_on_200_inputs(work_dir: Path, build_dir: Path) -> None:
    tflite = (paths.SYNTHETIC_MODEL / "model.tflite").read_bytes()
    _, binary = compile_and_build(tflite, work_dir, build_dir)
    reference = TflmReference(tflite)
    rng = np.random.default_rng(2024)
    input_sets = [[rng.integers(-128, 128, size=(1, 96, 96, 3), dtype=np.int8)] for _ in range(200)]
    results = run_host_many(binary, input_sets)
    failures = [
        r
        for i, (x, got) in enumerate(zip(input_sets, results, strict=True))
        if (r := mismatch_report("synthetic-extractor", got, reference.run(x), i))
    ]
    assert not failures, f"{len(failures)} of 200 inputs differ:\n" + "\n".join(failures[:10])
    assert [o.shape for o in results[0]] == [(1, 10), (1, 32, 32, 19)]


# --------------------------------------------------------------------------------------------------------
# Which rounding TFLM uses


def _fc_numpy(x: np.ndarray, w: np.ndarray, zp_in: int, mult: int, shift: int, zp_out: int, single: bool) -> np.ndarray:
    """A per-tensor FULLY_CONNECTED in exact integer arithmetic with either TFLM rounding variant."""
    acc = (w.astype(np.int64) @ (x.astype(np.int64) - zp_in).T).T  # [batches, units]
    if single:  # TFLITE_SINGLE_ROUNDING: one rounding of x * m / 2^(31 - shift)
        total = 31 - shift
        y = (acc * mult + (1 << (total - 1))) >> total
    else:  # default: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT
        ab = acc * (1 << max(shift, 0)) * mult
        nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
        high = ab + nudge
        high = np.where(high >= 0, high >> 31, -((-high) >> 31))  # division truncating toward zero
        exp = max(-shift, 0)
        mask = (1 << exp) - 1
        threshold = (mask >> 1) + (high < 0)
        y = (high >> exp) + ((high & mask) > threshold)
    return np.clip(y + zp_out, -128, 127).astype(np.int8)


def test_tflm_runtime_uses_double_rounding() -> None:
    """The tflite-micro runtime is built without TFLITE_SINGLE_ROUNDING: hil_quant.h copies that variant.

    A large per-tensor FULLY_CONNECTED is computed in NumPy both ways; only the double-rounding result
    matches TFLM (the single-rounding one differs in a few values), which pins down the variant."""
    from hil.model import quantization as qz
    from hil.model.tflite_reader import read_tflite

    rng = np.random.default_rng(11)
    tflite = make_single_op_model("FULLY_CONNECTED", rng, batches=64, depth=32, units=64, bias=False)
    g = read_tflite(tflite)
    x_t, w_t, y_t = g.tensors[0], g.tensors[1], g.tensors[2]
    mult, shift = qz.quantize_multiplier(x_t.quant.scale * w_t.quant.scale / y_t.quant.scale)
    x = rng.integers(-128, 128, size=(64, 32), dtype=np.int8)
    tflm = TflmReference(tflite).run([x])[0]
    double = _fc_numpy(x, w_t.data, x_t.quant.zero_point, mult, shift, y_t.quant.zero_point, single=False)
    single = _fc_numpy(x, w_t.data, x_t.quant.zero_point, mult, shift, y_t.quant.zero_point, single=True)
    assert np.array_equal(double, tflm)
    assert not np.array_equal(single, tflm)


# --------------------------------------------------------------------------------------------------------
# Models converted by TensorFlow


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _representative(shape: tuple[int, ...], seed: int, count: int = 32):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1, 1, size=(count, *shape)).astype(np.float32)

    def gen():
        for d in data:
            yield [d[None]]

    return gen


@pytest.mark.tf
@pytest.mark.slow
def test_keras_layers_bit_exact(tf: Any, work_dir: Path, build_dir: Path) -> None:
    """One converted model that exercises what the Keras converter emits for the supported ops."""
    from hil.model.synthetic import convert_keras_int8, randomize_weights

    tf.keras.utils.set_random_seed(3)
    L = tf.keras.layers
    inp = tf.keras.Input((17, 15, 3), batch_size=1)
    x = L.ZeroPadding2D(((1, 2), (0, 1)))(inp)  # PAD
    x = L.Conv2D(8, 3, strides=2, padding="same", dilation_rate=1)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)  # fused RELU6
    y = L.DepthwiseConv2D(3, depth_multiplier=2, dilation_rate=2, padding="same")(x)
    y = L.Conv2D(8, 1, activation="relu")(y)
    x = L.Add()([x, y])  # ADD of two differently quantized tensors
    a = L.AveragePooling2D(3, strides=2, padding="same")(x)
    m = L.MaxPooling2D(2)(x)
    gap = L.GlobalAveragePooling2D()(a)
    flat = L.Flatten()(m)  # RESHAPE
    out1 = L.Dense(6)(gap)
    out2 = L.Dense(4, activation="relu")(flat)
    model = tf.keras.Model(inp, {"a_head": out1, "b_flat": out2})
    randomize_weights(model, np.random.default_rng(3))
    tflite = convert_keras_int8(model, _representative((17, 15, 3), seed=4))
    compiled = assert_bit_exact(tflite, work_dir, build_dir, np.random.default_rng(5), count=20, label="keras layers")
    ops = {o.op for o in compiled.ops}
    assert {
        "PAD",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "ADD",
        "AVERAGE_POOL_2D",
        "MAX_POOL_2D",
        "MEAN",
        "FULLY_CONNECTED",
        "RESHAPE",
    } <= ops


@pytest.mark.tf
@pytest.mark.slow
def test_extractor_generation_is_deterministic_and_bit_exact(tf: Any, work_dir: Path, build_dir: Path) -> None:
    from hil.model.synthetic import make_extractor_model

    first, second = make_extractor_model(seed=1), make_extractor_model(seed=1)
    assert first == second
    compiled = assert_bit_exact(
        first, work_dir, build_dir, np.random.default_rng(9), count=10, label="extractor seed 1"
    )
    assert [o.op for o in compiled.ops] == [
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "STRIDED_SLICE",
        "MEAN",
        "FULLY_CONNECTED",
        "STRIDED_SLICE",
    ]
    assert [(t.name, t.shape) for t in compiled.outputs] == [
        ("local_logits", [1, 10]),
        ("remote_features", [1, 32, 32, 19]),
    ]


@pytest.mark.tf
@pytest.mark.slow
def test_keras_layers_16x8_bit_exact(tf: Any, work_dir: Path, build_dir: Path) -> None:
    """The 16x8 scheme (int16 activations, int8 weights, int64 bias) on what the AgileNN device part uses:
    strided and dilated convolutions, a depth multiplier, every fused activation, a bias-free layer, channel
    slices, the global mean and per-channel dense layers; full-range int16 inputs exercise the clamps."""
    from hil.model.synthetic import convert_keras_int8, randomize_weights
    from hil.train.layers import ChannelSlice

    tf.keras.utils.set_random_seed(7)
    L = tf.keras.layers
    inp = tf.keras.Input((13, 11, 3), batch_size=1)
    x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, dilation_rate=2, padding="same", use_bias=False)(x)
    x = L.Conv2D(6, 1, activation="relu")(x)
    x = L.Conv2D(5, 2, padding="valid", activation=None)(x)
    local = ChannelSlice(0, 2)(x)
    remote = ChannelSlice(2, 5)(x)
    out1 = L.Dense(4)(L.GlobalAveragePooling2D()(local))
    model = tf.keras.Model(inp, {"a_logits": out1, "b_remote": remote})
    randomize_weights(model, np.random.default_rng(7))
    tflite = convert_keras_int8(model, _representative((13, 11, 3), seed=8), activations="int16")
    compiled = assert_bit_exact(tflite, work_dir, build_dir, np.random.default_rng(9), count=20, label="16x8 layers")
    kernels = {o.kernel for o in compiled.ops}
    assert {
        "hil_conv_2d_16x8",
        "hil_depthwise_conv_2d_16x8",
        "hil_strided_slice_i16",
        "hil_mean_i16",
        "hil_fully_connected_16x8",
    } <= kernels
    assert all(t.dtype == "int16" for t in (*compiled.inputs, *compiled.outputs))
