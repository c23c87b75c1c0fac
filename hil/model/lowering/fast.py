"""Specialised kernels: what the compiler knows at compile time, used to make the C core fast.

`specialise(call)` takes an operator already lowered to its generic kernel (CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED, int8 or 16x8; ADD) and returns the call of a specialised kernel (device_fw/core/include/
hil_kernels.h, "Specialised kernels") with its data, or None where none applies. What it precomputes:

- the input zero point folded into the bias: bias + input_offset * (sum of the channel's weights). A padded
  tap contributes nothing in TFLM; the specialised kernels make it read the input zero point instead (a row of
  zero points for depthwise, the pad value in the convolution's gathered patch), which adds input_offset *
  w + w * zero_point = 0 on top of the fold, so borders stay exact;
- the weights in the order the loops read them: int8 convolutions and FULLY_CONNECTED (the _u8 kernels, which
  read their inputs as x + 128, so the bias also absorbs -128 * sum of the weights; from a depth of
  U8_MIN_DEPTH) in blocks of 16 output channels where there are at least 16, else 4 ([channels / block][depth]
  [block], zero-padded), 16x8 ones in blocks of four, depthwise with each channel's taps side by side;
- for 16x8, TFLM's reduced Q0.15 multiplier;
- the choice of loop: 1x1 without padding is a matrix product (FULLY_CONNECTED is one over its batches), other
  convolutions gather each output pixel's patch into an arena scratch vector first (int8: the 1x1 kernel
  copies each pixel's inputs there too, as x + 128); 3x3 depthwise with depth multiplier 1 is unrolled, other
  depthwise filters loop over up to HIL_DEPTHWISE_MAX_TAPS taps;
- ADD of two same-shape activations (hil_add_table): each input's rescaled value, TFLM's
  MultiplyByQuantizedMultiplierSmallerThanOneExp((x - zero point) << 20), as a table of its 256 values, and the
  sum's requantization in one step where TFLM's output shift is a right shift.

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
WIDE_BLOCK = 16  # the int8 (_u8) kernels' block where there are at least this many output channels
U8_MIN_DEPTH = 16  # the int8 dot products from which the _u8 kernels run (shallower: the signed ones)
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
    u8 = kernel.endswith("_u8")
    if not u8:
        # The kernel's accumulator: bias - zero point * sum(w) - 128 * sum(x) + sum (w + 128) * x.
        folded = bias - zero_point * w.sum(axis=1)
        x_abs = 32768 if is16 else 128
        partial = np.abs(folded) + depth * (128 * x_abs + 255 * x_abs)
        block = BLOCK
    else:
        # The _u8 kernels' (inputs u = x + 128): sum (w + 128) * u - 128 * sum(u) + bias - (zero point + 128) * sum(w)
        folded = bias - (zero_point + 128) * w.sum(axis=1)
        partial = np.abs(folded) + depth * (255 * 255 + 128 * 255)
        block = WIDE_BLOCK if channels >= WIDE_BLOCK else BLOCK
    tflm_partial = np.abs(bias) + np.abs(w).sum(axis=1) * (32768 if is16 else 255)
    if not (exact and _fits(partial, tflm_partial, acc_abs)):
        return None
    if u8 and not small and bool(np.all(31 - shift <= 52)):
        small = 2  # hil_quant.h: the lx106 checks each accumulator against 2^20 at run time
    n = (channels + block - 1) // block * block
    packed = np.full((n, depth), -128, dtype=np.int64)  # padded channels: stored 0
    packed[:channels] = w
    packed = (packed + 128).reshape(n // block, block, depth).transpose(0, 2, 1).reshape(-1)
    consts = [
        ConstArray(
            f"{prefix}_fast_filter",
            "uint8_t",
            packed,
            f"weight + 128, [{n // block}][{depth}][{block}]: blocks of {block} channels",
        ),
        ConstArray(
            f"{prefix}_fast_bias",
            "int32_t",
            _pad_channels(folded, n),
            f"[{n}]: bias - input zero point * sum of weights"
            if not u8
            else f"[{n}]: bias - (input zero point + 128) * sum of weights (inputs read as x + 128)",
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
    if u8:
        params["block"] = block
    else:
        scratch = 0 if kernel.startswith("hil_conv_2d_1x1") else scratch
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


def _suffix(is16: bool, depth: int) -> str:
    """16x8: _16x8; int8: _u8 (inputs copied as x + 128, blocks of 16 channels), except for shallow dot products
    (depth below U8_MIN_DEPTH), where the copy and the calls per group of channels cost more than they save and
    the signed kernels' inline loops run instead."""
    if is16:
        return "_16x8"
    return "_u8" if depth >= U8_MIN_DEPTH else ""


