"""Arena and flash accounting of the compiler (hil/model/planner.py, compiler.py, codegen.py).

- the planner keeps a graph input alive past its last reader only when asked (`preserve_inputs`), and says
  whether a plan leaves the inputs intact (model.json `input_preserved`, `hil_model_info.inputs_consumed`);
- elementwise ops, activations and slices run in place where their input dies, and stay bit-exact;
- model.json's arena and constant-data figures are the generated C's, for fresh compiles and every committed
  model; the code estimate's kernel table matches the lx106 toolchain's sizes when it is installed;
- a HIL_USE_ESP_NN build of a generated model calls the generic entry points, a default build the specialised
  kernels, and the kernels define <name>_portable for the port;
- every committed model's peak arena is at most TensorFlow Lite Micro's (activations + persistent).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers_models import assert_bit_exact

from hil import paths
from hil.model.codegen import KERNEL_CODE_BYTES, measure_kernel_code_bytes
from hil.model.compiler import compile_tflite, lower_graph
from hil.model.hostrun import INCLUDE, KERNELS
from hil.model.planner import plan_arena
from hil.model.synthetic import TfliteBuilder, builtin_options
from hil.model.tflite_reader import read_tflite

DEFAULT_TFLITE = paths.SYNTHETIC_MODEL / "model.tflite"
COMMITTED = sorted(d.name for d in paths.MODELS.iterdir() if (d / "model.tflite").is_file())


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("arena-build")


# --------------------------------------------------------------------------------------------------------
# Graph inputs


def test_planner_reuses_a_graph_input_after_its_last_reader_unless_asked() -> None:
    # x -> a -> b -> y: x is read at step 0 only; b (written at step 1) may take its bytes.
    sizes = {0: 64, 1: 32, 2: 64, 3: 16}
    steps = [([0], [1]), ([1], [2]), ([2], [3])]
    plan = plan_arena(sizes, steps, graph_inputs=[0], graph_outputs=[3])
    assert plan.offsets[2] == plan.offsets[0] and not plan.inputs_preserved
    kept = plan_arena(sizes, steps, graph_inputs=[0], graph_outputs=[3], preserve_inputs=True)
    assert kept.inputs_preserved and kept.arena_bytes > plan.arena_bytes
    others = [t for t in sizes if t != 0]
    assert all(
        kept.offsets[t] + sizes[t] <= kept.offsets[0] or kept.offsets[0] + sizes[0] <= kept.offsets[t] for t in others
    )


def test_an_untouched_input_counts_as_preserved() -> None:
    # two independent chains: nothing larger is written after the input dies, so nothing takes its bytes
    plan = plan_arena({0: 16, 1: 256, 2: 16}, [([0, 1], [2])], graph_inputs=[0, 1], graph_outputs=[2])
    assert plan.arena_bytes == 16 + 256 + 16 and plan.inputs_preserved


def test_default_model_lets_later_tensors_take_its_input_bytes(tmp_path: Path) -> None:
    compiled = compile_tflite(DEFAULT_TFLITE, tmp_path / "default", name="x")
    kept = compile_tflite(DEFAULT_TFLITE, tmp_path / "kept", name="x", preserve_inputs=True)
    assert not compiled.input_preserved and kept.input_preserved
    assert kept.arena_bytes > compiled.arena_bytes
    for directory, consumed in ((tmp_path / "default", 1), (tmp_path / "kept", 0)):
        summary = json.loads((directory / "model.json").read_text())
        assert summary["input_preserved"] is (consumed == 0)
        assert f".inputs_consumed = {consumed}," in (directory / "hil_model.c").read_text()


# --------------------------------------------------------------------------------------------------------
# In place


def _graph_in_place(rng: np.random.Generator) -> bytes:
    """conv -> RELU (in place) -> ADD with the graph input (in place on the relu) -> slice (in place) -> output,
    plus a second output that keeps the conv result alive, so the RELU must not run in place on it."""
    b = TfliteBuilder()
    x = b.tensor([1, 5, 5, 4], scale=0.05, zero_point=-3, name="x")
    f = b.tensor([4, 1, 1, 4], scale=[0.02, 0.01, 0.03, 0.02], data=rng.integers(-127, 128, (4, 1, 1, 4)))
    bias = b.tensor([4], "int32", scale=[1e-3, 5e-4, 1.5e-3, 1e-3], data=rng.integers(-300, 300, 4))
    c = b.tensor([1, 5, 5, 4], scale=0.04, zero_point=5, name="conv")
    b.op("CONV_2D", [x, f, bias], [c], builtin_options("Conv2DOptionsT", padding=1, strideH=1, strideW=1))
    r = b.tensor([1, 5, 5, 4], scale=0.04, zero_point=-20, name="relu")
    b.op("RELU", [c], [r])
    r2 = b.tensor([1, 5, 5, 4], scale=0.03, zero_point=-128, name="relu2")
    b.op("RELU", [r], [r2])
    s = b.tensor([1, 5, 5, 4], scale=0.06, zero_point=2, name="sum")
    b.op("ADD", [r2, x], [s], builtin_options("AddOptionsT"))
    begin = b.tensor([4], "int32", data=np.array([0, 1, 0, 1]))
    end = b.tensor([4], "int32", data=np.array([1, 4, 5, 3]))
    strides = b.tensor([4], "int32", data=np.array([1, 1, 1, 1]))
    y = b.tensor([1, 3, 5, 2], scale=0.06, zero_point=2, name="slice")
    b.op("STRIDED_SLICE", [s, begin, end, strides], [y], builtin_options("StridedSliceOptionsT"))
    return b.finish([x], [y, c])


def test_elementwise_ops_and_slices_run_in_place_and_stay_bit_exact(tmp_path: Path, build_dir: Path) -> None:
    rng = np.random.default_rng(3)
    tflite = _graph_in_place(rng)
    lowered = lower_graph(read_tflite(tflite))
    kinds = {lowered.graph.operators[[c for c in lowered.calls if c.kernel][step].op_index].opcode
             for step, _, _ in lowered.plan.in_place}  # fmt: skip
    # the first RELU reads the conv result, a graph output: not in place; the second RELU, ADD, slice are
    assert kinds == {"RELU", "ADD", "STRIDED_SLICE"}, lowered.plan.in_place
    by_name = {t.name: t.index for t in lowered.graph.tensors}
    off = lowered.plan.offsets
    assert off[by_name["relu2"]] == off[by_name["relu"]] != off[by_name["conv"]]
    # ADD may take either input's bytes (both die there): the graph input's or the second RELU's
    assert off[by_name["sum"]] in (off[by_name["x"]], off[by_name["relu2"]])
    assert off[by_name["slice"]] == off[by_name["sum"]]
    assert_bit_exact(tflite, tmp_path, build_dir, rng, count=5, label="in place")


# --------------------------------------------------------------------------------------------------------
# model.json against the generated C


def _default_build_arrays(source: str) -> int:
    """Bytes of the static const arrays a default build compiles (outside #if defined(HIL_USE_ESP_NN) blocks)."""
    sizes = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}
    total, skipping = 0, False
    for line in source.splitlines():
        if line.startswith("#if defined(HIL_USE_ESP_NN)"):
            skipping = True
        elif line.startswith("#else") or line.startswith("#endif"):
            skipping = False
        m = re.match(r"static const (\w+) \w+\[(\d+)\]", line)
        if m and not skipping and m.group(1) in sizes:
            total += sizes[m.group(1)] * int(m.group(2))
    return total


