"""AgileNN export end to end: a tiny training run on synthetic data, exported into a model directory whose int8
device part then runs bit-exact through the C core, with a card whose numbers can be recomputed from the files.
"""

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers_train import tiny_config

from hil.agilenn.quant import Quant
from hil.datasets import synthetic_dataset
from hil.export.agilenn import centroid_lookup
from hil.export.cards import load_card
from hil.stats import wilson_interval

# Inside Keras' model.save / predict with NumPy 2; not this project's code.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N_TRAIN, N_TEST = 64, 32
BIT_EXACT_IMAGES = 20


def write_npz(directory: Path) -> Path:
    data = synthetic_dataset(N_TRAIN, N_TEST, seed=1)
    path = directory / "data.npz"
    # as the project's CIFAR-10 copy: a mask of the test images that are the official bytes (every third here)
    np.savez_compressed(path, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test,
                        exact_test=np.arange(N_TEST) % 3 == 0)
    return path




@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from hil.export.agilenn import export_agilenn
    from hil.train.trainer import train

    root = tmp_path_factory.mktemp("export")
    npz = write_npz(root)
    run = root / "run"
    result = train(tiny_config(npz), run, progress=False)
    assert result.complete
    started = time.perf_counter()
    # data=None: the exporter loads config.dataset itself, as `hil export` does.
    card = export_agilenn(run, root / "tiny-agilenn", name="tiny-agilenn")
    seconds = time.perf_counter() - started
    with np.load(npz) as f:
        data = {k: f[k] for k in f.files}
    return SimpleNamespace(root=root, run=run, out=root / "tiny-agilenn", card=card, data=data, seconds=seconds)


@pytest.fixture(scope="module")
def host_runner(exported, tmp_path_factory):
    from hil.model.hostrun import build_host_runner

    return build_host_runner(exported.out, tmp_path_factory.mktemp("host-build"))


def _meta(exported) -> dict:
    return json.loads((exported.out / "agilenn.json").read_text())


def _device_inputs(images: np.ndarray) -> list[list[np.ndarray]]:
    # What the firmware gets for a uint8 image: uint8 - 128 (the card says the input is exactly that).
    return [[(img.astype(np.int16) - 128).astype(np.int8)[None]] for img in images]


# ---------------------------------------------------------------------------------------------------------
# no TensorFlow
# ---------------------------------------------------------------------------------------------------------


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # non-degenerate at 0, unlike p +- z*se
    lo, hi = wilson_interval(9400, 10000)
    assert lo < 0.94 < hi and hi - lo < 0.01


def test_centroid_lookup_covers_the_relu6_range_and_follows_centroid_order():
    q = Quant(6 / 255, -128)  # the ReLU6 range on the full int8 grid
    centroids = [(i + 0.5) * 0.75 for i in range(8)]
    table = centroid_lookup(centroids, q)
    assert table.shape == (256,) and set(table.tolist()) == set(range(8))
    values = q.dequantize(np.arange(-128, 128))
    # Codes change exactly at the midpoints between neighbouring centroids.
    for i, (a, b) in enumerate(zip(centroids, centroids[1:], strict=False)):
        mid = (a + b) / 2
        assert np.all(table[values < mid - 1e-4] <= i) and np.all(table[values > mid + 1e-4] >= i + 1)
    # The table returns indices into the centroid list, whatever its order.
    perm = np.random.default_rng(0).permutation(8)
    shuffled = centroid_lookup([centroids[p] for p in perm], q)
    np.testing.assert_array_equal(perm[shuffled], table)


