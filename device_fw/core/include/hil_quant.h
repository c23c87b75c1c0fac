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


/* ---- Requantization in one step (the specialised kernels) ------------------------------------------
 * The compiler picks a specialised kernel only where it has proved, from the weights, bias and input range,
 * that the accumulator stays inside int32 and that TFLM's x * 2^left_shift does not overflow; under those
 * conditions the two roundings of hil_multiply_by_quantized_multiplier() are one floor division:
 *
 *   RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^L, M), R)
 *     == floor((x * M + 2^(N-1) + (N > 31 ? (x >= 0 ? 2^30 : -2^30) : 0)) / 2^N),   N = 31 - shift
 *
 * for M in [0, 2^31) and shift = L - R in [-31, 30] (the SRDHM nudge rounds half up, which a floor of
 * x * M + 2^30 over 2^31 is; RDBPOT rounds half away from zero, which is +2^(R-1) for x >= 0 and
 * +2^(R-1) - 1 for x < 0 in units of 2^31; nested floors divide once). The specialised kernels use it for
 * N > 31 (a right shift: every conv layer of the committed models). tests/test_runtime_speed.py checks it
 * against the two-step form in C; the models' bit-exactness checks it against TFLM. */

/* Targets whose CPU has no 32x32 -> 64 high multiply (the lx106 of the qemu port: no MULSH) would call libgcc's
 * __muldi3 for a 64-bit product; four 16x16 products inline are cheaper there. ESP-IDF targets (ESP32-S3:
 * MULSH) and hosts multiply directly. A port may define HIL_SLOW_MUL64 itself. */
#ifndef HIL_SLOW_MUL64
#if defined(__XTENSA__) && !defined(ESP_PLATFORM)
#define HIL_SLOW_MUL64 1
#else
#define HIL_SLOW_MUL64 0
#endif
#endif

/* Inner loops unrolled by two keep more values in registers than the lx106's call0 ABI has (13 usable): gcc
 * then spills accumulators to the stack. The specialised kernels unroll by HIL_UNROLL. */
#ifndef HIL_UNROLL
#if defined(__XTENSA__)
#define HIL_UNROLL 1
#else
#define HIL_UNROLL 2
#endif
#endif

/* A scheduling barrier between the steps of a fully unrolled block: without it gcc's instruction scheduler
 * hoists every load of the block to its top, which on the lx106 means spilling them all to the stack. It
 * constrains only memory accesses and only on Xtensa; elsewhere it is nothing. */
#if defined(__XTENSA__) && defined(__GNUC__)
#define HIL_STEP_BARRIER() __asm__ __volatile__("" ::: "memory")
#else
#define HIL_STEP_BARRIER() ((void)0)
#endif

/* int8 inputs read as x - 128 (the specialised depthwise kernels; the compiler folds the -128 into the bias).
 * On the lx106 (no SEXT: a signed byte load is l8ui, slli, srai) an unsigned load XORed with 0xFF80 holds x - 128
 * in its low 16 bits, and MUL16S multiplies exactly those: two instructions per input instead of three. Other
 * targets load the byte signed and subtract. hil_mul16(a, b) is a * b for a and b in the int16 range (on the
 * lx106: the low 16 bits of each, signed). */
#if defined(__XTENSA__) && defined(__GNUC__) && !defined(ESP_PLATFORM)
#define HIL_X_MINUS_128(p) ((int32_t)(*(const uint8_t *)(p) ^ 0xFF80u))
static inline int32_t hil_mul16(int32_t a, int32_t b) {
    int32_t r;
    __asm__("mul16s %0, %1, %2" : "=a"(r) : "a"(a), "a"(b));
    return r;
}
#else
#define HIL_X_MINUS_128(p) ((int32_t) * (const int8_t *)(p) - 128)
static inline int32_t hil_mul16(int32_t a, int32_t b) {
    return a * b;
}
#endif

