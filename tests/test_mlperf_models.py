"""The MLPerf Tiny reference models (hil.model.mlperf) on the kernel core.

ResNet-8 (image classification), DS-CNN (keyword spotting), MobileNetV1-0.25 (visual wake words) and the
anomaly-detection autoencoder, built in Keras with random weights and converted to full-integer int8 by TensorFlow:
each compiles with the project's compiler, its tensor arena (plus the ESP32-S3 port's ESP-NN scratch area) and
constant data fit the ESP32-S3's budgets, it runs bit-exact with TFLite Micro on the host runner and on the
emulated Xtensa target (QEMU), and through the ESP32-S3 port's ESP-NN dispatch (linked on the host against a
fake ESP-NN that forwards to the portable kernels; see tests/test_esp_nn_dispatch.py). Each model is converted
once per session (4 to 10 s).

The figures (MACs, arena, weights, QEMU cycles) are recorded as test properties (junit.xml) and printed (-s).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
from helpers_models import compile_and_build, mismatch_report, random_input_sets

from hil import paths
from hil.model.hostrun import run_host_many
from hil.model.mlperf import FLASH_WEIGHTS_BUDGET_BYTES, MODELS, SRAM_BUDGET_BYTES, make_mlperf_model
from hil.model.reference import TflmReference

pytestmark = [pytest.mark.tf, pytest.mark.slow]

# The operators the converter writes for each model and its multiply-accumulates per inference (exact: they
# follow from the architecture; the published MLPerf Tiny figures are 12.5 M, 2.7 M, 7.5 M and 0.26 M).
EXPECTED = {
    "resnet8": ({"CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}, 12_501_632),
    "ds_cnn": ({"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}, 2_656_768),
    "mobilenet_v1_025": ({"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}, 7_489_664),
    "autoencoder": ({"FULLY_CONNECTED"}, 264_192),
}  # fmt: skip

KCONFIG = paths.DEVICE_FW / "ports" / "esp32s3" / "main" / "Kconfig.projbuild"


def esp_nn_scratch_default() -> int:
    """CONFIG_HIL_ESP_NN_SCRATCH_BYTES's default (main/Kconfig.projbuild): RAM the port adds to the arena."""
    m = re.search(r"config HIL_ESP_NN_SCRATCH_BYTES\b.*?\n\s*default (\d+)", KCONFIG.read_text(), re.S)
    assert m, f"no HIL_ESP_NN_SCRATCH_BYTES default in {KCONFIG}"
    return int(m.group(1))


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


@functools.cache
def _tflite(name: str) -> bytes:
    return make_mlperf_model(name, seed=0)


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlperf-models")


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlperf-build")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_model_compiles_within_esp32s3_budgets(
    name: str, tf, work_dir: Path, build_dir: Path, record_property
) -> None:
    tflite = _tflite(name)
    compiled, _ = compile_and_build(tflite, work_dir, build_dir)
    ops, macs = EXPECTED[name]
    assert {o.op for o in compiled.ops} == ops
    assert compiled.macs == macs
    spec = MODELS[name]
    assert [list(t.shape) for t in compiled.inputs] == [[1, *spec.input_shape]]
    assert [list(t.shape) for t in compiled.outputs] == [[1, spec.classes]]
    assert all(t.dtype == "int8" for t in (*compiled.inputs, *compiled.outputs))
    scratch = esp_nn_scratch_default()
    for key, value in (
        ("macs", compiled.macs),
        ("arena_bytes", compiled.arena_bytes),
        ("weights_bytes", compiled.weights_bytes),
        ("esp_nn_scratch_bytes", scratch),
    ):
        record_property(key, value)
    print(
        f"{name}: {compiled.macs} MACs, arena {compiled.arena_bytes} B + ESP-NN scratch {scratch} B "
        f"(budget {SRAM_BUDGET_BYTES} B), weights {compiled.weights_bytes} B (budget {FLASH_WEIGHTS_BUDGET_BYTES} B)"
    )
    assert compiled.arena_bytes + scratch <= SRAM_BUDGET_BYTES, "tensor arena + ESP-NN scratch over the SRAM budget"
    assert compiled.weights_bytes <= FLASH_WEIGHTS_BUDGET_BYTES, "weights over the flash budget"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_model_bit_exact_on_host(name: str, tf, work_dir: Path, build_dir: Path) -> None:
    tflite = _tflite(name)
    _, binary = compile_and_build(tflite, work_dir, build_dir)
    reference = TflmReference(tflite)
    input_sets = random_input_sets(reference, np.random.default_rng(len(name)), 5)
    results = run_host_many(binary, input_sets)
    failures = [
        r for i, (x, got) in enumerate(zip(input_sets, results, strict=True))
        if (r := mismatch_report(name, got, reference.run(x), i))
    ]  # fmt: skip
    assert not failures, "\n".join(failures)
    # Random weights still give outputs that vary with the input (not a constant clamp).
    assert len({r[0].tobytes() for r in results}) > 1


@pytest.mark.qemu
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_model_bit_exact_on_qemu(name: str, tf, tmp_path: Path, record_property) -> None:
    """Through the firmware and the protocol on the emulated lx106 (0.01 to 0.2 s per inference)."""
    from hil.dut import DutOptions, open_dut
    from hil.firmware.build import toolchain_status
    from hil.model.artifacts import resolve_model

    status = toolchain_status("qemu")
    if not status.ok:
        pytest.skip(str(status))
    tflite = _tflite(name)
    path = tmp_path / f"{name}.tflite"
    path.write_bytes(tflite)
    model = resolve_model(path, cache_root=tmp_path / "models")
    reference = TflmReference(tflite)
    rng = np.random.default_rng(100 + len(name))
    cycles = []
    with open_dut(model, DutOptions(target="qemu", log_dir=tmp_path, timeout_s=60)) as dut:
        for i, inputs in enumerate(random_input_sets(reference, rng, 3)):
            result = dut.infer(inputs)
            want = reference.run(inputs)
            got = [np.asarray(g).reshape(w.shape) for g, w in zip(result.outputs, want, strict=True)]
            report = mismatch_report(f"{name} on qemu", got, want, i)
            assert not report, report
            cycles.append(result.cycles)
    record_property("qemu_cycles_median", int(np.median(cycles)))
    print(f"{name}: qemu {int(np.median(cycles))} cycles (emulated lx106, not ESP32-S3)")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_mlperf_model_through_esp_nn_dispatch_bit_exact(
    name: str, tf, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model compiled for the ESP32-S3 port's ESP-NN build (HIL_USE_ESP_NN), the dispatch linked against
    the fake ESP-NN: bit-exact with TFLM, and every dispatched layer of these models goes to ESP-NN (none
    falls back: no dilation, biases everywhere, per-tensor dense layers, same-shape residual ADDs)."""
    from test_esp_nn_dispatch import _portable_missing, run_through_dispatch

    if (reason := _portable_missing()) is not None:
        pytest.skip(reason)
    tflite = _tflite(name)
    build = tmp_path_factory.getbasetemp() / "mlperf-esp-nn-build"
    _, counters = run_through_dispatch(tflite, tmp_path, build, np.random.default_rng(7), 3, name, monkeypatch)
    ops = {op: calls for op, calls in counters["ops"].items() if calls[0] or calls[1]}
    assert ops, counters
    assert all(portable == 0 for _, portable, _ in ops.values()), ops
