"""Weights on the int8 grid: the float device part made to hold exactly the weights its int8 conversion holds.

Why: the int8 device part differs from the float one in two ways, weight rounding and activation rounding.
Weight rounding is a choice of the float model, not a property of int8 inference: when every convolution's
weights, as the converter folds batch normalization into them, are already integer multiples of their per-
channel int8 scale, the converter quantizes them without error, and the float model and the device compute with
the same weights. Only activation rounding is left between them. On models/agilenn-cifar10 (all test images)
this took the remote code mismatch from 0.65% to 0.42% of the values and the int8/float agreement from 95.9% to
96.7%; on the previous CPU model (first 1000 test images) from 1.58% to 0.90% and from 96.9% to 97.6% (int16
activations with unchanged weights, for comparison: 1.33%).

The grid is TensorFlow Lite's per-channel int8 weight quantization: symmetric, zero point 0, values in
[-127, 127], scale = max |w| / 127 over each output channel of the folded kernel (Conv2D: the last axis;
DepthwiseConv2D: input channel x multiplier; Dense: the output unit). A kernel followed by a
BatchNormalization layer is folded as the converter folds it, w * gamma / sqrt(var + eps) per output channel,
snapped, and divided by that factor again, so that the float model (with its batch normalization) computes
with the snapped folded weights and the converter's folding gives them back. Biases stay float: the converter
quantizes them to int32 at scale input x weight scale, far below the activations' rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

INT8_WEIGHT_MAX = 127  # narrow range: TFLite's symmetric weights never use -128


@dataclass(frozen=True)
class SnappedLayer:
    """What snapping changed in one kernel: how far the weights moved, relative to their channel's scale."""

    name: str
    kind: str  # Conv2D, DepthwiseConv2D or Dense
    folded_with: str | None  # the BatchNormalization folded into it, if any
    channels: int
    max_change_steps: float  # largest |snapped - folded| / scale (at most 0.5)
    mean_change_steps: float

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "folded_with": self.folded_with,
            "channels": self.channels,
            "max_change_steps": round(self.max_change_steps, 4),
            "mean_change_steps": round(self.mean_change_steps, 4),
        }


def snap_per_channel(folded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(snapped weights, per-channel scale) of a kernel whose last axis is the output channel; an all-zero
    channel keeps scale 0 and its zeros."""
    w = np.asarray(folded, np.float64)
    flat = w.reshape(-1, w.shape[-1])
    scale = np.max(np.abs(flat), axis=0) / INT8_WEIGHT_MAX
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(flat / safe), -INT8_WEIGHT_MAX, INT8_WEIGHT_MAX)
    return (q * scale).reshape(w.shape), scale


def _consumer(model: keras.Model, layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """The only layer that reads `layer`'s output, or None."""
    readers = [other for other in model.layers if other is not layer and _reads(other, layer)]
    return readers[0] if len(readers) == 1 else None


def _reads(other: keras.layers.Layer, layer: keras.layers.Layer) -> bool:
    try:
        inputs = other.input if isinstance(other.input, list) else [other.input]
        return any(t is layer.output for t in inputs)
    except (AttributeError, ValueError):  # layers never called in this model have no input
        return False


def _bn_factor(bn: keras.layers.Layer) -> np.ndarray:
    gamma = bn.gamma.numpy() if bn.scale else np.ones(bn.moving_variance.shape, np.float32)
    return np.asarray(gamma, np.float64) / np.sqrt(np.asarray(bn.moving_variance.numpy(), np.float64) + bn.epsilon)


def snap_model_to_int8_grid(model: keras.Model) -> list[SnappedLayer]:
    """Snaps every Conv2D, DepthwiseConv2D and Dense kernel of `model` (in place, nested models included);
    returns one row per kernel."""
    import keras

    rows: list[SnappedLayer] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            rows += snap_model_to_int8_grid(layer)
            continue
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        if isinstance(layer, keras.layers.Conv2D) and layer.groups != 1:
            raise NotImplementedError(f"{layer.name}: grouped convolutions are not snapped")
        kernel = np.asarray(layer.kernel.numpy(), np.float64)
        # Output channels on the last axis: DepthwiseConv2D's (kh, kw, in, multiplier) -> (kh, kw, in * mult).
        shaped = kernel.reshape(*kernel.shape[:2], -1) if isinstance(layer, keras.layers.DepthwiseConv2D) else kernel
        bn = _consumer(model, layer)
        bn = bn if isinstance(bn, keras.layers.BatchNormalization) else None
        factor = _bn_factor(bn) if bn is not None else np.ones(shaped.shape[-1])
        folded = shaped * factor
        snapped, scale = snap_per_channel(folded)
        steps = np.abs(snapped - folded) / np.where(scale > 0, scale, 1.0)
        safe = np.where(factor != 0, factor, 1.0)
        layer.kernel.assign((snapped / safe).reshape(kernel.shape).astype(np.float32))
        rows.append(SnappedLayer(layer.name, type(layer).__name__, None if bn is None else bn.name,
                                 int(shaped.shape[-1]), float(steps.max(initial=0.0)), float(steps.mean())))
    return rows
