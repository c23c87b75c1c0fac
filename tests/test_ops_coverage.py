"""The activation, elementwise, concatenation and (de)quantization ops bit-exact with TensorFlow Lite Micro.

SOFTMAX, LOGISTIC, TANH, HARD_SWISH, MUL, SUB, CONCATENATION, QUANTIZE, DEQUANTIZE, RELU, RELU6 and LEAKY_RELU,
int8 and (where TFLM has it) 16x8, each compiled to C, run natively through the host model runner and compared
value for value (float32 outputs: bit for bit) with the tflite-micro runtime. Quantizations and shapes are
drawn from seeded generators, so the cases are the same on every run. Unary ops see their whole input domain
(every int8, every int16 value) for each drawn quantization; the int16 SOFTMAX sweep pins down TFLM's float32
lookup tables (the older double-precision tables differ in two entries).

Also here: constant folding of the shape arithmetic the converter writes for Keras Flatten and Reshape((-1,)),
float32 graph inputs/outputs around QUANTIZE/DEQUANTIZE (host model runner only: the device protocol has no
float32 tensors), Keras models converted by TensorFlow (marked `tf`), and one model mixing the new ops on the
QEMU target (marked `qemu`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers_models import compile_and_build

from hil.model.compiler import CompiledModel, UnsupportedModelError, compile_tflite
from hil.model.hostrun import run_host_many
from hil.model.reference import TflmReference
from hil.model.synthetic import TfliteBuilder, builtin_options, make_single_op_model
from hil.model.tflite_reader import read_tflite

ACTIVATIONS = ["NONE", "RELU", "RELU6", "RELU_N1_TO_1"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coverage-models")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("coverage-build")


def _seed(*parts: object) -> int:
    return zlib.crc32(" ".join(map(str, parts)).encode())


# --------------------------------------------------------------------------------------------------------
# Checking against TFLM


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    want = np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return False
    if got.dtype.kind == "f":  # bit for bit (NaN payloads and signed zeros included)
        return np.array_equal(got.view(np.uint32), want.view(np.uint32))
    return np.array_equal(got, want)


def _report(label: str, got: np.ndarray, want: np.ndarray, k: int, s: int) -> str:
    want = np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{label}, set {s}, output {k}: {got.dtype}{got.shape} != TFLM {want.dtype}{want.shape}"
    bad = (
        np.argwhere(got != want) if got.dtype.kind != "f" else np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    )
    first = tuple(int(i) for i in bad[0])
    where = f"{label}, set {s}, output {k}"
    return f"{where}: {len(bad)} of {want.size} differ; first at {first}: {got[first]} != TFLM {want[first]}"


def check_bit_exact(
    tflite: bytes, input_sets: Sequence[Sequence[np.ndarray]], work_dir: Path, build_dir: Path, label: str
) -> CompiledModel:
    """Compiles, runs every input set through the host runner and TFLM, and requires identical outputs."""
    compiled, binary = compile_and_build(tflite, work_dir, build_dir)
    reference = TflmReference(tflite)
    got_all = run_host_many(binary, input_sets)
    failures = []
    for s, (inputs, got) in enumerate(zip(input_sets, got_all, strict=True)):
        want = reference.run(inputs)
        failures += [
            _report(label, g, w, k, s) for k, (g, w) in enumerate(zip(got, want, strict=True)) if not _same(g, w)
        ]
    assert not failures, "\n".join(failures[:10])
    return compiled


def _random_ints(rng: np.random.Generator, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=tuple(shape), dtype=dtype)


def _random_input_sets(tflite: bytes, rng: np.random.Generator, count: int) -> list[list[np.ndarray]]:
    details = TflmReference(tflite).inputs
    return [[_random_ints(rng, d.dtype, d.shape) for d in details] for _ in range(count)]


def _domain_sets(tflite: bytes, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Input sets of a one-input model that together hold every value of its integer type, shuffled (the last
    set is topped up with random values)."""
    (d,) = TflmReference(tflite).inputs
    info = np.iinfo(d.dtype)
    values = rng.permutation(np.arange(info.min, info.max + 1)).astype(d.dtype)
    size = int(np.prod(d.shape))
    n_sets = -(-values.size // size)
    padded = np.concatenate([values, _random_ints(rng, d.dtype, (n_sets * size - values.size,))])
    return [[chunk.reshape(d.shape)] for chunk in np.split(padded, n_sets)]


def _random_shape(rng: np.random.Generator, max_rank: int = 4, max_dim: int = 9) -> tuple[int, ...]:
    rank = int(rng.integers(1, max_rank + 1))
    return tuple(int(d) for d in rng.integers(1, max_dim + 1, size=rank))


# --------------------------------------------------------------------------------------------------------
# Unary ops: every input value, for each drawn quantization


def _unary_params(op: str, dtype: str, rng: np.random.Generator, i: int) -> dict[str, Any]:
    shape = _random_shape(rng, max_dim=12 if dtype == "int8" else 40)
    if op in ("LOGISTIC", "TANH"):
        params: dict[str, Any] = {"shape": shape, "dtype": dtype}
        if dtype == "int16" and i < 2:  # the power-of-two input scales TFLM treats apart
            params["input_scale"] = 2.0**-12 if i == 0 else (2.0**-11 if op == "TANH" else 2.0**-10)
        elif i == 2:  # a coarse scale: most inputs beyond the saturation radius
            params["input_scale"] = 0.2 if dtype == "int8" else 0.001
        return params
    if op == "HARD_SWISH":
        return {"shape": shape}
    if op in ("RELU", "RELU6"):
        return {"shape": shape, "dtype": dtype, "same_quant": i % 3 == 0}
    if op == "LEAKY_RELU":
        alpha = float(np.float32(rng.choice([0.01, 0.1, 0.2, 0.3, float(rng.uniform(0.01, 0.99))])))
        return {"shape": shape, "dtype": dtype, "alpha": alpha, "same_quant": i % 3 == 0}
    if op == "DEQUANTIZE":
        return {"shape": shape, "in_dtype": dtype}
    raise AssertionError(op)


UNARY_CASES = [
    ("LOGISTIC", "int8", 10),
    ("LOGISTIC", "int16", 5),
    ("TANH", "int8", 10),
    ("TANH", "int16", 5),
    ("HARD_SWISH", "int8", 14),
    ("RELU", "int8", 8),
    ("RELU", "int16", 4),
    ("RELU6", "int8", 8),
    ("RELU6", "int16", 4),
    ("LEAKY_RELU", "int8", 8),
    ("LEAKY_RELU", "int16", 4),
    ("DEQUANTIZE", "int8", 6),
    ("DEQUANTIZE", "int16", 3),
]


@pytest.mark.parametrize(("op", "dtype", "quantizations"), UNARY_CASES, ids=[f"{o}-{d}" for o, d, _ in UNARY_CASES])
def test_unary_op_bit_exact_on_every_input(
    op: str, dtype: str, quantizations: int, work_dir: Path, build_dir: Path
) -> None:
    for i in range(quantizations):
        rng = np.random.default_rng(_seed(op, dtype, i))
        params = _unary_params(op, dtype, rng, i)
        tflite = make_single_op_model(op, rng, **params)
        check_bit_exact(tflite, _domain_sets(tflite, rng), work_dir, build_dir, f"{op} {params}")


REQUANTIZE_CASES = [("int8", "int8"), ("int8", "int16"), ("int16", "int8"), ("int16", "int16")]


@pytest.mark.parametrize(("in_dtype", "out_dtype"), REQUANTIZE_CASES, ids=[f"{a}-to-{b}" for a, b in REQUANTIZE_CASES])
def test_quantize_requantizes_every_input(in_dtype: str, out_dtype: str, work_dir: Path, build_dir: Path) -> None:
    for i in range(6):
        rng = np.random.default_rng(_seed("QUANTIZE", in_dtype, out_dtype, i))
        params = {"shape": _random_shape(rng, max_dim=16), "in_dtype": in_dtype, "out_dtype": out_dtype,
                  "same_scale": i == 0}  # fmt: skip
        tflite = make_single_op_model("QUANTIZE", rng, **params)
        compiled = check_bit_exact(tflite, _domain_sets(tflite, rng), work_dir, build_dir, f"QUANTIZE {params}")
        assert [o.kernel for o in compiled.ops] == ["hil_requantize"]


def _float_inputs(rng: np.random.Generator, shape: Sequence[int], scale: float) -> np.ndarray:
    """Floats around the quantization grid: random magnitudes, grid points and halfway points (the rounding
    ties), values far out of the output range, signed zeros. (Not infinities or NaN, nor values beyond 2^31
    steps: TFLM converts those to int32 without a check, which C++ leaves undefined.)"""
    n = int(np.prod(shape))
    kinds = rng.integers(0, 4, size=n)
    steps = rng.integers(-40000, 40000, size=n).astype(np.float32)
    x = np.where(
        kinds == 0,
        rng.normal(0, 1, size=n) * 10.0 ** rng.uniform(-4, 3, size=n),
        np.where(kinds == 1, steps * np.float32(scale), (steps + np.float32(0.5)) * np.float32(scale)),
    ).astype(np.float32)
    x[:2] = np.array([0.0, -0.0], dtype=np.float32)[: min(2, n)]
    return x.reshape(shape)


@pytest.mark.parametrize("out_dtype", ["int8", "int16"])
def test_quantize_from_float_input(out_dtype: str, work_dir: Path, build_dir: Path) -> None:
    for i in range(6):
        rng = np.random.default_rng(_seed("QUANTIZE float", out_dtype, i))
        shape = _random_shape(rng, max_dim=16)
        tflite = make_single_op_model("QUANTIZE", rng, shape=shape, in_dtype="float32", out_dtype=out_dtype)
        scale = read_tflite(tflite).tensors[1].quant.scale
        sets = [[_float_inputs(rng, shape, scale)] for _ in range(8)]
        compiled = check_bit_exact(tflite, sets, work_dir, build_dir, f"QUANTIZE float32->{out_dtype} {shape}")
        assert compiled.inputs[0].dtype == "float32" and compiled.ops[0].kernel == "hil_quantize"


# --------------------------------------------------------------------------------------------------------
# SOFTMAX


def _softmax_cases(dtype: str, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(_seed("softmax cases", dtype))
    cases = []
    for i in range(n):
        shape = list(_random_shape(rng, max_dim=6))
        shape[-1] = int(rng.choice([1, 2, 10, int(rng.integers(3, 300))]))
        beta = 1.0 if i % 2 == 0 else float(np.float32(rng.uniform(0.3, 3.0)))
        cases.append({"shape": tuple(shape), "dtype": dtype, "beta": beta})
    # ImageNet-sized, logits over about +-13. (TFLM aborts, an assertion in gemmlowp's RoundingDivideByPOT, when
    # a row's exps add up to 512 or more: 512+ values within a fraction of the maximum; see softmax.c.)
    cases.append({"shape": (1, 1000), "dtype": dtype, "beta": 1.0, "input_scale": 0.1 if dtype == "int8" else 4e-4})
    return cases


def _softmax_inputs(rng: np.random.Generator, shape: Sequence[int], dtype: np.dtype, count: int) -> list:
    """Full-range inputs, and (rows of up to 128) rows bunched near their maximum, where every exp matters."""
    sets = []
    for k in range(count):
        if k % 2 == 0 or shape[-1] > 128:
            sets.append([_random_ints(rng, dtype, shape)])
        else:
            info = np.iinfo(dtype)
            spread = int(rng.choice([3, 20, 200])) * (1 if dtype == np.int8 else 128)
            top = int(rng.integers(info.min + spread, info.max + 1))
            sets.append([rng.integers(top - spread, top + 1, size=tuple(shape)).astype(dtype)])
    return sets


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_softmax_bit_exact(dtype: str, work_dir: Path, build_dir: Path) -> None:
    for params in _softmax_cases(dtype, 14):
        rng = np.random.default_rng(_seed("SOFTMAX", sorted(params.items())))
        tflite = make_single_op_model("SOFTMAX", rng, **params)
        sets = _softmax_inputs(rng, params["shape"], np.dtype(dtype), 6)
        check_bit_exact(tflite, sets, work_dir, build_dir, f"SOFTMAX {params}")


def test_softmax_int8_on_every_pair_of_values(work_dir: Path, build_dir: Path) -> None:
    """Rows of two: all 65536 (x, y) pairs, for input scales from fine to coarse and two betas."""
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    pairs = np.stack([a.reshape(-1), b.reshape(-1)], axis=1).astype(np.int8)
    for scale, beta in [(0.004, 1.0), (0.05, 1.0), (0.25, 1.0), (1.5, 1.0), (0.1, 0.37)]:
        rng = np.random.default_rng(_seed("softmax pairs", scale, beta))
        tflite = make_single_op_model("SOFTMAX", rng, shape=(65536, 2), dtype="int8", input_scale=scale, beta=beta)
        check_bit_exact(tflite, [[pairs]], work_dir, build_dir, f"SOFTMAX pairs scale {scale} beta {beta}")


def test_softmax_int16_tables_are_tflms_float32_ones(work_dir: Path, build_dir: Path) -> None:
    """Rows [0, -k] for k over the whole int16 range: every entry of the exp and 1/(1+x) tables is used. TFLM
    builds them with gen_lut in float32; the older double-precision gen_lut differs in 1/(1+x)[160] and [294]
    and fails here."""
    rows = 4096
    x = np.zeros((rows, 2), np.int16)
    x[:, 1] = -np.arange(rows) * 8
    tflite = make_single_op_model("SOFTMAX", np.random.default_rng(1), shape=(rows, 2), dtype="int16",
                                  input_scale=10.0 / 32768)  # fmt: skip
    check_bit_exact(tflite, [[x]], work_dir, build_dir, "SOFTMAX int16 table sweep")


# --------------------------------------------------------------------------------------------------------
# MUL and SUB


def _binary_cases(op: str, dtype: str, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(_seed("binary cases", op, dtype))
    cases = []
    for _ in range(n):
        out = _random_shape(rng, max_dim=7)
        shapes = []
        for _k in range(2):
            kind = int(rng.integers(0, 3))
            if kind == 0:  # the full shape
                shapes.append(out)
            elif kind == 1:  # some dimensions broadcast
                shapes.append(tuple(1 if rng.random() < 0.5 else d for d in out))
            else:  # fewer leading dimensions
                shapes.append(out[int(rng.integers(0, len(out) + 1)) :] or (1,))
        cases.append(
            {
                "shape1": shapes[0],
                "shape2": shapes[1],
                "activation": str(rng.choice(ACTIVATIONS)),
                "const_second": bool(rng.random() < 0.2),
                "dtype": dtype,
            }
        )
    return cases


BINARY_CASES = [("MUL", "int8"), ("MUL", "int16"), ("SUB", "int8"), ("SUB", "int16")]


@pytest.mark.parametrize(("op", "dtype"), BINARY_CASES, ids=[f"{o}-{d}" for o, d in BINARY_CASES])
def test_binary_op_bit_exact(op: str, dtype: str, work_dir: Path, build_dir: Path) -> None:
    large = {"shape1": (1, 64, 64, 16), "shape2": (1, 64, 64, 16), "dtype": dtype}  # 65536 products
    for params in [*_binary_cases(op, dtype, 14), large]:
        rng = np.random.default_rng(_seed(op, sorted(params.items())))
        tflite = make_single_op_model(op, rng, **params)
        check_bit_exact(tflite, _random_input_sets(tflite, rng, 4), work_dir, build_dir, f"{op} {params}")


# --------------------------------------------------------------------------------------------------------
# TFLM's Prepare arithmetic: double precision, pinned by quantizations where float32 gives other multipliers


def _unary_model(op: str, dtype: str, size: int, q_in: tuple[float, int], q_out: tuple[float, int], options=None):
    b = TfliteBuilder()
    x = b.tensor([1, size], dtype, scale=q_in[0], zero_point=q_in[1], name="x")
    y = b.tensor([1, size], dtype, scale=q_out[0], zero_point=q_out[1], name="y")
    b.op(op, [x], [y], options)
    return b.finish([x], [y])


# Each fails (some outputs off by one) when the multipliers are computed from float32 quotients instead.
PREPARE_PINS = [
    ("HARD_SWISH", "int8", (0.015761716291308403, 0), (0.0071556419134140015, 0), None),
    ("HARD_SWISH", "int8", (0.022201305255293846, -128), (0.01904679648578167, -128), None),
    ("HARD_SWISH", "int8", (0.018983541056513786, -128), (0.018075045198202133, -128), None),
    ("LEAKY_RELU", "int16", (5.144589886185713e-05, 0), (4.932716547045857e-05, 0), 0.01),
    ("LEAKY_RELU", "int16", (0.00013062494690530002, 0), (8.280484325950965e-05, 0), 0.2),
]


@pytest.mark.parametrize(("op", "dtype", "q_in", "q_out", "alpha"), PREPARE_PINS)
def test_prepare_arithmetic_is_double_precision(
    op: str, dtype: str, q_in: tuple, q_out: tuple, alpha: float | None, work_dir: Path, build_dir: Path
) -> None:
    options = builtin_options("LeakyReluOptionsT", alpha=alpha) if op == "LEAKY_RELU" else None
    info = np.iinfo(np.dtype(dtype))
    tflite = _unary_model(op, dtype, info.max - info.min + 1, q_in, q_out, options)
    every = np.arange(info.min, info.max + 1).astype(dtype)[None]
    check_bit_exact(tflite, [[every]], work_dir, build_dir, f"{op} {q_in} -> {q_out}")


@pytest.mark.parametrize("scales", [(1e-4, 2.5e-4, 3e-4), (2.0**-15, 6.1e-5, 7e-5)])
def test_sub_int16_multipliers_are_double_precision(scales: tuple, work_dir: Path, build_dir: Path) -> None:
    """TFLM's int16 SUB (ADD with the second multiplier negated): with float32 quotients some of 65536
    random differences come out one step off."""
    b = TfliteBuilder()
    x1 = b.tensor([1, 65536], "int16", scale=scales[0], zero_point=0, name="x1")
    x2 = b.tensor([1, 65536], "int16", scale=scales[1], zero_point=0, name="x2")
    y = b.tensor([1, 65536], "int16", scale=scales[2], zero_point=0, name="y")
    b.op("SUB", [x1, x2], [y], builtin_options("SubOptionsT", potScaleInt16=False))
    tflite = b.finish([x1, x2], [y])
    rng = np.random.default_rng(7)
    check_bit_exact(tflite, _random_input_sets(tflite, rng, 2), work_dir, build_dir, f"SUB int16 {scales}")


# --------------------------------------------------------------------------------------------------------
# CONCATENATION


def _concat_cases(dtype: str, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(_seed("concat cases", dtype))
    cases = []
    for _ in range(n):
        base = list(_random_shape(rng, max_dim=6))
        axis = int(rng.integers(-len(base), len(base)))
        shapes = []
        for _k in range(int(rng.integers(1, 5))):
            s = list(base)
            s[axis] = int(rng.integers(1, 7))
            shapes.append(tuple(s))
        const_input = int(rng.integers(0, len(shapes))) if len(shapes) > 1 and rng.random() < 0.3 else None
        cases.append({"shapes": tuple(shapes), "axis": axis, "dtype": dtype, "const_input": const_input})
    return cases


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_concatenation_bit_exact(dtype: str, work_dir: Path, build_dir: Path) -> None:
    for params in _concat_cases(dtype, 10):
        rng = np.random.default_rng(_seed("CONCATENATION", sorted(params.items())))
        tflite = make_single_op_model("CONCATENATION", rng, **params)
        compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 2), work_dir, build_dir, f"{params}")
        assert [o.kernel for o in compiled.ops] == ["hil_concatenation"]


# --------------------------------------------------------------------------------------------------------
# Unsupported variants are refused by name


def _model(op: str, in_dtype: str, out_dtype: str, out_quant: tuple[float, int], options: Any = None) -> bytes:
    b = TfliteBuilder()
    x = b.tensor([1, 8], in_dtype, scale=0.05, zero_point=0, name="x")
    y = b.tensor([1, 8], out_dtype, scale=out_quant[0], zero_point=out_quant[1], name="y")
    b.op(op, [x], [y], options)
    return b.finish([x], [y])


@pytest.mark.parametrize(
    ("tflite", "message"),
    [
        (_model("SOFTMAX", "int8", "int8", (1 / 128, -128), builtin_options("SoftmaxOptionsT", beta=1.0)),
         r"\(SOFTMAX\): int8 output .* must have scale 1/256 and zero point -128"),
        (_model("SOFTMAX", "int8", "int16", (1 / 65536, -32768), builtin_options("SoftmaxOptionsT", beta=1.0)),
         r"\(SOFTMAX\): int8 input with int16 output .* is not supported"),
        (_model("LOGISTIC", "int8", "int8", (1 / 256, 0)), r"\(LOGISTIC\): int8 output .* zero point -128"),
        (_model("TANH", "int16", "int16", (1 / 256, 0)), r"\(TANH\): int16 output .* scale 3.0517578125e-05"),
        (_model("HARD_SWISH", "int16", "int16", (0.05, 0)), r"\(HARD_SWISH\): input .* is int16, but this op "
                                                              "runs int8 activations only"),
        (_model("DEQUANTIZE", "int8", "int16", (0.05, 0)), r"\(DEQUANTIZE\): output .* must be float32"),
    ],
    ids=["softmax-int8-scale", "softmax-int8-to-int16", "logistic-zero-point", "tanh-int16-scale",
         "hard-swish-int16", "dequantize-to-int16"],
)  # fmt: skip
def test_unsupported_variants_are_refused_by_name(tflite: bytes, message: str, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=message):
        compile_tflite(tflite, tmp_path)


def test_concatenation_of_differently_quantized_inputs_is_refused(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x1 = b.tensor([1, 4], scale=0.1, zero_point=0, name="x1")
    x2 = b.tensor([1, 4], scale=0.2, zero_point=0, name="x2")
    y = b.tensor([1, 8], scale=0.1, zero_point=0, name="y")
    b.op("CONCATENATION", [x1, x2], [y], builtin_options("ConcatenationOptionsT", axis=1))
    with pytest.raises(UnsupportedModelError, match=r"\(CONCATENATION\): input .*'x2'.* TFLM requires them equal"):
        compile_tflite(b.finish([x1, x2], [y]), tmp_path)


# --------------------------------------------------------------------------------------------------------
# Constant folding of shape arithmetic (no TensorFlow: the graph the converter writes for Flatten)


def _flatten_graph(rng: np.random.Generator, pack_value: int = -1, stored: Sequence[int] = (1, 48)) -> bytes:
    """x[1,4,4,3] -> SHAPE -> STRIDED_SLICE (batch) -> PACK(batch, pack_value) -> RESHAPE -> SOFTMAX: what TF
    2.21 writes for keras Flatten / Reshape((-1,)) with an unknown batch size, plus a kernel after it."""
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 3], scale=0.05, zero_point=3, name="x")
    shape = b.tensor([4], "int32", name="shape")
    b.op("SHAPE", [x], [shape], builtin_options("ShapeOptionsT", outType=2))
    begin = b.tensor([1], "int32", data=np.array([0]), name="begin")
    end = b.tensor([1], "int32", data=np.array([1]), name="end")
    batch = b.tensor([], "int32", name="batch")
    b.op("STRIDED_SLICE", [shape, begin, end, end], [batch],
         builtin_options("StridedSliceOptionsT", shrinkAxisMask=1))  # fmt: skip
    rest = b.tensor([], "int32", data=np.array(pack_value), name="rest")
    new_shape = b.tensor([2], "int32", name="new_shape")
    b.op("PACK", [batch, rest], [new_shape], builtin_options("PackOptionsT", valuesCount=2, axis=0))
    flat = b.tensor(list(stored), scale=0.05, zero_point=3, name="flat")
    b.op("RESHAPE", [x, new_shape], [flat], builtin_options("ReshapeOptionsT"))
    y = b.tensor(list(stored), scale=1 / 256, zero_point=-128, name="probs")
    b.op("SOFTMAX", [flat], [y], builtin_options("SoftmaxOptionsT", beta=1.0))
    return b.finish([x], [y])


@pytest.mark.parametrize("pack_value", [-1, 48])
def test_shape_arithmetic_is_folded(pack_value: int, work_dir: Path, build_dir: Path) -> None:
    rng = np.random.default_rng(3)
    tflite = _flatten_graph(rng, pack_value)
    compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 4), work_dir, build_dir, "flatten graph")
    assert [(o.op, o.kernel) for o in compiled.ops] == [("RESHAPE", None), ("SOFTMAX", "hil_softmax")]
    source = compiled.c_path.read_text()
    assert "3 more folded at compile time (shape arithmetic: PACK, SHAPE, STRIDED_SLICE)" in source


