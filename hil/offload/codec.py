"""The AgileNN offload payload: quantizer codes, compressed losslessly (device_fw/OFFLOAD.md, byte-exact).

This is the reference implementation of the format; the device's encoder (device_fw/core/src/offload.c) must
produce the same bytes as `encode_payload()` for the same codes (tests/test_offload_codec.py checks that), and
the server decodes with `decode_payload()`.

A payload is a 4-byte header and a body in one of two modes:

- LZW (mode 1): LZW directly over the `bits`-bit code alphabet (not over packed bytes), variable-width codes
  from `bits + 1` up to 12 bits, LSB-first, CLEAR when the dictionary is full, END at the end;
- stored (mode 0): the codes bit-packed, `bits` each, LSB-first (`pack_bits`).

The encoder sends whichever is smaller (LZW only when strictly smaller), so a payload is never larger than
the packed codes plus the header, whatever the data (random codes expand under LZW).

The decoder never trusts the data: every length, code and bound is checked while decoding, the output may
not exceed `min(n_values, max_output)` at any point, and anything wrong raises `PayloadError`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "CLEAR_OFFSET",
    "END_OFFSET",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "LZW_MAX_CODE_BITS",
    "MODE_LZW",
    "MODE_STORED",
    "PayloadError",
    "decode_payload",
    "encode_payload",
    "lzw_encode",
    "pack_bits",
    "payload_bound",
    "stored_size",
    "unpack_bits",
]

FORMAT_VERSION = 1
MODE_STORED = 0
MODE_LZW = 1
HEADER_SIZE = 4  # u8 version, u8 mode, u8 bits, u8 max code bits (0 when stored)
LZW_MAX_CODE_BITS = 12  # dictionary of 4096 codes, as the device's HIL_OFFLOAD_LZW_MAX_BITS
LZW_CODE_BITS_LIMIT = 16  # the largest max-code-bits a decoder accepts
CLEAR_OFFSET = 0  # CLEAR = 2**bits + 0
END_OFFSET = 1  # END = 2**bits + 1


class PayloadError(ValueError):
    """The payload is not a valid encoding of `n_values` codes (truncated, corrupt, too long, wrong header)."""


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, not {bits!r}")
    return int(bits)


def _as_codes(codes: np.ndarray | Iterable[int], bits: int) -> np.ndarray:
    arr = np.asarray(codes)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"codes must be integers, not {arr.dtype}")
    arr = arr.reshape(-1)
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= 1 << bits):
        raise ValueError(f"codes must be in 0..{(1 << bits) - 1} for {bits} bits")
    return arr.astype(np.uint8)


def stored_size(n_values: int, bits: int = 3) -> int:
    """Bytes of the bit-packed codes: ceil(n_values * bits / 8)."""
    return (int(n_values) * _check_bits(bits) + 7) // 8


def payload_bound(n_values: int, bits: int = 3) -> int:
    """The largest payload `encode_payload` (and the device) can produce for n_values codes: header + stored."""
    return HEADER_SIZE + stored_size(n_values, bits)


# ---- bit packing (the stored mode, and the bit order of every code) ----


def pack_bits(codes: np.ndarray | Iterable[int], bits: int = 3) -> bytes:
    """Codes as a little-endian bit stream: code i occupies stream bits [i*bits, (i+1)*bits), least
    significant bit first; stream bit j is bit (j % 8) of byte j // 8; the last byte is padded with zeros."""
    bits = _check_bits(bits)
    arr = _as_codes(codes, bits)
    if arr.size == 0:
        return b""
    planes = (arr[:, None] >> np.arange(bits, dtype=np.uint8)[None, :]) & 1
    return np.packbits(planes.reshape(-1).astype(np.uint8), bitorder="little").tobytes()


