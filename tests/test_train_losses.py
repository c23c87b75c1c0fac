"""The AgileNN importance losses on hand-made importance vectors (k = 2 of 4 channels unless stated)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hil.train.importance import disorder_loss, skewness, skewness_loss, topk_frequency  # noqa: E402

pytestmark = pytest.mark.tf


def t(values):
    return tf.constant(values, dtype=tf.float32)


def test_skewness_is_the_share_of_the_first_k_channels():
    imp = t([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
    np.testing.assert_allclose(skewness(imp, 2).numpy(), [0.8, 0.2], atol=1e-6)


def test_skewness_loss_is_zero_once_rho_is_reached():
    imp = t([[0.5, 0.3, 0.1, 0.1]])  # top-2 share exactly 0.8
    assert float(skewness_loss(imp, 2, rho=0.8)) == pytest.approx(0.0, abs=1e-6)
    assert float(skewness_loss(t([[0.7, 0.2, 0.05, 0.05]]), 2, rho=0.8)) == 0.0


def test_skewness_loss_is_the_shortfall_averaged_over_the_batch():
    imp = t([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])  # shares 0.8 and 0.2
    # rho 0.9: shortfalls 0.1 and 0.7 -> mean 0.4
    assert float(skewness_loss(imp, 2, rho=0.9)) == pytest.approx(0.4, abs=1e-6)
    # k = 1: shares 0.5 and 0.1 -> shortfalls 0.3 and 0.7 at rho 0.8
    assert float(skewness_loss(imp, 1, rho=0.8)) == pytest.approx(0.5, abs=1e-6)


def test_skewness_loss_does_not_depend_on_the_importance_scale():
    imp = t([[0.2, 0.3, 0.4, 0.1]])
    assert float(skewness_loss(imp * 7.0, 2)) == pytest.approx(float(skewness_loss(imp, 2)), abs=1e-6)
    assert float(skewness_loss(imp, 2)) == pytest.approx(0.8 - 0.5, abs=1e-6)


def test_disorder_loss_is_the_gap_between_best_remote_and_worst_local_channel():
    assert float(disorder_loss(t([[0.4, 0.1, 0.3, 0.2]]), 2)) == pytest.approx(0.3 - 0.1, abs=1e-6)
    # every top-k channel beats every other channel: no loss, even with a low top-k share
    assert float(disorder_loss(t([[0.26, 0.26, 0.25, 0.23]]), 2)) == 0.0
    # tie between the weakest local and the strongest remote channel: max(0, 0)
    assert float(disorder_loss(t([[0.3, 0.25, 0.25, 0.2]]), 2)) == pytest.approx(0.0, abs=1e-6)


def test_disorder_loss_normalizes_and_averages():
    imp = t([[4.0, 1.0, 3.0, 2.0], [0.4, 0.3, 0.2, 0.1]])  # first: 0.4,0.1,0.3,0.2 -> 0.2; second: 0
    assert float(disorder_loss(imp, 2)) == pytest.approx(0.1, abs=1e-6)


def test_mask_restricts_the_losses_to_selected_samples():
    imp = t([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.4, 0.4]])
    assert float(skewness_loss(imp, 2, 0.8, mask=t([1.0, 0.0]))) == pytest.approx(0.0, abs=1e-6)
    assert float(skewness_loss(imp, 2, 0.8, mask=t([0.0, 1.0]))) == pytest.approx(0.6, abs=1e-6)
    assert float(disorder_loss(imp, 2, mask=t([0.0, 1.0]))) == pytest.approx(0.3, abs=1e-6)
    # nobody selected (e.g. the reference gets the whole batch wrong): zero, not NaN
    assert float(skewness_loss(imp, 2, 0.8, mask=t([0.0, 0.0]))) == 0.0


def test_loss_gradients_push_importance_into_the_top_k():
    imp = tf.Variable([[0.2, 0.3, 0.4, 0.1]])
    with tf.GradientTape() as tape:
        loss = skewness_loss(imp, 2, 0.8) + disorder_loss(imp, 2)
    grad = tape.gradient(loss, imp).numpy()[0]
    assert grad[0] < 0 and grad[1] < 0  # more importance in the first k lowers the loss
    assert grad[2] > 0  # the strongest remote channel is pushed down


def test_topk_frequency_counts_membership_per_channel():
    imp = t([[0.5, 0.3, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.1, 0.35, 0.15]])
    np.testing.assert_array_equal(topk_frequency(imp, 2).numpy(), [2, 1, 2, 1])
