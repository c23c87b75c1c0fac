"""Integrated Gradients: completeness, normalization, the 2-point variant and differentiability."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from hil.train.importance import (  # noqa: E402
    channel_importance,
    ig_attributions,
    integrated_gradients,
    path_points,
    per_sample_loss,
    skewness,
    two_point_importance,
)
from hil.train.layers import build_reference  # noqa: E402

pytestmark = pytest.mark.tf

SHAPE = (4, 4, 6)


@pytest.fixture(scope="module")
def smooth_model():
    """Conv + tanh + Dense: smooth, so the IG integrand is smooth and the quadrature converges fast."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="tanh")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 6, size=(5, *SHAPE)).astype("float32"))


LABELS = tf.constant([0, 3, 5, 9, 2])


def completeness_error(model, features, steps, rule="midpoint"):
    attributions = ig_attributions(model, features, LABELS, steps, rule)
    total = tf.reduce_sum(attributions, axis=[1, 2, 3]).numpy()
    delta = per_sample_loss(model, features, LABELS) - per_sample_loss(model, tf.zeros_like(features), LABELS)
    return np.abs(total - delta.numpy()), np.abs(delta.numpy())


def test_path_points_weights_sum_to_one():
    for steps, rule in [(1, "midpoint"), (20, "midpoint"), (2, "trapezoid"), (7, "trapezoid")]:
        scales, weights = path_points(steps, rule)
        assert len(scales) == len(weights) == steps
        assert weights.sum() == pytest.approx(1.0)
        assert scales.min() >= 0 and scales.max() <= 1
    scales, weights = path_points(2, "trapezoid")
    assert list(scales) == [0.0, 1.0] and list(weights) == [0.5, 0.5]
    with pytest.raises(ValueError):
        path_points(1, "trapezoid")


def test_completeness_on_a_smooth_model(smooth_model, features):
    err, delta = completeness_error(smooth_model, features, steps=32)
    assert delta.max() > 0.05  # the check is not vacuous: the loss really changes along the path
    assert np.all(err <= 2e-3 * np.maximum(1.0, delta)), (err, delta)


def test_completeness_on_the_reference_cnn(features):
    """The project's ReLU + BN reference network, 20 steps (the default for measuring)."""
    keras.utils.set_random_seed(5)
    model = build_reference(SHAPE, 10, width=8)
    err, delta = completeness_error(model, features, steps=20)
    assert delta.max() > 0.01
    assert np.all(err <= 0.02 * np.maximum(1.0, delta)), (err, delta)


def test_more_steps_are_more_complete(smooth_model, features):
    coarse, _ = completeness_error(smooth_model, features, steps=2, rule="trapezoid")
    fine, _ = completeness_error(smooth_model, features, steps=32)
    assert fine.sum() < coarse.sum()


def test_importance_is_a_per_sample_distribution_over_channels(smooth_model, features):
    imp = integrated_gradients(smooth_model, features, LABELS, steps=20).numpy()
    assert imp.shape == (5, SHAPE[-1])
    assert np.all(imp >= 0)
    np.testing.assert_allclose(imp.sum(axis=1), 1.0, atol=1e-5)


def test_a_silent_channel_gets_no_importance(smooth_model, features):
    silent = tf.concat([tf.zeros_like(features[..., :1]), features[..., 1:]], axis=-1)
    imp = integrated_gradients(smooth_model, silent, LABELS, steps=20).numpy()
    np.testing.assert_allclose(imp[:, 0], 0.0, atol=1e-7)


def test_two_point_variant_matches_its_formula(smooth_model, features):
    with tf.GradientTape() as tape:
        tape.watch(features)
        loss_f = tf.reduce_sum(per_sample_loss(smooth_model, features, LABELS))
    grad_f = tape.gradient(loss_f, features)
    zeros = tf.zeros_like(features)
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        loss_0 = tf.reduce_sum(per_sample_loss(smooth_model, zeros, LABELS))
    grad_0 = tape.gradient(loss_0, zeros)
    expected = channel_importance(features * 0.5 * (grad_0 + grad_f)).numpy()
    np.testing.assert_allclose(two_point_importance(smooth_model, features, LABELS).numpy(), expected, atol=1e-6)


def test_chunking_does_not_change_the_result(smooth_model, features):
    whole = integrated_gradients(smooth_model, features, LABELS, steps=20).numpy()
    chunked = integrated_gradients(smooth_model, features, LABELS, steps=20, chunk=6).numpy()
    np.testing.assert_allclose(whole, chunked, atol=1e-6)


def test_importance_is_differentiable_with_respect_to_the_features(smooth_model, features):
    """The joint loss trains the extractor through IG: a second-order gradient must exist and be finite."""
    f = tf.Variable(features)
    with tf.GradientTape() as tape:
        share = tf.reduce_mean(skewness(two_point_importance(smooth_model, f, LABELS), 2))
    grad = tape.gradient(share, f)
    assert grad is not None
    assert np.all(np.isfinite(grad.numpy()))
    assert float(tf.reduce_max(tf.abs(grad))) > 0