# ---------------------------------------------------------------------------------------------------------
# the exported tiny run
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_card_has_the_required_keys_and_valid_hashes(exported):
    card = load_card(exported.out)  # raises on a missing key or a wrong sha256
    assert card == exported.card
    assert card["name"] == "tiny-agilenn" and card["kind"] == "agilenn"
    assert set(card["artifacts"]) == {
        "model.tflite", "hil_model.c", "model.json", "hil_offload.c", "remote.keras", "device_float.keras",
        "agilenn.json",
    }  # fmt: skip
    acc = card["accuracy"]
    for key in ("local_only", "remote_only", "combined_float", "combined_int8"):
        assert 0.0 <= acc[key] <= 1.0, key
    lo, hi = acc["combined_int8_ci95"]
    assert lo <= acc["combined_int8"] <= hi
    assert acc["samples"] == N_TEST and acc["full_test_set"]
    assert "TensorFlow Lite Micro" in acc["int8_runtime"]
    evaluation = json.loads((exported.run / "result.json").read_text())["evaluation"]
    assert card["skewness"] == evaluation["skewness"] and 0.0 <= card["skewness"] <= 1.0
    # The same float pipeline on the same test set as the run's own evaluation (one image of slack for float
    # ties broken differently between the two runs of the graph).
    assert abs(acc["combined_float"] - evaluation["combined_accuracy"]) <= 1 / N_TEST
    assert card["payload_bits"] == 16 * 16 * 13 * 3
    summary = json.loads((exported.out / "model.json").read_text())
    for key in ("weights_bytes", "arena_bytes", "macs"):
        assert card["device"][key] == summary[key] > 0, key
    assert card["params"]["device"] > 0 and card["remote"]["macs"] > 0
    assert card["training"]["epochs"] == {"reference": 1, "joint": 1} and card["training"]["hardware"]
    assert card["dataset"].startswith("data.npz (npz, sha256 ")
    assert exported.seconds < 60


@pytest.mark.tf
def test_device_part_is_full_integer_int8_with_the_fixed_output_order(exported):
    from hil.model.artifacts import resolve_model
    from hil.model.reference import TflmReference

    model = resolve_model(exported.out)  # what the firmware build and the plugin load
    ref = TflmReference(model.tflite_bytes)
    [inp] = ref.inputs
    assert inp.dtype == np.int8 and inp.shape == (1, 32, 32, 3)
    assert (inp.scale, inp.zero_point) == (np.float32(1 / 255).item(), -128)  # int8 = uint8 - 128 exactly
    assert [(o.dtype, o.shape) for o in ref.outputs] == [(np.int8, (1, 10)), (np.int8, (1, 16, 16, 13))]
    meta = _meta(exported)
    assert [o["name"] for o in meta["outputs"]] == ["local_logits", "remote_features"]
    assert meta["input"]["from_uint8"] == "q = uint8 - 128"
    remote = meta["outputs"][1]
    assert (remote["scale"], remote["zero_point"]) == (ref.outputs[1].scale, ref.outputs[1].zero_point)
    assert meta["k"] == 3 and meta["channel_split"] == {
        "local": [0, 3], "remote": [3, 16],
        "local_original_channels": meta["channel_permutation"][:3],
        "remote_original_channels": meta["channel_permutation"][3:],
    }  # fmt: skip
    assert sorted(meta["channel_permutation"]) == list(range(16))


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_device_part_runs_bit_exact_through_the_c_core(exported, host_runner):
    from hil.model.hostrun import run_host_many
    from hil.model.reference import TflmReference

    ref = TflmReference((exported.out / "model.tflite").read_bytes())
    input_sets = _device_inputs(exported.data["x_test"][:BIT_EXACT_IMAGES])
    got_all = run_host_many(host_runner, input_sets)
    for i, (inputs, got) in enumerate(zip(input_sets, got_all, strict=True)):
        want = ref.run(inputs)
        for j, (g, w) in enumerate(zip(got, want, strict=True)):
            assert np.array_equal(g.reshape(w.shape), w), f"image {i} output {j}"