def test_folded_shape_that_disagrees_with_the_stored_one_is_refused(tmp_path: Path) -> None:
    """The converter leaves stale stored shapes behind some dynamic-batch shape arithmetic; the kernels run on
    stored shapes, so such a model must be refused, not miscompiled."""
    tflite = _flatten_graph(np.random.default_rng(0), pack_value=-1, stored=(2, 24))
    with pytest.raises(UnsupportedModelError, match=r"new shape \[1, 48\] .* disagrees .*batch_size=1"):
        compile_tflite(tflite, tmp_path)


# --------------------------------------------------------------------------------------------------------
# float32 graph inputs and outputs (host model runner only)


def _float_io_graph() -> bytes:
    """float input -> QUANTIZE -> LOGISTIC -> DEQUANTIZE -> float output, and a second, int8 output."""
    b = TfliteBuilder()
    x = b.tensor([1, 6, 5], "float32", name="x")
    q = b.tensor([1, 6, 5], scale=0.03, zero_point=-7, name="q")
    b.op("QUANTIZE", [x], [q], builtin_options("QuantizeOptionsT"))
    s = b.tensor([1, 6, 5], scale=1 / 256, zero_point=-128, name="sigmoid")
    b.op("LOGISTIC", [q], [s])
    y = b.tensor([1, 6, 5], "float32", name="y")
    b.op("DEQUANTIZE", [s], [y], builtin_options("DequantizeOptionsT"))
    return b.finish([x], [y, s])


