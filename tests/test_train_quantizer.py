"""Soft-to-hard quantizer (hard path, straight-through training path) and the alpha combination."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from hil.train.layers import Alpha, SoftToHardQuantizer  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.fixture
def quantizer():
    q = SoftToHardQuantizer(num_centroids=8, sigma=1.0, ste=True)
    q.build((None, 4, 4, 3))
    return q


def values(seed=0, shape=(2, 4, 4, 3), low=-1.0, high=7.0):
    return tf.constant(np.random.default_rng(seed).uniform(low, high, size=shape).astype("float32"))


def test_centroids_start_evenly_spread_inside_relu6_range(quantizer):
    c = quantizer.centroids().numpy()
    assert c.shape == (8,)
    np.testing.assert_allclose(c, (np.arange(8) + 0.5) * 6 / 8, atol=1e-5)


def test_centroids_stay_inside_0_6_whatever_the_logits(quantizer):
    quantizer.centroid_logits.assign(np.linspace(-12, 12, 8).astype("float32"))
    c = quantizer.centroids().numpy()
    assert np.all(c > 0) and np.all(c < 6)


def test_hard_path_outputs_only_centroid_values(quantizer):
    quantizer.centroid_logits.assign(np.random.default_rng(1).normal(size=8).astype("float32"))
    centroids = quantizer.centroids().numpy()
    out = quantizer(values(), training=False).numpy()
    assert set(np.unique(out)) <= set(centroids)
    assert len(np.unique(out)) > 1


def test_hard_path_picks_the_nearest_centroid(quantizer):
    x = values(2)
    centroids = quantizer.centroids().numpy()
    expected = centroids[np.argmin(np.abs(x.numpy()[..., None] - centroids), axis=-1)]
    np.testing.assert_array_equal(quantizer(x, training=False).numpy(), expected)
    np.testing.assert_array_equal(centroids[quantizer.indices(x).numpy()], expected)


def test_hard_quantization_is_idempotent(quantizer):
    once = quantizer(values(3), training=False)
    np.testing.assert_array_equal(quantizer(once, training=False).numpy(), once.numpy())


def test_straight_through_forwards_hard_values_and_backpropagates_soft_gradients(quantizer):
    x = tf.Variable(values(4, low=0.0, high=6.0))
    with tf.GradientTape(persistent=True) as tape:
        trained = quantizer(x, training=True)
        soft = quantizer.soft(x)
        loss_ste = tf.reduce_sum(trained * tf.range(1.0, 4.0))
        loss_soft = tf.reduce_sum(soft * tf.range(1.0, 4.0))
    np.testing.assert_allclose(trained.numpy(), quantizer(x, training=False).numpy(), atol=1e-6)
    grad_x = tape.gradient(loss_ste, x).numpy()
    np.testing.assert_allclose(grad_x, tape.gradient(loss_soft, x).numpy(), rtol=1e-5, atol=1e-7)
    assert np.abs(grad_x).max() > 0  # the hard argmin alone would give no gradient at all
    grad_c = tape.gradient(loss_ste, quantizer.centroid_logits).numpy()
    assert np.abs(grad_c).max() > 0  # the centroids learn


def test_without_ste_training_uses_the_soft_values():
    q = SoftToHardQuantizer(8, sigma=1.0, ste=False)
    q.build((None, 4, 4, 3))
    x = values(5, low=0.0, high=6.0)
    out = q(x, training=True).numpy()
    np.testing.assert_allclose(out, q.soft(x).numpy(), atol=1e-6)
    assert not set(np.unique(out)) <= set(q.centroids().numpy())


def test_quantizer_config_round_trip(quantizer):
    clone = SoftToHardQuantizer.from_config(quantizer.get_config())
    assert (clone.num_centroids, clone.sigma, clone.ste) == (8, 1.0, True)


@settings(max_examples=60, deadline=None)
@given(w=st.floats(-1e4, 1e4, allow_nan=False), temperature=st.floats(0.5, 10.0))
def test_alpha_stays_strictly_between_0_and_1(w, temperature):
    layer = Alpha(temperature)
    layer.build([(None, 3), (None, 3)])
    layer.w.assign(w)
    a = float(layer.alpha())
    assert 0.0 < a < 1.0
    local, remote = tf.constant([[1.0, 0.0, -2.0]]), tf.constant([[3.0, 1.0, 2.0]])
    np.testing.assert_allclose(layer([local, remote]).numpy(), a * local + (1 - a) * remote, rtol=1e-5, atol=1e-5)


def test_alpha_starts_at_one_half_and_temperature_slows_it():
    hot, cold = Alpha(1.0), Alpha(8.0)
    for layer in (hot, cold):
        layer.build([(None, 2), (None, 2)])
        assert float(layer.alpha()) == pytest.approx(0.5)
        layer.w.assign(2.0)
    assert float(hot.alpha()) > float(cold.alpha()) > 0.5
    with pytest.raises(ValueError):
        Alpha(0.0)


def _quantizer_with(centroids):
    from hil.train.layers import SoftToHardQuantizer

    q = SoftToHardQuantizer(len(centroids))
    q.build((None, 4))
    c = np.asarray(centroids, np.float64) / 6.0
    q.centroid_logits.assign(np.log(c / (1 - c)).astype("float32"))
    return q


def test_margin_loss_is_zero_away_from_boundaries_and_grows_towards_them():
    q = _quantizer_with([1.0, 2.0, 4.0])  # boundaries at 1.5 and 3.0
    far = tf.constant([[0.0, 1.0, 2.0, 2.25, 4.0, 6.0]])
    assert float(q.margin_loss(far, delta=0.2)) == pytest.approx(0.0, abs=1e-6)
    # 0.1 from a boundary: relu(0.2 - 0.1) / 0.2 = 0.5 per value; on the boundary: 1.
    assert float(q.margin_loss(tf.constant([[1.4, 3.1]]), delta=0.2)) == pytest.approx(0.5, abs=1e-4)
    assert float(q.margin_loss(tf.constant([[1.5, 3.0]]), delta=0.2)) == pytest.approx(1.0, abs=1e-4)


def test_margin_loss_pushes_values_away_from_the_boundary_and_leaves_centroids_alone():
    q = _quantizer_with([1.0, 2.0, 4.0])
    x = tf.Variable([[1.45, 1.55]])
    with tf.GradientTape() as tape:
        loss = q.margin_loss(x, delta=0.2)
    gx, gc = tape.gradient(loss, [x, q.centroid_logits])
    assert float(gx[0, 0]) > 0 > float(gx[0, 1])  # descent moves 1.45 down and 1.55 up, out of the band
    assert gc is None or float(tf.reduce_max(tf.abs(gc))) == 0.0


def test_margin_loss_ignores_the_boundary_between_near_equal_centroids():
    q = _quantizer_with([1.0, 2.8472, 2.8473, 4.0])  # as the CPU run's duplicated centroids
    mid = (2.8472 + 2.8473) / 2
    assert float(q.margin_loss(tf.constant([[mid]]), delta=0.2)) == pytest.approx(0.0, abs=1e-6)