@pytest.mark.tf
def test_lookup_maps_every_int8_value_to_the_nearest_centroid(exported):
    meta = _meta(exported)
    out = meta["outputs"][1]
    table = np.asarray(meta["int8_to_code"])
    centroids = np.asarray(meta["centroids"], np.float64)
    assert table.shape == (256,) and len(centroids) == 2 ** meta["bits_per_value"]
    # Independent recomputation in float64: the chosen centroid is a nearest one (ties only up to rounding).
    values = out["scale"] * (np.arange(-128, 128) - out["zero_point"])
    dist = np.abs(values[:, None] - centroids[None, :])
    assert np.all(dist[np.arange(256), table] <= dist.min(axis=1) + 1e-6)


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_combined_int8_agrees_with_a_recomputation_from_the_exported_files(exported, host_runner):
    """Only the files a server and a device would have: the C core's int8 outputs, agilenn.json and
    remote.keras. The C core is bit-exact with TFLM, so the accuracy must equal the card's exactly."""
    import keras

    from hil.model.hostrun import run_host_many

    meta = _meta(exported)
    x, y = exported.data["x_test"], exported.data["y_test"]
    outputs = run_host_many(host_runner, _device_inputs(x))
    local_q = np.stack([o[0].reshape(-1) for o in outputs])
    remote_q = np.stack([o[1].reshape(meta["outputs"][1]["shape"][1:]) for o in outputs])
    lo, ro = meta["outputs"]
    local = np.float32(lo["scale"]) * (local_q.astype(np.float32) - lo["zero_point"])
    codes = np.asarray(meta["int8_to_code"])[remote_q.astype(np.int16) + 128]
    values = np.asarray(meta["centroids"], np.float32)[codes]
    remote = keras.models.load_model(exported.out / "remote.keras").predict(values, verbose=0)
    a = np.float32(meta["alpha"])
    combined = a * local + (1 - a) * remote
    acc = exported.card["accuracy"]
    assert np.mean(np.argmax(combined, -1) == y) == acc["combined_int8"]
    assert np.mean(np.argmax(local, -1) == y) == acc["local_only_int8"]
    assert np.mean(np.argmax(remote, -1) == y) == acc["remote_only_int8"]
    assert np.bincount(codes.reshape(-1), minlength=8).tolist() == exported.card["payload"]["code_histogram"]
    # the byte-exact images' figure (what the committed subset's accuracy is compared with), from the same outputs
    exact = np.arange(len(y)) % 3 == 0
    assert acc["byte_exact"]["samples"] == int(exact.sum())
    assert acc["byte_exact"]["combined_int8"] == np.mean(np.argmax(combined, -1)[exact] == y[exact])


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_exported_model_runs_in_the_host_firmware_on_uint8_images(exported, tmp_path, monkeypatch, capsys):
    """The whole device path as `hil check` drives it: firmware built for this model, uint8 test images
    quantized with the card's input parameters, every output bit-exact against TFLM."""
    from hil import paths
    from hil.cli import main

    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    np.savez(tmp_path / "images.npz", image=exported.data["x_test"][:10])
    rc = main(["check", "--target", "host", "--model", str(exported.out), "--inputs", str(tmp_path / "images.npz"),
               "--images", "10", "--quiet"])  # fmt: skip
    assert capsys.readouterr().out.strip().splitlines()[-1] == "bit-exact 10/10 on host"
    assert rc == 0


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_exported_model_offloads_in_the_host_firmware(exported, host_runner, tmp_path):
    """hil_offload.c of the export: the host firmware's INFER_OFFLOAD sends the local logits and the codes that
    agilenn.json's lookup table gives for the remote features, and finds the Local NN's ops for the cycle split."""
    from hil.firmware import build_firmware
    from hil.model.hostrun import run_host_many
    from hil.offload.codec import decode_payload
    from hil.offload.codegen import local_head_ops
    from hil.targets import get_target

    meta, summary = _meta(exported), json.loads((exported.out / "model.json").read_text())
    local_ops = local_head_ops(summary, meta["k"], 0)
    assert local_ops and [summary["ops"][i]["op"] for i in local_ops][0] == "STRIDED_SLICE"
    lut = np.asarray(meta["int8_to_code"], np.uint8)
    inputs = _device_inputs(exported.data["x_test"][:3])
    wants = run_host_many(host_runner, inputs)
    firmware = build_firmware("host", exported.out, tmp_path / "build")
    with get_target("host", firmware=firmware, log_dir=tmp_path / "logs") as target:
        client = target.open_client(timeout=10.0)
        try:
            for x, (local, remote) in zip(inputs, wants, strict=True):
                result = client.infer_offload(x)
                assert np.array_equal(result.local_logits, local)
                codes = decode_payload(result.payload, result.n_values, result.bits, max_output=remote.size)
                assert np.array_equal(codes, lut[remote.reshape(-1).astype(np.int16) + 128])
                assert result.cycles["local_nn"] > 0 and result.cycles["extractor"] > 0
        finally:
            client.close()