def _check_summary_against_c(model_dir: Path) -> dict:
    summary = json.loads((model_dir / "model.json").read_text())
    source = (model_dir / "hil_model.c").read_text()
    assert f"static int8_t hil_arena[{summary['arena_bytes']}] HIL_ARENA_ALIGN;" in source
    assert f".arena_bytes = {summary['arena_bytes']}," in source
    assert _default_build_arrays(source) == summary["weights_bytes"] == summary["flash"]["constant_bytes"]
    assert f".inputs_consumed = {0 if summary['input_preserved'] else 1}," in source
    flash = summary["flash"]
    assert flash["total_bytes_estimate"] == flash["constant_bytes"] + flash["code_bytes_estimate"]
    kernels = {o["specialised_kernel"] or o["kernel"] for o in summary["ops"] if o["kernel"]}
    assert flash["code_bytes_estimate"] >= sum(KERNEL_CODE_BYTES.get(k, 0) for k in kernels)
    for t in (*summary["inputs"], *summary["outputs"]):
        assert f".arena_offset = {t['arena_offset']}," in source
    return summary


def test_model_json_figures_are_the_generated_cs(tmp_path: Path) -> None:
    for specialise in (True, False):
        compiled = compile_tflite(DEFAULT_TFLITE, tmp_path / str(specialise), name="x", specialise=specialise)
        summary = _check_summary_against_c(tmp_path / str(specialise))
        assert summary["specialised"] is specialise and summary["arena_bytes"] == compiled.arena_bytes


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_model_json_matches_its_c_and_card(name: str) -> None:
    model_dir = paths.MODELS / name
    summary = _check_summary_against_c(model_dir)
    card = json.loads((model_dir / "card.json").read_text())
    assert card["device"]["arena_bytes"] == summary["arena_bytes"]
    assert card["device"]["weights_bytes"] == summary["weights_bytes"]
    assert summary["input_preserved"] is False


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_model_arena_is_at_most_tflms(name: str) -> None:
    from hil.bench.runtime import tflm_arena

    summary = json.loads((paths.MODELS / name / "model.json").read_text())
    tflm = tflm_arena((paths.MODELS / name / "model.tflite").read_bytes())
    assert tflm["total"] == tflm["head"] + tflm["tail"]
    assert summary["arena_bytes"] <= tflm["total"], (summary["arena_bytes"], tflm)


