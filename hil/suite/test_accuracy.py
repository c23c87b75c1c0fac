"""AgileNN accuracy on whatever --hil-target selects: the device's offload step against the host int8 execution
(exact, every image), the combined prediction against the float Keras pipeline (>= 99% agreement), and top-1
accuracy against the labels with its Wilson 95% interval (recorded through `hil_results`).

Images: `hil_dataset` (the committed 500-image CIFAR-10 subset by default; --hil-images all: the whole test set).
Runs only for an AgileNN export (a model directory with agilenn.json, e.g. --hil-model models/agilenn-cifar10);
hil/accuracy/README.md says what each number means. The run happens once per module; the tests judge it.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from hil.accuracy.job import AGREEMENT_MIN
from hil.dut import EMULATED_TARGETS
from hil.measure.measurement import Measurement


@pytest.fixture(scope="module")
def accuracy(request: pytest.FixtureRequest, hil_model, hil_dataset):
    """One run of the accuracy job over `hil_dataset` (hil.accuracy.job.AccuracyResult), its JSON report in
    <report dir>/accuracy-<target>.json."""
    from hil.accuracy.job import AccuracyError, AgileSpec, FloatPipeline, HostInt8, run_accuracy, write_report
    from hil.plugin.runs import recorder

    model_dir = hil_model.tflite_path.parent
    if not (model_dir / "agilenn.json").is_file():
        # Checked before `dut` and `remote_model`, so a synthetic stand-in costs no firmware start.
        pytest.skip(f"model '{hil_model.name}' ({model_dir}) has no agilenn.json: not an AgileNN export; run with "
                    "--hil-model models/agilenn-cifar10 (or another `hil export` directory)")
    spec = AgileSpec.load(model_dir)
    remote = request.getfixturevalue("remote_model")
    dut = request.getfixturevalue("dut")
    device_image = tuple(dut.info.inputs[0].shape[1:])
    if hil_dataset.image_shape != device_image:
        pytest.skip(f"the images are {hil_dataset.image_shape}, the device takes {device_image}; pass --hil-data "
                    "with the model's data set")
    notes = []
    try:
        float_pipeline = FloatPipeline.load(spec)
    except AccuracyError as exc:
        float_pipeline = None
        notes.append(str(exc))
    result = run_accuracy(dut, remote, HostInt8(spec), hil_dataset, float_pipeline=float_pipeline, notes=notes)
    run = recorder(request.config)
    run.artifact(write_report(result, run.run_dir), "the accuracy job's per-image results")
    return result


def _figures(accuracy) -> dict[str, Measurement]:
    return {m.name: m for m in accuracy.measurements()}


def test_device_offload_step_equals_host_int8_on_every_image(accuracy, hil_results):
    """Local logits, decoded codes and payload bytes: the same int8 model (TFLite Micro) and quantizer
    (agilenn.json's table, the reference encoder) on the host give exactly what the device sent."""
    n = accuracy.images
    first = [f"image {m.image} (test index {m.test_index}): {'; '.join(m.problems)}" for m in accuracy.mismatches[:3]]
    figure = _figures(accuracy)["device_equals_host_int8"]
    # Recorded with limits [n, n]: out of them, record() fails the test with this detail (the first mismatches).
    hil_results.record(replace(figure, detail=figure.detail + "".join(f"; {f}" for f in first)))
    assert accuracy.mismatches == []
    assert n > 0 and len(accuracy.payload_bytes) == n and all(b > 0 for b in accuracy.payload_bytes)


def test_final_prediction_is_alpha_local_plus_remote_as_trained(accuracy, hil_model):
    """alpha is the trained Alpha layer's sigmoid(clip(w / T, -15, 15)) (agilenn.json keeps w and T), and the
    combined logits are alpha * dequantized device local logits + (1 - alpha) * the server's remote logits."""
    meta = json.loads((hil_model.tflite_path.parent / "agilenn.json").read_text())
    w, t = float(meta["alpha_w"]), float(meta["alpha_temperature"])
    assert meta["alpha"] == pytest.approx(1.0 / (1.0 + math.exp(-max(-15.0, min(15.0, w / t)))), abs=1e-6)
    [local_meta] = [o for o in meta["outputs"] if o["name"] == "local_logits"]
    local = np.float32(local_meta["scale"]) * (accuracy.local_q.astype(np.float32) - local_meta["zero_point"])
    a = np.float32(meta["alpha"])
    np.testing.assert_allclose(accuracy.combined, a * local + (1 - a) * accuracy.remote, rtol=1e-6, atol=1e-6)


def test_combined_prediction_agrees_with_the_float_pipeline(accuracy, hil_results):
    if accuracy.agreement is None:
        pytest.skip(f"no float pipeline for this model: {'; '.join(accuracy.notes)}")
    figure = hil_results.record(_figures(accuracy)["agreement_with_float"])  # fails the test below the bound
    assert figure.low == AGREEMENT_MIN


def test_top1_accuracy_is_reported_with_its_confidence_interval(accuracy, hil_results):
    lo, hi = accuracy.ci95
    n = accuracy.images
    hil_results.extend(m for m in accuracy.measurements()
                       if m.name not in ("device_equals_host_int8", "agreement_with_float"))
    hil_results.data("confusion_matrix", accuracy.confusion())
    assert 0.0 <= lo <= accuracy.accuracy <= hi <= 1.0
    assert accuracy.correct == int(np.sum(accuracy.predictions == accuracy.labels))
    # The interval shrinks like 1 / sqrt(n): a width check catches an interval computed on the wrong count.
    assert hi - lo <= 2 * 1.96 * math.sqrt(0.25 / n) + 1e-9
    assert accuracy.median_cycles()["total"] > 0
    assert all(m.provenance == ("emulated" if accuracy.target in EMULATED_TARGETS else "measured")
               for m in accuracy.measurements())