/* a * b exactly, as an int64. */
static inline int64_t hil_mul_s32_s32(int32_t a, int32_t b) {
#if HIL_SLOW_MUL64
    const int32_t ah = a >> 16, bh = b >> 16;
    const uint32_t al = (uint32_t)a & 0xFFFFu, bl = (uint32_t)b & 0xFFFFu;
    /* al*bl < 2^32 unsigned; |ah*bl|, al*|bh| < 2^31; |ah*bh| <= 2^30 */
    const int64_t mid = (int64_t)(ah * (int32_t)bl) + (int64_t)((int32_t)al * bh);
    return (int64_t)((uint64_t)(int64_t)(ah * bh) << 32) + (int64_t)((uint64_t)mid << 16) + (int64_t)(al * bl);
#else
    return (int64_t)a * (int64_t)b;
#endif
}

/* TFLM MultiplyByQuantizedMultiplier (int8 kernels) under the conditions above, for a right shift:
 * n = 31 - TFLM's shift > 31 (the compiler stores n; a channel with a left or no shift keeps the generic
 * kernel). The rounding term is 2^(n-1) + 2^30 for x >= 0 and 2^(n-1) - 2^30 for x < 0.
 *
 * small_acc (a per-layer flag the compiler sets where every accumulator is below 2^20 in magnitude and
 * n <= 52) lets a target without a fast 64-bit product (HIL_SLOW_MUL64) split the multiplier into 11-bit limbs
 * M = m2 * 2^22 + m1 * 2^11 + m0: each x * m fits int32, the rounding term is a multiple of 2^22, and nested
 * floors divide once, so
 *   floor((x * M + round) / 2^n) = (x * m2 + ((x * m1 + ((x * m0) >> 11)) >> 11) + round / 2^22) >> (n - 22)
 * with three 32-bit multiplies. small_acc 2 (the _u8 convolution kernels, where n <= 52 but the bound is
 * above 2^20): the same form for an accumulator that is below 2^20 at run time. Elsewhere the flag is ignored. */
static inline int32_t hil_requantize_s32_wide(int32_t x, int32_t multiplier, int32_t n) {
    const int64_t round =
        ((int64_t)1 << (n - 1)) + ((int64_t)1 << 30) + (int64_t)((uint64_t)(int64_t)(x >> 31) << 31);
    return (int32_t)((hil_mul_s32_s32(x, multiplier) + round) >> n);
}

#if HIL_SLOW_MUL64 && defined(__GNUC__)
/* Out of line, so that the 64-bit emulation's registers do not crowd the limb form's caller. */
static __attribute__((noinline, unused)) int32_t hil_requantize_s32_wide_call(int32_t x, int32_t multiplier, int32_t n) {
    return hil_requantize_s32_wide(x, multiplier, n);
}
#else
#define hil_requantize_s32_wide_call hil_requantize_s32_wide
#endif

static inline int32_t hil_requantize_s32(int32_t x, int32_t multiplier, int32_t n, int32_t small_acc) {
#if HIL_SLOW_MUL64
    /* small_acc 2: the layer's bound is above 2^20 but this accumulator may be below it (checked here) */
    if (small_acc == 1 || (small_acc == 2 && (uint32_t)x + ((1u << 20) - 1u) < (2u << 20) - 1u)) {
        const int32_t q0 = (x * (multiplier & 0x7FF)) >> 11;
        const int32_t q1 = (x * ((multiplier >> 11) & 0x7FF) + q0) >> 11;
        const int32_t t2 = x * (multiplier >> 22) + q1 + ((int32_t)1 << (n - 23)) + (1 << 8) + ((x >> 31) & -512);
        return t2 >> (n - 22);
    }
    return hil_requantize_s32_wide_call(x, multiplier, n);
#else
    (void)small_acc;
    return hil_requantize_s32_wide(x, multiplier, n);
#endif
}

/* TFLM's 64-bit MultiplyByQuantizedMultiplier (16x8 kernels) on an accumulator that the compiler proved fits
 * int32: reduced_multiplier is the Q0.15 multiplier TFLM derives from the Q0.31 one and n = 15 - TFLM's
 * shift, in [8, 46] (the compiler stores both). small_acc (17 <= n <= 46 for the whole layer, any x):
 * HIL_SLOW_MUL64 targets split x into 16-bit halves and use two 32-bit multiplies. */