def unpack_bits(data: bytes, n_values: int, bits: int = 3) -> np.ndarray:
    """The inverse of pack_bits: exactly stored_size(n_values, bits) bytes, padding bits zero."""
    bits = _check_bits(bits)
    if n_values < 0:
        raise ValueError(f"n_values must be >= 0, not {n_values}")
    need = stored_size(n_values, bits)
    if len(data) < need:
        raise PayloadError(f"stored codes truncated: {len(data)} bytes, {n_values} codes of {bits} bits need {need}")
    if len(data) > need:
        raise PayloadError(f"{len(data) - need} bytes after the {need} bytes of {n_values} stored codes")
    if n_values == 0:
        return np.zeros(0, np.uint8)
    stream = np.unpackbits(np.frombuffer(bytes(data), np.uint8), bitorder="little")
    if stream[n_values * bits :].any():
        raise PayloadError("stored codes: padding bits after the last code are not zero")
    planes = stream[: n_values * bits].reshape(n_values, bits)
    return (planes << np.arange(bits, dtype=np.uint8)[None, :]).sum(axis=1, dtype=np.uint8)


# ---- LZW over the code alphabet ----


class _BitWriter:
    def __init__(self) -> None:
        self.out = bytearray()
        self.acc = 0
        self.nacc = 0

    def put(self, code: int, width: int) -> None:
        self.acc |= code << self.nacc
        self.nacc += width
        while self.nacc >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.nacc -= 8

    def finish(self) -> bytes:
        if self.nacc:
            self.out.append(self.acc & 0xFF)
            self.acc, self.nacc = 0, 0
        return bytes(self.out)


def lzw_encode(codes: np.ndarray | Iterable[int], bits: int = 3, max_code_bits: int = LZW_MAX_CODE_BITS) -> bytes:
    """The LZW body (no header) for codes of `bits` bits; OFFLOAD.md, "LZW body", is the specification.

    Alphabet A = 2**bits; codes 0..A-1 are the single symbols, A is CLEAR, A+1 is END, dictionary codes start
    at A+2. Each code is written with width min(max_code_bits, bit_length(next)), where `next` is the code
    the decoder assigns next. When the encoder assigns the last code (2**max_code_bits - 1) it writes CLEAR
    and starts over with an empty dictionary.
    """
    bits = _check_bits(bits)
    arr = _as_codes(codes, bits)
    alphabet = 1 << bits
    clear, end, first = alphabet, alphabet + 1, alphabet + 2
    if not first.bit_length() <= max_code_bits <= LZW_CODE_BITS_LIMIT:
        raise ValueError(f"max_code_bits must be in {first.bit_length()}..{LZW_CODE_BITS_LIMIT} for {bits} bits")
    limit = 1 << max_code_bits
    writer = _BitWriter()
    table: dict[int, int] = {}  # (prefix code << 8 | symbol) -> code
    next_code = first  # the encoder's next code
    decoder_next = first  # the decoder's next code (it assigns each entry one code later)
    started = False  # a code was written since the last reset

    def emit(code: int) -> None:
        nonlocal decoder_next, started
        writer.put(code, min(max_code_bits, decoder_next.bit_length()))
        if code >= clear and code <= end:
            return
        if started and decoder_next < limit:
            decoder_next += 1
        started = True

    symbols = arr.tolist()
    if symbols:
        prefix = symbols[0]
        for s in symbols[1:]:
            key = (prefix << 8) | s
            code = table.get(key)
            if code is not None:
                prefix = code
                continue
            emit(prefix)
            table[key] = next_code
            next_code += 1
            if next_code == limit:
                emit(clear)
                table.clear()
                next_code = first
                decoder_next = first
                started = False
            prefix = s
        emit(prefix)
    emit(end)
    return writer.finish()


def encode_payload(
    codes: np.ndarray | Iterable[int], bits: int = 3, *, mode: int | None = None, max_code_bits: int = LZW_MAX_CODE_BITS
) -> bytes:
    """The payload for `codes` (uint8, each < 2**bits), as the device sends it.

    mode None (the device's rule): LZW when its payload is strictly smaller than the stored one, else stored.
    MODE_LZW or MODE_STORED forces one (tests).
    """
    bits = _check_bits(bits)
    arr = _as_codes(codes, bits)
    stored = pack_bits(arr, bits)
    if mode not in (None, MODE_LZW, MODE_STORED):
        raise ValueError(f"mode must be None, MODE_LZW or MODE_STORED, not {mode!r}")
    if mode != MODE_STORED:
        body = lzw_encode(arr, bits, max_code_bits)
        if mode == MODE_LZW or len(body) < len(stored):
            return bytes([FORMAT_VERSION, MODE_LZW, bits, max_code_bits]) + body
    return bytes([FORMAT_VERSION, MODE_STORED, bits, 0]) + stored


