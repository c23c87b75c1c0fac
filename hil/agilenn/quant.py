"""Per-tensor int8 quantization parameters of a model's inputs and outputs (numpy only, no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Quant:
    """Per-tensor int8 quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        # float32 like the TFLite/TFLM dequantize, so the host reproduces the same floats.
        return np.float32(self.scale) * (np.asarray(q, np.int32) - self.zero_point).astype(np.float32)

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """Round half up (TFLite's quantize of a float input), saturated to int8."""
        q = np.floor(np.asarray(real, np.float64) / self.scale + 0.5) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def uint8_exact(self) -> bool:
        """True when quantizing u / 255 gives exactly u - 128 for all 256 u (the firmware's input path)."""
        u = np.arange(256)
        return bool(np.array_equal(self.quantize(u / 255.0).astype(np.int16), u - 128))