static inline int32_t hil_requantize_16x8_wide(int32_t x, int32_t reduced_multiplier, int32_t n) {
#if HIL_SLOW_MUL64
    const int64_t product = (int64_t)((uint64_t)(int64_t)((x >> 16) * reduced_multiplier) << 16) +
                            (int64_t)(((uint32_t)x & 0xFFFFu) * (uint32_t)reduced_multiplier);
#else
    const int64_t product = (int64_t)x * reduced_multiplier;
#endif
    return (int32_t)((product + ((int64_t)1 << (n - 1))) >> n);
}

#if HIL_SLOW_MUL64 && defined(__GNUC__)
static __attribute__((noinline, unused)) int32_t hil_requantize_16x8_wide_call(int32_t x, int32_t m, int32_t n) {
    return hil_requantize_16x8_wide(x, m, n);
}
#else
#define hil_requantize_16x8_wide_call hil_requantize_16x8_wide
#endif

static inline int32_t hil_requantize_16x8(int32_t x, int32_t reduced_multiplier, int32_t n, int32_t small_acc) {
#if HIL_SLOW_MUL64
    if (small_acc) {
        /* x = xh * 2^16 + xl (xl unsigned): xh * R < 2^30, xl * R < 2^31, and for n >= 17 the rounding term
         * 2^(n-1) is a multiple of 2^16, so floor((x * R + 2^(n-1)) / 2^n)
         * = (xh * R + ((xl * R) >> 16) + 2^(n-17)) >> (n - 16) */
        const int32_t low = (int32_t)((((uint32_t)x & 0xFFFFu) * (uint32_t)reduced_multiplier) >> 16);
        return ((x >> 16) * reduced_multiplier + low + ((int32_t)1 << (n - 17))) >> (n - 16);
    }
    return hil_requantize_16x8_wide_call(x, reduced_multiplier, n);
#else
    (void)small_acc;
    return hil_requantize_16x8_wide(x, reduced_multiplier, n);
#endif
}

/* ---- Debug checks --------------------------------------------------------------------------------
 * The compiler checks every shape and parameter before it emits a call, so the kernels trust their params.
 * HIL_DCHECK restates those invariants where a kernel relies on them; it is compiled in only when
 * HIL_KERNEL_CHECKS is defined (the host model runner, hil/model/hostrun.py) and costs nothing elsewhere. */
#ifdef HIL_KERNEL_CHECKS
#include <assert.h>
#define HIL_DCHECK(cond) assert(cond)
#else
#define HIL_DCHECK(cond) ((void)0)
#endif

/* ---- Elements of either activation type ------------------------------------------------------------
 * Kernels whose int8 and int16 (16x8) variants do the same arithmetic share one loop that takes the element
 * size (1: int8_t, 2: int16_t) as a parameter, like TFLM's template<typename T> kernels. */
static inline int32_t hil_load(const void *base, int32_t i, int32_t elem_bytes) {
    return elem_bytes == 1 ? (int32_t)((const int8_t *)base)[i] : (int32_t)((const int16_t *)base)[i];
}

static inline void hil_store(void *base, int32_t i, int32_t elem_bytes, int32_t value) {
    if (elem_bytes == 1) {
        ((int8_t *)base)[i] = (int8_t)value;
    } else {
        ((int16_t *)base)[i] = (int16_t)value;
    }
}

/* ---- More of TFLM's integer helpers ------------------------------------------------------------------ */

/* TFLM MultiplyByQuantizedMultiplierGreaterThanOne (SOFTMAX): the shift is a left shift, >= 0. */
static inline int32_t hil_multiply_by_quantized_multiplier_greater_than_one(int32_t x, int32_t multiplier,
                                                                            int left_shift) {
    return hil_saturating_rounding_doubling_high_mul(x * (1 << left_shift), multiplier);
}

