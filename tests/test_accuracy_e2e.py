"""`hil accuracy` and the HIL accuracy tests end to end, on the host and QEMU targets: a tiny AgileNN trained for
a few steps on synthetic data and exported (as in tests/test_export.py), run on the committed CIFAR-10 subset
(its 32x32x3 images fit the tiny model's input) through the firmware's INFER_OFFLOAD, the remote-model server
and the float pipeline.

The tiny model is no classifier, so its accuracy says nothing; what is checked: the device equals the host int8
execution on every image, the combined prediction equals an independent recomputation (TFLite Micro +
remote.keras + alpha) and the export card's numbers, and every disagreement is caught and fails the command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hil import paths
from hil.accuracy.job import AccuracyResult, HostStep, compare
from hil.cli import main
from hil.offload.codec import encode_payload

# Inside Keras' model.save / predict with NumPy 2; not this project's code.
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.timeout(300)]

IMAGES = 100  # of the committed subset: 10 per class
SUMMARY = re.compile(
    r"^accuracy (?P<acc>[01]\.\d{3}) \[(?P<lo>[01]\.\d{3}), (?P<hi>[01]\.\d{3})\] on (?P<n>\d+) images, agreement "
    r"with float (?P<agree>[01]\.\d{3}), mean payload (?P<payload>\d+\.\d) B, device == host int8 on "
    r"(?P<matched>\d+)/(?P=n) \((?P<target>\w+)\)$"
)
TARGETS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    pytest.importorskip("tensorflow")
    from test_export import tiny_config, write_npz  # the same tiny run as the export tests

    from hil.export.agilenn import export_agilenn
    from hil.train.trainer import train

    root = tmp_path_factory.mktemp("accuracy")
    npz = write_npz(root)
    assert train(tiny_config(npz), root / "run", progress=False).complete
    card = export_agilenn(root / "run", root / "tiny-agilenn", name="tiny-agilenn")
    return SimpleNamespace(root=root, npz=npz, model=root / "tiny-agilenn", card=card)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    rc = main(["accuracy", "--quiet", *args])
    captured = capsys.readouterr()
    return rc, captured.out.strip().splitlines(), captured.err


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    return tmp_path / "reports"


@pytest.mark.tf
@pytest.mark.parametrize("target", TARGETS)
def test_accuracy_command_on_the_committed_subset(tiny, target, reports, capsys):
    rc, out, err = _run(["--target", target, "--model", str(tiny.model), "--images", str(IMAGES)], capsys)
    assert rc == 0, err
    m = SUMMARY.match(out[-1])
    assert m, out[-1]
    assert (m["n"], m["matched"], m["target"]) == (str(IMAGES), str(IMAGES), target)
    report = json.loads((reports / "latest" / f"accuracy-{target}.json").read_text())
    assert report["ok"] and report["summary"] == out[-1] and report["images"] == IMAGES
    assert report["class_counts"] == [IMAGES // 10] * 10
    assert "test-subset-500.npz" in report["images_source"] and report["mismatches"] == []
    assert report["provenance"].startswith("emulated")
    assert report["input_quantization"]["uint8_minus_128"] and report["input_quantization"]["zero_point"] == -128
    assert set(report["cycles_median"]) == {"extractor", "local_nn", "compress", "total"}
    assert report["float_pipeline"].startswith("float Keras pipeline") and "device_float.keras" in err

    # The combined predictions, recomputed independently from the host int8 model and the Remote NN: TFLM's
    # outputs, the lookup table, centroid values, remote.keras, alpha.
    import keras

    from hil.model.reference import TflmReference

    meta = json.loads((tiny.model / "agilenn.json").read_text())
    subset = np.load(paths.FIXTURES / "cifar10" / "test-subset-500.npz")
    x, y = subset["x"][:IMAGES], subset["y"][:IMAGES]
    ref = TflmReference(tiny.model / "model.tflite")
    outs = [ref.run([(img.astype(np.int16) - 128).astype(np.int8)[None]]) for img in x]
    lo = meta["outputs"][0]
    local = np.float32(lo["scale"]) * (np.stack([o[0][0] for o in outs]).astype(np.float32) - lo["zero_point"])
    codes = np.asarray(meta["int8_to_code"])[np.stack([o[1][0] for o in outs]).astype(np.int16) + 128]
    remote = keras.models.load_model(tiny.model / "remote.keras").predict(
        np.asarray(meta["centroids"], np.float32)[codes], verbose=0)
    a = np.float32(meta["alpha"])
    pred = np.argmax(a * local + (1 - a) * remote, -1)
    assert [r["device"] for r in report["per_image"]] == pred.tolist()
    assert [r["label"] for r in report["per_image"]] == y.tolist()
    assert float(m["acc"]) == pytest.approx(np.mean(pred == y), abs=5e-4)
    payloads = [len(encode_payload(c.reshape(-1), meta["bits_per_value"])) for c in codes]
    assert [r["payload_bytes"] for r in report["per_image"]] == payloads


@pytest.mark.tf
def test_accuracy_on_the_models_own_test_set_equals_the_export_card(tiny, reports, capsys):
    """--images all --data: the whole test set the export evaluated; the device + server path gives exactly the
    card's int8 accuracy (TFLM + remote.keras at export time) and the float pipeline its float accuracy."""
    rc, out, err = _run(["--target", "host", "--model", str(tiny.model), "--images", "all", "--data",
                         str(tiny.npz)], capsys)
    assert rc == 0, err
    report = json.loads((reports / "latest" / "accuracy-host.json").read_text())
    acc = tiny.card["accuracy"]
    assert report["images"] == acc["samples"]
    assert report["accuracy"]["combined"] == acc["combined_int8"]
    assert report["accuracy"]["combined_ci95"] == pytest.approx(acc["combined_int8_ci95"])
    assert report["accuracy"]["local_only_int8"] == acc["local_only_int8"]
    assert report["accuracy"]["remote_only"] == acc["remote_only_int8"]
    assert report["accuracy"]["float_pipeline"] == acc["combined_float"]
    assert report["agreement_with_float"] == pytest.approx(acc["int8_float_agreement"])
    by_part = report["agreement_by_part"]
    assert set(by_part) == {"int8_local_logits_only", "int8_codes_only"}
    assert all(0.0 <= v <= 1.0 for v in by_part.values())


