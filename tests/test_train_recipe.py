"""The CPU recipe's pieces: centroids that cannot merge, the rate term, the co-trained reference and the
auxiliary losses, on tiny synthetic data (seconds; CI never trains for real)."""

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from helpers_train import tiny_config  # noqa: E402

from hil.datasets import synthetic_dataset  # noqa: E402
from hil.train.layers import SoftToHardQuantizer  # noqa: E402

pytestmark = pytest.mark.tf


def _collapse(min_gap: float, steps: int = 200) -> np.ndarray:
    """Trains only the centroids on the soft-assignment distortion of values that all sit near 1.0: every
    centroid within reach is pulled onto the same point (the pull that merged five of eight centroids in the
    first committed model)."""
    q = SoftToHardQuantizer(num_centroids=8, sigma=1.0, ste=True, min_gap=min_gap)
    q.build((None, 64))
    x = tf.constant(np.random.default_rng(0).uniform(0.8, 1.2, size=(256, 64)).astype("float32"))
    opt = tf.keras.optimizers.SGD(1.0)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            weights = tf.nn.softmax(-q.sigma * q._sq_dist(x), axis=-1)
            loss = tf.reduce_mean(tf.reduce_sum(weights * tf.square(x[..., None] - q.centroids()), -1))
        opt.apply_gradients(zip(tape.gradient(loss, q.trainable_variables), q.trainable_variables, strict=True))
    return q.centroids().numpy()


def test_free_centroids_collapse_and_gapped_ones_stay_apart():
    free = _collapse(min_gap=0.0)
    gapped = _collapse(min_gap=0.15)
    # Without the floor the pull merges centroids (the case this guards against is real) ...
    assert np.min(np.diff(np.sort(free))) < 0.01
    # ... with it every gap stays >= 0.15, the centroids stay ordered and inside (0, 6).
    assert np.all(np.diff(gapped) >= 0.15 - 1e-5)
    assert gapped[0] > 0.0 and gapped[-1] < 6.0


def test_gapped_centroids_start_evenly_and_round_trip_their_logits():
    q = SoftToHardQuantizer(num_centroids=4, min_gap=0.5)
    q.build((None, 3))
    c = q.centroids().numpy()
    span = 6.0 - 0.5 * 3
    np.testing.assert_allclose(c, 0.5 * np.arange(4) + span * np.arange(1, 5) / 5, atol=1e-6)
    assert q.get_config()["min_gap"] == 0.5


def test_code_entropy_is_the_entropy_of_a_sharp_assignment():
    q = SoftToHardQuantizer(num_centroids=4, min_gap=0.5)
    q.build((None, 4))
    c = q.centroids().numpy()
    # a quarter of the values on each of two centroids, half on a third: 1.5 bits
    x = tf.constant(np.array([[c[0], c[1], c[2], c[2]]] * 8, np.float32))
    assert float(q.code_entropy_bits(x, sharpness=400.0)) == pytest.approx(1.5, abs=1e-3)
    # softer assignments spread the distribution: more bits, never more than log2(4)
    soft = float(q.code_entropy_bits(x, sharpness=1.0))
    assert 1.5 < soft <= 2.0


@pytest.mark.parametrize(("floor", "ceiling"), [(0.0, 3.0), (3.0, 3.0)])
def test_rate_hinges_act_only_outside_their_band_and_are_logged(tmp_path, floor, ceiling):
    from hil.train.trainer import train

    data = synthetic_dataset(64, 32)
    # 3 bits: the most 8 codes can carry, so the ceiling never binds and a floor of 3 always does
    cfg = tiny_config("x.npz", ref_epochs=0, channel_preprocess=False, joint_epochs=2, rate_from_epoch=2,
                      rate_weight=1.0, rate_target_bits=ceiling, rate_floor_bits=floor)
    assert train(cfg, tmp_path / "run", progress=False, data=data).complete
    joint = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    joint = [r for r in joint if r.get("stage") == "joint"]
    assert [r["rate_weight"] for r in joint] == [0.0, 1.0]
    for r in joint:
        assert 0.0 < r["train_rate_bits"] <= 3.0
        # the per-step hinge averaged over the epoch: floor - H when the floor binds, else nothing
        assert r["train_rate_loss"] == pytest.approx(max(0.0, floor - r["train_rate_bits"]), abs=1e-5)


