"""The offload payload format (device_fw/OFFLOAD.md): the reference codec (hil.offload.codec) round-trips every
kind of code stream, its decoder refuses anything malformed with PayloadError only and within its output bound,
and the device's C encoder (core/src/offload.c, through a host harness) writes exactly the reference's bytes."""

from __future__ import annotations

import hashlib
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
    LZW_MAX_CODE_BITS,
    MODE_LZW,
    MODE_STORED,
    PayloadError,
    decode_payload,
    encode_payload,
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


def run_c(binary: Path, cases: list[tuple[int, np.ndarray, int]]) -> list[tuple[int, bytes]]:
    """(bits, codes, capacity) per case -> (status, payload) per case."""
    stdin = b"".join(
        struct.pack("<BII", bits, len(codes), capacity) + np.asarray(codes, np.uint8).tobytes()
        for bits, codes, capacity in cases
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
