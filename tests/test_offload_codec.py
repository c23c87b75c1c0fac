"""The offload payload format (device_fw/OFFLOAD.md): the reference codec (hil.offload.codec) round-trips every
kind of code stream, its decoder refuses anything malformed with PayloadError only and within its output bound,
and the device's C encoder (core/src/offload.c, through a host harness) writes exactly the reference's bytes.
Static canonical Huffman (mode 2, models with huffman_code_lengths) likewise, plus its length-limited code
construction and the guarantee that a model without lengths gets the bytes it got before mode 2."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import struct
import subprocess
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil import paths
from hil.offload.codec import (
    FORMAT_VERSION,
    HEADER_SIZE,
    HUFFMAN_MAX_CODE_LEN,
    LZW_MAX_CODE_BITS,
    MODE_HUFFMAN,
    MODE_LZW,
    MODE_STORED,
    PayloadError,
    canonical_codes,
    check_huffman_lengths,
    decode_payload,
    encode_payload,
    huffman_code_lengths,
    huffman_encode,
    huffman_lengths_of,
    lzw_encode,
    pack_bits,
    payload_bound,
    unpack_bits,
)

pytestmark = pytest.mark.timeout(120)

RNG = np.random.default_rng(20220)


def patterns(n: int, bits: int = 3) -> dict[str, np.ndarray]:
    """Random, adversarial and realistic-looking code streams of length n."""
    top = (1 << bits) - 1
    rng = np.random.default_rng(n * 31 + bits)
    return {
        "max-entropy": rng.integers(0, top + 1, n),
        "all-zero": np.zeros(n, np.int64),
        "all-top": np.full(n, top),
        "alternating": np.tile([0, top], n // 2 + 1)[:n],
        "ramp": np.arange(n) % (top + 1),
        "geometric": np.minimum(rng.geometric(0.55, n) - 1, top),  # mostly 0, like ReLU features
        "runs": np.repeat(rng.integers(0, top + 1, n // 7 + 1), 7)[:n],
    }


def round_trip(codes: np.ndarray, bits: int = 3, mode: int | None = None) -> bytes:
    payload = encode_payload(codes, bits, mode=mode)
    got = decode_payload(payload, len(codes), bits, max_output=len(codes))
    assert got.dtype == np.uint8 and np.array_equal(got, np.asarray(codes, np.uint8))
    return payload


# ---- round trips ----


@pytest.mark.parametrize("n", [0, 1, 2, 3, 8, 9, 100, 1216, 19456])
@pytest.mark.parametrize("mode", [None, MODE_LZW, MODE_STORED])
def test_round_trip_every_pattern(n: int, mode: int | None) -> None:
    for name, codes in patterns(n).items():
        payload = round_trip(codes, 3, mode)
        assert payload[0] == FORMAT_VERSION and payload[2] == 3, name
        if mode is None:
            assert len(payload) <= payload_bound(n, 3), name


@pytest.mark.parametrize("bits", range(1, 9))
def test_round_trip_every_code_width(bits: int) -> None:
    for n in (0, 1, 5, 3000):
        for codes in patterns(n, bits).values():
            round_trip(codes, bits, MODE_LZW)
            round_trip(codes, bits)


def test_round_trip_huge_streams_through_many_dictionary_resets() -> None:
    n = 300_000
    codes = RNG.integers(0, 8, n)
    body = lzw_encode(codes)
    # The dictionary fills (and CLEAR is sent) every 4086 codes: this stream has many times that.
    assert len(body) * 8 // LZW_MAX_CODE_BITS > 10 * (1 << LZW_MAX_CODE_BITS)
    round_trip(codes, 3, MODE_LZW)
    assert len(round_trip(codes)) == payload_bound(n, 3)  # incompressible: stored
    long_runs = np.repeat(RNG.integers(0, 8, 400), 2500)  # 1e6 values, strings up to thousands of symbols
    assert len(round_trip(long_runs)) < 8000


def test_mode_choice_is_the_smaller_and_never_above_the_bound() -> None:
    for n in (0, 1, 1216):
        for name, codes in patterns(n).items():
            lzw = encode_payload(codes, mode=MODE_LZW)
            stored = encode_payload(codes, mode=MODE_STORED)
            chosen = encode_payload(codes)
            assert chosen == (lzw if len(lzw) < len(stored) else stored), (n, name)
            assert len(stored) == payload_bound(n) == HEADER_SIZE + (3 * n + 7) // 8
    assert encode_payload(patterns(1216)["max-entropy"])[1] == MODE_STORED
    assert encode_payload(patterns(1216)["geometric"])[1] == MODE_LZW


def test_known_bytes() -> None:
    """Pins the format: a change here breaks every device and server in the field."""
    assert encode_payload([]) == bytes([1, 0, 3, 0])
    # LZW of 0,0,0,0: codes 0, 10 (= "00", defined after the first code), 0, END (9); all 4 bits wide, LSB first
    assert lzw_encode([0, 0, 0, 0]) == bytes([0x0 | 10 << 4, 0x0 | 9 << 4])
    assert encode_payload([0] * 40, mode=MODE_LZW).hex() == "0101030c" + lzw_encode([0] * 40).hex()
    codes = [1, 2, 3, 4, 5, 6, 7, 0]
    assert pack_bits(codes) == sum(c << (3 * i) for i, c in enumerate(codes)).to_bytes(3, "little")
    assert pack_bits([5], 3) == b"\x05" and pack_bits([1, 1], 8) == b"\x01\x01"
    # 17 codes of 4..5 bits: the width grows when the decoder's next code reaches 16
    stream = lzw_encode(np.arange(8).repeat(3))
    assert decode_payload(bytes([1, 1, 3, 12]) + stream, 24).tolist() == np.arange(8).repeat(3).tolist()


def test_pack_unpack_inverse() -> None:
    for bits in range(1, 9):
        for n in (0, 1, 7, 8, 9, 1001):
            codes = RNG.integers(0, 1 << bits, n)
            packed = pack_bits(codes, bits)
            assert len(packed) == (n * bits + 7) // 8
            assert np.array_equal(unpack_bits(packed, n, bits), codes)


def test_encoder_rejects_out_of_range_codes() -> None:
    with pytest.raises(ValueError, match="0..7"):
        encode_payload([8])
    with pytest.raises(ValueError, match="0..7"):
        encode_payload([-1])
    with pytest.raises(ValueError, match="bits"):
        encode_payload([0], bits=9)


# ---- decoder: malformed data ----


def test_decoder_errors_name_the_problem() -> None:
    codes = patterns(500)["geometric"]
    good = encode_payload(codes)
    assert good[1] == MODE_LZW
    cases = {
        "truncated header": good[:3],
        "format version 2": bytes([2]) + good[1:],
        "4-bit codes, 3 expected": good[:2] + bytes([4]) + good[3:],
        "unknown mode 7": good[:1] + bytes([7]) + good[2:],
        "max code bits 40": good[:3] + bytes([40]) + good[4:],
        "truncated LZW stream": good[:-2],
    }
    for message, data in cases.items():
        with pytest.raises(PayloadError, match=message):
            decode_payload(data, 500)
    with pytest.raises(PayloadError, match="more than 499 values"):
        decode_payload(good, 499)
    with pytest.raises(PayloadError, match="ends after 500 of 501"):
        decode_payload(good, 501)
    with pytest.raises(PayloadError, match="above max_output 100"):
        decode_payload(good, 500, max_output=100)
    three = encode_payload([0, 0, 0], mode=MODE_LZW)  # codes 0, 10, END: 12 bits, 4 of padding
    assert decode_payload(three, 3).tolist() == [0, 0, 0]
    with pytest.raises(PayloadError, match="padding bits after END"):
        decode_payload(three[:-1] + bytes([three[-1] | 0x80]), 3)
    with pytest.raises(PayloadError, match="bytes after the LZW END"):
        decode_payload(three + b"\x00", 3)
    stored = encode_payload(codes, mode=MODE_STORED)
    with pytest.raises(PayloadError, match="stored codes truncated"):
        decode_payload(stored[:-1], 500)
    with pytest.raises(PayloadError, match="bytes after"):
        decode_payload(stored + b"\x00", 500)
    with pytest.raises(PayloadError, match="padding bits"):
        decode_payload(stored[:-1] + bytes([stored[-1] | 0x80]), 500)  # 1500 bits: the last 4 are padding
    with pytest.raises(PayloadError, match="must be 0"):
        decode_payload(stored[:3] + b"\x0c" + stored[4:], 500)
    # An invalid code: after the first symbol the next code may be at most FIRST (10), here 15.
    bad = bytes([FORMAT_VERSION, MODE_LZW, 3, 12, 0x01 | (15 << 4)])
    with pytest.raises(PayloadError, match="invalid LZW code 15"):
        decode_payload(bad, 5)
    first_is_dictionary = bytes([FORMAT_VERSION, MODE_LZW, 3, 12, 10])  # KwKwK needs a previous string
    with pytest.raises(PayloadError, match="invalid LZW code 10"):
        decode_payload(first_is_dictionary, 5)


def test_every_truncation_is_refused() -> None:
    for mode in (MODE_LZW, MODE_STORED):
        good = encode_payload(patterns(300)["geometric"], mode=mode)
        for cut in range(len(good)):
            with pytest.raises(PayloadError):
                decode_payload(good[:cut], 300)


def lzw_bomb(n_codes: int) -> bytes:
    """Codes 0, 10, 11, 12, ...: each one the entry being defined (cScSc), so code i expands to i + 1 values:
    quadratic output (n^2 / 2 values) from linear input."""
    from hil.offload.codec import _BitWriter

    writer = _BitWriter()
    writer.put(0, 4)
    nxt = 10
    for _ in range(n_codes):
        writer.put(nxt, min(12, nxt.bit_length()))
        nxt = min(nxt + 1, 4096)
        if nxt == 4096:
            break
    return bytes([FORMAT_VERSION, MODE_LZW, 3, 12]) + writer.finish()


def test_decompression_bomb_is_stopped_at_the_bound_without_the_memory() -> None:
    bomb = lzw_bomb(4000)  # would expand to about 8 million values from 6 KB
    assert len(bomb) < 7000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(PayloadError, match="more than 20000 values"):
            decode_payload(bomb, 20_000, max_output=20_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 200_000, f"decoder peaked at {peak} bytes for a 20000-value bound"


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300),
    header=st.sampled_from([b"", b"\x01\x01\x03\x0c", b"\x01\x00\x03\x00", b"\x01\x01\x03\x04", b"\x01\x01\x03\x10"]),
    n_values=st.integers(0, 3000),
    max_output=st.one_of(st.none(), st.integers(0, 3000)),
)
def test_fuzz_decoder_raises_only_payload_errors_within_bounds(
    data: bytes, header: bytes, n_values: int, max_output: int | None
) -> None:
    try:
        out = decode_payload(header + data, n_values, 3, max_output=max_output)
    except PayloadError:
        return
    assert out.dtype == np.uint8 and out.size == n_values and int(out.max(initial=0)) < 8
    assert max_output is None or out.size <= max_output


@settings(max_examples=150, deadline=2000)
@given(codes=st.lists(st.integers(0, 7), max_size=600), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_fuzz_corrupted_payloads(codes: list[int], flips: list[int]) -> None:
    """Valid payloads with bits flipped: decode to something, or PayloadError; never another exception."""
    data = bytearray(encode_payload(codes))
    for f in flips:
        data[f // 8 % len(data)] ^= 1 << (f % 8)
    try:
        out = decode_payload(bytes(data), len(codes), 3, max_output=len(codes))
    except PayloadError:
        return
    assert out.size == len(codes)


# ---- the C encoder (device_fw/core/src/offload.c) writes the reference's bytes ----

HARNESS = paths.DEVICE_FW / "tests" / "offload_main.c"
OFFLOAD_C = paths.DEVICE_FW / "core" / "src" / "offload.c"
INCLUDE = paths.DEVICE_FW / "core" / "include"


@pytest.fixture(scope="module")
def c_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    sources = [HARNESS, OFFLOAD_C, INCLUDE / "hil_offload.h"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    binary = tmp_path_factory.mktemp("offload-harness") / f"offload_main-{key}"
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined", "-g"]
    cmd = [cc, *flags, "-I", str(INCLUDE), str(HARNESS), str(OFFLOAD_C), "-o", str(binary)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:  # no sanitizer runtime: build without
        cmd = [c for c in cmd if not c.startswith("-fsanitize")]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
    return binary


def run_c(binary: Path, cases: list[tuple]) -> list[tuple[int, bytes]]:
    """(bits, codes, capacity) or (bits, codes, capacity, huffman lengths) per case -> (status, payload) per
    case. With lengths the harness sets bit 7 of the bits byte and sends the 2**bits lengths after capacity."""
    stdin = b"".join(
        struct.pack("<BII", case[0] | (0x80 if len(case) > 3 else 0), len(case[1]), case[2])
        + (bytes(case[3]) if len(case) > 3 else b"")
        + np.asarray(case[1], np.uint8).tobytes()
        for case in cases
    )
    proc = subprocess.run([str(binary)], input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    out, pos, results = proc.stdout, 0, []
    for _ in cases:
        status, length = struct.unpack_from("<BI", out, pos)
        results.append((status, out[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    assert pos == len(out)
    return results


def test_c_encoder_matches_the_reference(c_encoder: Path) -> None:
    cases = []
    for bits in range(1, 9):
        for n in (0, 1, 2, 3, 17, 1216, 19456):
            for codes in patterns(n, bits).values():
                cases.append((bits, codes, payload_bound(n, bits)))
    for i, (status, payload) in enumerate(run_c(c_encoder, cases)):
        bits, codes, _ = cases[i]
        assert status == 0 and payload == encode_payload(codes, bits), f"case {i}: {bits} bits, {len(codes)} codes"


def test_c_encoder_matches_on_huge_streams(c_encoder: Path) -> None:
    huge = [RNG.integers(0, 8, 250_000), np.repeat(RNG.integers(0, 8, 300), 1000), patterns(200_000)["geometric"]]
    cases = [(3, c, payload_bound(len(c))) for c in huge]
    for (status, payload), (_, codes, _) in zip(run_c(c_encoder, cases), cases, strict=True):
        assert status == 0 and payload == encode_payload(codes)


def test_c_encoder_reports_overflow_and_never_writes_past_the_capacity(c_encoder: Path) -> None:
    """The harness checks a guard after the capacity; every capacity from 0 to the payload's size + 1."""
    for name, codes in patterns(700).items():
        want = encode_payload(codes)
        cases = [(3, codes, cap) for cap in range(len(want) + 2)]
        for cap, (status, payload) in zip(range(len(want) + 2), run_c(c_encoder, cases), strict=True):
            if cap >= len(want):
                assert (status, payload) == (0, want), (name, cap)
            else:
                assert (status, payload) == (1, b""), (name, cap)  # HIL_OFFLOAD_OVERFLOW, nothing valid