@pytest.mark.tf
def test_a_device_that_differs_from_host_int8_fails_the_command(tiny, reports, capsys, monkeypatch):
    """One image whose host int8 local logits differ by one step: exit 1, counted and named."""
    from hil.accuracy import job

    real_run = job.HostInt8.run
    calls = {"n": 0}

    def perturbed(self: job.HostInt8, x: np.ndarray) -> HostStep:
        step = real_run(self, x)
        calls["n"] += 1
        if calls["n"] == 4:  # image 3
            local = step.local.copy()
            local.flat[0] = np.int8(local.flat[0] + (1 if local.flat[0] < 127 else -1))
            return HostStep(local, step.codes, step.payload)
        return step

    monkeypatch.setattr(job.HostInt8, "run", perturbed)
    rc, out, err = _run(["--target", "host", "--model", str(tiny.model), "--images", "20"], capsys)
    assert rc == 1
    assert out[-1].endswith("device == host int8 on 19/20 (host)")
    assert "image 3 (test index" in err and "local logits: 1 of 10 values differ" in err
    report = json.loads((reports / "latest" / "accuracy-host.json").read_text())
    assert not report["ok"] and [m["image"] for m in report["mismatches"]] == [3]


@pytest.mark.tf
def test_a_running_server_is_used_and_a_dead_one_is_a_named_server_error(tiny, reports, capsys):
    from hil.server.remote_model import RemoteModel
    from hil.server.service import RemoteServer, ServerConfig

    server = RemoteServer([RemoteModel.load(tiny.model)], ServerConfig(port=0)).start()
    try:
        host, port = server.address
        rc, out, err = _run(["--target", "host", "--model", str(tiny.model), "--images", "10",
                             "--hil-server", f"{host}:{port}"], capsys)
        assert rc == 0, err
        assert f"on {host}:{port}\n" in err and "in-process" not in err
        assert server.stats().requests >= 10
    finally:
        server.close()
    rc, _out, err = _run(["--target", "host", "--model", str(tiny.model), "--images", "10",
                          "--hil-server", f"{host}:{port}", "--timeout", "2"], capsys)
    assert rc == 5, err  # EXIT_SERVER
    assert f"server error: remote server {host}:{port}: cannot connect (Connection refused)" in err
    assert "hil serve" in err and "Traceback" not in err


