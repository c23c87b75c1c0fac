"""TFLite Micro's compile-time quantization arithmetic, reproduced bit for bit in Python.

TFLM computes every requantization multiplier in its kernels' Prepare step from the float32 scales stored in
the model, in double precision, and rounds with std::round (half away from zero). The generated C gets the
resulting integers, so these functions must produce exactly what TFLM's C++ produces:

- scales are float32 values; converting them to Python floats is exact, and Python float arithmetic is IEEE
  double like C++'s `double`, so evaluating the same expression in the same order gives the same bits;
- where TFLM computes in float32 (the activation clamp range), numpy float32 scalars are used;
- Python's round() rounds half to even, so it is never used here.
"""

from __future__ import annotations

import math

import numpy as np

INT8_MIN = -128
INT8_MAX = 127
INT_RANGES = {"int8": (INT8_MIN, INT8_MAX), "int16": (-32768, 32767)}
INT32_MAX = 2**31 - 1


def round_half_away_from_zero(x: float) -> int:
    """std::round / TfLiteRound for a finite float: halves go away from zero."""
    if x < 0:
        return -round_half_away_from_zero(-x)
    floor = math.floor(x)
    # x - floor is exact for doubles, unlike floor(x + 0.5), which rounds 0.49999999999999994 up.
    return int(floor) + (1 if x - floor >= 0.5 else 0)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """TFLM QuantizeMultiplier: real = multiplier * 2^(shift - 31) with multiplier a Q0.31 int32.

    Returns (multiplier, shift); shift > 0 means a left shift. Matches the default build (without
    TFLITE_SINGLE_ROUNDING, which would also clamp shift to 30).
    """
    if real_multiplier == 0.0:
        return 0, 0
    q, shift = math.frexp(real_multiplier)
    q_fixed = round_half_away_from_zero(q * (1 << 31))
    if q_fixed > (1 << 31):
        raise ValueError(f"multiplier {real_multiplier!r} does not quantize")
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if q_fixed > INT32_MAX:
        raise ValueError(f"multiplier {real_multiplier!r} does not quantize")
    # Below 2^-31 every product would shift out entirely; TFLM flushes such multipliers to zero.
    if shift < -31:
        shift = 0
        q_fixed = 0
    return q_fixed, shift


def quantize_multiplier_smaller_than_one_exp(real_multiplier: float) -> tuple[int, int]:
    """TFLM QuantizeMultiplierSmallerThanOneExp (ADD): 0 < real < 1, returns (multiplier, shift <= 0)."""
    if not 0.0 < real_multiplier < 1.0:
        raise ValueError(f"multiplier {real_multiplier!r} is not in (0, 1)")
    multiplier, shift = quantize_multiplier(real_multiplier)
    if shift > 0:
        raise ValueError(f"multiplier {real_multiplier!r} gave a positive shift")
    return multiplier, shift


def per_channel_multipliers(
    input_scale: float, filter_scales: list[float] | tuple[float, ...], output_scale: float, channels: int
) -> tuple[list[int], list[int]]:
    """CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED multipliers, one per output channel.

    TFLM's PopulateConvolutionQuantizationParams and CalculateOpDataFullyConnected evaluate
    double(input_scale) * double(filter_scale) / double(output_scale); a per-tensor filter scale is
    broadcast to every channel.
    """
    if len(filter_scales) not in (1, channels):
        raise ValueError(f"{len(filter_scales)} filter scales for {channels} output channels")
    multipliers: list[int] = []
    shifts: list[int] = []
    for c in range(channels):
        filter_scale = filter_scales[c] if len(filter_scales) > 1 else filter_scales[0]
        effective = float(input_scale) * float(filter_scale) / float(output_scale)
        m, s = quantize_multiplier(effective)
        multipliers.append(m)
        shifts.append(s)
    return multipliers, shifts


def quantize_float32(value: float, scale: float, zero_point: int) -> int:
    """TFLM's Quantize() helper used for activation ranges: zero_point + round(float32(value) / scale)."""
    quotient = np.float32(value) / np.float32(scale)  # float32 division, as in the C++
    return int(zero_point) + round_half_away_from_zero(float(quotient))


def activation_range(activation: str, scale: float, zero_point: int, dtype: str = "int8") -> tuple[int, int]:
    """TFLM CalculateActivationRangeQuantized for an int8 or int16 output: the fused activation as a clamp
    range within the output type's range."""
    qmin, qmax = INT_RANGES[dtype]
    if activation == "NONE":
        return qmin, qmax
    if activation == "RELU":
        return max(qmin, quantize_float32(0.0, scale, zero_point)), qmax
    if activation == "RELU6":
        return (
            max(qmin, quantize_float32(0.0, scale, zero_point)),
            min(qmax, quantize_float32(6.0, scale, zero_point)),
        )
    if activation == "RELU_N1_TO_1":
        return (
            max(qmin, quantize_float32(-1.0, scale, zero_point)),
            min(qmax, quantize_float32(1.0, scale, zero_point)),
        )
    raise ValueError(f"fused activation {activation} has no integer clamp range")


def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """MEAN with differing input/output quantization: TFLM's QuantizedMeanOrSum folds 1/count into the
    multiplier of input_scale / output_scale at run time; done here once, with the same integer steps."""
    multiplier, shift = quantize_multiplier(float(input_scale) / float(output_scale))
    extra = count.bit_length() - 1  # 63 - CountLeadingZeros(uint64(count))
    # TFLM clamps so that the 64-bit shift cannot overflow and the final shift stays >= -31.
    extra = min(extra, 32, 31 + shift)
    multiplier = (multiplier << extra) // count  # int64 division of non-negative values
    return multiplier, shift - extra


def compute_out_size(padding: str, image_size: int, filter_size: int, stride: int, dilation: int) -> int:
    """TFLM ComputeOutSize."""
    effective_filter = (filter_size - 1) * dilation + 1
    if stride == 0:
        return 0
    if padding == "SAME":
        return (image_size + stride - 1) // stride
    if padding == "VALID":
        return (image_size + stride - effective_filter) // stride
    raise ValueError(f"unknown padding {padding}")


def compute_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    """TFLM ComputePadding: the leading (top/left) padding; any odd remainder goes to the far side."""
    effective_filter = (filter_size - 1) * dilation + 1
    total = (out_size - 1) * stride + effective_filter - in_size
    padding = int(total / 2) if total < 0 else total // 2  # C++ division truncates toward zero
    return max(padding, 0)