# ---- static canonical Huffman (mode 2) ----

SKEWED_P = [0.37, 0.2, 0.19, 0.13, 0.06, 0.03, 0.015, 0.005]  # code frequencies like trained AgileNN features


def skewed(n: int, seed: int = 0, p: list[float] = SKEWED_P) -> np.ndarray:
    return np.random.default_rng(seed).choice(len(p), n, p=p)


def lengths_for(codes: np.ndarray, bits: int = 3) -> list[int]:
    return huffman_code_lengths(np.bincount(np.asarray(codes, np.int64), minlength=1 << bits))


def kraft(lengths: list[int]) -> float:
    return sum(2.0**-x for x in lengths)


def unlimited_huffman(weights: list[int]) -> tuple[int, int]:
    """(total weighted length, longest code) of an unrestricted Huffman code (heapq), for optimality checks."""
    import heapq

    heap = [(w, i, (i,)) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    depth = [0] * len(weights)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        for s in a[2] + b[2]:
            depth[s] += 1
        heapq.heappush(heap, (a[0] + b[0], min(a[1], b[1]), a[2] + b[2]))
    return sum(w * d for w, d in zip(weights, depth, strict=True)), max(depth)


def test_huffman_hand_checked_example() -> None:
    """OFFLOAD.md's worked example, bit by bit."""
    lengths = [2, 2, 2, 3, 4, 5, 6, 6]
    assert canonical_codes(lengths) == [0b00, 0b01, 0b10, 0b110, 0b1110, 0b11110, 0b111110, 0b111111]
    # codes 0, 3, 7, 1 -> 00 | 110 | 111111 | 01, each MSB first; stream bits 0..12 = 0011011111101, 3 zero pad
    payload = encode_payload([0, 3, 7, 1], mode=MODE_HUFFMAN, huffman_lengths=lengths)
    assert payload == bytes([1, 2, 3, 6, 0xEC, 0x17])
    assert decode_payload(payload, 4, huffman_lengths=lengths).tolist() == [0, 3, 7, 1]
    # counts giving exactly these lengths (weights = counts + 1)
    assert huffman_code_lengths([370, 200, 190, 130, 60, 30, 15, 5]) == lengths
    assert huffman_encode([], 3, lengths) == b""
    assert encode_payload([], huffman_lengths=lengths) == bytes([1, 0, 3, 0])  # tie with stored: stored


def test_canonical_codes_are_in_length_then_symbol_order() -> None:
    rng = np.random.default_rng(5)
    for bits in range(1, 9):
        for _ in range(20):
            lengths = huffman_code_lengths(rng.integers(0, 10_000, 1 << bits) ** rng.integers(1, 4))
            codes = canonical_codes(lengths)
            order = sorted(range(1 << bits), key=lambda s: (lengths[s], s))
            # left-aligned to 15 bits, the codes ascend in (length, symbol) order, consecutively (complete code)
            aligned = [codes[s] << (HUFFMAN_MAX_CODE_LEN - lengths[s]) for s in order]
            assert aligned[0] == 0
            steps = [1 << (HUFFMAN_MAX_CODE_LEN - lengths[s]) for s in order]
            assert [y - x for x, y in itertools.pairwise(aligned)] == steps[:-1]
            assert aligned[-1] + steps[-1] == 1 << HUFFMAN_MAX_CODE_LEN
            assert all(codes[s] < 1 << lengths[s] for s in range(1 << bits))


def test_huffman_code_lengths_are_optimal_complete_and_deterministic() -> None:
    rng = np.random.default_rng(6)
    for n in (2, 3, 8, 17, 256):
        for _ in range(10):
            counts = rng.integers(0, 1000, n) * rng.integers(0, 2, n)  # many zero counts
            lengths = huffman_code_lengths(counts)
            assert all(1 <= x <= 15 for x in lengths) and kraft(lengths) == 1.0
            weights = [int(c) + 1 for c in counts]
            cost = sum(w * x for w, x in zip(weights, lengths, strict=True))
            best, longest = unlimited_huffman(weights)
            assert cost == best if longest <= 15 else cost > best  # the limit binds for some 256-symbol cases
            assert huffman_code_lengths(counts) == lengths
    # optimal among all length-limited prefix codes: exhaustive search on small alphabets
    for counts, max_len in (([0, 1, 2, 4, 7, 12], 3), ([0, 0, 1, 2, 4, 7, 12, 20], 4), ([5, 1, 1, 9, 3], 3)):
        lengths = huffman_code_lengths(counts, max_len=max_len)
        weights = [c + 1 for c in counts]
        best = min(
            sum(w * x for w, x in zip(weights, ls, strict=True))
            for ls in itertools.product(range(1, max_len + 1), repeat=len(counts))
            if kraft(list(ls)) <= 1
        )
        assert sum(w * x for w, x in zip(weights, lengths, strict=True)) == best and max(lengths) <= max_len
    assert huffman_code_lengths([0] * 8) == [3] * 8  # all weights equal: fixed length
    assert huffman_code_lengths([5, 5]) == [1, 1]
    # ties between equal weights: a lower symbol never gets a longer code
    assert huffman_code_lengths([1, 1, 1]) == [1, 2, 2]
    assert huffman_code_lengths([0] * 5) == [2, 2, 2, 3, 3]
    assert huffman_code_lengths([3, 3, 3, 3, 1]) == [2, 2, 2, 3, 3]


def test_huffman_code_lengths_respect_the_limit_on_pathological_counts() -> None:
    fib = [1, 1]
    while len(fib) < 60:
        fib.append(fib[-1] + fib[-2])
    for max_len in (15, 12, 8, 6):
        lengths = huffman_code_lengths(fib[:40], max_len=max_len)
        assert max(lengths) == max_len and kraft(lengths) == 1.0
    assert max(huffman_code_lengths(fib[:20], max_len=15)) < 15  # unlimited Huffman needs 19: only when limited
    powers = [0] * 200 + [2**k for k in range(56)]  # 256 symbols, 200 never seen
    lengths = huffman_code_lengths(powers)
    assert max(lengths) == 15 and min(lengths) == 1 and kraft(lengths) == 1.0
    assert huffman_code_lengths([10**12, 0, 0, 0]) == [1, 2, 3, 3]
    with pytest.raises(ValueError, match="max_len"):
        huffman_code_lengths([1] * 9, max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        huffman_code_lengths([1, 2], max_len=16)
    with pytest.raises(ValueError, match="at least 2"):
        huffman_code_lengths([1])
    with pytest.raises(ValueError, match=">= 0"):
        huffman_code_lengths([1, -1])


def test_check_huffman_lengths() -> None:
    assert check_huffman_lengths(np.array([1, 2, 3, 3]), 2) == [1, 2, 3, 3]
    assert check_huffman_lengths([3] * 7 + [4], 3) == [3] * 7 + [4]  # incomplete: allowed
    for bad, message in [
        ([3] * 7, "7 Huffman code lengths"),
        ([3] * 7 + [0], "within 1..15"),
        ([3] * 7 + [16], "within 1..15"),
        ([2] * 5 + [3] * 3, "oversubscribed"),
        ([3] * 7 + [3.5], "integers"),
        ("abcdefgh", "integers"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_huffman_lengths(bad, 3)
    assert huffman_lengths_of({"bits_per_value": 3}) is None
    assert huffman_lengths_of({"bits_per_value": 2, "huffman_code_lengths": [1, 2, 3, 3]}) == [1, 2, 3, 3]
    with pytest.raises(ValueError, match="4 Huffman code lengths"):
        huffman_lengths_of({"bits_per_value": 3, "huffman_code_lengths": [1, 2, 3, 3]})


@pytest.mark.parametrize("bits", range(1, 9))
def test_huffman_round_trip_random_and_skewed(bits: int) -> None:
    rng = np.random.default_rng(bits)
    a = 1 << bits
    p = rng.dirichlet(np.full(a, 0.3))
    for n in (0, 1, 2, 7, 100, 3328):
        streams = {"skewed": skewed(n, bits, list(p)), **patterns(n, bits)}
        for name, codes in streams.items():
            for lengths in (lengths_for(streams["skewed"], bits), huffman_code_lengths(rng.integers(0, 50, a) ** 3)):
                payload = encode_payload(codes, bits, mode=MODE_HUFFMAN, huffman_lengths=lengths)
                assert payload[:4] == bytes([1, MODE_HUFFMAN, bits, max(lengths)])
                want_bits = sum(lengths[c] for c in np.asarray(codes).tolist())
                assert len(payload) == HEADER_SIZE + (want_bits + 7) // 8, name
                got = decode_payload(payload, n, bits, max_output=n, huffman_lengths=lengths)
                assert got.dtype == np.uint8 and np.array_equal(got, codes), (name, n)
                chosen = encode_payload(codes, bits, huffman_lengths=lengths)
                assert len(chosen) <= payload_bound(n, bits)
                assert np.array_equal(decode_payload(chosen, n, bits, huffman_lengths=lengths), codes)


def test_huffman_round_trip_huge_stream() -> None:
    codes = skewed(300_000, 9)
    lengths = lengths_for(codes)
    payload = encode_payload(codes, huffman_lengths=lengths)
    assert payload[1] == MODE_HUFFMAN
    started = time.perf_counter()
    assert np.array_equal(decode_payload(payload, len(codes), huffman_lengths=lengths), codes)
    assert time.perf_counter() - started < 5.0


def test_huffman_mode_choice_is_the_smallest_with_documented_ties() -> None:
    """Smallest of stored / Huffman / LZW; ties: stored, then Huffman, then LZW."""
    lengths = lengths_for(skewed(10_000, 1))
    seen = set()
    for n in (0, 1, 5, 100, 1216, 3328):
        streams = {"skewed": skewed(n, 2), **patterns(n)}
        for name, codes in streams.items():
            forced = {m: encode_payload(codes, mode=m, huffman_lengths=lengths)
                      for m in (MODE_STORED, MODE_HUFFMAN, MODE_LZW)}
            chosen = encode_payload(codes, huffman_lengths=lengths)
            best = min(len(v) for v in forced.values())
            first = next(m for m in (MODE_STORED, MODE_HUFFMAN, MODE_LZW) if len(forced[m]) == best)
            assert chosen == forced[first], (n, name)
            assert len(chosen) <= payload_bound(n)
            seen.add(first)
    assert seen == {MODE_STORED, MODE_HUFFMAN, MODE_LZW}
    # equal sizes: [0, 0, 0, 0] with 3-bit lengths -> 12 bits either way (stored); 2-bit lengths make Huffman win
    assert encode_payload([0] * 4, huffman_lengths=[3] * 8)[1] == MODE_STORED
    assert encode_payload([0] * 8, huffman_lengths=[2, 2, 2, 3, 4, 5, 6, 6])[1] == MODE_HUFFMAN
    assert encode_payload(skewed(3328, 3), huffman_lengths=lengths)[1] == MODE_HUFFMAN
    assert encode_payload(np.zeros(3328, np.int64), huffman_lengths=lengths)[1] == MODE_LZW  # runs: LZW
    with pytest.raises(ValueError, match="huffman_lengths"):
        encode_payload([0], mode=MODE_HUFFMAN)


def test_without_lengths_the_bytes_are_those_before_mode_2() -> None:
    """A model without huffman_code_lengths: exactly the payloads of format 1 before mode 2 existed (the digest
    was taken with the encoder of that time, over every bit width and pattern)."""
    digest = hashlib.sha256()
    for bits in range(1, 9):
        for n in (0, 1, 2, 17, 1216, 3328):
            for codes in patterns(n, bits).values():
                payload = encode_payload(codes, bits)
                assert payload[1] in (MODE_STORED, MODE_LZW)
                assert encode_payload(codes, bits, huffman_lengths=None) == payload
                digest.update(payload)
    assert digest.hexdigest() == "78be5bf9cab040161b33555d8c7bb24aa3b48c25a6dfdbcb7aa77fb200436ad3"


def test_huffman_decoder_rejects_corrupt_payloads() -> None:
    lengths = [2, 2, 2, 3, 4, 5, 6, 6]
    good = encode_payload([0, 3, 7, 1], mode=MODE_HUFFMAN, huffman_lengths=lengths)  # 13 bits + 3 padding
    assert good == bytes([1, 2, 3, 6, 0xEC, 0x17])

    def bad(data: bytes, n: int, message: str, lens: list[int] | None = lengths) -> None:
        with pytest.raises(PayloadError, match=message):
            decode_payload(data, n, 3, max_output=n, huffman_lengths=lens)

    bad(good[:-1] + bytes([0x17 | 0x80]), 4, "padding bits after the last code are not zero")
    bad(good + b"\x00", 4, "bytes after")
    bad(good[:-1], 4, "truncated Huffman stream after 2 of 4")
    # the 3 zero padding bits hold code 0 (00): the same bytes are also the valid payload of 5 codes, as in
    # stored mode (n_values comes from the model, not the payload)
    assert decode_payload(good, 5, huffman_lengths=lengths).tolist() == [0, 3, 7, 1, 0]
    bad(good, 6, "truncated Huffman stream after 5 of 6")
    bad(good, 3, "bytes after|padding bits")  # code 1's bits are left over
    bad(good, 4, "no huffman_code_lengths", None)
    bad(good[:3] + b"\x07" + good[4:], 4, "longest code is 7 bits, the model's is 6")
    bad(good[:3] + b"\x0f" + good[4:], 4, "longest code is 15 bits")
    bad(good + bytes(20), 4, "bytes after the end")  # more than 4 codes of at most 6 bits could take
    bad(good, 10**6, "above max_output|truncated")
    # an incomplete code (Kraft sum 15/16): code 7 is 1110, so 1111 is no code
    incomplete = [3] * 7 + [4]
    assert canonical_codes(incomplete) == [0, 1, 2, 3, 4, 5, 6, 14]
    ok = encode_payload([7, 0], mode=MODE_HUFFMAN, huffman_lengths=incomplete)
    assert decode_payload(ok, 2, huffman_lengths=incomplete).tolist() == [7, 0]
    bad(bytes([1, 2, 3, 4, 0x0F, 0x00]), 3, "invalid Huffman code", incomplete)
    with pytest.raises(ValueError, match="oversubscribed"):
        decode_payload(good, 4, huffman_lengths=[1] * 8)
    with pytest.raises(ValueError, match="4 Huffman code lengths"):
        decode_payload(good, 4, huffman_lengths=[1, 2, 3, 3])


def test_every_truncation_of_a_huffman_payload_is_refused() -> None:
    codes = skewed(300, 4)
    lengths = lengths_for(codes)
    good = encode_payload(codes, mode=MODE_HUFFMAN, huffman_lengths=lengths)
    for cut in range(len(good)):
        with pytest.raises(PayloadError):
            decode_payload(good[:cut], 300, huffman_lengths=lengths)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300),
    top=st.sampled_from([6, 4, 15]),
    n_values=st.integers(0, 1000),
    incomplete=st.booleans(),
)
def test_fuzz_huffman_decoder_raises_only_payload_errors(data: bytes, top: int, n_values: int,
                                                         incomplete: bool) -> None:
    lengths = {6: [2, 2, 2, 3, 4, 5, 6, 6], 4: [3] * 7 + [4], 15: [1, 2, 3, 4, 5, 6, 15, 15]}[top]
    if not incomplete and top == 4:
        lengths = [3] * 6 + [4, 4]
    try:
        out = decode_payload(bytes([1, 2, 3, top]) + data, n_values, 3, max_output=n_values, huffman_lengths=lengths)
    except PayloadError:
        return
    assert out.dtype == np.uint8 and out.size == n_values
    assert encode_payload(out, mode=MODE_HUFFMAN, huffman_lengths=lengths) == bytes([1, 2, 3, top]) + data


@settings(max_examples=150, deadline=2000)
@given(codes=st.lists(st.integers(0, 7), max_size=600), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_fuzz_corrupted_huffman_payloads(codes: list[int], flips: list[int]) -> None:
    lengths = [1, 2, 4, 4, 5, 5, 5, 5]
    data = bytearray(encode_payload(codes, mode=MODE_HUFFMAN, huffman_lengths=lengths))
    for f in flips:
        data[f // 8 % len(data)] ^= 1 << (f % 8)
    try:
        out = decode_payload(bytes(data), len(codes), 3, max_output=len(codes), huffman_lengths=lengths)
    except PayloadError:
        return
    assert out.size == len(codes)


def test_c_encoder_matches_the_reference_with_huffman(c_encoder: Path) -> None:
    rng = np.random.default_rng(7)
    cases = []
    for bits in range(1, 9):
        a = 1 << bits
        tables = [huffman_code_lengths(rng.integers(0, 100, a) ** 3), [bits] * a,
                  huffman_code_lengths(np.bincount(skewed(5000, bits, list(rng.dirichlet(np.full(a, 0.3)))),
                                                   minlength=a))]
        if bits == 3:
            tables += [[2, 2, 2, 3, 4, 5, 6, 6], [3] * 7 + [4], [1, 2, 3, 4, 5, 6, 15, 15]]
        for lengths in tables:
            for n in (0, 1, 2, 3, 17, 1216, 3328):
                streams = {"skewed": skewed(n, bits, list(rng.dirichlet(np.full(a, 0.3)))), **patterns(n, bits)}
                for codes in streams.values():
                    cases.append((bits, codes, payload_bound(n, bits), lengths))
    modes = set()
    for i, (status, payload) in enumerate(run_c(c_encoder, cases)):
        bits, codes, _, lengths = cases[i]
        want = encode_payload(codes, bits, huffman_lengths=lengths)
        assert status == 0 and payload == want, f"case {i}: {bits} bits, {len(codes)} codes, lengths {lengths}"
        modes.add(payload[1])
    assert modes == {MODE_STORED, MODE_LZW, MODE_HUFFMAN}


def test_c_encoder_huffman_huge_stream_and_capacity(c_encoder: Path) -> None:
    huge = skewed(250_000, 8)
    lengths = lengths_for(huge)
    (status, payload), = run_c(c_encoder, [(3, huge, payload_bound(len(huge)), lengths)])
    assert status == 0 and payload[1] == MODE_HUFFMAN and payload == encode_payload(huge, huffman_lengths=lengths)
    for name, codes in {"skewed": skewed(700, 1), **patterns(700)}.items():
        want = encode_payload(codes, huffman_lengths=lengths)
        caps = range(len(want) + 2)
        for cap, (status, payload) in zip(caps, run_c(c_encoder, [(3, codes, c, lengths) for c in caps]),
                                          strict=True):
            if cap >= len(want):
                assert (status, payload) == (0, want), (name, cap)
            else:
                assert (status, payload) == (1, b""), (name, cap)  # HIL_OFFLOAD_OVERFLOW, nothing valid


def test_c_encoder_refuses_bad_huffman_lengths(c_encoder: Path) -> None:
    codes = skewed(100, 1)
    for lengths in ([0] + [3] * 7, [16] + [3] * 7, [2] * 5 + [3] * 3):
        assert run_c(c_encoder, [(3, codes, 1000, lengths)]) == [(2, b"")]  # HIL_OFFLOAD_BAD_ARGS


def test_measurement_of_the_skewed_distribution() -> None:
    """The size the format was designed for: 3,328 i.i.d. codes of SKEWED_P (about 2.5 bits of entropy)."""
    n = 3328
    codes = skewed(n, 2022)
    lengths = lengths_for(codes)
    sizes = {m: len(encode_payload(codes, mode=m, huffman_lengths=lengths)) for m in (MODE_STORED, MODE_LZW,
                                                                                      MODE_HUFFMAN)}
    freq = np.bincount(codes, minlength=8) / n
    entropy_bytes = -(freq[freq > 0] * np.log2(freq[freq > 0])).sum() * n / 8
    assert sizes[MODE_HUFFMAN] < 1024 and sizes[MODE_HUFFMAN] < sizes[MODE_LZW] < sizes[MODE_STORED]
    assert sizes[MODE_HUFFMAN] - HEADER_SIZE < entropy_bytes * 1.05  # 2.41 bits per code for 2.35 of entropy
    assert encode_payload(codes, huffman_lengths=lengths)[1] == MODE_HUFFMAN