def test_float_input_and_output_run_on_the_host(work_dir: Path, build_dir: Path) -> None:
    tflite = _float_io_graph()
    rng = np.random.default_rng(4)
    sets = [[_float_inputs(rng, (1, 6, 5), 0.03)] for _ in range(10)]
    compiled = check_bit_exact(tflite, sets, work_dir, build_dir, "float I/O")
    assert [t.dtype for t in compiled.inputs] == ["float32"]
    assert [t.dtype for t in compiled.outputs] == ["float32", "int8"]
    assert (compiled.inputs[0].bytes, compiled.outputs[0].bytes) == (120, 120)
    assert "#define HIL_DTYPE_FLOAT32 3" in compiled.c_path.read_text()


def test_float_input_into_another_op_is_refused(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x = b.tensor([1, 4], "float32", name="x")
    y = b.tensor([1, 4], "float32", name="y")
    b.op("RELU", [x], [y])
    with pytest.raises(UnsupportedModelError, match=r"graph input tensor 0 'x'.* is float32.*only into a QUANTIZE"):
        compile_tflite(b.finish([x], [y]), tmp_path)


# --------------------------------------------------------------------------------------------------------
# A small model mixing the new ops: on the host here, on the QEMU target below


def mixed_ops_model(dtype: str = "int8") -> bytes:
    """x -> LOGISTIC, TANH, HARD_SWISH (int8) or LEAKY_RELU (int16), RELU, RELU6 -> MUL, SUB, QUANTIZE
    (requantize) -> CONCATENATION (with a constant) -> SOFTMAX over the channels: the new kernels in one graph."""
    rng = np.random.default_rng(_seed("mixed", dtype))
    b = TfliteBuilder()
    i16 = dtype == "int16"
    finer = 1 / 256 if i16 else 1.0  # int16 steps for the same real range

    def t(name: str, scale: float, zp: int, channels: int = 3, data: np.ndarray | None = None) -> int:
        return b.tensor([1, 4, 4, channels], dtype, scale=scale, zero_point=0 if i16 else zp, data=data, name=name)

    x = t("x", 0.04 * finer, -5)
    sig = t("sigmoid", 1 / 32768 if i16 else 1 / 256, -128)
    b.op("LOGISTIC", [x], [sig])
    th = t("tanh", 1 / 32768 if i16 else 1 / 128, 0)
    b.op("TANH", [x], [th])
    gate = t("gate", 0.008 * finer, -10)
    b.op("MUL", [sig, th], [gate], builtin_options("MulOptionsT"))
    if i16:
        act = t("leaky", 0.03 * finer, 0)
        b.op("LEAKY_RELU", [x], [act], builtin_options("LeakyReluOptionsT", alpha=0.1))
    else:
        act = t("hard_swish", 0.03, -90)
        b.op("HARD_SWISH", [x], [act], builtin_options("HardSwishOptionsT"))
    relu = t("relu", 0.025 * finer, -128)
    b.op("RELU", [x], [relu])
    diff = t("diff", 0.05 * finer, 4)
    b.op("SUB", [act, relu], [diff], builtin_options("SubOptionsT", potScaleInt16=False))
    relu6 = t("relu6", 0.04 * finer, -5)
    b.op("RELU6", [x], [relu6])
    requant = t("requant", 0.05 * finer, 4)
    b.op("QUANTIZE", [relu6], [requant], builtin_options("QuantizeOptionsT"))
    const = t("const", 0.05 * finer, 4, data=_random_ints(rng, np.dtype(dtype), (1, 4, 4, 3)))
    gate_requant = t("gate_requant", 0.05 * finer, 4)
    b.op("QUANTIZE", [gate], [gate_requant], builtin_options("QuantizeOptionsT"))
    cat = t("concat", 0.05 * finer, 4, channels=12)
    b.op("CONCATENATION", [gate_requant, diff, requant, const], [cat], builtin_options("ConcatenationOptionsT", axis=3))
    probs = t("probs", 1 / 32768 if i16 else 1 / 256, -128, channels=12)
    b.op("SOFTMAX", [cat], [probs], builtin_options("SoftmaxOptionsT", beta=1.0))
    return b.finish([x], [probs, gate])


NEW_KERNELS = {
    "int8": {"hil_logistic", "hil_tanh", "hil_mul", "hil_hard_swish", "hil_relu", "hil_sub", "hil_relu6",
             "hil_requantize", "hil_concatenation", "hil_softmax"},
    "int16": {"hil_logistic_i16", "hil_tanh_i16", "hil_mul_i16", "hil_leaky_relu_i16", "hil_relu_i16",
              "hil_sub_i16", "hil_relu6_i16", "hil_requantize", "hil_concatenation", "hil_softmax_i16"},
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_mixed_ops_model_bit_exact_on_the_host(dtype: str, work_dir: Path, build_dir: Path) -> None:
    tflite = mixed_ops_model(dtype)
    rng = np.random.default_rng(8)
    compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 20), work_dir, build_dir, f"mixed {dtype}")
    assert NEW_KERNELS[dtype] <= {o.kernel for o in compiled.ops}


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_mixed_ops_model_bit_exact_on_qemu(dtype: str, tmp_path: Path) -> None:
    """The lx106 build compiles every new kernel and runs the mixed model bit-exact through the protocol."""
    from hil.dut import DutOptions, open_dut
    from hil.firmware.build import toolchain_status
    from hil.model.artifacts import resolve_model

    status = toolchain_status("qemu")
    if not status.ok:
        pytest.skip(str(status))
    tflite = mixed_ops_model(dtype)
    path = tmp_path / f"mixed-ops-{dtype}.tflite"
    path.write_bytes(tflite)
    model = resolve_model(path, cache_root=tmp_path / "models")
    reference = TflmReference(tflite)
    rng = np.random.default_rng(9)
    with open_dut(model, DutOptions(target="qemu", log_dir=tmp_path)) as dut:
        for inputs in _random_input_sets(tflite, rng, 5):
            got = dut.infer(inputs).outputs
            for g, w in zip(got, reference.run(inputs), strict=True):
                assert np.array_equal(np.asarray(g).reshape(w.shape), w)