@pytest.mark.tf
def test_an_export_without_device_float_keras_still_checks_the_device(tiny, tmp_path, reports, capsys):
    """An export from before device_float.keras (and without its training run here): everything but the
    agreement is checked, and the summary says n/a."""
    import shutil

    old = tmp_path / "old-export"
    shutil.copytree(tiny.model, old, ignore=shutil.ignore_patterns("device_float.keras"))
    rc, out, err = _run(["--target", "host", "--model", str(old), "--images", "10"], capsys)
    assert rc == 0, err
    assert "agreement with float n/a" in out[-1] and out[-1].endswith("device == host int8 on 10/10 (host)")
    report = json.loads((reports / "latest" / "accuracy-host.json").read_text())
    assert report["agreement_with_float"] is None and "no device_float.keras" in report["notes"][0]


def test_usage_errors(capsys, reports):
    rc, _out, err = _run(["--target", "host", "--model", str(paths.SYNTHETIC_MODEL)], capsys)
    assert rc == 2 and "has no agilenn.json" in err
    for bad in (["--images", "0"], ["--images", "many"], ["--hil-server", "nohost"]):
        with pytest.raises(SystemExit) as exc:
            main(["accuracy", *bad])
        assert exc.value.code == 2, bad


def test_compare_names_each_difference():
    codes = np.array([0, 1, 2, 3], np.uint8)
    host = HostStep(np.array([[1, 2, 3]], np.int8), codes, encode_payload(codes, 3))
    assert compare(host.local, codes, host.payload, host) == []
    problems = compare(np.array([[1, 2, 5]], np.int8), np.array([0, 1, 2, 2], np.uint8), b"\x01\x00", host)
    assert problems == ["local logits: 1 of 3 values differ (max |diff| 2)", "codes: 1 of 4 differ",
                        f"payload bytes differ (2 B vs host {len(host.payload)} B)"]


def test_split_agreement_says_which_side_of_the_split_disagrees():
    """Image 0: the device's int8 local logits flip it; image 1: its codes (remote logits) do; image 2: no remote
    logits (invalid payload), a disagreement of the codes; image 3 agrees either way."""
    from hil.accuracy.job import AgileSpec, FloatLogits, split_agreement
    from hil.agilenn.quant import Quant
    from hil.offload.value_codes import ValueCodes

    spec = AgileSpec(model_dir=Path("."), name="m", num_classes=2, alpha=0.5, centroids=np.zeros(2, np.float32),
                     bits=1, value_codes=ValueCodes("int8", table=np.zeros(256, np.uint8)), local_index=0,
                     remote_index=1, local_quant=Quant(0.5, 0), remote_shape=(1, 1, 1, 1))
    local_f = np.array([[1.0, 0.0]] * 4, np.float32)
    remote_f = np.array([[1.0, 0.0]] * 4, np.float32)
    flt = FloatLogits(local_f, remote_f, 0.5 * local_f + 0.5 * remote_f)  # class 0 everywhere
    local_q = np.array([[0, 12], [2, 0], [2, 0], [2, 0]], np.int8)  # x 0.5: image 0's (0, 6) outweighs the remote
    remote_d = np.array([[1.0, 0.0], [0.0, 9.0], [np.nan, np.nan], [1.0, 0.0]], np.float32)
    parts = split_agreement(spec, local_q, remote_d, flt)
    assert parts == {"int8_local_logits_only": 0.75, "int8_codes_only": 0.5}


def test_result_figures():
    y = np.array([0, 1, 2, 3])
    combined = np.eye(4, dtype=np.float32)[[0, 1, 0, 3]]
    combined[3] = np.nan  # no remote logits: a wrong prediction
    result = AccuracyResult(
        target="host", provenance="emulated", model="m", model_sha256="0" * 64, images_source="s",
        float_pipeline=None, clock_hz=1, labels=y, test_index=np.arange(4), local_q=np.zeros((4, 4), np.int8),
        remote=combined, combined=combined, float_logits=None, payload_bytes=[10, 20, 30, 40],
        cycles=[{"extractor": 5, "local_nn": 1, "compress": 2, "total": t} for t in (8, 9, 10, 11)], server_us=[],
        host_match=[True, True, True, False], mismatches=[], wall_s=0.0,
    )
    assert result.predictions.tolist() == [0, 1, 0, -1]
    assert (result.correct, result.matched, result.ok) == (2, 3, False)
    assert result.median_cycles() == {"extractor": 5.0, "local_nn": 1.0, "compress": 2.0, "total": 9.5}
    assert result.summary_line() == ("accuracy 0.500 [0.150, 0.850] on 4 images, agreement with float n/a, mean "
                                     "payload 25.0 B, device == host int8 on 3/4 (host)")
    json.dumps(result.to_json(), allow_nan=False)  # a report is valid JSON even with a failed image