@pytest.mark.tf
def test_device_float_keras_is_the_float_pipeline_of_the_card(exported):
    """device_float.keras + agilenn.json's centroids (hard quantizer) + remote.keras + alpha, from the model
    directory alone, is the training run's float pipeline: same logits as TrainedAgileNN.forward, and the card's
    combined_float accuracy."""
    from hil.accuracy.job import AgileSpec, FloatPipeline
    from hil.export.agilenn import float_logits
    from hil.train.layers import load_trained

    pipeline = FloatPipeline.load(AgileSpec.load(exported.out))
    assert pipeline.origin.endswith("device_float.keras")
    x, y = exported.data["x_test"], exported.data["y_test"]
    got = pipeline.logits(x)
    want = float_logits(load_trained(exported.run), x, y)
    for key in ("local", "remote", "combined"):
        np.testing.assert_allclose(getattr(got, key), want[key], rtol=1e-4, atol=1e-4, err_msg=key)
    assert np.mean(np.argmax(got.combined, -1) == y) == exported.card["accuracy"]["combined_float"]


@pytest.mark.tf
def test_reordered_outputs_are_put_back_by_shape(exported):
    from hil.export.agilenn import order_outputs_by_shape, reorder_outputs
    from hil.model.reference import TflmReference

    tflite = (exported.out / "model.tflite").read_bytes()
    swapped = reorder_outputs(tflite, [1, 0])
    x = _device_inputs(exported.data["x_test"][:1])[0]
    want = TflmReference(tflite).run(x)
    got = TflmReference(swapped).run(x)
    assert [g.shape for g in got] == [(1, 16, 16, 13), (1, 10)]
    assert np.array_equal(got[0], want[1]) and np.array_equal(got[1], want[0])
    fixed = order_outputs_by_shape(swapped, [(1, 10), (1, 16, 16, 13)])
    assert all(np.array_equal(a, b) for a, b in zip(TflmReference(fixed).run(x), want, strict=True))


@pytest.mark.tf
def test_export_refuses_another_data_set_and_foreign_files(exported, tmp_path):
    from hil.export.agilenn import ExportError, export_agilenn

    other = synthetic_dataset(N_TRAIN, N_TEST, seed=7)
    with pytest.raises(ExportError, match="was trained on"):
        export_agilenn(exported.run, tmp_path / "a", name="a", data=other)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"notes\.txt"):
        export_agilenn(exported.run, tmp_path / "b", name="b")
    with pytest.raises(ExportError, match="not a finished training run"):
        export_agilenn(tmp_path, tmp_path / "c", name="c")


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_cli_export_with_a_test_limit(exported, tmp_path, capsys):
    from hil.cli import main

    out = tmp_path / "cli-model"
    assert main(["export", "--run-dir", str(exported.run), "--out", str(out), "--test-limit", "8"]) == 0
    assert str(out) in capsys.readouterr().out
    card = load_card(out)
    assert card["name"] == "cli-model" and card["accuracy"]["samples"] == 8
    assert not card["accuracy"]["full_test_set"] and "first" in card["accuracy"]["test_set"]
    # The device part is the same conversion of the same run: identical bytes.
    assert card["artifacts"]["model.tflite"] == exported.card["artifacts"]["model.tflite"]
    # Exporting again into the same directory replaces the export (its own files are not foreign).
    assert main(["export", "--run-dir", str(exported.run), "--out", str(out), "--test-limit", "4"]) == 0
    assert load_card(out)["accuracy"]["samples"] == 4
