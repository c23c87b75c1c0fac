"""The statistics the training, export, accuracy and bench reports share: the Wilson interval of a proportion,
the entropy of a code histogram, and the agreement of the int8 device part with the float pipeline by side of
the AgileNN split. numpy only (no TensorFlow); it imports nothing from hil, so every layer may import it.
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def hist_entropy_bits(hist: np.ndarray) -> float:
    """Entropy in bits per value of a histogram of counts."""
    total = hist.sum()
    if total == 0:
        return 0.0
    p = hist[hist > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" in the card


def agreement_by_part(alpha: float, local_float: np.ndarray, remote_float: np.ndarray, local_int8: np.ndarray,
                      remote_int8: np.ndarray) -> dict[str, float]:
    """Agreement with the float combined prediction when only the local logits are the int8 device part's, and
    when only the remote logits come from its codes: which side of the split a disagreement comes from. Local
    logits dequantized; an image without int8 remote logits (NaN) counts as a disagreement."""
    a = np.float32(alpha)
    b = np.float32(1.0) - a
    remote_int8 = np.asarray(remote_int8, np.float32)
    float_pred = np.argmax(a * local_float + b * remote_float, axis=-1)
    local_only = np.argmax(a * local_int8 + b * remote_float, axis=-1)
    codes_only = np.argmax(a * local_float + b * remote_int8, axis=-1)
    codes_ok = np.isfinite(remote_int8).all(axis=-1)
    return {
        "int8_local_logits_only": float(np.mean(local_only == float_pred)),
        "int8_codes_only": float(np.mean((codes_only == float_pred) & codes_ok)),
    }