def _specialise_conv(call: KernelCall) -> KernelCall | None:
    filt, bias, mult, shift, zp, is16, prefix = _weighted(call)
    p = call.params
    oc = p["output_c"]
    w2d = filt.reshape(oc, -1)  # OHWI: [oc][fh * fw * ic], the order of the gathered patch
    geometry = {k: p[k] for k in _GEOMETRY}
    depth = p["filter_h"] * p["filter_w"] * p["input_c"]
    suffix = _suffix(is16, depth)
    if p["filter_h"] == 1 and p["filter_w"] == 1 and p["pad_h"] == 0 and p["pad_w"] == 0:
        # _u8: the pixel's inputs, converted to x + 128, in scratch
        return _matrix_call(call, prefix, w2d, bias, mult, shift, zp, is16, geometry, f"hil_conv_2d_1x1{suffix}", depth)
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
    depth = p["accum_depth"]
    suffix = _suffix(is16, depth)
    return _matrix_call(call, prefix, w2d, bias, mult, shift, zp, is16, geometry, f"hil_conv_2d_1x1{suffix}", depth)


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


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on Python ints (hil_quant.h)."""
    if a == b == -(2**31):
        return INT32_MAX
    ab = a * b
    s = ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30))
    return s // 2**31 if s >= 0 else -((-s) // 2**31)


def _rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT on Python ints."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def add_table(offset: int, left_shift: int, multiplier: int, shift: int) -> np.ndarray:
    """TFLM ADD's rescaled input for each byte b of an int8 input (x = b as int8), indexed by b."""
    x = np.arange(256, dtype=np.int64)
    x = np.where(x >= 128, x - 256, x)
    return np.array([_rdbpot(_srdhm((int(v) + offset) * (1 << left_shift), multiplier), -shift) for v in x])


def _specialise_add(call: KernelCall) -> KernelCall | None:
    """ADD of two same-shape tensors: hil_add_table (add.c)."""
    p = call.params
    dims = list(p["dims"])
    size = int(np.prod(dims))
    contiguous = [dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1]
    contiguous = [s if d > 1 else 0 for s, d in zip(contiguous, dims, strict=True)]
    if not all(isinstance(a, int) for a in call.args) or p["input1_strides"] != p["input2_strides"]:
        return None
    if list(p["input1_strides"]) != contiguous or p["output_shift"] >= 0:
        return None  # broadcast, or no right shift: the one-step requantization is for right shifts only
    t1 = add_table(p["input1_offset"], p["left_shift"], p["input1_multiplier"], p["input1_shift"])
    t2 = add_table(p["input2_offset"], p["left_shift"], p["input2_multiplier"], p["input2_shift"])
    if not _fits(np.abs(t1).max() + np.abs(t2).max()):
        return None
    prefix = f"op{call.op_index}"
    consts = [
        ConstArray(f"{prefix}_fast_table1", "int32_t", t1, "input 1 rescaled, indexed by its byte"),
        ConstArray(f"{prefix}_fast_table2", "int32_t", t2, "input 2 rescaled, indexed by its byte"),
    ]
    params = {
        "size": size,
        "output_offset": p["output_offset"],
        "output_multiplier": p["output_multiplier"],
        "output_shift": 31 - p["output_shift"],
        "act_min": p["act_min"],
        "act_max": p["act_max"],
        "table1": f"{prefix}_fast_table1",
        "table2": f"{prefix}_fast_table2",
    }
    return _fast_call(call, "hil_add_table", "hil_add_fast_params_t", params, consts)


_SPECIALISERS = {
    "hil_add": _specialise_add,
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