def decode_payload(data: bytes, n_values: int, bits: int = 3, max_output: int | None = None) -> np.ndarray:
    """The codes (uint8 array of n_values) a payload carries.

    Raises PayloadError on a wrong header (version, mode, bits), truncated data, an invalid code, bytes or
    non-zero padding after the end, a stream that decodes to fewer or more than n_values codes, or one that
    would exceed max_output: that limit (and n_values) is enforced before each code's values are appended,
    so memory stays within min(n_values, max_output) plus the input, whatever the data.
    """
    bits = _check_bits(bits)
    if isinstance(n_values, bool) or not isinstance(n_values, int | np.integer) or n_values < 0:
        raise ValueError(f"n_values must be a non-negative integer, not {n_values!r}")
    n_values = int(n_values)
    if max_output is not None:
        if max_output < 0:
            raise ValueError(f"max_output must be >= 0, not {max_output}")
        if n_values > max_output:
            raise PayloadError(f"{n_values} values expected, above max_output {max_output}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise PayloadError(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    version, mode, hbits, code_bits = data[:HEADER_SIZE]
    if version != FORMAT_VERSION:
        raise PayloadError(f"format version {version}, this decoder reads version {FORMAT_VERSION}")
    if hbits != bits:
        raise PayloadError(f"payload has {hbits}-bit codes, {bits} expected")
    body = data[HEADER_SIZE:]
    if mode == MODE_STORED:
        if code_bits != 0:
            raise PayloadError(f"stored payload with max code bits {code_bits} (must be 0)")
        return unpack_bits(body, n_values, bits)
    if mode == MODE_LZW:
        return _lzw_decode(body, n_values, bits, code_bits)
    raise PayloadError(f"unknown mode {mode} (0 = stored, 1 = LZW)")


def _lzw_decode(body: bytes, n_values: int, bits: int, max_code_bits: int) -> np.ndarray:
    alphabet = 1 << bits
    clear, end, first = alphabet, alphabet + 1, alphabet + 2
    if not first.bit_length() <= max_code_bits <= LZW_CODE_BITS_LIMIT:
        raise PayloadError(
            f"max code bits {max_code_bits} outside {first.bit_length()}..{LZW_CODE_BITS_LIMIT} for {bits}-bit codes"
        )
    limit = 1 << max_code_bits
    out = bytearray()
    table: list[bytes] = []  # code first + i -> its string
    prev: bytes | None = None
    decoder_next = first
    pos = 0  # next byte of body
    acc = 0
    nacc = 0
    while True:
        width = min(max_code_bits, decoder_next.bit_length())
        while nacc < width:
            if pos >= len(body):
                raise PayloadError(f"truncated LZW stream: no END after {len(out)} of {n_values} values")
            acc |= body[pos] << nacc
            pos += 1
            nacc += 8
        code = acc & ((1 << width) - 1)
        acc >>= width
        nacc -= width
        if code == clear:
            table.clear()
            prev = None
            decoder_next = first
            continue
        if code == end:
            break
        if code < alphabet:
            cur = bytes((code,))
        elif code < decoder_next:
            cur = table[code - first]
        elif code == decoder_next and prev is not None:
            cur = prev + prev[:1]  # the string being defined by this very code (cScSc)
        else:
            raise PayloadError(f"invalid LZW code {code} after {len(out)} values (next code is {decoder_next})")
        if len(out) + len(cur) > n_values:
            raise PayloadError(f"LZW stream decodes to more than {n_values} values")
        out += cur
        if prev is not None and decoder_next < limit:
            table.append(prev + cur[:1])
            decoder_next += 1
        prev = cur
    if len(out) != n_values:
        raise PayloadError(f"LZW stream ends after {len(out)} of {n_values} values")
    if acc != 0:
        raise PayloadError("LZW stream: padding bits after END are not zero")
    if pos != len(body):
        raise PayloadError(f"{len(body) - pos} bytes after the LZW END code")
    return np.frombuffer(bytes(out), np.uint8).copy()
