"""Training pipeline end to end on tiny synthetic data: config, data loading, augmentation, all stages,
checkpoint/resume, metrics files, saved models and the device/server split."""

import json

import numpy as np
import pytest
from helpers_train import tiny_config

from hil.datasets import DatasetError, load_dataset, synthetic_dataset
from hil.train.config import ConfigError, TrainConfig

ALLOWED_TFLITE_OPS = {
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MEAN", "ADD", "MAX_POOL_2D",
    "STRIDED_SLICE", "RESHAPE", "PAD",
}  # fmt: skip


def write_npz(directory, n_train=64, n_test=32, hybrid=True):
    data = synthetic_dataset(n_train, n_test, seed=1)
    arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_test": data.x_test, "y_test": data.y_test}
    if hybrid:  # the project's copy marks which images are the real bytes
        arrays["exact_train"] = (np.arange(n_train) < 5).astype(np.uint8)
        arrays["exact_test"] = (np.arange(n_test) < 3).astype(np.uint8)
        (directory / "README.md").write_text("# CIFAR-10 (hybrid copy) for training and evaluation\n")
    path = directory / "data.npz"
    np.savez_compressed(path, **arrays)
    return path




# ---------------------------------------------------------------------------------------------------------
# config and data (no TensorFlow needed)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", [TrainConfig.cpu, TrainConfig.gpu])
def test_config_json_round_trip(preset, tmp_path):
    cfg = preset(notes="x", extra={"why": "test"}, lam_schedule=[[10, 0.5]])
    assert cfg.lam_schedule == ((10, 0.5),) and (cfg.lam_at(9), cfg.lam_at(10)) == (cfg.lam, 0.5)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert TrainConfig.from_json(tmp_path / "c.json") == cfg


def test_presets_share_the_architecture_and_differ_in_schedule():
    cpu, gpu = TrainConfig.cpu(), TrainConfig.gpu()
    shape = ("extractor", "local_fraction", "local_kind", "local_hidden", "remote_kind", "remote_plain_widths",
             "centroids", "quant_min_gap")
    assert [getattr(cpu, n) for n in shape] == [getattr(gpu, n) for n in shape]
    assert gpu.joint_epochs > cpu.joint_epochs and gpu.ig_train_steps > cpu.ig_train_steps
    assert (cpu.code_noise, gpu.code_noise) == (0.0, 1.0)  # the extra Remote NN view only where time allows


def test_default_recipe_payload_before_entropy_coding():
    # 16x16x16 features, 3 on the device, 13 sent at 3 bits: 1,248 bytes packed, 41% of the raw image; the
    # entropy coder and the rate term are what bring the payload under 1 KB (checked on the trained model).
    cfg = TrainConfig.cpu()
    assert (cfg.feature_size, cfg.feature_channels, cfg.k, cfg.bits_per_value) == (16, 16, 3, 3)
    assert cfg.payload_bits == 16 * 16 * 13 * 3
    assert cfg.describe()["payload_bytes"] == 1248 and cfg.raw_input_bytes == 3072
    assert cfg.reference_cotrain and cfg.ref_epochs == 0 and cfg.aux_weight > 0 and cfg.quant_min_gap > 0


@pytest.mark.parametrize(
    "overrides",
    [{"ig_eval_steps": 10}, {"rho": 1.5}, {"ig_train_rule": "simpson"},
     {"ig_train_steps": 1, "ig_train_rule": "trapezoid"}, {"ig_train_steps": 0},
     {"extractor": (("pool", 24, 3, 2),)}, {"local_fraction": 1.0}, {"margin_weight": -1.0},
     {"margin_delta": 0.0}, {"code_noise": -1.0}, {"code_noise_consistency": -0.5},
     {"lam_schedule": ((5, 0.5), (3, 0.2))}, {"lam_schedule": ((0, 0.5),)}, {"lam_schedule": ((5, 1.5),)},
     {"remote_kind": "resnet"}, {"reference_kind": "big"}, {"local_kind": "mlp"}, {"remote_plain_widths": ()},
     {"reference_pool": 3}, {"local_kind": "conv", "local_hidden": 0}, {"quant_min_gap": 1.0},
     {"rate_weight": -0.1}, {"ig_train_images": -1}],
)  # fmt: skip
def test_config_rejects_bad_values(overrides):
    with pytest.raises(ConfigError):
        TrainConfig.cpu(**overrides)