/* TFLM CountLeadingZeros of a uint32 (32 for 0). */
static inline int hil_count_leading_zeros(uint32_t x) {
    int n = 0;
    if (x == 0) {
        return 32;
    }
    while ((x & 0x80000000u) == 0) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* gemmlowp::SaturatingRoundingMultiplyByPOT: x * 2^exponent, a left shift that saturates for exponent > 0,
 * a rounding right shift (RoundingDivideByPOT) for exponent < 0. */
static inline int32_t hil_saturating_rounding_multiply_by_pot(int32_t x, int exponent) {
    if (exponent > 0) {
        const int32_t threshold = (int32_t)(((int64_t)1 << (31 - exponent)) - 1);
        if (x > threshold) {
            return INT32_MAX;
        }
        if (x < -threshold) {
            return INT32_MIN;
        }
        return (int32_t)((uint32_t)x << exponent);
    }
    if (exponent < 0) {
        return hil_rounding_divide_by_pot(x, -exponent);
    }
    return x;
}

/* gemmlowp::RoundingHalfSum: (a + b) / 2, rounded to nearest with ties away from zero. */
static inline int32_t hil_rounding_half_sum(int32_t a, int32_t b) {
    const int64_t sum = (int64_t)a + (int64_t)b;
    const int64_t sign = sum >= 0 ? 1 : -1;
    const int64_t twice = sum + sign; /* divided by 2 toward zero, without a 64-bit division */
    return (int32_t)(twice >= 0 ? twice >> 1 : -((-twice) >> 1));
}

/* ---- gemmlowp fixed point: exp, 1/(1+x), logistic and tanh (TFLM's int8 SOFTMAX, LOGISTIC, TANH) ----
 * gemmlowp's FixedPoint<int32_t, I> is an int32 raw value with I integer bits and 31 - I fractional bits;
 * these functions take and return raw values and pass I explicitly where gemmlowp has a template parameter.
 * The product of two fixed-point values is SaturatingRoundingDoublingHighMul of the raws (its integer bits
 * add up); + and - are plain int32 additions of raws with equal integer bits. Results are Q0.31
 * (FixedPoint<int32_t, 0>), whose One() is INT32_MAX. */

#define HIL_FP_ONE_Q0 INT32_MAX

static inline int32_t hil_fp_mul(int32_t a, int32_t b) {
    return hil_saturating_rounding_doubling_high_mul(a, b);
}

/* gemmlowp exp_on_interval_between_negative_one_quarter_and_0_excl: a Taylor expansion around -1/8.
 * a and the result are Q0.31. */
static inline int32_t hil_fp_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
    const int32_t constant_term = 1895147668;    /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883; /* 1/3 */
    const int32_t x = a + (1 << 28);             /* a + 1/8 */
    const int32_t x2 = hil_fp_mul(x, x);
    const int32_t x3 = hil_fp_mul(x2, x);
    const int32_t x4 = hil_fp_mul(x2, x2);
    const int32_t x4_over_4 = hil_saturating_rounding_multiply_by_pot(x4, -2);
    const int32_t x4_over_24_plus_x3_over_6_plus_x2_over_2 =
        hil_saturating_rounding_multiply_by_pot(hil_fp_mul(x4_over_4 + x3, constant_1_over_3) + x2, -1);
    return constant_term + hil_fp_mul(constant_term, x + x4_over_24_plus_x3_over_6_plus_x2_over_2);
}

/* gemmlowp exp_on_negative_values: exp(a) for a <= 0 with `integer_bits` integer bits; Q0.31 result.
 * exp(a mod 1/4 - 1/4) from the Taylor expansion, times exp(-2^k) for every bit k of the rest (the
 * "barrel shifter"); exp(0) is One(). */
