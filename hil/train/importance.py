"""Feature importance by Integrated Gradients against the frozen reference NN, and the AgileNN losses.

IG with a zero baseline along the straight path s * f, s in [0, 1], of the per-sample cross-entropy of the
reference NN (the paper's choice: the gradient of the loss, not of a logit):

    A = f * integral_0^1 dCE(ref(s f), y) / d(s f) ds          (elementwise, signed)

Completeness: sum(A) = CE(f) - CE(0), up to the quadrature error of the integral. Two rules:
- "midpoint": s_i = (i + 0.5) / m, equal weights; the default for measuring (m >= 20).
- "trapezoid": s_i = i / (m - 1) with halved end weights; m = 2 is the authors' 2-point variant (s = 0, 1),
  the cheap one used inside the training loss.

Channel importance I_c = sum over H, W of |A|, normalized to sum 1 per sample.
All functions are differentiable with respect to the features (the joint loss backpropagates through them
into the extractor; that is a second-order gradient through the reference NN).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

EPS = 1e-12


def path_points(steps: int, rule: str = "midpoint") -> tuple[np.ndarray, np.ndarray]:
    """Scales s_i on the path and their quadrature weights (summing to 1)."""
    if rule == "midpoint":
        if steps < 1:
            raise ValueError("midpoint rule needs steps >= 1")
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if rule == "trapezoid":
        if steps < 2:
            raise ValueError("trapezoid rule needs steps >= 2")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] *= 0.5
        return np.linspace(0.0, 1.0, steps), weights
    raise ValueError(f"unknown IG rule {rule!r} (midpoint or trapezoid)")


def per_sample_loss(reference: keras.Model, features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """CE of the reference NN per sample: the function whose attributions IG computes."""
    logits = reference(features, training=False)
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def ig_attributions(
    reference: keras.Model,
    features: tf.Tensor,
    labels: tf.Tensor,
    steps: int = 20,
    rule: str = "midpoint",
    chunk: int | None = None,
) -> tf.Tensor:
    """Signed elementwise IG attributions, same shape as `features`.

    All path points of a chunk go through the reference in one batch (m * B samples); `chunk` caps the
    number of points per batch to bound memory when measuring with many steps.
    """
    features = tf.convert_to_tensor(features)
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    scales, weights = path_points(steps, rule)
    chunk = chunk or steps
    total = tf.zeros_like(features)
    for start in range(0, steps, chunk):
        s = scales[start : start + chunk]
        w = weights[start : start + chunk]
        m = len(s)
        # Built from `features` itself so an enclosing tape sees the dependency (second-order gradients).
        path = tf.concat([features * float(si) for si in s], axis=0)
        with tf.GradientTape() as tape:
            tape.watch(path)
            # Sum (not mean): each sample's gradient is then its own, independent of the batch size.
            loss = tf.reduce_sum(per_sample_loss(reference, path, tf.tile(labels, [m])))
        grads = tape.gradient(loss, path)
        grads = tf.reshape(grads, tf.concat([[m], tf.shape(features)], axis=0))
        total += tf.tensordot(tf.constant(w, dtype=grads.dtype), grads, axes=1)
    return features * total


def channel_importance(attributions: tf.Tensor) -> tf.Tensor:
    """(B, H, W, C) attributions -> (B, C) per-channel |A| summed over H, W, normalized to sum 1."""
    per_channel = tf.reduce_sum(tf.abs(attributions), axis=[1, 2])
    return per_channel / (tf.reduce_sum(per_channel, axis=-1, keepdims=True) + EPS)


def integrated_gradients(
    reference: keras.Model,
    features: tf.Tensor,
    labels: tf.Tensor,
    steps: int = 20,
    rule: str = "midpoint",
    chunk: int | None = None,
) -> tf.Tensor:
    """Per-channel normalized importance (B, C) by IG with `steps` path points."""
    return channel_importance(ig_attributions(reference, features, labels, steps, rule, chunk))


def two_point_importance(reference: keras.Model, features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """The authors' 2-point IG: |f * (grad at 0 + grad at f) / 2|, the cheap variant for training."""
    return integrated_gradients(reference, features, labels, steps=2, rule="trapezoid")


def skewness(importance: tf.Tensor, k: int) -> tf.Tensor:
    """Per-sample share of importance in the first k channels (the device's channels)."""
    importance = tf.convert_to_tensor(importance)
    total = tf.reduce_sum(importance, axis=-1)
    return tf.reduce_sum(importance[..., :k], axis=-1) / (total + EPS)


def skewness_loss(importance: tf.Tensor, k: int, rho: float = 0.8, mask: tf.Tensor | None = None) -> tf.Tensor:
    """L_skewness = mean over samples of max(0, rho - sum(I_topk)): zero once the top-k hold >= rho."""
    per_sample = tf.nn.relu(rho - skewness(importance, k))
    return _masked_mean(per_sample, mask)


def disorder_loss(importance: tf.Tensor, k: int, mask: tf.Tensor | None = None) -> tf.Tensor:
    """L_disorder = mean over samples of max(0, max(I_rest) - min(I_topk)), on normalized importance:
    zero only when every one of the first k channels beats every other channel."""
    importance = tf.convert_to_tensor(importance)
    importance = importance / (tf.reduce_sum(importance, axis=-1, keepdims=True) + EPS)
    gap = tf.reduce_max(importance[..., k:], axis=-1) - tf.reduce_min(importance[..., :k], axis=-1)
    return _masked_mean(tf.nn.relu(gap), mask)


def _masked_mean(values: tf.Tensor, mask: tf.Tensor | None) -> tf.Tensor:
    if mask is None:
        return tf.reduce_mean(values)
    mask = tf.cast(mask, values.dtype)
    # Zero (not NaN) when no sample qualifies, e.g. an early batch where the reference gets none right.
    return tf.reduce_sum(values * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def topk_frequency(importance: tf.Tensor, k: int) -> tf.Tensor:
    """(C,) how often each channel is among the k most important of a sample, summed over the batch."""
    importance = tf.convert_to_tensor(importance)
    top = tf.math.top_k(importance, k=k).indices
    return tf.reduce_sum(tf.one_hot(top, tf.shape(importance)[-1], dtype=tf.float32), axis=[0, 1])