def test_config_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown"):
        TrainConfig.from_dict(TrainConfig.cpu().to_dict() | {"epochs": 3})


def test_npz_loader_reports_the_hybrid_copy(tmp_path):
    data = load_dataset(write_npz(tmp_path))
    assert data.x_train.dtype == np.uint8 and data.x_train.shape == (64, 32, 32, 3)
    assert data.y_train.dtype == np.int32 and data.num_classes == 10
    assert "hybrid CIFAR-10 copy" in data.provenance
    assert "5/64 train and 3/32 test images byte-exact" in data.provenance
    assert "README: CIFAR-10 (hybrid copy)" in data.provenance


def test_npz_loader_rejects_missing_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="lacks keys"):
        load_dataset(tmp_path / "bad.npz")
    with pytest.raises(DatasetError):
        load_dataset(tmp_path / "missing.npz")


def test_keras_cifar10_is_not_downloaded_when_downloads_are_off(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetError, match="downloads are disabled"):
        load_dataset("cifar10", allow_download=False)


# ---------------------------------------------------------------------------------------------------------
# TensorFlow parts
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.tf
def test_image_folder_loader(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for name in ("cat", "dog"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                (folder / f"{i}.png").write_bytes(tf.io.encode_png(img).numpy())
    data = load_dataset(tmp_path)
    assert data.x_train.shape == (6, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)
    assert data.class_names == ("cat", "dog")
    assert sorted(set(data.y_train.tolist())) == [0, 1]


@pytest.mark.tf
def test_augmentation_is_a_flip_plus_a_window_of_the_zero_padded_image():
    tf = pytest.importorskip("tensorflow")
    from hil.datasets import augment_batch

    images = np.random.default_rng(0).integers(1, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    out = augment_batch(tf.constant(images), tf.constant([7, 1], tf.int64)).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    shifted = 0
    for src, dst in zip(images, out, strict=True):
        candidates = []
        for img in (src, src[:, ::-1]):
            padded = np.pad(img, ((4, 4), (4, 4), (0, 0)))
            candidates += [(dy, dx) for dy in range(9) for dx in range(9)
                           if np.array_equal(padded[dy : dy + 32, dx : dx + 32], dst)]  # fmt: skip
        assert candidates, "output is not a flip + crop of the padded input"
        shifted += (4, 4) not in candidates
    assert shifted > 0  # the crops actually move
    again = augment_batch(tf.constant(images), tf.constant([7, 1], tf.int64)).numpy()
    np.testing.assert_array_equal(out, again)  # stateless seeds: reproducible on resume


@pytest.mark.tf
def test_pipeline_epochs_are_reproducible_and_differ():
    pytest.importorskip("tensorflow")
    from hil.datasets import TrainPipeline

    data = synthetic_dataset(64, 8)
    pipe = TrainPipeline(data.x_train, data.y_train, 16, input_size=48, seed=3)
    first = [(x.numpy(), y.numpy()) for x, y in pipe.epoch(0)]
    assert len(first) == pipe.steps_per_epoch == 4
    assert first[0][0].shape == (16, 48, 48, 3)  # resized to the model's input size
    assert first[0][0].min() >= 0.0 and first[0][0].max() <= 1.0
    again = [(x.numpy(), y.numpy()) for x, y in pipe.epoch(0)]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, again, strict=True))
    other = [y.numpy() for _, y in pipe.epoch(1)]
    assert not all(np.array_equal(a[1], b) for a, b in zip(first, other, strict=True))


@pytest.fixture(scope="module")
def tiny_trained():
    pytest.importorskip("tensorflow")
    from hil.train.layers import TrainedAgileNN

    return TrainedAgileNN.build(tiny_config("unused.npz"))


def _images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n, 32, 32, 3)).astype("float32")


