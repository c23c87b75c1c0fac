"""The custom Keras layers of AgileNN, registered under the package name "agilenn" so that .keras files load
without custom_objects once this module is imported: the channel split (ChannelSlice), the soft-to-hard
quantizer and the alpha combination. Needed by whoever loads a saved part (training, export, the server, the
accuracy job); depends on nothing else in hil. hil.train.layers builds the models from them (and re-exports
them: class names and the package name are part of every saved .keras file).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

PACKAGE = "agilenn"
FEATURE_MAX = 6.0  # ReLU6 range of the features; the quantizer's centroids live in (0, FEATURE_MAX)


# ---------------------------------------------------------------------------------------------------------
# custom layers (registered so .keras files load without custom_objects)
# ---------------------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class ChannelSlice(layers.Layer):
    """x[..., start:stop]; a named layer (not a Lambda) so the .keras file holds no Python code."""

    def __init__(self, start: int, stop: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start = int(start)
        self.stop = int(stop)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], self.stop - self.start)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftToHardQuantizer(layers.Layer):
    """Scalar soft-to-hard quantization (Agustsson et al. 2017) with learnable centroids in (0, 6).

    Centroids are 6 * sigmoid(logits) so they can never leave the ReLU6 range of the features (the authors'
    note: key to stable training). Hard path: the nearest centroid. Soft path: the softmax(-sigma * d^2)
    weighted mean of the centroids. Training with `ste` (default) forwards the hard values and backpropagates
    through the soft path (straight-through), so the Remote NN trains on exactly what the server receives;
    inference is always hard.
    """

    def __init__(
        self, num_centroids: int = 8, sigma: float = 1.0, ste: bool = True, min_gap: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_centroids = int(num_centroids)
        self.sigma = float(sigma)
        self.ste = bool(ste)
        self.min_gap = float(min_gap)
        if self.min_gap > 0:
            # Ordered with a floor on every gap: c_i = min_gap * i + span * cumsum(softmax(logits))[i] over
            # n + 1 logits, so no two centroids can merge and none leaves (0, 6). Equal logits: evenly spaced.
            init = np.zeros(self.num_centroids + 1, dtype="float32")
        else:
            # Evenly spaced in (0, 6) at the start: every code is usable before training moves them.
            spaced = (np.arange(self.num_centroids) + 0.5) / self.num_centroids
            init = np.log(spaced / (1.0 - spaced)).astype("float32")
        self.centroid_logits = self.add_weight(
            shape=init.shape,
            initializer=keras.initializers.Constant(init),
            trainable=True,
            name="centroid_logits",
        )

    def centroids(self) -> tf.Tensor:
        logits = tf.convert_to_tensor(self.centroid_logits)
        if self.min_gap <= 0:
            return FEATURE_MAX * tf.sigmoid(logits)
        n = self.num_centroids
        span = FEATURE_MAX - self.min_gap * (n - 1)
        return self.min_gap * tf.range(n, dtype=logits.dtype) + span * tf.cumsum(tf.nn.softmax(logits))[:n]

    def code_entropy_bits(self, x: tf.Tensor, sharpness: float) -> tf.Tensor:
        """Entropy (bits per value) of the batch's mean soft assignment softmax(-sharpness * d^2): the rate a
        static entropy coder with this distribution's table would reach, differentiable in x and the
        centroids (the rate term of TrainConfig.rate_weight)."""
        weights = tf.nn.softmax(-sharpness * self._sq_dist(x), axis=-1)
        p = tf.reduce_mean(tf.reshape(weights, [-1, self.num_centroids]), axis=0)
        return -tf.reduce_sum(p * tf.math.log(p + 1e-9)) / np.log(2.0)

    def _sq_dist(self, x: tf.Tensor) -> tf.Tensor:
        return tf.square(x[..., None] - self.centroids())

    def indices(self, x: tf.Tensor) -> tf.Tensor:
        """The code sent for each value: index of the nearest centroid (int32)."""
        return tf.argmin(self._sq_dist(x), axis=-1, output_type=tf.int32)

    def hard(self, x: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.centroids(), self.indices(x))

    def soft(self, x: tf.Tensor) -> tf.Tensor:
        weights = tf.nn.softmax(-self.sigma * self._sq_dist(x), axis=-1)
        return tf.reduce_sum(weights * self.centroids(), axis=-1)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        if not training:
            return self.hard(x)
        soft = self.soft(x)
        if not self.ste:
            return soft
        return soft + tf.stop_gradient(self.hard(x) - soft)

    def margin_loss(self, x: tf.Tensor, delta: float, min_gap: float = 0.01) -> tf.Tensor:
        """Mean of relu(delta - d) / delta, d = distance of each value to the nearest decision boundary (the
        midpoint between two neighbouring centroids at least `min_gap` apart; closer ones give the same value
        either way). Values further than delta from every boundary cost nothing, so int8 rounding of the
        device's features (a few steps of 6/255) rarely changes their code. Centroids are held fixed here."""
        c = tf.sort(tf.stop_gradient(self.centroids()))
        mids = (c[:-1] + c[1:]) / 2.0
        # A boundary between near-equal centroids is no boundary: push it out of reach.
        mids = tf.where(c[1:] - c[:-1] >= min_gap, mids, tf.fill(tf.shape(mids), 1e9))
        d = tf.reduce_min(tf.abs(x[..., None] - mids), axis=-1)
        return tf.reduce_mean(tf.nn.relu(delta - d)) / delta

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_centroids": self.num_centroids,
            "sigma": self.sigma,
            "ste": self.ste,
            "min_gap": self.min_gap,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class Alpha(layers.Layer):
    """alpha * local + (1 - alpha) * remote with alpha = sigmoid(w / T), strictly inside (0, 1).

    T > 1 slows alpha's movement relative to the other weights (the paper: T = 1 collapses alpha to ~0).
    """

    def __init__(self, temperature: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.w = self.add_weight(shape=(), initializer="zeros", trainable=True, name="alpha_w")

    def alpha(self) -> tf.Tensor:
        # |w / T| <= 15 keeps alpha strictly inside (0, 1) in float32 (sigmoid(17) already rounds to 1.0),
        # so neither branch can ever be switched off entirely.
        return tf.sigmoid(tf.clip_by_value(tf.convert_to_tensor(self.w) / self.temperature, -15.0, 15.0))

    def call(self, inputs: Sequence[tf.Tensor]) -> tf.Tensor:
        local, remote = inputs
        a = self.alpha()
        return a * local + (1.0 - a) * remote

    def compute_output_shape(self, input_shape: Sequence[tuple]) -> tuple:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}
