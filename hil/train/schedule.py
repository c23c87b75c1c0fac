"""The learning-rate schedule and the loss every training step shares (joint stage, reference refit, fine-tuning)."""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to 0 at `total_steps` (one schedule per stage)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        self.peak = float(peak)
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / float(max(1, self.warmup_steps))
        span = float(max(1, self.total_steps - self.warmup_steps))
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def smoothed_ce(labels: tf.Tensor, logits: tf.Tensor, smoothing: float) -> tf.Tensor:
    """Mean cross-entropy against label-smoothed one-hot targets."""
    n = tf.shape(logits)[-1]
    target = tf.one_hot(labels, n) * (1.0 - smoothing) + smoothing / tf.cast(n, tf.float32)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))


__all__ = ["WarmupCosine", "smoothed_ce"]
