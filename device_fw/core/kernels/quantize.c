/* QUANTIZE.
 *
 * hil_requantize: between integer types and scales (int8 <-> int8, int8 <-> int16, int16 <-> int16), TFLM
 * reference_ops::Requantize: MultiplyByQuantizedMultiplier(x - input zero point) by input_scale /
 * output_scale, plus the output zero point, saturated to the output type. (TFLM's special case, a plain
 * flip of the sign bit, is for uint8 <-> int8 only, which the compiler does not accept.)
 *
 * hil_quantize: float32 to int8 or int16, TFLM reference_ops::AffineQuantize: round(x / scale) (single
 * precision division, halves away from zero) plus the zero point, saturated. */
#include "hil_kernels.h"
#include "hil_quant.h"

void hil_requantize(const hil_requantize_params_t *p, const void *input, void *output) {
    int32_t i;
    HIL_DCHECK((p->input_bytes == 1 || p->input_bytes == 2) && (p->output_bytes == 1 || p->output_bytes == 2));
    for (i = 0; i < p->size; ++i) {
        const int32_t x = hil_load(input, i, p->input_bytes) - p->input_zero_point;
        const int32_t y = hil_multiply_by_quantized_multiplier(x, p->multiplier, p->shift) + p->output_zero_point;
        hil_store(output, i, p->output_bytes, hil_clamp_i32(y, p->output_min, p->output_max));
    }
}

/* std::round on a float: halves away from zero. |x| <= 2^20 here, so the truncation fits an int32 and
 * x - truncation (the fraction) is exact. */
static int32_t round_half_away_from_zero(float x) {
    const int32_t truncated = (int32_t)x;
    const float fraction = x - (float)truncated;
    if (fraction >= 0.5f) {
        return truncated + 1;
    }
    if (fraction <= -0.5f) {
        return truncated - 1;
    }
    return truncated;
}

void hil_quantize(const hil_quantize_params_t *p, const float *input, void *output) {
    /* Beyond +-2^20 steps every output saturates anyway; clamping first keeps the conversion to int32
     * defined. (TFLM converts without a check: beyond 2^31 steps, infinities and NaN are undefined behaviour
     * there; here they saturate, NaN to the minimum.) */
    const float kLimit = 1048576.0f;
    int32_t i;
    HIL_DCHECK(p->output_bytes == 1 || p->output_bytes == 2);
    for (i = 0; i < p->size; ++i) {
        float q = input[i] / p->scale;
        if (!(q >= -kLimit)) {
            q = -kLimit;
        } else if (q > kLimit) {
            q = kLimit;
        }
        hil_store(output, i, p->output_bytes,
                  hil_clamp_i32(round_half_away_from_zero(q) + p->zero_point, p->output_min, p->output_max));
    }
}