# --------------------------------------------------------------------------------------------------------
# Models converted by TensorFlow 2.21


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _representative(shape: tuple[int, ...], seed: int, count: int = 32) -> Callable[[], Any]:
    data = np.random.default_rng(seed).uniform(-1, 1, size=(count, *shape)).astype(np.float32)

    def gen():
        for d in data:
            yield [d[None]]

    return gen


def _ops_in(tflite: bytes) -> list[str]:
    return [op.opcode for op in read_tflite(tflite).operators]


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.parametrize("layer", ["flatten", "reshape-1"])
def test_keras_flatten_and_reshape_with_unknown_batch_compile(
    tf: Any, layer: str, work_dir: Path, build_dir: Path
) -> None:
    """keras Flatten() and Reshape((-1,)) on an Input without a batch size: TF 2.21 writes SHAPE ->
    STRIDED_SLICE -> PACK -> RESHAPE; the compiler folds the first three and aliases the RESHAPE."""
    from hil.model.synthetic import convert_keras_int8, randomize_weights

    tf.keras.utils.set_random_seed(11)
    L = tf.keras.layers
    inp = tf.keras.Input((7, 6, 2))  # batch size unknown
    x = L.Conv2D(4, 3, activation="relu")(inp)
    x = (L.Flatten() if layer == "flatten" else L.Reshape((-1,)))(x)
    model = tf.keras.Model(inp, L.Dense(5)(x))
    randomize_weights(model, np.random.default_rng(11))
    tflite = convert_keras_int8(model, _representative((7, 6, 2), seed=12))
    assert _ops_in(tflite) == ["CONV_2D", "SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "FULLY_CONNECTED"]
    rng = np.random.default_rng(13)
    compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 20), work_dir, build_dir, layer)
    assert [(o.op, o.kernel) for o in compiled.ops] == [
        ("CONV_2D", "hil_conv_2d"),
        ("RESHAPE", None),
        ("FULLY_CONNECTED", "hil_fully_connected"),
    ]