@pytest.mark.timeout(300)
def test_co_trained_reference_and_local_head_learn_on_their_own(tmp_path):
    """No reference stage: the reference learns inside the joint stage (on detached features), and the Local
    NN, with its auxiliary loss, becomes a classifier in its own right, both far above chance (10%)."""
    from hil.train.trainer import train

    data = synthetic_dataset(512, 200, seed=5)
    cfg = tiny_config("x.npz", ref_epochs=0, channel_preprocess=False, joint_epochs=8, steps_per_epoch=None,
                      batch_size=64, lr=0.05, lam_schedule=((1, 1.0), (3, 0.8)), eval_batch_size=100)
    assert cfg.reference_cotrain and cfg.aux_weight > 0
    result = train(cfg, tmp_path / "run", progress=False, data=data)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    joint = [r for r in records if r.get("stage") == "joint"]
    assert joint[-1]["test_ref_acc"] > 0.5 and joint[-1]["test_ref_acc"] > joint[0]["test_ref_acc"] - 0.05
    assert result.evaluation["local_accuracy"] > 0.5
    assert result.evaluation["reference_accuracy"] > 0.5
    assert 0.0 < joint[-1]["train_ref_loss"] < joint[0]["train_ref_loss"]


@pytest.mark.timeout(300)
def test_reference_refit_in_the_final_stage_and_on_a_finished_run(tmp_path):
    from hil.train.loop import RunDirError
    from hil.train.refit import refit_finished_run
    from hil.train.trainer import train

    data = synthetic_dataset(256, 100, seed=2)
    run = tmp_path / "run"
    with pytest.raises(RunDirError, match="finish the run"):
        refit_finished_run(run, 1, data=data)
    cfg = tiny_config("x.npz", ref_epochs=0, channel_preprocess=False, joint_epochs=1, steps_per_epoch=None,
                      batch_size=32, reference_refit_epochs=2, eval_batch_size=50)
    assert train(cfg, run, progress=False, data=data).complete
    result = json.loads((run / "result.json").read_text())
    refit = result["reference_refit"]
    assert refit["epochs"] == 2 and len(refit["train_loss"]) == 2
    # the evaluation's reference accuracy is the refitted reference's
    assert result["evaluation"]["reference_accuracy"] == pytest.approx(refit["test_reference_accuracy_after"])
    device_before = (run / "device.keras").read_bytes()

    again = refit_finished_run(run, 1, data=data)
    assert (run / "reference.cotrained.keras").is_file()
    assert again["reference_refit"]["evaluation_before"] == result["evaluation"]
    assert again["evaluation"]["reference_accuracy"] == pytest.approx(
        again["reference_refit"]["test_reference_accuracy_after"])
    assert (run / "device.keras").read_bytes() == device_before  # nothing on the device changed
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["stage"] == "refit"


@pytest.mark.timeout(300)
def test_bfloat16_remote_trains_and_saves_a_float32_twin(tmp_path):
    """remote_dtype="mixed_bfloat16" is a training speed-up only: the saved Remote NN and server model compute in
    float32 with the trained weights, and give the trained (bfloat16) network's logits to bfloat16 precision."""
    import keras

    from hil.train.config import ConfigError
    from hil.train.layers import load_trained
    from hil.train.trainer import train

    with pytest.raises(ConfigError, match="remote_dtype"):
        tiny_config("x.npz", remote_kind="mobilenetv2", remote_dtype="mixed_bfloat16")
    with pytest.raises(ConfigError, match="remote_plain_depth"):
        tiny_config("x.npz", remote_plain_depth=0)
    data = synthetic_dataset(128, 64, seed=3)
    cfg = tiny_config("x.npz", ref_epochs=0, channel_preprocess=False, joint_epochs=1, steps_per_epoch=None,
                      batch_size=32, remote_dtype="mixed_bfloat16", remote_plain_depth=2, eval_batch_size=32)
    assert train(cfg, tmp_path / "run", progress=False, data=data).complete
    loaded = load_trained(tmp_path / "run")
    convs = [layer for layer in loaded.remote.layers if isinstance(layer, keras.layers.Conv2D)]
    # one conv in the first stage, two in each pooled one
    assert len(convs) == 1 + 2 * (len(cfg.remote_plain_widths) - 1)
    assert {layer.compute_dtype for layer in loaded.remote.layers} == {"float32"}
    server = keras.models.load_model(tmp_path / "run" / "server.keras")
    assert {layer.compute_dtype for layer in server.layers} <= {"float32"}
    rng = np.random.default_rng(0)
    codes = loaded.quantizer(rng.uniform(0, 6, (8, cfg.feature_size, cfg.feature_size, cfg.remote_channels))
                             .astype("float32"), training=False)
    f32 = loaded.remote(codes, training=False).numpy()
    from hil.train.layers import build_remote_for

    mixed = build_remote_for(cfg, cfg.feature_size, cfg.remote_channels)
    mixed.set_weights(loaded.remote.get_weights())
    bf16 = mixed(codes, training=False).numpy()
    assert f32.dtype == np.float32 and not np.array_equal(f32, bf16)
    np.testing.assert_allclose(f32, bf16, atol=0.05 * float(np.abs(f32).max()) + 1e-3)
