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


# --------------------------------------------------------------------------------------------------------
# Activations and elementwise ops: the Prepare arithmetic of TFLM's SOFTMAX, LOGISTIC, TANH, HARD_SWISH


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """TFLM CalculateInputRadius: the largest input difference whose rescaled value stays below the fixed-point
    range (default build, without TFLITE_SINGLE_ROUNDING)."""
    if input_left_shift < 0:
        raise ValueError(f"input left shift {input_left_shift} is negative")
    max_input_rescaled = (
        1.0
        * ((1 << input_integer_bits) - 1)
        * (1 << (total_signed_bits - input_integer_bits))
        / (1 << input_left_shift)
    )
    return math.floor(max_input_rescaled)


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int) -> tuple[int, int]:
    """TFLM PreprocessSoftmaxScaling: (multiplier, left shift >= 0) of beta * input_scale in
    Q(input_integer_bits); the real multiplier is capped at 2^31 - 1 (default build)."""
    real = min(float(beta) * float(input_scale) * float(1 << (31 - input_integer_bits)), (1 << 31) - 1.0)
    if not real > 1.0:  # QuantizeMultiplierGreaterThanOne's check
        raise ValueError(f"beta * input scale * 2^{31 - input_integer_bits} = {real!r} is not above 1")
    multiplier, shift = quantize_multiplier(real)
    if shift < 0:
        raise ValueError(f"softmax input multiplier {real!r} gave a negative shift")
    return multiplier, shift


def fixed_point_input_rescale(input_scale: float, input_integer_bits: int = 4) -> tuple[int, int, int]:
    """int8 LOGISTIC and TANH (TFLM CalculateArithmeticOpData): (multiplier, left shift, input range radius)
    that bring x - zero point to Q4.27. TFLM rounds frexp's fraction itself here instead of calling
    QuantizeMultiplier."""
    real = float(input_scale) * float(1 << (31 - input_integer_bits))
    q, left_shift = math.frexp(real)
    multiplier = round_half_away_from_zero(q * (1 << 31))
    if multiplier > INT32_MAX:
        raise ValueError(f"input scale {input_scale!r} does not quantize")
    return multiplier, left_shift, calculate_input_radius(input_integer_bits, left_shift, 31)


def _logf(x: float) -> np.float32:
    return np.float32(math.log(float(np.float32(x))))  # std::log(float), correctly rounded


def checked_log2(x: float) -> tuple[bool, int]:
    """TFLM CheckedLog2 (float arithmetic): (x is a power of two within 1e-3 in log2, rounded log2)."""
    x_log2 = _logf(x) * (np.float32(1.0) / _logf(2.0))
    rounded = np.float32(round_half_away_from_zero(float(x_log2)))
    return bool(abs(x_log2 - rounded) < np.float32(1e-3)), int(rounded)


def sigmoid_lut_input_rescale(input_scale: float, pot_left_shifts: tuple[int, ...]) -> tuple[int, int]:
    """int16 LOGISTIC (pot_left_shifts (0,)) and TANH ((0, 1)), TFLM's Prepare: (multiplier, left shift) that
    make 1.0 of the input 3 * 4096; multiplier 0 marks a power-of-two scale, for which the kernel uses
    3 << left_shift."""
    pot, log2_rounded = checked_log2(input_scale)
    left_shift = (15 - 3) + log2_rounded
    if pot and left_shift in pot_left_shifts:
        return 0, left_shift
    multiplier = float(input_scale) * 4096.0 * 3.0
    left_shift = 0
    while multiplier <= 32767.0 / 2.0 and left_shift <= 30:
        left_shift += 1
        multiplier = multiplier * 2.0
    return int(multiplier), left_shift  # static_cast<int32_t>: truncation