@pytest.mark.tf
def test_channel_permutation_keeps_the_reference_function(tiny_trained):
    from hil.train.layers import TrainedAgileNN, permute_extractor_outputs, permute_reference_inputs

    t = TrainedAgileNN.build(tiny_trained.config)
    x = _images()
    features = t.extractor(x, training=False).numpy()
    logits = t.reference(features, training=False).numpy()
    perm = list(np.random.default_rng(1).permutation(t.config.feature_channels))
    permute_extractor_outputs(t.extractor, perm)
    permute_reference_inputs(t.reference, perm)
    new_features = t.extractor(x, training=False).numpy()
    np.testing.assert_allclose(new_features, features[..., perm], atol=1e-5)
    np.testing.assert_allclose(t.reference(new_features, training=False).numpy(), logits, atol=1e-4)


@pytest.mark.tf
def test_device_and_server_models_reproduce_the_training_graph(tiny_trained):
    import keras

    from hil.train.layers import device_keras_model, remote_keras_model

    t, x = tiny_trained, _images()
    k = t.config.k
    out = t.forward(x, training=False)
    device = device_keras_model(t)
    local, remote_channels = device(x)
    fs = t.config.feature_size
    assert local.shape == (4, 10) and remote_channels.shape == (4, fs, fs, t.config.feature_channels - k)
    np.testing.assert_allclose(local.numpy(), out["local"].numpy(), atol=1e-5)
    np.testing.assert_allclose(remote_channels.numpy(), out["features"].numpy()[..., k:], atol=1e-6)
    server = remote_keras_model(t)
    np.testing.assert_allclose(server(remote_channels).numpy(), out["remote"].numpy(), atol=1e-4)
    # the server may receive dequantized centroid values instead: same logits
    dequantized = t.quantizer(remote_channels, training=False)
    np.testing.assert_allclose(server(dequantized).numpy(), out["remote"].numpy(), atol=1e-4)
    allowed = (keras.layers.InputLayer, keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
               keras.layers.BatchNormalization, keras.layers.ReLU, keras.layers.GlobalAveragePooling2D,
               keras.layers.Dense)  # fmt: skip
    for part in (t.extractor, t.local):
        for layer in part.layers:
            if isinstance(layer, keras.layers.ReLU):
                assert layer.max_value in (None, 6.0), layer.name  # fuses as RELU / RELU6
            assert isinstance(layer, allowed), f"{layer.name}: {type(layer).__name__} is not export-friendly"