static inline int32_t hil_fp_exp_on_negative_values(int32_t a, int integer_bits) {
    /* exp(-2^k) in Q0.31 for k = -2 .. 4 */
    static const int32_t kMultipliers[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int fractional_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (fractional_bits - 2);
    const int32_t mask = one_quarter - 1;
    const int32_t a_mod_quarter_minus_one_quarter = (a & mask) - one_quarter;
    const int32_t remainder = a_mod_quarter_minus_one_quarter - a;
    int32_t result = hil_fp_exp_on_interval_between_negative_one_quarter_and_0_excl(
        hil_saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits));
    int exponent;
    for (exponent = -2; exponent <= 4; ++exponent) {
        if (integer_bits > exponent && (remainder & ((int32_t)1 << (fractional_bits + exponent))) != 0) {
            result = hil_fp_mul(result, kMultipliers[exponent + 2]);
        }
    }
    if (integer_bits > 5 && a < -((int32_t)1 << (36 - integer_bits))) {
        result = 0; /* below -32: exp underflows */
    }
    return a == 0 ? HIL_FP_ONE_Q0 : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a) for a in [0, 1], both Q0.31; three Newton-Raphson
 * steps in Q2.29 from 48/17 - 32/17 * d, d = (1 + a) / 2. */
static inline int32_t hil_fp_one_over_one_plus_x_for_x_in_0_1(int32_t a) {
    const int32_t half_denominator = hil_rounding_half_sum(a, HIL_FP_ONE_Q0);
    const int32_t constant_48_over_17 = 1515870810;     /* Q2.29 */
    const int32_t constant_neg_32_over_17 = -1010580540; /* Q2.29 */
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = constant_48_over_17 + hil_fp_mul(half_denominator, constant_neg_32_over_17);
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = hil_fp_mul(half_denominator, x);
        const int32_t one_minus_half_denominator_times_x = one_q2 - half_denominator_times_x;
        x = x + hil_saturating_rounding_multiply_by_pot(hil_fp_mul(x, one_minus_half_denominator_times_x), 2);
    }
    /* Rescale<0>(ExactMulByPot<-1>(x)): x / 2 read as Q1.30, then to Q0.31 */
    return hil_saturating_rounding_multiply_by_pot(x, 1);
}

/* gemmlowp one_minus_x_over_one_plus_x_for_x_in_0_1: (1 - a) / (1 + a) for a in [0, 1], both Q0.31. */
static inline int32_t hil_fp_one_minus_x_over_one_plus_x_for_x_in_0_1(int32_t a) {
    const int32_t half_denominator = hil_rounding_half_sum(a, HIL_FP_ONE_Q0);
    const int32_t constant_48_over_17 = 1515870810;
    const int32_t constant_neg_32_over_17 = -1010580540;
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = constant_48_over_17 + hil_fp_mul(half_denominator, constant_neg_32_over_17);
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = hil_fp_mul(half_denominator, x);
        const int32_t one_minus_half_denominator_times_x = one_q2 - half_denominator_times_x;
        x = x + hil_saturating_rounding_multiply_by_pot(hil_fp_mul(x, one_minus_half_denominator_times_x), 2);
    }
    return hil_saturating_rounding_multiply_by_pot(x - one_q2, 2); /* Rescale<0>(x - 1) */
}

/* gemmlowp logistic: 1 / (1 + exp(-a)) for a with `integer_bits` integer bits; Q0.31 result. */
static inline int32_t hil_fp_logistic(int32_t a, int integer_bits) {
    const int32_t abs_a = a > 0 ? a : -a;
    const int32_t result_if_positive =
        hil_fp_one_over_one_plus_x_for_x_in_0_1(hil_fp_exp_on_negative_values(-abs_a, integer_bits));
    if (a == 0) {
        return (int32_t)1 << 30; /* one half */
    }
    return a > 0 ? result_if_positive : HIL_FP_ONE_Q0 - result_if_positive;
}

/* gemmlowp tanh: for a with `integer_bits` integer bits; Q0.31 result. tanh(|a|) = (1 - e) / (1 + e) with
 * e = exp(-2|a|); -2|a| is the same raw value read with one more integer bit (ExactMulByPot<1>). */
