"""Float evaluation of a trained AgileNN: local-only, remote-only and combined accuracy (hard quantizer, as
the server sees it), achieved skewness by >= 20-step Integrated Gradients on correctly predicted test images,
payload per inference, and an int8 size estimate of the device part (extractor + Local NN).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf
from keras import layers

from hil.datasets import eval_pipeline
from hil.stats import hist_entropy_bits
from hil.train.importance import integrated_gradients, skewness
from hil.train.layers import TrainedAgileNN


@dataclass(frozen=True)
class EvalResult:
    samples: int
    local_accuracy: float
    remote_accuracy: float
    combined_accuracy: float
    reference_accuracy: float  # frozen reference NN on the final extractor's features
    skewness: float  # mean share of IG importance in the k device channels
    skewness_median: float
    skewness_samples: int  # correctly predicted (by the reference) images it was measured on
    ig_steps: int
    alpha: float
    k: int
    payload_bits: int  # remote channels x map x bits, before lossless compression
    payload_bytes: float
    payload_entropy_bytes: float  # empirical entropy of the codes on these images: a bound for LZW & co.
    raw_input_bytes: int
    device_weight_bytes: int  # int8 weights + int32 biases after BN folding
    device_arena_bytes: int  # largest set of simultaneously live int8 activations (planner lower bound)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def accuracies(trained: TrainedAgileNN, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> dict[str, float]:
    """Top-1 accuracy of the local, remote, combined and reference outputs, plus the code histogram."""
    cfg = trained.config

    @tf.function(reduce_retracing=True)
    def step(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        out = trained.forward(xb, training=False)
        logits = [
            out["local"],
            out["remote"],
            out["combined"],
            trained.reference(out["features"], training=False),
        ]
        correct = tf.stack(
            [tf.reduce_sum(tf.cast(tf.equal(tf.argmax(o, -1, output_type=tf.int32), yb), tf.int32)) for o in logits]
        )
        codes = trained.quantizer.indices(out["features"][..., cfg.k :])
        hist = tf.math.bincount(tf.reshape(codes, [-1]), minlength=cfg.centroids, maxlength=cfg.centroids)
        return correct, hist, tf.shape(xb)[0]

    correct = np.zeros(4, np.int64)
    hist = np.zeros(cfg.centroids, np.int64)
    n = 0
    for xb, yb in eval_pipeline(x, y, batch_size, input_size=cfg.input_size):
        c, h, b = step(xb, yb)
        correct += c.numpy()
        hist += h.numpy()
        n += int(b)
    acc = correct / max(n, 1)
    return {
        "samples": n,
        "local": float(acc[0]),
        "remote": float(acc[1]),
        "combined": float(acc[2]),
        "reference": float(acc[3]),
        "code_histogram": hist.tolist(),
    }


def measured_skewness(
    trained: TrainedAgileNN,
    x: np.ndarray,
    y: np.ndarray,
    steps: int = 20,
    samples: int = 1000,
    batch_size: int = 100,
) -> np.ndarray:
    """Per-image skewness by `steps`-point midpoint IG, only for images the reference predicts correctly
    (the paper's protocol). Returns the per-image values (possibly empty)."""
    cfg = trained.config
    x, y = x[:samples], y[:samples]

    @tf.function(reduce_retracing=True)
    def step(xb: tf.Tensor, yb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features = trained.extractor(xb, training=False)
        ok = tf.equal(tf.argmax(trained.reference(features, training=False), -1, output_type=tf.int32), yb)
        imp = integrated_gradients(trained.reference, features, yb, steps, "midpoint", chunk=10)
        return skewness(imp, cfg.k), ok

    values: list[np.ndarray] = []
    for xb, yb in eval_pipeline(x, y, batch_size, input_size=cfg.input_size):
        s, ok = step(xb, yb)
        values.append(s.numpy()[ok.numpy()])
    return np.concatenate(values) if values else np.zeros(0)


def device_footprint(trained: TrainedAgileNN) -> dict[str, int]:
    """int8 weight bytes and a peak activation estimate of extractor + Local NN as the exporter will lay them
    out: BN folded into the preceding conv (one int32 bias per output channel), activations int8."""
    weight_bytes = 0
    arena = 0
    for model in (trained.extractor, trained.local):
        for layer in model.layers:
            if isinstance(layer, layers.DepthwiseConv2D):  # kernel (kh, kw, in, multiplier)
                kernel = layer.kernel
                weight_bytes += int(np.prod(kernel.shape)) + 4 * int(kernel.shape[-2] * kernel.shape[-1])
            elif isinstance(layer, (layers.Conv2D, layers.Dense)):
                weight_bytes += int(np.prod(layer.kernel.shape)) + 4 * int(layer.kernel.shape[-1])
            if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
                live = math.prod(layer.input.shape[1:]) + math.prod(layer.output.shape[1:])
                arena = max(arena, live)
    cfg = trained.config
    features = cfg.feature_size**2 * cfg.feature_channels
    # After the extractor: the feature map plus its two slices (the remote one is an output) are live.
    arena = max(arena, 2 * features)
    return {"weight_bytes": weight_bytes, "arena_bytes": arena}


def evaluate(
    trained: TrainedAgileNN,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    ig_steps: int | None = None,
    ig_samples: int | None = None,
    batch_size: int | None = None,
) -> EvalResult:
    cfg = trained.config
    steps = ig_steps or cfg.ig_eval_steps
    if steps < 20:
        raise ValueError(f"skewness is reported with >= 20 IG steps, got {steps}")
    acc = accuracies(trained, x_test, y_test, batch_size or cfg.eval_batch_size)
    skew = measured_skewness(trained, x_test, y_test, steps, ig_samples or cfg.ig_eval_samples)
    hist = np.asarray(acc["code_histogram"])
    values_per_inference = cfg.feature_size**2 * cfg.remote_channels
    footprint = device_footprint(trained)
    return EvalResult(
        samples=acc["samples"],
        local_accuracy=acc["local"],
        remote_accuracy=acc["remote"],
        combined_accuracy=acc["combined"],
        reference_accuracy=acc["reference"],
        skewness=float(skew.mean()) if skew.size else float("nan"),
        skewness_median=float(np.median(skew)) if skew.size else float("nan"),
        skewness_samples=int(skew.size),
        ig_steps=steps,
        alpha=trained.alpha_value(),
        k=cfg.k,
        payload_bits=cfg.payload_bits,
        payload_bytes=cfg.payload_bits / 8,
        payload_entropy_bytes=hist_entropy_bits(hist) * values_per_inference / 8,
        raw_input_bytes=cfg.raw_input_bytes,
        device_weight_bytes=footprint["weight_bytes"],
        device_arena_bytes=footprint["arena_bytes"],
    )


__all__ = ["EvalResult", "accuracies", "device_footprint", "evaluate", "measured_skewness"]