@pytest.mark.tf
@pytest.mark.slow
def test_keras_cnn_with_softmax_and_the_new_activations(tf: Any, work_dir: Path, build_dir: Path) -> None:
    """A Keras CNN ending in SOFTMAX, with every new op in the form the converter writes it (int8)."""
    from hil.model.synthetic import convert_keras_int8, randomize_weights

    tf.keras.utils.set_random_seed(21)
    L = tf.keras.layers
    inp = tf.keras.Input((12, 12, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = L.LeakyReLU(0.2)(x)
    y = L.Conv2D(8, 1, activation="hard_swish")(x)
    gate = L.Conv2D(8, 1, activation="sigmoid")(x)
    y = L.Multiply()([y, gate])
    z = L.Subtract()([L.Activation("tanh")(x), L.ReLU()(y)])
    x = L.Concatenate()([x, z, L.ReLU(6.0)(y)])
    x = L.MaxPooling2D(2)(x)
    x = L.Flatten()(x)
    out = L.Softmax()(L.Dense(10)(x))
    model = tf.keras.Model(inp, out)
    randomize_weights(model, np.random.default_rng(21))
    tflite = convert_keras_int8(model, _representative((12, 12, 3), seed=22))
    rng = np.random.default_rng(23)
    compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 30), work_dir, build_dir, "keras cnn")
    ops = {o.op for o in compiled.ops}
    assert {"LEAKY_RELU", "HARD_SWISH", "LOGISTIC", "MUL", "TANH", "RELU", "SUB", "RELU6", "CONCATENATION",
            "SOFTMAX"} <= ops  # fmt: skip
    assert _ops_in(tflite)[-1] == "SOFTMAX"


