"""The model compiler: TFLM's quantization arithmetic, the reader, the arena planner, the generated C and
model.json, the errors for unsupported models, the committed default model, and a cross-compile smoke test
for the LX106 Xtensa target. None of these tests needs TensorFlow."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers_models import compile_and_build

from hil import paths
from hil.model import quantization as qz
from hil.model.compiler import UnsupportedModelError, compile_tflite, json_text, lower_graph
from hil.model.hostrun import INCLUDE, KERNELS, run_host
from hil.model.planner import ALIGNMENT, plan_arena
from hil.model.reference import TflmReference
from hil.model.synthetic import TfliteBuilder, builtin_options, make_single_op_model
from hil.model.tflite_reader import read_tflite

DEFAULT_TFLITE = paths.SYNTHETIC_MODEL / "model.tflite"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("host-build")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------------------
# quantization.py: TFLM's Prepare arithmetic


@pytest.mark.parametrize(
    ("x", "want"),
    [(0.5, 1), (1.5, 2), (2.5, 3), (-0.5, -1), (-2.5, -3), (0.49999999999999994, 0), (2.4999, 2), (-7.0, -7)],
)
def test_round_half_away_from_zero_is_std_round(x: float, want: int) -> None:
    assert qz.round_half_away_from_zero(x) == want


@pytest.mark.parametrize(
    ("real", "want"),
    [
        (0.5, (1 << 30, 0)),
        (1.0, (1 << 30, 1)),
        (0.75, (3 << 29, 0)),
        (0.25, (1 << 30, -1)),
        (3.0, (3 << 29, 2)),
        (0.0, (0, 0)),
        (2.0**-40, (0, 0)),  # below 2^-31: flushed to zero like TFLM
        (1.0 - 2.0**-40, (1 << 30, 1)),  # rounds up to 2^31, renormalized
    ],
)
def test_quantize_multiplier(real: float, want: tuple[int, int]) -> None:
    assert qz.quantize_multiplier(real) == want


def test_quantize_multiplier_reconstructs_the_real_value() -> None:
    rng = _rng(1)
    for real in 10 ** rng.uniform(-8, 3, size=500):
        m, s = qz.quantize_multiplier(float(real))
        assert (1 << 30) <= m < (1 << 31)
        assert math.isclose(m * 2.0 ** (s - 31), real, rel_tol=2**-30)


def test_activation_range_uses_float32_division() -> None:
    assert qz.activation_range("NONE", 0.1, 3) == (-128, 127)
    assert qz.activation_range("RELU", 0.1, -128) == (-128, 127)
    assert qz.activation_range("RELU6", 6.0 / 255.0, -128) == (-128, 127)
    assert qz.activation_range("RELU6", 0.05, -10) == (-10, 110)
    assert qz.activation_range("RELU_N1_TO_1", 0.01, 0) == (-100, 100)
    # Saturates at the int8 range instead of wrapping.
    assert qz.activation_range("RELU6", 0.001, 100) == (100, 127)


def test_mean_multiplier_folds_the_count_like_tflm() -> None:
    m, s = qz.quantize_multiplier(0.5)
    fm, fs = qz.mean_multiplier(0.5, 1.0, 1024)  # count 2^10: exact, the shift moves by 10
    assert (fm, fs) == (m, s - 10)
    fm, fs = qz.mean_multiplier(1.0, 1.0, 3)  # 1/3: multiplier (2^30 << 1) // 3, shift 1 - 1
    assert (fm, fs) == (((1 << 30) << 1) // 3, 0)


@pytest.mark.parametrize(
    ("padding", "size", "k", "stride", "dil", "out", "pad"),
    [("SAME", 96, 3, 3, 1, 32, 0), ("SAME", 8, 4, 2, 1, 4, 1), ("SAME", 5, 3, 1, 2, 5, 2), ("VALID", 9, 3, 2, 1, 4, 0)],
)
def test_padding_and_output_size(padding: str, size: int, k: int, stride: int, dil: int, out: int, pad: int) -> None:
    assert qz.compute_out_size(padding, size, k, stride, dil) == out
    assert qz.compute_padding(stride, dil, size, k, out) == pad


# --------------------------------------------------------------------------------------------------------
# The reader


def test_reader_parses_the_default_model() -> None:
    g = read_tflite(DEFAULT_TFLITE.read_bytes())
    assert [op.opcode for op in g.operators] == [
        "DEPTHWISE_CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "STRIDED_SLICE", "MEAN",
        "FULLY_CONNECTED", "STRIDED_SLICE",
    ]  # fmt: skip
    x = g.tensors[g.inputs[0]]
    assert (x.shape, x.dtype, x.is_const) == ((1, 96, 96, 3), "int8", False)
    assert [g.io_name(i) for i in g.outputs] == ["local_logits", "remote_features"]
    conv = g.operators[1]
    filt = g.tensors[conv.inputs[1]]
    assert filt.is_const and filt.quant.per_channel and filt.data.shape == filt.shape
    assert conv.options["fused_activation_function"] == 3  # RELU6, fused by the converter


def test_reader_rejects_garbage() -> None:
    with pytest.raises(UnsupportedModelError, match="flatbuffer|subgraph"):
        read_tflite(b"\x00" * 64)


# --------------------------------------------------------------------------------------------------------
# Unsupported models: clear errors naming the op or tensor


def _simple_model(opcode: str, options: object | None = None, out_dtype: str = "int8") -> bytes:
    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.1, zero_point=0, name="x")
    y = b.tensor([1, 4], out_dtype, scale=1 / 256, zero_point=-128, name="y")
    b.op(opcode, [x], [y], options)
    return b.finish([x], [y])


def test_unsupported_op_names_the_op(tmp_path: Path) -> None:
    model = _simple_model("EXP")
    with pytest.raises(UnsupportedModelError, match=r"operator 0 \(EXP\) is not supported") as e:
        compile_tflite(model, tmp_path)
    assert "Supported ops: ADD" in str(e.value)
    assert "shape arithmetic on constants: SHAPE" in str(e.value)
    assert not (tmp_path / "model.json").exists()


def test_float_input_is_rejected_with_the_fix(tmp_path: Path) -> None:
    """A float32 graph input is compiled only where it feeds QUANTIZE ops (the converter's float I/O)."""
    b = TfliteBuilder()
    x = b.tensor([1, 4], "float32", name="float_in")
    y = b.tensor([1, 4], "float32", name="y")
    b.op("RELU", [x], [y])
    model = b.finish([x], [y])
    with pytest.raises(
        UnsupportedModelError, match=r"graph input tensor 0 'float_in'.* is float32.*inference_input_type"
    ):
        compile_tflite(model, tmp_path)


def test_quantize_inside_the_graph_is_a_requantization(tmp_path: Path) -> None:
    compiled = compile_tflite(_simple_model("QUANTIZE"), tmp_path)
    assert [(o.op, o.kernel) for o in compiled.ops] == [("QUANTIZE", "hil_requantize")]


def test_float_io_around_quantize_and_dequantize_compiles(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x = b.tensor([1, 4], "float32", name="float_in")
    q = b.tensor([1, 4], scale=0.1, zero_point=0, name="q")
    b.op("QUANTIZE", [x], [q])
    y = b.tensor([1, 4], "float32", name="float_out")
    b.op("DEQUANTIZE", [q], [y])
    compiled = compile_tflite(b.finish([x], [y]), tmp_path)
    assert [(t.dtype, t.bytes, t.scale, t.zero_point) for t in (*compiled.inputs, *compiled.outputs)] == [
        ("float32", 16, 0.0, 0),
        ("float32", 16, 0.0, 0),
    ]
    source = (tmp_path / "hil_model.c").read_text()
    assert ".dtype = HIL_DTYPE_FLOAT32" in source and "(float *)(void *)(hil_arena + " in source


def test_strided_slice_with_a_step_is_rejected(tmp_path: Path) -> None:
    model = make_single_op_model(
        "STRIDED_SLICE", _rng(), shape=(1, 4, 4, 8), begin=(0, 0, 0, 0), end=(1, 4, 4, 8), strides=(1, 1, 1, 2)
    )
    with pytest.raises(UnsupportedModelError, match=r"operator 0 \(STRIDED_SLICE\): strides \[1, 1, 1, 2\]"):
        compile_tflite(model, tmp_path)


def test_mean_over_non_adjacent_axes_is_rejected(tmp_path: Path) -> None:
    model = make_single_op_model("MEAN", _rng(), shape=(1, 4, 4, 3), axes=(1, 3))
    with pytest.raises(UnsupportedModelError, match=r"\(MEAN\): MEAN over non-adjacent axes \[1, 3\]"):
        compile_tflite(model, tmp_path)


def test_grouped_convolution_is_rejected(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x = b.tensor([1, 4, 4, 4], scale=0.1, zero_point=0)
    f = b.tensor([2, 1, 1, 2], scale=[0.1, 0.1], data=np.ones((2, 1, 1, 2)))
    y = b.tensor([1, 4, 4, 2], scale=0.1, zero_point=0)
    b.op("CONV_2D", [x, f, -1], [y], builtin_options("Conv2DOptionsT", padding=1, strideH=1, strideW=1))
    with pytest.raises(UnsupportedModelError, match="grouped convolution"):
        compile_tflite(b.finish([x], [y]), tmp_path)


def test_int16_op_without_a_16x8_kernel_is_rejected_by_name(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x = b.tensor([1, 4], "int16", scale=0.1, zero_point=0, name="x16")
    y = b.tensor([1, 4], "int16", scale=0.1, zero_point=0, name="y16")
    b.op("ADD", [x, x], [y], builtin_options("AddOptionsT"))
    with pytest.raises(UnsupportedModelError, match=r"ADD.*'y16'.*is int16, but this op runs int8 activations only"):
        compile_tflite(b.finish([x], [y]), tmp_path)


def _conv_1x1(in_dtype: str, out_dtype: str, zero_point: int = 0) -> bytes:
    b = TfliteBuilder()
    x = b.tensor([1, 2, 2, 2], in_dtype, scale=0.1, zero_point=zero_point, name="x")
    f = b.tensor([2, 1, 1, 2], scale=[0.1, 0.1], data=np.ones((2, 1, 1, 2)))
    y = b.tensor([1, 2, 2, 2], out_dtype, scale=0.1, zero_point=0, name="y")
    b.op("CONV_2D", [x, f, -1], [y], builtin_options("Conv2DOptionsT", padding=1, strideH=1, strideW=1))
    return b.finish([x], [y])


def test_int16_activations_need_zero_point_0(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"int16 with zero point 3.*symmetric"):
        compile_tflite(_conv_1x1("int16", "int16", zero_point=3), tmp_path)


def test_mixed_int8_int16_operator_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"input .* is int8 but output .* is int16"):
        compile_tflite(_conv_1x1("int8", "int16"), tmp_path)


def test_int16_conv_lowers_to_the_16x8_kernel(tmp_path: Path) -> None:
    compiled = compile_tflite(_conv_1x1("int16", "int16"), tmp_path)
    assert [o.kernel for o in compiled.ops] == ["hil_conv_2d_16x8"]
    assert [t.dtype for t in (*compiled.inputs, *compiled.outputs)] == ["int16", "int16"]
    assert compiled.inputs[0].bytes == 16  # 8 values of 2 bytes
    source = (tmp_path / "hil_model.c").read_text()
    assert ".dtype = HIL_DTYPE_INT16" in source and "(int16_t *)(void *)(hil_arena + " in source


def test_unsupported_fused_activation_is_rejected(tmp_path: Path) -> None:
    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.1, zero_point=0)
    y = b.tensor([1, 4], scale=0.2, zero_point=0)
    b.op("ADD", [x, x], [y], builtin_options("AddOptionsT", fusedActivationFunction=4))  # TANH
    with pytest.raises(UnsupportedModelError, match=r"\(ADD\): fused activation TANH is not supported"):
        compile_tflite(b.finish([x], [y]), tmp_path)


# --------------------------------------------------------------------------------------------------------
# The arena planner


def test_planner_separates_live_buffers_and_reuses_dead_ones() -> None:
    # A chain a -> b -> c -> d: b and d can share; a is the graph input, kept intact to the end when asked.
    sizes = {0: 100, 1: 60, 2: 100, 3: 60}
    steps = [([0], [1]), ([1], [2]), ([2], [3])]
    plan = plan_arena(sizes, steps, graph_inputs=[0], graph_outputs=[3], preserve_inputs=True)
    assert all(off % ALIGNMENT == 0 for off in plan.offsets.values())
    assert plan.arena_bytes % ALIGNMENT == 0
    for reads, writes in steps:  # no kernel writes over what it reads
        for r in reads:
            for w in writes:
                assert plan.offsets[r] + sizes[r] <= plan.offsets[w] or plan.offsets[w] + sizes[w] <= plan.offsets[r]
    assert plan.arena_bytes == 112 + 112 + 64  # a and c (100 -> 112 aligned) apart, b and d (60 -> 64) shared
    assert plan.offsets[1] == plan.offsets[3]


def test_preserved_graph_inputs_are_never_overwritten_so_infer_is_repeatable() -> None:
    lowered = lower_graph(read_tflite(DEFAULT_TFLITE.read_bytes()), preserve_inputs=True)
    assert lowered.plan.inputs_preserved
    t = lowered.graph.tensors
    inputs = [(i.arena_offset, i.arena_offset + i.bytes) for i in lowered.inputs]
    for index, offset in lowered.plan.offsets.items():
        if any(offset == lo for lo, _ in inputs):
            continue  # the input itself (or a reshape alias of it)
        lo, hi = offset, offset + t[index].nbytes
        assert all(hi <= a or b <= lo for a, b in inputs), f"tensor {index} overwrites a graph input"


def test_planner_aliases_share_bytes_and_extend_lifetimes() -> None:
    sizes = {0: 32, 1: 32, 2: 32, 3: 16}
    steps = [([0], [1]), ([2], [3])]  # 1 -> 2 is an alias (reshape); 2 is read at step 1
    plan = plan_arena(sizes, steps, graph_inputs=[0], graph_outputs=[3], aliases=[(1, 2)])
    assert plan.offsets[1] == plan.offsets[2]
    assert plan.offsets[3] != plan.offsets[2]


def test_only_in_place_kernels_write_over_their_inputs_in_the_default_model() -> None:
    """A kernel's output overlaps one of its inputs only where the planner ran it in place (a slice here), and
    then exactly: the same offset."""
    lowered = lower_graph(read_tflite(DEFAULT_TFLITE.read_bytes()))
    t = lowered.graph.tensors
    in_place = {(src, dst) for _, src, dst in lowered.plan.in_place}
    assert {lowered.graph.operators[i].opcode for i in range(len(lowered.graph.operators))
            if any(dst in lowered.graph.operators[i].outputs for _, dst in in_place)} <= {"STRIDED_SLICE"}
    for call in lowered.calls:
        if call.kernel is None:
            continue
        for i in (a for a in call.args if isinstance(a, int)):
            a, b = lowered.plan.offsets[i], lowered.plan.offsets[i] + t[i].nbytes
            for o in call.outputs:
                lo, hi = lowered.plan.offsets[o], lowered.plan.offsets[o] + t[o].nbytes
                if (i, o) in in_place:
                    assert lo == a, f"op {call.op_index} runs in place at another offset"
                else:
                    assert hi <= a or b <= lo, f"op {call.op_index} writes over its input"
    # The outputs, read after the last kernel, must not overlap each other either.
    outs = [(o.arena_offset, o.arena_offset + o.bytes) for o in lowered.outputs]
    assert outs[0][1] <= outs[1][0] or outs[1][1] <= outs[0][0]


# --------------------------------------------------------------------------------------------------------
# compile_tflite: files, summary and determinism


def test_compile_writes_c_and_json_that_agree(tmp_path: Path) -> None:
    data = DEFAULT_TFLITE.read_bytes()
    compiled = compile_tflite(DEFAULT_TFLITE, tmp_path)
    assert compiled.name == "model"  # the file stem
    summary = json.loads((tmp_path / "model.json").read_text())
    assert summary == compiled.to_json()
    assert summary["sha256"] == hashlib.sha256(data).hexdigest()
    assert summary["arena_bytes"] % 16 == 0
    assert summary["macs"] == sum(op["macs"] for op in summary["ops"]) == 175154
    assert [o["name"] for o in summary["outputs"]] == ["local_logits", "remote_features"]
    assert summary["inputs"][0] == {
        "name": "image", "index": 0, "shape": [1, 96, 96, 3], "dtype": "int8",
        "zero_point": summary["inputs"][0]["zero_point"], "scale": summary["inputs"][0]["scale"],
        "bytes": 27648, "arena_offset": summary["inputs"][0]["arena_offset"],
    }  # fmt: skip
    c = (tmp_path / "hil_model.c").read_text()
    assert f"static int8_t hil_arena[{compiled.arena_bytes}] HIL_ARENA_ALIGN;" in c
    assert "__attribute__((aligned(16)))" in c
    for op in summary["ops"]:
        assert f"/* ---- op {op['index']}: {op['op']} " in c
    assert "malloc" not in c and "float " not in c.replace("float scale", "")
    assert ", ".join(f"0x{b:02x}" for b in bytes.fromhex(compiled.sha256)[:16]) in c


def test_weights_bytes_and_macs_of_a_conv(tmp_path: Path) -> None:
    model = make_single_op_model("CONV_2D", _rng(3), height=9, width=7, in_channels=3, out_channels=5,
                                 kernel=(3, 3), stride=(2, 2), padding="SAME")  # fmt: skip
    generic = compile_tflite(model, tmp_path / "generic", specialise=False)
    # filter 5*3*3*3 int8 + bias, multipliers and shifts 3 x 5 int32
    assert generic.weights_bytes == 5 * 3 * 3 * 3 + 3 * 5 * 4
    compiled = compile_tflite(model, tmp_path / "fast")
    assert [o.specialised_kernel for o in compiled.ops] == ["hil_conv_2d_patch_u8"]
    # the specialised kernel's data: 5 channels padded to 8 (blocks of 4): filter 8*27 uint8, folded bias,
    # multipliers and right shifts 3 x 8 int32
    assert compiled.weights_bytes == 8 * 3 * 3 * 3 + 3 * 8 * 4
    assert compiled.macs == generic.macs == 5 * 4 * 5 * 3 * 3 * 3  # out 5x4 pixels x 5 channels x 3x3x3 taps


def test_compiling_twice_gives_identical_files(tmp_path: Path) -> None:
    data = DEFAULT_TFLITE.read_bytes()
    compile_tflite(data, tmp_path / "a", name="x")
    compile_tflite(data, tmp_path / "b", name="x")
    for f in ("hil_model.c", "model.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_committed_default_model_is_up_to_date(tmp_path: Path) -> None:
    """models/synthetic-extractor: hil_model.c and model.json are what the compiler makes of model.tflite."""
    model_dir = paths.SYNTHETIC_MODEL
    compiled = compile_tflite(model_dir / "model.tflite", tmp_path, name="synthetic-extractor")
    for f in ("hil_model.c", "model.json"):
        assert (tmp_path / f).read_text() == (model_dir / f).read_text(), (
            f"{model_dir / f} is stale; regenerate with hil.model.compiler.compile_tflite"
        )
    card = json.loads((model_dir / "card.json").read_text())
    assert card["kind"] == "synthetic" and card["dataset"] == "none (random weights)"
    for f, digest in card["artifacts"].items():
        assert hashlib.sha256((model_dir / f).read_bytes()).hexdigest() == digest, f
    assert card["device"] == {
        "weights_bytes": compiled.weights_bytes, "arena_bytes": compiled.arena_bytes, "macs": compiled.macs
    }  # fmt: skip


def test_json_text_keeps_shapes_on_one_line() -> None:
    text = json_text({"shape": [1, 96, 96, 3], "nested": [[1, 10], [2, -3]], "s": "a"})
    assert '"shape": [1, 96, 96, 3]' in text and "[1, 10]" in text and "[2, -3]" in text
    assert json.loads(text) == {"shape": [1, 96, 96, 3], "nested": [[1, 10], [2, -3]], "s": "a"}


# --------------------------------------------------------------------------------------------------------
# Host runner and reference wrapper


def test_reshape_only_model_aliases_input_and_output(tmp_path: Path, build_dir: Path) -> None:
    model = make_single_op_model("RESHAPE", _rng(), shape=(1, 2, 2, 3), new_shape=(1, 12))
    compiled, binary = compile_and_build(model, tmp_path, build_dir)
    assert compiled.inputs[0].arena_offset == compiled.outputs[0].arena_offset
    x = np.arange(-6, 6, dtype=np.int8).reshape(1, 2, 2, 3)
    (y,) = run_host(binary, [x])
    assert y.shape == (1, 12) and np.array_equal(y.reshape(-1), x.reshape(-1))


def test_run_host_checks_inputs(tmp_path: Path, build_dir: Path) -> None:
    model = make_single_op_model("ADD", _rng())
    _, binary = compile_and_build(model, tmp_path, build_dir)
    with pytest.raises(ValueError, match="takes 2 inputs"):
        run_host(binary, [np.zeros((1, 4, 4, 3), np.int8)])
    with pytest.raises(ValueError, match="must be int8"):
        run_host(binary, [np.zeros((1, 4, 4, 3), np.float32)] * 2)


def test_reference_reports_outputs_in_graph_order() -> None:
    ref = TflmReference(DEFAULT_TFLITE)
    assert [d.shape for d in ref.outputs] == [(1, 10), (1, 32, 32, 19)]
    outs = ref.run([np.zeros((1, 96, 96, 3), np.int8)])
    assert [o.shape for o in outs] == [(1, 10), (1, 32, 32, 19)]
    assert all(o.dtype == np.int8 for o in outs)


# --------------------------------------------------------------------------------------------------------
# Cross-compilation for the LX106 Xtensa core (the QEMU stand-in)

XTENSA_GCC = "xtensa-lx106-elf-gcc"


def _one_model_per_op(tmp_path: Path) -> list[Path]:
    """hil_model.c files that together use every kernel and every codegen path."""
    rng = _rng(5)
    models = {
        "conv": make_single_op_model("CONV_2D", rng, bias=False),
        "dw": make_single_op_model("DEPTHWISE_CONV_2D", rng, depth_multiplier=2),
        "fc": make_single_op_model("FULLY_CONNECTED", rng, per_channel=True),
        "avg": make_single_op_model("AVERAGE_POOL_2D", rng),
        "max": make_single_op_model("MAX_POOL_2D", rng),
        "mean": make_single_op_model("MEAN", rng),
        "add": make_single_op_model("ADD", rng, shape2=(3,), const_second=True),
        "slice": make_single_op_model("STRIDED_SLICE", rng),
        "pad": make_single_op_model("PAD", rng, constant=3),
        "reshape": make_single_op_model("RESHAPE", rng),
        "softmax": make_single_op_model("SOFTMAX", rng),
        "softmax16": make_single_op_model("SOFTMAX", rng, dtype="int16"),
        "logistic": make_single_op_model("LOGISTIC", rng),
        "logistic16": make_single_op_model("LOGISTIC", rng, dtype="int16"),
        "tanh": make_single_op_model("TANH", rng),
        "tanh16": make_single_op_model("TANH", rng, dtype="int16"),
        "hard_swish": make_single_op_model("HARD_SWISH", rng),
        "mul": make_single_op_model("MUL", rng, shape2=(3,), const_second=True),
        "mul16": make_single_op_model("MUL", rng, dtype="int16"),
        "sub": make_single_op_model("SUB", rng, shape2=(1, 1, 4, 1)),
        "sub16": make_single_op_model("SUB", rng, dtype="int16", const_second=True),
        "concat": make_single_op_model("CONCATENATION", rng, shapes=((1, 2, 3), (1, 2, 5)), const_input=0),
        "concat16": make_single_op_model(
            "CONCATENATION", rng, shapes=((1, 2, 4, 3), (1, 5, 4, 3)), dtype="int16", axis=1
        ),
        "requantize": make_single_op_model("QUANTIZE", rng, in_dtype="int8", out_dtype="int16"),
        "quantize_float": make_single_op_model("QUANTIZE", rng, in_dtype="float32", out_dtype="int8"),
        "dequantize": make_single_op_model("DEQUANTIZE", rng, in_dtype="int16"),
        "relu": make_single_op_model("RELU", rng),
        "relu6_16": make_single_op_model("RELU6", rng, dtype="int16"),
        "leaky_relu": make_single_op_model("LEAKY_RELU", rng),
        "leaky_relu16": make_single_op_model("LEAKY_RELU", rng, dtype="int16"),
    }
    files = []
    for name, data in models.items():
        compile_tflite(data, tmp_path / name, name=name)
        files.append(tmp_path / name / "hil_model.c")
    return files


def test_kernels_and_models_cross_compile_for_lx106(tmp_path: Path) -> None:
    if shutil.which(XTENSA_GCC) is None:
        pytest.skip(f"{XTENSA_GCC} not installed (Debian: apt-get install gcc-xtensa-lx106)")
    sources = [*sorted(KERNELS.glob("*.c")), paths.SYNTHETIC_MODEL / "hil_model.c", *_one_model_per_op(tmp_path)]
    for i, src in enumerate(sources):
        cmd = [XTENSA_GCC, "-std=c99", "-O2", "-Wall", "-Werror", "-mtext-section-literals", "-I", str(INCLUDE),
               "-c", str(src), "-o", str(tmp_path / f"{i}.o")]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{src}:\n{proc.stderr}"


def test_every_codegen_path_compiles_and_runs_on_the_host(tmp_path: Path, build_dir: Path) -> None:
    """The same per-op models through the host build (-Wall -Wextra -Werror), one inference each."""
    for c_file in _one_model_per_op(tmp_path):
        from hil.model.hostrun import build_host_runner, run_host_many

        binary = build_host_runner(c_file.parent, build_dir)
        spec = json.loads((c_file.parent / "model.json").read_text())
        dtypes = {"int8": np.int8, "int16": np.int16, "float32": np.float32}
        inputs = [np.zeros(i["shape"], dtypes[i["dtype"]]) for i in spec["inputs"]]
        (outs,) = run_host_many(binary, [inputs])
        assert [list(o.shape) for o in outs] == [o["shape"] for o in spec["outputs"]]
