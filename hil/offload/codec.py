"""The AgileNN offload payload: quantizer codes, compressed losslessly (device_fw/OFFLOAD.md, byte-exact).

This is the reference implementation of the format; the device's encoder (device_fw/core/src/offload.c) must
produce the same bytes as `encode_payload()` for the same codes (tests/test_offload_codec.py checks that), and
the server decodes with `decode_payload()`.

A payload is a 4-byte header and a body in one of three modes:

- LZW (mode 1): LZW directly over the `bits`-bit code alphabet (not over packed bytes), variable-width codes
  from `bits + 1` up to 12 bits, LSB-first, CLEAR when the dictionary is full, END at the end;
- stored (mode 0): the codes bit-packed, `bits` each, LSB-first (`pack_bits`);
- static Huffman (mode 2, only for a model whose agilenn.json has `huffman_code_lengths`): every code
  written as its canonical Huffman code (`canonical_codes`), most significant bit first, into the LSB-first
  stream (DEFLATE's convention). The lengths are fixed per model at export time (`huffman_code_lengths` of
  the training set's code counts); encoder and decoder both take them as an argument.

The encoder sends whichever is smallest (ties: stored, then Huffman, then LZW), so a payload is never larger
than the packed codes plus the header, whatever the data (random codes expand under LZW).

The decoder never trusts the data: every length, code and bound is checked while decoding, the output may
not exceed `min(n_values, max_output)` at any point, and anything wrong raises `PayloadError`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from hil.errors import DeviceError

__all__ = [
    "CLEAR_OFFSET",
    "END_OFFSET",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "LZW_MAX_CODE_BITS",
    "HUFFMAN_LENGTHS_KEY",
    "HUFFMAN_MAX_CODE_LEN",
    "MODE_HUFFMAN",
    "MODE_LZW",
    "MODE_STORED",
    "PayloadError",
    "canonical_codes",
    "check_huffman_lengths",
    "decode_payload",
    "encode_payload",
    "huffman_code_lengths",
    "huffman_encode",
    "huffman_lengths_of",
    "lzw_encode",
    "pack_bits",
    "payload_bound",
    "stored_size",
    "unpack_bits",
]

FORMAT_VERSION = 1
MODE_STORED = 0
MODE_LZW = 1
MODE_HUFFMAN = 2
HEADER_SIZE = 4  # u8 version, u8 mode, u8 bits, u8 max code bits (LZW: W; Huffman: longest code length; stored: 0)
HUFFMAN_MAX_CODE_LEN = 15  # as the device's HIL_OFFLOAD_HUFFMAN_MAX_LEN (and DEFLATE)
HUFFMAN_LENGTHS_KEY = "huffman_code_lengths"  # agilenn.json: one length per code 0..2**bits - 1
LZW_MAX_CODE_BITS = 12  # dictionary of 4096 codes, as the device's HIL_OFFLOAD_LZW_MAX_BITS
LZW_CODE_BITS_LIMIT = 16  # the largest max-code-bits a decoder accepts
CLEAR_OFFSET = 0  # CLEAR = 2**bits + 0
END_OFFSET = 1  # END = 2**bits + 1


class PayloadError(DeviceError, ValueError):
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


# ---- static canonical Huffman (mode 2) ----


def huffman_code_lengths(counts: Sequence[int] | np.ndarray, max_len: int = HUFFMAN_MAX_CODE_LEN) -> list[int]:
    """Optimal length-limited Huffman code lengths (package-merge) for symbols 0..len(counts)-1.

    The weights are `counts[s] + 1`, so a symbol never seen (count 0) still gets a code and any data can be
    encoded. Every length is within 1..max_len and the code is complete (Kraft sum exactly 1); the total
    weighted length is the smallest any prefix code with lengths <= max_len achieves. Deterministic ties: the
    leaves are ordered by ascending weight and, on equal weights, descending symbol; at each merge of the
    leaves with the packages an equal weight puts the leaf first (a stable sort); the length of a symbol is
    the number of times it appears in the first 2n - 2 items of the last list. So among equal weights a lower
    symbol never gets a longer code (counts [0, 0, 0] -> [1, 2, 2]). The exporter calls this with the training
    set's code counts (`np.bincount(codes, minlength=2**bits)`) and writes the result to agilenn.json's
    `huffman_code_lengths`.
    """
    weights = [int(c) for c in np.asarray(counts).reshape(-1).tolist()]
    n = len(weights)
    if n < 2:
        raise ValueError(f"need at least 2 symbols, not {n}")
    if any(w < 0 for w in weights):
        raise ValueError("counts must be >= 0")
    if isinstance(max_len, bool) or not 1 <= int(max_len) <= HUFFMAN_MAX_CODE_LEN or n > 1 << int(max_len):
        raise ValueError(f"max_len {max_len!r} must be within 1..{HUFFMAN_MAX_CODE_LEN} and 2**max_len >= {n}")
    weights = [w + 1 for w in weights]
    order = sorted(range(n), key=lambda s: (weights[s], -s))
    leaves = []
    for s in order:
        one = np.zeros(n, np.int64)
        one[s] = 1
        leaves.append((weights[s], one))
    current = list(leaves)
    for _ in range(int(max_len) - 1):
        pairs = range(0, len(current) - 1, 2)
        packages = [(current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1]) for i in pairs]
        current = sorted(leaves + packages, key=lambda item: item[0])  # stable: leaves before packages on ties
    lengths = np.sum([v for _, v in current[: 2 * n - 2]], axis=0)
    return [int(x) for x in lengths]


def check_huffman_lengths(lengths: Sequence[int] | np.ndarray, bits: int) -> list[int]:
    """The lengths as a list, after checking them: exactly 2**bits integers in 1..15 whose Kraft sum is at
    most 1 (a prefix code; an incomplete one leaves some bit patterns invalid). Raises ValueError."""
    bits = _check_bits(bits)
    try:
        given = list(lengths)
        out = [int(x) for x in given]
        if any(isinstance(x, bool) or x != y for x, y in zip(given, out, strict=True)):
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"Huffman code lengths must be a list of integers, not {lengths!r}") from None
    if len(out) != 1 << bits:
        raise ValueError(f"{len(out)} Huffman code lengths, {1 << bits} codes of {bits} bits need one each")
    if any(not 1 <= x <= HUFFMAN_MAX_CODE_LEN for x in out):
        raise ValueError(f"Huffman code lengths must be within 1..{HUFFMAN_MAX_CODE_LEN}: {out}")
    if sum(1 << (HUFFMAN_MAX_CODE_LEN - x) for x in out) > 1 << HUFFMAN_MAX_CODE_LEN:
        raise ValueError(f"Huffman code lengths {out} are oversubscribed (Kraft sum > 1): not a prefix code")
    return out


def canonical_codes(lengths: Sequence[int]) -> list[int]:
    """The canonical code of each symbol (DEFLATE, RFC 1951 3.2.2): codes are assigned in order of
    (length, symbol), each the previous one + 1, shifted left when the length grows; the value is the code
    read most significant bit first, `lengths[s]` bits."""
    lengths = [int(x) for x in lengths]
    top = max(lengths, default=0)
    bl_count = [0] * (top + 1)
    for x in lengths:
        bl_count[x] += 1
    bl_count[0] = 0
    next_code = [0] * (top + 2)
    code = 0
    for length in range(1, top + 1):
        code = (code + bl_count[length - 1]) << 1
        next_code[length] = code
    out = []
    for x in lengths:
        out.append(next_code[x])
        next_code[x] += 1
    return out


def _reverse(code: int, length: int) -> int:
    return int(f"{code:0{length}b}"[::-1], 2)


def huffman_lengths_of(meta: dict[str, Any], bits: int | None = None) -> list[int] | None:
    """A model's Huffman code lengths from its agilenn.json (`huffman_code_lengths`), checked against its
    bits per code (`bits_per_value` unless given); None when the model has none (no mode 2)."""
    lengths = meta.get(HUFFMAN_LENGTHS_KEY)
    if lengths is None:
        return None
    return check_huffman_lengths(lengths, int(meta["bits_per_value"]) if bits is None else bits)


def huffman_encode(codes: np.ndarray | Iterable[int], bits: int, lengths: Sequence[int]) -> bytes:
    """The Huffman body (no header): each code's canonical code, its most significant bit first, into the
    LSB-first stream (stream bit j = bit j % 8 of byte j // 8), then zero bits to the end of the byte."""
    bits = _check_bits(bits)
    lengths = check_huffman_lengths(lengths, bits)
    arr = _as_codes(codes, bits)
    if arr.size == 0:
        return b""
    top = max(lengths)
    rev = np.array([_reverse(c, n) for c, n in zip(canonical_codes(lengths), lengths, strict=True)], np.int64)
    width = np.array(lengths, np.int64)[arr]
    planes = (rev[arr][:, None] >> np.arange(top)[None, :]) & 1
    stream = planes[np.arange(top)[None, :] < width[:, None]]  # row-major: value by value, bit by bit
    return np.packbits(stream.astype(np.uint8), bitorder="little").tobytes()


@functools.lru_cache(maxsize=16)
def _huffman_table(lengths: tuple[int, ...]) -> tuple[list[int], list[int]]:
    """(symbol, length) for every value of the next max(lengths) stream bits (LSB first); length 0: no code
    starts with these bits (an incomplete code)."""
    top = max(lengths)
    symbol = [0] * (1 << top)
    length = [0] * (1 << top)
    for s, (code, n) in enumerate(zip(canonical_codes(lengths), lengths, strict=True)):
        rev = _reverse(code, n)
        for high in range(1 << (top - n)):
            symbol[rev | (high << n)] = s
            length[rev | (high << n)] = n
    return symbol, length


def _huffman_decode(body: bytes, n_values: int, bits: int, lengths: list[int], header_len: int) -> np.ndarray:
    top = max(lengths)
    if header_len != top:
        raise PayloadError(f"Huffman payload says its longest code is {header_len} bits, the model's is {top}")
    most = (n_values * top + 7) // 8
    if len(body) > most:
        raise PayloadError(f"{len(body) - most} bytes after the end: {n_values} Huffman codes of at most {top} bits "
                           f"take at most {most} bytes")
    symbol, length = _huffman_table(tuple(lengths))
    mask = (1 << top) - 1
    out = bytearray(n_values)
    acc = nacc = pos = 0
    size = len(body)
    for k in range(n_values):
        while nacc < top and pos < size:
            acc |= body[pos] << nacc
            pos += 1
            nacc += 8
        i = acc & mask
        n = length[i]
        if n == 0 or n > nacc:
            if nacc < top:
                raise PayloadError(f"truncated Huffman stream after {k} of {n_values} values")
            raise PayloadError(f"invalid Huffman code (bits {i & mask:0{top}b} LSB first) after {k} values")
        out[k] = symbol[i]
        acc >>= n
        nacc -= n
    if nacc >= 8 or pos != size:
        raise PayloadError(f"{size - pos + nacc // 8} bytes after the last Huffman code")
    if acc != 0:
        raise PayloadError("Huffman stream: padding bits after the last code are not zero")
    return np.frombuffer(bytes(out), np.uint8).copy()


def encode_payload(
    codes: np.ndarray | Iterable[int],
    bits: int = 3,
    *,
    mode: int | None = None,
    max_code_bits: int = LZW_MAX_CODE_BITS,
    huffman_lengths: Sequence[int] | None = None,
) -> bytes:
    """The payload for `codes` (uint8, each < 2**bits), as the device sends it.

    huffman_lengths: the model's code lengths (agilenn.json `huffman_code_lengths`, `huffman_lengths_of`);
    None: the model has none, and mode 2 is never chosen (the bytes are those of format 1 before mode 2).

    mode None (the device's rule): the smallest payload of stored, Huffman (with lengths) and LZW; on equal
    sizes stored wins over Huffman, and both over LZW (so LZW only when strictly smaller than both).
    MODE_LZW, MODE_STORED or MODE_HUFFMAN forces one (tests).
    """
    bits = _check_bits(bits)
    arr = _as_codes(codes, bits)
    if mode not in (None, MODE_LZW, MODE_STORED, MODE_HUFFMAN):
        raise ValueError(f"mode must be None, MODE_LZW, MODE_STORED or MODE_HUFFMAN, not {mode!r}")
    if huffman_lengths is not None:
        huffman_lengths = check_huffman_lengths(huffman_lengths, bits)
    elif mode == MODE_HUFFMAN:
        raise ValueError("MODE_HUFFMAN needs the model's huffman_lengths")
    candidates = []  # in the order of preference on equal sizes
    if mode in (None, MODE_STORED):
        candidates.append(bytes([FORMAT_VERSION, MODE_STORED, bits, 0]) + pack_bits(arr, bits))
    if mode in (None, MODE_HUFFMAN) and huffman_lengths is not None:
        body = huffman_encode(arr, bits, huffman_lengths)
        candidates.append(bytes([FORMAT_VERSION, MODE_HUFFMAN, bits, max(huffman_lengths)]) + body)
    if mode in (None, MODE_LZW):
        candidates.append(bytes([FORMAT_VERSION, MODE_LZW, bits, max_code_bits]) + lzw_encode(arr, bits, max_code_bits))
    return min(candidates, key=len)  # the first of the smallest


def decode_payload(
    data: bytes,
    n_values: int,
    bits: int = 3,
    max_output: int | None = None,
    huffman_lengths: Sequence[int] | None = None,
) -> np.ndarray:
    """The codes (uint8 array of n_values) a payload carries.

    huffman_lengths: the model's code lengths (agilenn.json `huffman_code_lengths`); a Huffman payload
    (mode 2) is refused without them, and when its header's longest code length is not theirs.

    Raises PayloadError on a wrong header (version, mode, bits), truncated data, an invalid code, bytes or
    non-zero padding after the end, a stream that decodes to fewer or more than n_values codes, or one that
    would exceed max_output: that limit (and n_values) is enforced before each code's values are appended,
    so memory stays within min(n_values, max_output) plus the input, whatever the data. ValueError when the
    arguments themselves are wrong (bits, n_values, malformed huffman_lengths).
    """
    bits = _check_bits(bits)
    if isinstance(n_values, bool) or not isinstance(n_values, int | np.integer) or n_values < 0:
        raise ValueError(f"n_values must be a non-negative integer, not {n_values!r}")
    n_values = int(n_values)
    if huffman_lengths is not None:
        huffman_lengths = check_huffman_lengths(huffman_lengths, bits)
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
    if mode == MODE_HUFFMAN:
        if huffman_lengths is None:
            raise PayloadError("Huffman payload (mode 2), but this model has no huffman_code_lengths")
        return _huffman_decode(body, n_values, bits, huffman_lengths, code_bits)
    raise PayloadError(f"unknown mode {mode} (0 = stored, 1 = LZW, 2 = Huffman)")


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