def test_kernel_code_table_matches_the_lx106_toolchain() -> None:
    if shutil.which("xtensa-lx106-elf-gcc") is None:
        pytest.skip("xtensa-lx106-elf-gcc not installed")
    measured = measure_kernel_code_bytes()
    assert set(measured) == set(KERNEL_CODE_BYTES), "regenerate KERNEL_CODE_BYTES (hil/model/codegen.py)"
    off = {k: (KERNEL_CODE_BYTES[k], v) for k, v in measured.items() if abs(v - KERNEL_CODE_BYTES[k]) > v * 0.15}
    assert not off, f"kernel code sizes moved by more than 15%, regenerate KERNEL_CODE_BYTES: {off}"


# --------------------------------------------------------------------------------------------------------
# HIL_USE_ESP_NN


def _symbols(obj: Path, kind: str) -> set[str]:
    out = subprocess.run(["nm", str(obj)], check=True, capture_output=True, text=True).stdout
    return {parts[-1] for line in out.splitlines() if (parts := line.split()) and parts[-2] == kind}


def test_esp_nn_build_calls_the_generic_entry_points(tmp_path: Path) -> None:
    # an int8 model (a 16x8 one calls only the *_16x8 kernels, which ESP-NN does not have)
    compile_tflite(paths.MODELS / "full-local-cifar10" / "model.tflite", tmp_path, name="x")
    objs = {}
    for flags in ((), ("-DHIL_USE_ESP_NN",)):
        obj = tmp_path / f"model{len(flags)}.o"
        subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", *flags, "-I", str(INCLUDE), "-c",
                        str(tmp_path / "hil_model.c"), "-o", str(obj)], check=True)  # fmt: skip
        objs[bool(flags)] = _symbols(obj, "U")
    assert {"hil_conv_2d", "hil_depthwise_conv_2d", "hil_fully_connected"} <= objs[True]
    assert not {"hil_conv_2d_1x1_u8", "hil_conv_2d_patch_u8", "hil_depthwise_conv_2d_3x3"} & objs[True]
    assert {"hil_conv_2d_1x1_u8", "hil_conv_2d_patch_u8", "hil_depthwise_conv_2d_3x3"} <= objs[False]
    assert not {"hil_conv_2d", "hil_depthwise_conv_2d", "hil_fully_connected"} & objs[False]
    # the kernels: with HIL_USE_ESP_NN the six ops' generic kernels are <name>_portable, for the port's dispatcher
    defined: set[str] = set()
    for src in ("conv_2d", "depthwise_conv_2d", "fully_connected", "add", "average_pool_2d", "max_pool_2d",
                "softmax"):  # fmt: skip
        obj = tmp_path / f"{src}.o"
        subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-DHIL_USE_ESP_NN", "-I",
                        str(INCLUDE), "-c", str(KERNELS / f"{src}.c"), "-o", str(obj)], check=True)  # fmt: skip
        defined |= _symbols(obj, "T")
    portable = {"hil_conv_2d", "hil_depthwise_conv_2d", "hil_fully_connected", "hil_add", "hil_average_pool_2d",
                "hil_max_pool_2d", "hil_softmax"}  # fmt: skip
    assert {f"{n}_portable" for n in portable} <= defined
    assert not portable & defined


# --------------------------------------------------------------------------------------------------------
# The device side of input_preserved: false


@pytest.mark.timeout(300)
def test_infer_on_an_overwritten_input_is_refused_and_the_client_reloads(tmp_path: Path) -> None:
    """The synthetic model overwrites its input: a second INFER without LOAD_INPUT gets ERROR BAD_REQUEST from
    the firmware (device_fw/core/src/app.c); the client loads the input it last sent again and repeats, so
    infer() on "what is loaded" still gives the right outputs."""
    from hil.dut import DutOptions, open_dut
    from hil.model.artifacts import resolve_model
    from hil.model.reference import TflmReference
    from hil.transport.client import INPUT_CONSUMED_MESSAGE, DeviceErrorReply
    from hil.transport.frame import FrameType

    model = resolve_model(paths.SYNTHETIC_MODEL)
    assert model.summary["input_preserved"] is False
    reference = TflmReference(model.tflite_bytes)
    x = np.random.default_rng(5).integers(-128, 128, size=(1, 96, 96, 3), dtype=np.int8)
    want = reference.run([x])
    with open_dut(model, DutOptions(target="host", log_dir=tmp_path)) as dut:
        client = dut.client
        first = client.infer([x])
        with pytest.raises(DeviceErrorReply) as excinfo:  # a raw second INFER: refused
            client.request(FrameType.INFER, timeout=client.infer_timeout)
        assert excinfo.value.name == "BAD_REQUEST" and excinfo.value.message.startswith(INPUT_CONSUMED_MESSAGE)
        again = client.infer()  # reloads the input and repeats
        for got in (first, again):
            assert all(np.array_equal(g.reshape(w.shape), w) for g, w in zip(got.outputs, want, strict=True))