@pytest.mark.tf
def test_device_model_converts_to_int8_tflite_with_only_supported_ops(tiny_trained):
    tf = pytest.importorskip("tensorflow")
    from hil.train.layers import device_keras_model

    converter = tf.lite.TFLiteConverter.from_keras_model(device_keras_model(tiny_trained))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in _images(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    ops = {d["op_name"] for d in Interpreter(model_content=flatbuffer)._get_ops_details()}
    assert ops <= ALLOWED_TFLITE_OPS, ops - ALLOWED_TFLITE_OPS
    assert {"CONV_2D", "STRIDED_SLICE", "FULLY_CONNECTED"} <= ops


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.tf
@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside keras' model.save
def test_training_end_to_end_with_checkpoint_resume(tmp_path):
    keras = pytest.importorskip("keras")
    from hil.train.layers import load_trained
    from hil.train.trainer import RunDirError, train

    cfg = tiny_config(write_npz(tmp_path))
    run = tmp_path / "run"

    # Call 1: one epoch only (the reference stage), then pre-processing; stops before the joint stage.
    first = train(cfg, run, progress=False, stop_after_epochs=1)
    assert not first.complete
    state = json.loads((run / "state.json").read_text())
    assert (state["stage"], state["epoch"]) == ("joint", 0)
    assert sorted(state["permutation"]) == list(range(cfg.feature_channels))
    assert (run / state["checkpoint"]).with_suffix(".index").is_file()
    assert [r["stage"] for r in _records(run)] == ["reference", "preprocess"]

    # Call 2: no epochs allowed, so it only restores: the weights must be exactly those of call 1.
    paused = train(cfg, run, progress=False, stop_after_epochs=0)
    assert not paused.complete and paused.trained.permutation == first.trained.permutation
    for a, b in zip(first.trained.extractor.weights, paused.trained.extractor.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(first.trained.reference.weights, paused.trained.reference.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    # Call 3: resumes the joint stage and finishes.
    final = train(cfg, run, progress=False)
    assert final.complete
    # Joint training moved the extractor, and the co-trained reference NN with it (the recipe's default).
    assert cfg.reference_cotrain
    assert any(
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(paused.trained.reference.weights, final.trained.reference.weights, strict=True)
    )
    assert any(
        not np.array_equal(a.numpy(), b.numpy())
        for a, b in zip(paused.trained.extractor.weights, final.trained.extractor.weights, strict=True)
    )
    records = _records(run)
    assert [r["stage"] for r in records] == ["reference", "preprocess", "joint", "final"]
    joint = records[2]
    for key in ("train_loss", "train_skew_loss", "train_disorder_loss", "train_skewness", "sec_per_step",
                "test_local_acc", "test_remote_acc", "test_combined_acc", "alpha", "test_skewness_ig4"):  # fmt: skip
        assert key in joint, key
    assert 0.0 <= joint["test_code_entropy_bits"] <= 3.0  # 8 centroids: at most 3 bits per value
    assert np.isfinite(joint["train_loss"]) and 0.0 < joint["alpha"] < 1.0

    ev = final.evaluation
    assert ev["ig_steps"] >= 20 and ev["payload_bytes"] == cfg.payload_bits / 8 and ev["raw_input_bytes"] == 3072
    for key in ("local_accuracy", "remote_accuracy", "combined_accuracy"):
        assert 0.0 <= ev[key] <= 1.0
    assert ev["device_weight_bytes"] <= 150 * 1024 and ev["device_arena_bytes"] <= 200 * 1024
    assert "hybrid CIFAR-10 copy" in final.provenance

    sessions = json.loads((run / "hardware.json").read_text())
    assert len(sessions) == 3 and sessions[1]["resumed_from"] == "joint epoch 0"
    assert sessions[0]["hardware"]["accelerator"] and sessions[0]["preset"] == "cpu"
    for name in ("extractor", "reference", "local_nn", "remote_nn", "device", "server"):
        assert (run / f"{name}.keras").is_file(), name
    meta = json.loads((run / "agilenn.json").read_text())
    assert meta["k"] == cfg.k and len(meta["centroids"]) == 8 and 0 < meta["alpha"] < 1
    assert json.loads((run / "result.json").read_text())["evaluation"] == ev

    # The saved parts reload into the same function: that of the trained network with its Remote NN computing in
    # float32 (the preset trains the Remote NN in bfloat16 and saves its float32 twin; test_train_recipe.py
    # checks the twin against the bfloat16 network).
    from dataclasses import replace

    from hil.train.layers import float32_twin

    loaded = load_trained(run)
    x = _images()
    trained = final.trained
    trained = replace(trained, remote=float32_twin(cfg, trained.remote, cfg.feature_size, cfg.remote_channels))
    expected = trained.forward(x, training=False)
    got = loaded.forward(x, training=False)
    for key in ("local", "remote", "combined"):
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-4)
    # device.keras / server.keras load without custom_objects and give the same outputs.
    device = keras.models.load_model(run / "device.keras")
    local, remote_channels = device(x)
    np.testing.assert_allclose(local.numpy(), expected["local"].numpy(), atol=1e-4)
    server = keras.models.load_model(run / "server.keras")
    np.testing.assert_allclose(server(remote_channels).numpy(), expected["remote"].numpy(), atol=1e-4)

    # A finished run is returned as is; another configuration in the same directory is refused.
    again = train(cfg, run, progress=False)
    assert again.complete and len(_records(run)) == 4
    with pytest.raises(RunDirError, match="lam"):
        train(tiny_config(cfg.dataset, lam=0.3), run, progress=False)


@pytest.mark.tf
def test_device_footprint_of_the_default_extractor_by_hand(tiny_trained):
    from hil.train.evaluate import device_footprint

    # extractor conv 32 / separable 64 / separable 64 / separable 16, then the Local NN on k = 3 channels: 3x3
    # conv of 4, stride-2 3x3 conv of 8, GAP, Dense 10
    kernels = (3 * 3 * 3 * 32 + (9 * 32 + 32 * 64) + (9 * 64 + 64 * 64) + (9 * 64 + 64 * 16)
               + 9 * 3 * 4 + 9 * 4 * 8 + 8 * 10)
    biases = 4 * (32 + (32 + 64) + (64 + 64) + (64 + 16) + 4 + 8 + 10)  # BN folded: one int32 per output channel
    footprint = device_footprint(tiny_trained)
    assert footprint["weight_bytes"] == kernels + biases
    # the largest in + out: a depthwise conv of the separable 64 layers, 64 channels in and out at 16x16
    assert footprint["arena_bytes"] == 16 * 16 * 64 + 16 * 16 * 64


@pytest.mark.parametrize(
    ("overrides", "term", "weight"),
    [({"margin_weight": 2.0, "margin_delta": 0.5}, "margin_loss", 2.0),
     ({"code_noise": 3.0, "code_noise_consistency": 5.0}, "code_noise_kl", 5.0)],
)
def test_joint_training_with_an_optional_loss_term_logs_it(tmp_path, overrides, term, weight):
    pytest.importorskip("tensorflow")
    from hil.train.trainer import train

    cfg = tiny_config(write_npz(tmp_path), **overrides)
    assert train(cfg, tmp_path / "run", progress=False).complete
    joint = [r for r in _records(tmp_path / "run") if r["stage"] == "joint"]
    assert joint and all(r[f"train_{term}"] > 0.0 for r in joint)
    for r in joint:  # the logged loss is the one trained on: the term enters with its weight
        lam = r["lam"]
        expected = lam * r["train_ce"] + (1 - lam) * (r["train_skew_loss"] + r["train_disorder_loss"])
        expected += cfg.aux_weight * r["train_aux_loss"] + r["rate_weight"] * r["train_rate_loss"]
        assert r["train_loss"] == pytest.approx(expected + weight * r[f"train_{term}"], rel=1e-4)


def test_symmetric_kl_of_hand_made_logits():
    tf = pytest.importorskip("tensorflow")
    from hil.train.trainer import symmetric_kl

    a = tf.constant([[2.0, 0.0], [0.0, 0.0]])
    b = tf.constant([[0.0, 2.0], [0.0, 0.0]])
    p = 1 / (1 + np.exp(-2.0))  # softmax([2, 0])[0]
    kl = p * np.log(p / (1 - p)) + (1 - p) * np.log((1 - p) / p)  # KL(p || q) = KL(q || p) here
    assert float(symmetric_kl(a, b)) == pytest.approx(kl / 2, rel=1e-5)  # mean over the two rows
    assert float(symmetric_kl(a, a)) == pytest.approx(0.0, abs=1e-7)


def test_lam_schedule_changes_the_loss_from_its_joint_epoch_on(tmp_path):
    pytest.importorskip("tensorflow")
    from hil.train.trainer import train

    cfg = tiny_config(write_npz(tmp_path), joint_epochs=3, lam=0.8, lam_schedule=((2, 0.3),))
    run = tmp_path / "run"
    assert not train(cfg, run, progress=False, stop_after_epochs=2).complete  # reference + joint epoch 1
    assert train(cfg, run, progress=False).complete  # resumed: epochs 2 and 3 take the later lam
    joint = [r for r in _records(run) if r["stage"] == "joint"]
    assert [r["lam"] for r in joint] == pytest.approx([0.8, 0.3, 0.3])
    for r in joint:  # the logged loss is the one trained on, with that epoch's lam
        lam = r["lam"]
        expected = lam * r["train_ce"] + (1 - lam) * (r["train_skew_loss"] + r["train_disorder_loss"])
        expected += cfg.aux_weight * r["train_aux_loss"] + r["rate_weight"] * r["train_rate_loss"]
        assert r["train_loss"] == pytest.approx(expected, rel=1e-4)
    # the rate term is off before rate_from_epoch (4: after this run's last epoch)
    assert [r["rate_weight"] for r in joint] == [0.0, 0.0, 0.0]
