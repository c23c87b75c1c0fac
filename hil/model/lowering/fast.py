"""Specialised kernels: what the compiler knows at compile time, used to make the C core fast.

`specialise(call)` takes a weighted operator already lowered to its generic kernel (CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED; int8 or 16x8) and returns the call of a specialised kernel (device_fw/core/include/
hil_kernels.h, "Specialised kernels") with its data, or None where none applies. What it precomputes:

- the input zero point folded into the bias: bias + input_offset * (sum of the channel's weights). A padded
  tap contributes nothing in TFLM; the specialised kernels make it read the input zero point instead (a row of
  zero points for depthwise, the pad value in the convolution's gathered patch), which adds input_offset *
  w + w * zero_point = 0 on top of the fold, so borders stay exact;
- the weights in the order the loops read them: convolutions and FULLY_CONNECTED in blocks of four output
  channels ([channels / 4][depth][4], zero-padded), depthwise with each channel's taps side by side;
- for 16x8, TFLM's reduced Q0.15 multiplier;
- the choice of loop: 1x1 without padding is a matrix product (FULLY_CONNECTED is one over its batches), other
  convolutions gather each output pixel's patch into an arena scratch vector first; 3x3 depthwise with
  depth multiplier 1 is unrolled, other depthwise filters loop over up to HIL_DEPTHWISE_MAX_TAPS taps.

Exactness conditions, checked per output channel from the actual weights and bias over the whole input range
(else the generic kernel is kept): every partial sum of the specialised loop and TFLM's accumulator fit in
int32 (16x8: TFLM's int64 accumulator then equals the specialised kernel's int32 one), and TFLM's x * 2^shift
for a left shift does not overflow, so that the one-step requantization of hil_quant.h equals TFLM's two steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hil.model.lowering.common import ConstArray, KernelCall

INT32_MAX = 2**31 - 1
DEPTHWISE_MAX_TAPS = 64  # HIL_DEPTHWISE_MAX_TAPS in hil_kernels.h
BLOCK = 4  # output channels per block of the convolution kernels
# The generic kernels a port may dispatch to a vendor library (HIL_USE_ESP_NN, hil_kernels.h): a model calls
# them with their params struct when built that way, so their generic data is kept beside the specialised one.
VENDOR_KERNELS = (
    "hil_conv_2d",
    "hil_depthwise_conv_2d",
    "hil_fully_connected",
    "hil_add",
    "hil_average_pool_2d",
    "hil_max_pool_2d",
    "hil_softmax",
)


def _consts(call: KernelCall) -> dict[str, ConstArray]:
    return {c.symbol: c for c in call.consts}


def _ceil4(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _pad_channels(values: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    out[: values.size] = values
    return out


def reduced_multipliers(multipliers: np.ndarray) -> np.ndarray:
    """TFLM's 64-bit MultiplyByQuantizedMultiplier: the Q0.31 multiplier rounded to Q0.15."""
    m = multipliers.astype(np.int64)
    return np.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)


