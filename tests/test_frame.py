"""Framing and payload parsing of the HIL protocol (hil/transport/frame.py), without a device."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.transport.frame import (
    MAGIC,
    OVERHEAD,
    CorruptFrame,
    DeviceInfo,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    InferResult,
    ProtocolError,
    TensorSpec,
    crc8_smbus,
    encode_frame,
    encode_info,
    parse_error,
    parse_infer_reply,
    parse_info,
    type_name,
)

payloads = st.binary(max_size=300)
bytes_ = st.integers(0, 255)


def feed_in_chunks(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[Frame | CorruptFrame]:
    events: list[Frame | CorruptFrame] = []
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in zip(edges, edges[1:], strict=False):
        events += decoder.feed(data[a:b])
    return events


def test_crc8_smbus_check_value():
    # The catalogue check value of CRC-8/SMBUS over "123456789".
    assert crc8_smbus(b"123456789") == 0xF4


def test_encode_frame_layout():
    frame = encode_frame(FrameType.ECHO, 7, b"abc")
    assert frame[:2] == MAGIC
    assert frame[2:6] == bytes([0x02, 7, 3, 0])
    assert frame[6] == crc8_smbus(frame[2:6])
    assert frame[7:10] == b"abc"
    assert struct.unpack("<I", frame[10:]) == (zlib.crc32(frame[2:10]),)
    assert len(frame) == OVERHEAD + 3


def test_encode_frame_rejects_out_of_range_fields():
    with pytest.raises(ValueError):
        encode_frame(256, 0)
    with pytest.raises(ValueError):
        encode_frame(1, 0, bytes(0x10000))


@given(type_=bytes_, seq=bytes_, payload=payloads, cuts=st.lists(st.integers(0, 400), max_size=8))
def test_round_trip_in_any_chunking(type_, seq, payload, cuts):
    events = feed_in_chunks(FrameDecoder(), encode_frame(type_, seq, payload), cuts)
    assert events == [Frame(type_, seq, payload)]


@settings(max_examples=200)
@given(
    data=st.binary(max_size=2000),
    max_payload=st.sampled_from([0, 16, 64, 0xFFFF]),
    cuts=st.lists(st.integers(0, 2000), max_size=10),
)
def test_garbage_never_raises_and_stays_bounded(data, max_payload, cuts):
    """The documented way to report garbage is CorruptFrame values (or silence), never an exception."""
    decoder = FrameDecoder(max_payload)
    events = feed_in_chunks(decoder, data, cuts)
    assert all(isinstance(e, Frame | CorruptFrame) for e in events)
    assert decoder.pending <= max_payload + OVERHEAD


@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_decoding_does_not_depend_on_chunking(data, cuts):
    whole = FrameDecoder(64).feed(data)
    assert feed_in_chunks(FrameDecoder(64), data, cuts) == whole


# Garbage biased towards the bytes that start frames, so partial and false headers are common.
garbage = st.lists(st.one_of(st.sampled_from([0xA5, 0x5A]), bytes_), max_size=300).map(bytes)


@settings(max_examples=200)
@given(junk=garbage, seq=bytes_, payload=st.binary(max_size=64))
def test_resync_finds_good_frame_after_garbage(junk, seq, payload):
    """A false header in the garbage may swallow the good frame into its payload; once enough bytes follow
    (here: one maximal frame of padding), the candidate fails its CRC and the rescan finds the good frame."""
    good = Frame(FrameType.ECHO | 0x80, seq, payload)
    stream = junk + encode_frame(good.type, seq, payload) + bytes(64 + OVERHEAD)
    assert good in FrameDecoder(64).feed(stream)


def test_bad_header_check_is_dropped_silently():
    bad = bytearray(encode_frame(FrameType.ECHO, 1, b"hi"))
    bad[6] ^= 0xFF
    decoder = FrameDecoder()
    assert decoder.feed(bytes(bad)) == []
    assert decoder.feed(encode_frame(FrameType.ECHO, 2, b"ok")) == [Frame(FrameType.ECHO, 2, b"ok")]


def test_truncated_frame_is_reported_and_the_frames_inside_it_recovered():
    good1 = encode_frame(FrameType.ECHO, 2, b"first")
    good2 = encode_frame(FrameType.ECHO, 3, b"second")
    head = encode_frame(FrameType.ECHO, 1, bytes(30))[:17]  # header promises 30 bytes, 10 arrive
    decoder = FrameDecoder()
    assert decoder.feed(head + good1) == []  # 33 of the 41 promised bytes: still waiting
    events = decoder.feed(good2)
    assert events == [
        CorruptFrame(FrameType.ECHO, 1, 30, "bad_crc"),
        Frame(FrameType.ECHO, 2, b"first"),
        Frame(FrameType.ECHO, 3, b"second"),
    ]


def test_oversize_is_reported_and_decoding_resumes():
    head = encode_frame(FrameType.ECHO, 9, bytes(17))[:7]
    events = FrameDecoder(16).feed(head + encode_frame(FrameType.ECHO, 10, b"x"))
    assert events == [CorruptFrame(FrameType.ECHO, 9, 17, "oversize"), Frame(FrameType.ECHO, 10, b"x")]


def make_info() -> DeviceInfo:
    i8 = np.dtype(np.int8)
    return DeviceInfo(
        protocol_version=1, flags=1, firmware_version="0.1.0", build_id="src-0123 gcc-12", port="qemu",
        model_name="m", model_sha256=bytes(range(32)).hex(), arena_bytes=1234, clock_hz=40_000_000,
        rx_max=4096,
        inputs=[TensorSpec(i8, (1, 32, 32, 3), -128, float(np.float32(1 / 255)), 3072)],  # as sent: f32
        outputs=[TensorSpec(i8, (1, 10), 5, 0.125, 10), TensorSpec(i8, (2, 3, 4), 0, 0.5, 24)],
    )  # fmt: skip


def test_info_round_trip():
    info = make_info()
    raw = encode_info(info)
    assert len(raw) == 148 + 32 * 3
    parsed = parse_info(raw)
    assert parsed == info
    assert parsed.cycles_deterministic
    assert parsed.inputs[0].shape == (1, 32, 32, 3)


def test_info_with_wrong_length_or_inconsistent_tensor_is_a_protocol_error():
    raw = encode_info(make_info())
    with pytest.raises(ProtocolError):
        parse_info(raw[:-1])
    bad = bytearray(raw)
    struct.pack_into("<I", bad, 148 + 28, 3000)  # input 0 size no longer matches its shape
    with pytest.raises(ProtocolError, match="input 0"):
        parse_info(bytes(bad))


def test_infer_reply_inline_and_not():
    head = struct.pack("<BBBBQQ", 0, 2, 1, 0, 123, 4) + struct.pack("<2I", 2, 3)
    reply = parse_infer_reply(head + b"ab" + b"cde")
    assert (reply.inline, reply.cycles, reply.time_us, reply.sizes, reply.data) == (
        True, 123, 4, [2, 3], [b"ab", b"cde"],
    )  # fmt: skip
    fetched = parse_infer_reply(struct.pack("<BBBBQQ", 0, 1, 0, 0, 9, 0) + struct.pack("<I", 70000))
    assert (fetched.inline, fetched.sizes, fetched.data) == (False, [70000], [])
    with pytest.raises(ProtocolError):
        parse_infer_reply(head + b"ab")


def test_error_reply_and_names():
    err = parse_error(bytes([ErrorCode.OVERSIZE, FrameType.ECHO]) + b"too long")
    assert (err.name, err.request_type, err.message) == ("OVERSIZE", FrameType.ECHO, "too long")
    assert type_name(0x82) == "ECHO reply"
    assert type_name(0x42) == "0x42"


def test_latency_uses_clock_hz():
    assert InferResult([], cycles=80_000, time_us=0, clock_hz=40_000_000).latency_s == pytest.approx(0.002)


def test_info_kernels_field_round_trips_and_is_optional():
    from dataclasses import replace

    from hil.transport.frame import INFO_FLAG_KERNELS, DeviceInfo, TensorSpec, encode_info, parse_info

    t = TensorSpec(dtype=np.dtype(np.int8), shape=(1, 4), zero_point=-128, scale=0.5, size=4)
    info = DeviceInfo(1, INFO_FLAG_KERNELS, "0.1.0", "b", "esp32s3", "m", "ab" * 32, 64, 240_000_000, 32768,
                      [t], [t], kernels="kernels esp-nn 1.1.2")
    assert parse_info(encode_info(info)).kernels == "kernels esp-nn 1.1.2"
    old = replace(info, flags=0, kernels="")  # firmware without the field: no trailing bytes, no kernels
    assert parse_info(encode_info(old)).kernels == ""