@pytest.mark.tf
@pytest.mark.slow
def test_keras_cnn_16x8_with_softmax(tf: Any, work_dir: Path, build_dir: Path) -> None:
    """The same kind of model in the 16x8 scheme (no HARD_SWISH: the converter has no 16x8 one)."""
    from hil.model.synthetic import convert_keras_int8, randomize_weights

    tf.keras.utils.set_random_seed(31)
    L = tf.keras.layers
    inp = tf.keras.Input((10, 10, 3), batch_size=1)
    x = L.Conv2D(6, 3, padding="same")(inp)
    x = L.LeakyReLU(0.1)(x)
    gate = L.Conv2D(6, 1, activation="sigmoid")(x)
    y = L.Multiply()([L.Activation("tanh")(x), gate])
    y = L.Subtract()([y, L.ReLU()(x)])
    x = L.Concatenate()([x, y])
    x = L.GlobalAveragePooling2D()(x)
    out = L.Softmax()(L.Dense(7)(x))
    model = tf.keras.Model(inp, out)
    randomize_weights(model, np.random.default_rng(31))
    tflite = convert_keras_int8(model, _representative((10, 10, 3), seed=32), activations="int16")
    rng = np.random.default_rng(33)
    compiled = check_bit_exact(tflite, _random_input_sets(tflite, rng, 30), work_dir, build_dir, "keras cnn 16x8")
    kernels = {o.kernel for o in compiled.ops}
    assert {"hil_leaky_relu_i16", "hil_logistic_i16", "hil_tanh_i16", "hil_mul_i16", "hil_sub_i16",
            "hil_concatenation", "hil_softmax_i16"} <= kernels  # fmt: skip


@pytest.mark.tf
@pytest.mark.slow
def test_keras_float_io_model_runs_on_the_host(tf: Any, work_dir: Path, build_dir: Path) -> None:
    """Converted with the default float32 input and output: QUANTIZE at the input, DEQUANTIZE at the output."""
    tf.keras.utils.set_random_seed(41)
    L = tf.keras.layers
    inp = tf.keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, activation="relu")(inp)
    out = L.Softmax()(L.Dense(5)(L.Flatten()(x)))
    converter = tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative((6, 6, 2), seed=42)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    tflite = bytes(converter.convert())
    ops = _ops_in(tflite)
    assert (ops[0], ops[-1]) == ("QUANTIZE", "DEQUANTIZE")
    rng = np.random.default_rng(43)
    sets = [[rng.uniform(-1.2, 1.2, size=(1, 6, 6, 2)).astype(np.float32)] for _ in range(20)]
    compiled = check_bit_exact(tflite, sets, work_dir, build_dir, "keras float I/O")
    assert [t.dtype for t in (*compiled.inputs, *compiled.outputs)] == ["float32", "float32"]