# ---------------------------------------------------------------------------------------------------------
# the HIL suite's accuracy tests, through the plugin, as a lab would run them
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.tf
def test_hil_accuracy_tests_through_the_plugin(tiny, pytester):
    source = (paths.SUITE / "test_accuracy.py").read_text()
    pytester.makepyfile(test_inner=source)
    out = pytester.path / "out"
    result = pytester.runpytest("--hil-target", "host", "--hil-model", str(tiny.model), "--hil-images", "50",
                                "--hil-report-dir", str(out), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    results = json.loads((out / "latest" / "results.json").read_text())
    names = {m["name"]: m for m in results["metrics"]}
    assert names["device_equals_host_int8"]["value"] == 50 and names["device_equals_host_int8"]["passed"]
    assert names["agreement_with_float"]["low"] == 0.99 and names["agreement_with_float"]["passed"]
    assert names["accuracy_top1_ci95_low"]["value"] <= names["accuracy_top1"]["value"]
    assert names["accuracy_top1"]["provenance"] == "emulated"
    assert json.loads((out / "latest" / "accuracy-host.json").read_text())["images"] == 50
    confusion = results["data"]["confusion_matrix"][-1]["value"]["matrix"]
    assert sum(map(sum, confusion)) == 50

    # --hil-images all: the whole test set of --hil-data (here the tiny model's own 32 images), and the
    # count-based tests get that many too.
    pytester.makepyfile(test_count="def test_count(hil_images, hil_dataset):\n"
                                   "    assert hil_images == len(hil_dataset) == 32\n")
    result = pytester.runpytest("--hil-target", "host", "--hil-model", str(tiny.model), "--hil-images", "all",
                                "--hil-data", str(tiny.npz), "--hil-report-dir", str(out), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)

    # A host int8 execution that differs on image 2: the equality test fails and names the image.
    pytester.makeconftest(PERTURB_IMAGE_2)
    result = pytester.runpytest("--hil-target", "host", "--hil-model", str(tiny.model), "--hil-images", "10",
                                "--hil-report-dir", str(out), "-p", "no:cacheprovider", "test_inner.py")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*device_equals_host_int8 = 9 images*image 2 (test index *): local logits: 1 of 10*",
                                 "*FAILED*test_device_offload_step_equals_host_int8_on_every_image*"])


PERTURB_IMAGE_2 = """
import numpy as np
import pytest

from hil.accuracy import job


@pytest.fixture(autouse=True, scope="session")
def perturbed_host():
    real_run, calls = job.HostInt8.run, []

    def run(self, x):
        step = real_run(self, x)
        calls.append(1)
        if len(calls) == 3:
            local = step.local.copy()
            local.flat[0] = np.int8(local.flat[0] + (1 if local.flat[0] < 127 else -1))
            return job.HostStep(local, step.codes, step.payload)
        return step

    job.HostInt8.run = run
    yield
    job.HostInt8.run = real_run
"""


def test_hil_images_accepts_all_and_rejects_words(pytester):
    pytester.makepyfile(test_inner="def test_x(hil_images):\n    assert hil_images == 7\n")
    pytester.runpytest("--hil-images", "7").assert_outcomes(passed=1)
    result = pytester.runpytest("--hil-images", "many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*hil-images*'many' is not a whole number or 'all'*"])
    pytester.makepyfile(test_inner="def test_x(hil_dataset):\n    assert len(hil_dataset) == 500\n")
    pytester.runpytest().assert_outcomes(passed=1)  # the default: the whole committed subset


# --------------------------------------------------------------------------------------------------------
# The same tiny export re-quantized as 16x8 (hil export --from-model ... --activations int16)

SUMMARY_16X8 = re.compile(SUMMARY.pattern.replace("host int8", "host 16x8"))


@pytest.fixture(scope="module")
def tiny16(tiny) -> SimpleNamespace:
    out = tiny.root / "tiny-agilenn-a16"
    rc = main(["export", "--from-model", str(tiny.model), "--activations", "int16", "--out", str(out),
               "--data", str(tiny.npz)])
    assert rc == 0
    return SimpleNamespace(model=out, card=json.loads((out / "card.json").read_text()))