static inline int32_t hil_fp_tanh(int32_t a, int integer_bits) {
    const int32_t n = a < 0 ? a : -a;
    const int32_t t =
        hil_fp_one_minus_x_over_one_plus_x_for_x_in_0_1(hil_fp_exp_on_negative_values(n, integer_bits + 1));
    if (a == 0) {
        return 0;
    }
    return a < 0 ? -t : t;
}

/* TFLM GetReciprocal: 1 / x for x with `x_integer_digits` integer bits, as a Q0.31 value in [1/2, 1] and the
 * power of two it is off by (num_bits_over_unit): 1/x = result * 2^-num_bits_over_unit. x > 0. */
static inline int32_t hil_get_reciprocal(int32_t x, int x_integer_digits, int *num_bits_over_unit) {
    const int headroom_plus_one = hil_count_leading_zeros((uint32_t)x);
    const int32_t shifted_sum_minus_one =
        (int32_t)(((uint32_t)x << headroom_plus_one) - ((uint32_t)1 << 31));
    *num_bits_over_unit = x_integer_digits - headroom_plus_one;
    return hil_fp_one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
}

/* TFLM's sigmoid_table_uint16: sigmoid(i / 24) in Q0.16 for i = 0..255, the lookup table of the int16
 * LOGISTIC and TANH kernels (tanh(x) = 2 * sigmoid(2x) - 1). The values are TFLM's, read back from the
 * tflite-micro runtime (TANH on inputs that land exactly on each entry); about one in six is one above
 * round(65536 * sigmoid(i / 24)), so they cannot be recomputed. tests/test_ops_coverage.py checks both
 * kernels against the runtime on random inputs. */
static inline uint32_t hil_sigmoid_table_uint16(uint32_t i) {
    static const uint16_t kTable[256] = {
        32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149,
        40794, 41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369,
        47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409, 51865, 52311, 52745, 53169,
        53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
        57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370,
        60565, 60753, 60935, 61110, 61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302,
        62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186, 63279, 63368, 63454, 63536,
        63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
        64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786,
        64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079,
        65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234, 65246, 65258,
        65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
        65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433,
        65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474,
        65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498,
        65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
        65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522,
        65523, 65523, 65524, 65524, 65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528,
        65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530, 65530, 65530, 65531, 65531,
        65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
        65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534,
        65534, 65534, 65534, 65535,
    };
    return kTable[i];
}

/* ---- TFLM's int16 helpers (HARD_SWISH) --------------------------------------------------------------- */

/* gemmlowp::SaturatingRoundingDoublingHighMul on int16: the high 16 bits of 2*a*b, rounded as gemmlowp
 * writes it (nudge by +-2^14, then divide by 2^15 truncating toward zero). */
static inline int16_t hil_saturating_rounding_doubling_high_mul_i16(int16_t a, int16_t b) {
    const int32_t ab = (int32_t)a * (int32_t)b;
    const int32_t nudge = ab >= 0 ? (1 << 14) : (1 - (1 << 14));
    const int32_t sum = ab + nudge;
    if (a == b && a == INT16_MIN) {
        return INT16_MAX;
    }
    return (int16_t)(sum >= 0 ? sum >> 15 : -((-sum) >> 15));
}

/* TFLM SaturatingDoublingHighMul (int16): like the above but truncating toward zero (ARM SQDMULH). */
static inline int16_t hil_saturating_doubling_high_mul_i16(int16_t a, int16_t b) {
    const int32_t ab = (int32_t)a * (int32_t)b;
    if (a == b && a == INT16_MIN) {
        return INT16_MAX;
    }
    return (int16_t)(ab >= 0 ? ab >> 15 : -((-ab) >> 15));
}

/* TFLM SaturatingLeftShift (int16): value * 2^amount saturated to the int16 range. */
static inline int16_t hil_saturating_left_shift_i16(int16_t value, int amount) {
    const int64_t result = (int64_t)value * ((int64_t)1 << amount);
    return (int16_t)(result > INT16_MAX ? INT16_MAX : (result < INT16_MIN ? INT16_MIN : result));
}

#endif