def _tflm_range(w: np.ndarray, bias: np.ndarray, zero_point: int, is16: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the least and greatest value TFLM's accumulator takes over every input (w: [channels][taps])."""
    lo, hi = (-32768, 32767) if is16 else (-128 - zero_point, 127 - zero_point)  # x - zero point
    return bias + np.minimum(w * lo, w * hi).sum(axis=1), bias + np.maximum(w * lo, w * hi).sum(axis=1)


def _requant_ok(acc_abs: np.ndarray, shifts: np.ndarray, is16: bool) -> tuple[bool, bool]:
    """(the one-step requantization is exact, the 32-bit limb form applies: small_acc) for these channels."""
    if is16:
        n = 15 - shifts
        return True, bool(np.all((n >= 17) & (n <= 46)))
    # hil_requantize_s32 is written for right shifts (TFLM shift < 0), which every conv layer of the committed
    # models has: TFLM's x * 2^left_shift then never runs.
    n = 31 - shifts
    return bool(np.all(shifts < 0)), bool(np.all(acc_abs < 2**20) and np.all(n <= 52))


def _fits(*bounds: np.ndarray) -> bool:
    return all(bool(np.all(b <= INT32_MAX)) for b in bounds)


def _fast_call(
    call: KernelCall, kernel: str, params_type: str, params: dict, consts: list[ConstArray], scratch: int = 0
) -> KernelCall:
    return dataclasses.replace(
        call,
        kernel=kernel,
        params_type=params_type,
        params=params,
        consts=consts,
        scratch_bytes=scratch,
        fast=None,
    )


def _requant_arrays(prefix: str, mult: np.ndarray, shift: np.ndarray, is16: bool, n: int) -> list[ConstArray]:
    """Multipliers and total right shifts: 31 - shift (int8) or 15 - shift (16x8, with TFLM's reduced Q0.15
    multiplier); padded channels get multiplier 0 and a valid shift."""
    m = reduced_multipliers(mult) if is16 else mult
    right = (15 if is16 else 31) - shift
    padded_right = np.full(n, 16 if is16 else 32, dtype=np.int64)
    padded_right[: right.size] = right
    return [
        ConstArray(
            f"{prefix}_fast_multiplier",
            "int32_t",
            _pad_channels(m, n),
            "Q0.15 multipliers (TFLM's reduced form)" if is16 else "Q0.31 multipliers",
        ),
        ConstArray(
            f"{prefix}_fast_shift",
            "int32_t",
            padded_right,
            "right shifts: 15 - TFLM's shift" if is16 else "right shifts: 31 - TFLM's shift",
        ),
    ]


def _matrix_call(
    call: KernelCall,
    prefix: str,
    w2d: np.ndarray,
    bias: np.ndarray,
    mult: np.ndarray,
    shift: np.ndarray,
    zero_point: int,
    is16: bool,
    geometry: dict,
    kernel: str,
    scratch: int,
) -> KernelCall | None:
    """A convolution's or FULLY_CONNECTED's specialised call: w2d is [channels][depth]."""
    channels, depth = w2d.shape
    w = w2d.astype(np.int64)
    lo, hi = _tflm_range(w, bias, zero_point, is16)
    acc_abs = np.maximum(np.abs(lo), np.abs(hi))
    exact, small = _requant_ok(acc_abs, shift, is16)
    # The kernel's accumulator: bias - zero point * sum(w) - 128 * sum(x) + sum (w + 128) * x.
    folded = bias - zero_point * w.sum(axis=1)
    x_abs = 32768 if is16 else 128
    partial = np.abs(folded) + depth * (128 * x_abs + 255 * x_abs)
    tflm_partial = np.abs(bias) + np.abs(w).sum(axis=1) * (32768 if is16 else 255)
    if not (exact and _fits(partial, tflm_partial, acc_abs)):
        return None
    n = _ceil4(channels)
    packed = np.full((n, depth), -128, dtype=np.int64)  # padded channels: stored 0
    packed[:channels] = w
    packed = (packed + 128).reshape(n // BLOCK, BLOCK, depth).transpose(0, 2, 1).reshape(-1)
    consts = [
        ConstArray(
            f"{prefix}_fast_filter",
            "uint8_t",
            packed,
            f"weight + 128, [{n // BLOCK}][{depth}][{BLOCK}]: blocks of 4 channels",
        ),
        ConstArray(
            f"{prefix}_fast_bias",
            "int32_t",
            _pad_channels(folded, n),
            f"[{n}]: bias - input zero point * sum of weights",
        ),
        *_requant_arrays(prefix, mult, shift, is16, n),
    ]
    params = {
        **geometry,
        "pad_value": zero_point,
        "output_offset": call.params.get("output_offset", 0),
        "act_min": call.params["act_min"],
        "act_max": call.params["act_max"],
        "small_acc": int(small),
        "filter": f"{prefix}_fast_filter",
        "bias": f"{prefix}_fast_bias",
        "output_multiplier": f"{prefix}_fast_multiplier",
        "output_shift": f"{prefix}_fast_shift",
    }
    elem = 2 if is16 else 1
    return _fast_call(call, kernel, "hil_conv_fast_params_t", params, consts, scratch * elem)


def _weighted(call: KernelCall) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, bool, str]:
    c = _consts(call)
    p = call.params
    is16 = call.kernel.endswith("_16x8")
    filt = c[p["filter"]].values.astype(np.int64)
    channels = len(c[p["output_multiplier"]].values)
    bias = c[p["bias"]].values.astype(np.int64) if p["bias"] != "NULL" else np.zeros(channels, dtype=np.int64)
    mult = c[p["output_multiplier"]].values.astype(np.int64)
    shift = c[p["output_shift"]].values.astype(np.int64)
    zero_point = -int(p.get("input_offset", 0))
    prefix = f"op{call.op_index}"
    return filt, bias, mult, shift, zero_point, is16, prefix


_GEOMETRY = (
    "batches",
    "input_h",
    "input_w",
    "input_c",
    "filter_h",
    "filter_w",
    "output_h",
    "output_w",
    "output_c",
    "stride_h",
    "stride_w",
    "dilation_h",
    "dilation_w",
    "pad_h",
    "pad_w",
)


def _specialise_conv(call: KernelCall) -> KernelCall | None:
    filt, bias, mult, shift, zp, is16, prefix = _weighted(call)
    p = call.params
    oc = p["output_c"]
    w2d = filt.reshape(oc, -1)  # OHWI: [oc][fh * fw * ic], the order of the gathered patch
    geometry = {k: p[k] for k in _GEOMETRY}
    suffix = "_16x8" if is16 else ""
    if p["filter_h"] == 1 and p["filter_w"] == 1 and p["pad_h"] == 0 and p["pad_w"] == 0:
        return _matrix_call(call, prefix, w2d, bias, mult, shift, zp, is16, geometry, f"hil_conv_2d_1x1{suffix}", 0)
    depth = p["filter_h"] * p["filter_w"] * p["input_c"]
    return _matrix_call(call, prefix, w2d, bias, mult, shift, zp, is16, geometry, f"hil_conv_2d_patch{suffix}", depth)


def _specialise_fully_connected(call: KernelCall) -> KernelCall | None:
    filt, bias, mult, shift, zp, is16, prefix = _weighted(call)
    p = call.params
    w2d = filt.reshape(p["output_depth"], p["accum_depth"])
    batches = p["batches"]
    geometry = {
        "batches": 1, "input_h": 1, "input_w": batches, "input_c": p["accum_depth"], "filter_h": 1, "filter_w": 1,
        "output_h": 1, "output_w": batches, "output_c": p["output_depth"], "stride_h": 1, "stride_w": 1,
        "dilation_h": 1, "dilation_w": 1, "pad_h": 0, "pad_w": 0,
    }  # fmt: skip
    suffix = "_16x8" if is16 else ""
    return _matrix_call(call, prefix, w2d, bias, mult, shift, zp, is16, geometry, f"hil_conv_2d_1x1{suffix}", 0)


def _specialise_depthwise(call: KernelCall) -> KernelCall | None:
    filt, bias, mult, shift, zp, is16, prefix = _weighted(call)
    p = call.params
    oc, taps = p["output_c"], p["filter_h"] * p["filter_w"]
    if taps > DEPTHWISE_MAX_TAPS:
        return None
    w2d = filt.reshape(taps, oc).T  # [oc][taps]
    # int8 inputs are read as x - 128 (hil_quant.h, HIL_X_MINUS_128): the bias absorbs 128 * sum(w).
    folded = bias - (zp if is16 else zp - 128) * w2d.sum(axis=1)
    lo, hi = _tflm_range(w2d, bias, zp, is16)
    acc_abs = np.maximum(np.abs(lo), np.abs(hi))
    exact, small = _requant_ok(acc_abs, shift, is16)
    partial = np.abs(folded) + np.abs(w2d).sum(axis=1) * (32768 if is16 else 256)
    tflm_partial = np.abs(bias) + np.abs(w2d).sum(axis=1) * (32768 if is16 else 255)
    if not (exact and _fits(partial, tflm_partial, acc_abs)):
        return None
    three = p["filter_h"] == 3 and p["filter_w"] == 3 and p["depth_multiplier"] == 1
    suffix = "_16x8" if is16 else ""
    kernel = f"hil_depthwise_conv_2d_{'3x3' if three else 'taps'}{suffix}"
    consts = [
        ConstArray(f"{prefix}_fast_filter", "int16_t", w2d.reshape(-1), f"[{oc}][{taps}]: each channel's taps"),
        ConstArray(
            f"{prefix}_fast_bias",
            "int32_t",
            folded,
            f"[{oc}]: bias - input zero point * sum of weights"
            if is16
            else f"[{oc}]: bias - (input zero point - 128) * sum of weights (inputs read as x - 128)",
        ),
        *_requant_arrays(prefix, mult, shift, is16, oc),
        ConstArray(
            f"{prefix}_fast_pad",
            "int16_t" if is16 else "int8_t",
            np.full(p["input_c"], zp, dtype=np.int64),
            "what a padded tap reads: the input zero point",
        ),
    ]
    params = {
        "batches": p["batches"], "input_h": p["input_h"], "input_w": p["input_w"], "input_c": p["input_c"],
        "depth_multiplier": p["depth_multiplier"], "filter_h": p["filter_h"], "filter_w": p["filter_w"],
        "output_h": p["output_h"], "output_w": p["output_w"], "output_c": oc,
        "stride_h": p["stride_h"], "stride_w": p["stride_w"], "dilation_h": p["dilation_h"],
        "dilation_w": p["dilation_w"], "pad_h": p["pad_h"], "pad_w": p["pad_w"],
        "output_offset": p.get("output_offset", 0), "act_min": p["act_min"], "act_max": p["act_max"],
        "small_acc": int(small), "filter": f"{prefix}_fast_filter", "bias": f"{prefix}_fast_bias",
        "output_multiplier": f"{prefix}_fast_multiplier", "output_shift": f"{prefix}_fast_shift",
        "pad_row": f"{prefix}_fast_pad",
    }  # fmt: skip
    return _fast_call(call, kernel, "hil_depthwise_fast_params_t", params, consts)


_SPECIALISERS = {
    "hil_conv_2d": _specialise_conv,
    "hil_conv_2d_16x8": _specialise_conv,
    "hil_depthwise_conv_2d": _specialise_depthwise,
    "hil_depthwise_conv_2d_16x8": _specialise_depthwise,
    "hil_fully_connected": _specialise_fully_connected,
    "hil_fully_connected_16x8": _specialise_fully_connected,
}


def specialise(call: KernelCall) -> KernelCall | None:
    """The specialised form of a lowered call, or None (no specialised kernel, or not provably exact)."""
    fn = _SPECIALISERS.get(call.kernel or "")
    return fn(call) if fn is not None else None