@pytest.mark.tf
def test_16x8_export_keeps_the_float_network_and_maps_int16_values_to_codes(tiny, tiny16):
    from hil.export.cards import load_card
    from hil.offload.value_codes import ValueCodes, nearest_codes

    card = load_card(tiny16.model)  # checks every artifact's sha256
    src, meta = json.loads((tiny.model / "agilenn.json").read_text()), json.loads(
        (tiny16.model / "agilenn.json").read_text())
    for f in ("device_float.keras", "remote.keras"):
        assert (tiny16.model / f).read_bytes() == (tiny.model / f).read_bytes()
    assert {k: meta[k] for k in ("centroids", "alpha", "k", "channel_split")} == {
        k: src[k] for k in ("centroids", "alpha", "k", "channel_split")}
    assert "int8_to_code" not in meta and meta["derived_from"]["model"] == src["name"]
    assert meta["input"]["dtype"] == "int16" and meta["input"]["zero_point"] == 0
    assert card["device"]["activations"] == "int16" and card["skewness"] == tiny.card["skewness"]
    # The runs give, for every int16 value, the nearest centroid of its dequantized value.
    q = np.arange(-32768, 32768)
    remote = meta["outputs"][1]
    assert np.array_equal(ValueCodes.of_export(meta).codes(q), nearest_codes(meta["centroids"], remote["scale"], 0, q))
    c_source = (tiny16.model / "hil_offload.c").read_text()
    assert ".value_dtype = 2" in c_source and "int16_run_start" in c_source


@pytest.mark.tf
def test_16x8_export_carries_the_sources_finetune_record_and_takes_limits(tiny, tiny16, tmp_path, capsys):
    """The 16x8 card is a model's only card when the 16x8 part is the one committed: it keeps the source's
    server_finetune and limits, and --limits FILE replaces them (and is named in the export command)."""
    assert "server_finetune" in tiny16.card and tiny16.card["server_finetune"] == tiny.card.get("server_finetune")
    assert "limits" not in tiny16.card
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = tmp_path / "a16-limits"
    assert main(["export", "--from-model", str(tiny.model), "--activations", "int16", "--out", str(out),
                 "--data", str(tiny.npz), "--limits", str(bad)]) == 2
    assert "must hold a JSON object" in capsys.readouterr().err and not out.exists()
    limits = {"targets_missed": "combined below 88%", "what_limited_it": ["tiny synthetic data"],
              "next_steps": "more data"}
    good = tmp_path / "limits.json"
    good.write_text(json.dumps(limits))
    assert main(["export", "--from-model", str(tiny.model), "--activations", "int16", "--out", str(out),
                 "--data", str(tiny.npz), "--limits", str(good)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["limits"] == limits and card["export"]["command"].endswith(f"--limits {good.as_posix()}")
    readme = (out / "README.md").read_text()
    assert "## What limited it" in readme and "- tiny synthetic data" in readme


@pytest.mark.tf
@pytest.mark.parametrize("target", TARGETS)
def test_16x8_accuracy_command_device_equals_host(tiny16, target, reports, capsys):
    """The firmware's int16 path (16x8 kernels, int16 -> code runs, compression) equals TFLite Micro on the
    16x8 model.tflite + agilenn.json's runs on every image; predictions recomputed independently."""
    import keras

    from hil.model.reference import TflmReference
    from hil.offload.value_codes import nearest_codes

    rc, out, err = _run(["--target", target, "--model", str(tiny16.model), "--images", "30"], capsys)
    assert rc == 0, err
    m = SUMMARY_16X8.match(out[-1])
    assert m and (m["n"], m["matched"], m["target"]) == ("30", "30", target), out[-1]
    report = json.loads((reports / "latest" / f"accuracy-{target}.json").read_text())
    assert report["device_part"] == "16x8" and not report["input_quantization"]["uint8_minus_128"]

    meta = json.loads((tiny16.model / "agilenn.json").read_text())
    x = np.load(paths.FIXTURES / "cifar10" / "test-subset-500.npz")["x"][:30]
    scale = meta["input"]["scale"]
    ref = TflmReference(tiny16.model / "model.tflite")
    q_in = np.clip(np.floor(x / 255.0 / scale + 0.5), -32768, 32767).astype(np.int16)
    outs = [ref.run([img[None]]) for img in q_in]
    lo, rem = meta["outputs"]
    local = np.float32(lo["scale"]) * np.stack([o[0][0] for o in outs]).astype(np.float32)
    values = np.stack([o[1][0] for o in outs]).reshape(-1)
    codes = nearest_codes(meta["centroids"], rem["scale"], 0, values).reshape(30, *rem["shape"][1:])
    remote = keras.models.load_model(tiny16.model / "remote.keras").predict(
        np.asarray(meta["centroids"], np.float32)[codes], verbose=0)
    a = np.float32(meta["alpha"])
    assert [r["device"] for r in report["per_image"]] == np.argmax(a * local + (1 - a) * remote, -1).tolist()
