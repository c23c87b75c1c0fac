/* Fixed-point helpers shared by every kernel (int8 and 16x8), bit-exact with TensorFlow Lite Micro.
 *
 * TFLM requantizes an int32 accumulator with MultiplyByQuantizedMultiplier(). It has two builds of
 * that function; the one here is the default (TFLITE_SINGLE_ROUNDING undefined), which is what the
 * tflite-micro Python runtime and the stock reference kernels use: a gemmlowp
 * SaturatingRoundingDoublingHighMul followed by a RoundingDivideByPOT, i.e. two roundings.
 * tests/test_kernels.py checks this choice against the runtime.
 *
 * All multipliers and shifts are computed by the model compiler (hil/model/quantization.py), so
 * nothing here touches floating point. Only 64-bit multiplies are used (no 64-bit division: the
 * LX106 target has no divide instruction and its libgcc lacks __divdi3).
 *
 * Like TFLM, this relies on >> of a negative signed integer being an arithmetic shift, which holds
 * for gcc and clang on every target this project builds for. */
#ifndef HIL_QUANT_H
#define HIL_QUANT_H

#include <stdint.h>

#define HIL_INT8_MIN (-128)
#define HIL_INT8_MAX 127
#define HIL_INT16_MIN (-32768)
#define HIL_INT16_MAX 32767

static inline int32_t hil_min_i32(int32_t a, int32_t b) { return a < b ? a : b; }
static inline int32_t hil_max_i32(int32_t a, int32_t b) { return a > b ? a : b; }

static inline int32_t hil_clamp_i32(int32_t x, int32_t lo, int32_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* gemmlowp::SaturatingRoundingDoublingHighMul: the high 32 bits of 2*a*b, rounded to nearest with
 * ties away from zero. The only overflow (a == b == INT32_MIN) saturates to INT32_MAX. */
static inline int32_t hil_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    const int64_t sum = ab + nudge;
    /* gemmlowp divides by 2^31, truncating toward zero. A shift floors instead, so bias negative
     * values by 2^31 - 1 first: same result without a 64-bit division. */
    const int64_t quotient = (sum >= 0 ? sum : sum + (((int64_t)1 << 31) - 1)) >> 31;
    if (a == b && a == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)quotient;
}

/* gemmlowp::RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.
 * exponent is 0..31. */
static inline int32_t hil_rounding_divide_by_pot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLM MultiplyByQuantizedMultiplier (default, double-rounding build): x * multiplier * 2^shift
 * with multiplier a Q0.31 value in [2^30, 2^31) and shift in [-31, 30]. A positive shift is applied
 * before the multiply (as TFLM does, with the same int32 range), a negative one after it. */
static inline int32_t hil_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int shift) {
    const int left_shift = shift > 0 ? shift : 0;
    const int right_shift = shift > 0 ? 0 : -shift;
    return hil_rounding_divide_by_pot(
        hil_saturating_rounding_doubling_high_mul(x * (1 << left_shift), multiplier), right_shift);
}

/* TFLM MultiplyByQuantizedMultiplier for a 64-bit accumulator (the 16x8 kernels: int16 activations, int8
 * weights, int64 bias), default build: the Q0.31 multiplier is first reduced to Q0.15 with rounding, then
 * one rounding shift. |x| < 2^47 and shift in [-31, 7] as TFLM asserts; the result fits in int32. */
static inline int32_t hil_multiply_by_quantized_multiplier_i64(int64_t x, int32_t multiplier, int shift) {
    const int32_t reduced = multiplier < 0x7FFF0000 ? ((multiplier + (1 << 15)) >> 16) : 0x7FFF;
    const int total_shift = 15 - shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    return (int32_t)((x * (int64_t)reduced + round) >> total_shift);
}

/* TFLM MultiplyByQuantizedMultiplierSmallerThanOneExp, used by ADD: the shift is never positive. */
static inline int32_t hil_multiply_by_quantized_multiplier_smaller_than_one_exp(int32_t x,
                                                                                int32_t multiplier,
                                                                                int left_shift) {
    return hil_rounding_divide_by_pot(hil_saturating_rounding_doubling_high_mul(x, multiplier),
                                      -left_shift);
}

/* Integer division rounded to nearest, ties away from zero, as TFLM's pooling kernels write it.
 * divisor > 0. A 32-bit division: the port supplies __divsi3 where the CPU has no divider. */
static inline int32_t hil_rounded_div_i32(int32_t x, int32_t divisor) {
    return x > 0 ? (x + divisor / 2) / divisor : (x - divisor / 2) / divisor;
}

#endif