def downscale_int32_to_int16_multiplier(multiplier: int) -> int:
    """TFLM DownScaleInt32ToInt16Multiplier: a Q0.31 multiplier rounded to Q0.15."""
    if multiplier < 0:
        raise ValueError(f"multiplier {multiplier} is negative")
    if multiplier >= INT32_MAX - (1 << 15):
        return 32767
    return (multiplier + (1 << 15)) >> 16


def hard_swish_params(input_scale: float, output_scale: float) -> dict[str, int]:
    """TFLM HardSwishPrepare (int8): the Q0.15 multipliers and exponents of the output and "reluish" rescales,
    in double (float32 arithmetic gives other multipliers for some scales, and TFLM's results show double)."""
    hires_input_scale = float(input_scale) / 128.0
    reluish_scale = 3.0 / 32768.0
    out_m, out_e = quantize_multiplier(hires_input_scale / float(output_scale))
    relu_m, relu_e = quantize_multiplier(hires_input_scale / reluish_scale)
    return {
        "reluish_multiplier_exponent": relu_e,
        "output_multiplier_exponent": out_e,
        "reluish_multiplier_fixedpoint_int16": downscale_int32_to_int16_multiplier(relu_m),
        "output_multiplier_fixedpoint_int16": downscale_int32_to_int16_multiplier(out_m),
    }


def quantize_to_type(value: float, scale: float, zero_point: int, dtype: str) -> int:
    """TFLM FloatToQuantizedType (RELU6's bounds): round(float32(value) / scale) + zero point, saturated."""
    qmin, qmax = INT_RANGES[dtype]
    return min(max(quantize_float32(value, scale, zero_point), qmin), qmax)


def gen_lut(func, input_min: float, input_max: float, output_min: float, output_max: float) -> np.ndarray:
    """TFLM gen_lut<float, int16_t, int16_t>: a 513-entry int16 table of func on [input_min, input_max] for
    TFLM's interpolated lookup, each sample biased by half the interpolation error at its interval's midpoint.
    Every step is float32 arithmetic as in TFLM; func takes and returns np.float32."""
    f32 = np.float32
    nb_steps = 512
    lo, hi = f32(input_min), f32(input_max)
    step = (hi - lo) / f32(nb_steps)
    half_step = step / f32(2)
    output_scaling_inv = f32(65536) / (f32(output_max) - f32(output_min))
    table_min, table_max = f32(-32768), f32(32767)

    def rnd(v: np.float32) -> np.float32:
        return f32(round_half_away_from_zero(float(v)))

    lut = np.zeros(nb_steps + 1, dtype=np.int64)
    for i in range(nb_steps):
        val = func(lo + f32(i) * step)
        val_midpoint = func(lo + f32(i) * step + half_step)
        val_next = func(lo + f32(i + 1) * step)
        sample_val = rnd(val * output_scaling_inv)
        midpoint_interp_val = rnd((val_next * output_scaling_inv + rnd(val * output_scaling_inv)) / f32(2))
        midpoint_val = rnd(val_midpoint * output_scaling_inv)
        midpoint_err = midpoint_interp_val - midpoint_val
        bias = rnd(midpoint_err / f32(2))
        lut[i] = int(min(max(sample_val - bias, table_min), table_max))
    lut[nb_steps] = int(min(max(rnd(func(hi) * output_scaling_inv), table_min), table_max))
    return lut


def expf(x: np.float32) -> np.float32:
    """std::exp(float): the correctly rounded float32 of exp (glibc's expf is within 0.502 ULP of it)."""
    return np.float32(math.exp(float(x)))


def one_over_one_plus_x(x: np.float32) -> np.float32:
    return np.float32(1.0) / (np.float32(1.0) + x)


def softmax_int16_luts() -> tuple[np.ndarray, np.ndarray]:
    """The int16 SOFTMAX tables TFLM's Prepare builds: exp on [-10, 0] and 1/(1+x) on [0, 1], in Q0.15."""
    return gen_lut(expf, -10.0, 0.0, -1.0, 1.0), gen_lut(one_over_one_plus_x, 0.0, 1.0, -1.0, 1.0)
