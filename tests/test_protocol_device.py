"""The protocol against the real firmware: host build and QEMU (Xtensa lx106) build of the same C core.

Uses the hand-written models in device_fw/tests/models/ (no kernels needed), so these tests do not depend
on the model compiler. Each firmware is built once (cached by content) and started once per module and
port; the tests that inject corrupt bytes each end by checking that a good frame still works.
"""

from __future__ import annotations

import os
import signal
import struct
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hil import paths
from hil.firmware import build_firmware, toolchain_status
from hil.targets import get_target
from hil.transport.client import DeviceClient, DeviceErrorReply, InputMismatch
from hil.transport.frame import (
    OVERHEAD,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    crc8_smbus,
    encode_frame,
    parse_error,
)
from hil.transport.link import LinkError, LinkTimeout

pytestmark = pytest.mark.timeout(60)

MODELS = paths.DEVICE_FW / "tests" / "models"
IDENTITY = MODELS / "identity"
LARGE_OUTPUT = MODELS / "large_output"
CRASH = MODELS / "crash"
PORTS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]


def require_toolchain(port: str) -> None:
    status = toolchain_status(port)
    if not status.ok:
        pytest.skip(f"cannot build/run the {port} firmware: {status}")


def start(port: str, model_dir: Path, log_dir: Path) -> Iterator[DeviceClient]:
    firmware = build_firmware(port, model_dir, kernels=False)
    with get_target(port, firmware=firmware, log_dir=log_dir) as target:
        client = target.open_client(timeout=2.0)
        try:
            client.hello()
            yield client
        finally:
            client.close()


@pytest.fixture(scope="module", params=PORTS)
def port(request: pytest.FixtureRequest) -> str:
    require_toolchain(request.param)
    return request.param


@pytest.fixture(scope="module")
def device(port: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceClient]:
    """The identity model's firmware, running."""
    yield from start(port, IDENTITY, tmp_path_factory.mktemp(f"{port}-logs"))


@pytest.fixture(scope="module")
def large_device(port: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceClient]:
    """The large-output model's firmware, running."""
    yield from start(port, LARGE_OUTPUT, tmp_path_factory.mktemp(f"{port}-large-logs"))


def raw_frame(client: DeviceClient, type_: int, payload: bytes = b"") -> tuple[int, bytes]:
    """A fresh seq (so no stale reply can match it) and the frame's bytes."""
    seq = client.next_seq()
    return seq, encode_frame(type_, seq, payload)


def reply_to(client: DeviceClient, seq: int, timeout: float = 2.0) -> tuple[Frame, list[int]]:
    """The first good frame with `seq`, and the seqs of the frames seen before it."""
    seen: list[int] = []
    while True:
        event = client.read_event(timeout)
        if isinstance(event, Frame) and event.seq == seq:
            return event, seen
        seen.append(event.seq)


def write_in_background(client: DeviceClient, data: bytes) -> threading.Thread:
    """Writes a long stream while the caller reads the replies: writing it all first would deadlock once
    the replies fill the pty's buffer and the device blocks writing instead of reading."""
    writer = threading.Thread(target=client.link.write, args=(data,), daemon=True)
    writer.start()
    return writer


def assert_error(frame: Frame, code: ErrorCode, request_type: int) -> None:
    assert frame.type == FrameType.ERROR
    err = parse_error(frame.payload)
    assert (err.code, err.request_type) == (code, request_type), err


def assert_echo_works(client: DeviceClient) -> None:
    assert client.echo(b"still alive") == b"still alive"


def project_version() -> str:
    with open(paths.PROJECT_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["version"]


def test_hello_fields(device: DeviceClient, port: str):
    info = device.hello()
    assert info.protocol_version == 1
    assert info.port == port
    assert info.firmware_version == project_version()
    assert info.build_id.startswith("src-") and " gcc-" in info.build_id
    assert info.model_name == "identity"
    assert info.model_sha256 == bytes(range(32)).hex()
    assert info.arena_bytes == 3024
    assert info.rx_max == 32768  # HIL_RX_MAX: a 96x96x3 int8 input fits one INFER_DIGEST request
    assert (info.clock_hz, info.cycles_deterministic) == ((1e9, False) if port == "host" else (40e6, True))
    assert [(t.shape, t.zero_point, t.scale, t.size) for t in info.inputs] == [((1, 1000), -3, 0.5, 1000)]
    assert [(t.shape, t.zero_point, t.scale, t.size) for t in info.outputs] == [
        ((1, 1000), -3, 0.5, 1000),
        ((1, 10, 100), 3, 0.25, 1000),
    ]
    assert all(t.dtype == np.int8 for t in info.inputs + info.outputs)


@pytest.mark.parametrize("size", ["0", "1", "rx_max"])
def test_echo_of_0_1_and_rx_max_bytes(device: DeviceClient, size: str):
    n = device.info.rx_max if size == "rx_max" else int(size)
    # Random bytes plus the magic, so payload bytes that look like frame starts are covered too.
    data = (b"\xa5\x5a" + np.random.default_rng(n).bytes(n))[:n]
    assert device.echo(data) == data


def test_garbage_bytes_then_good_frame(device: DeviceClient):
    rng = np.random.default_rng(1)
    junk = bytes(b if b != 0xA5 else 0 for b in rng.bytes(3000))
    # False starts: a lone first magic byte, a magic with a corrupt header, a magic at the very end.
    junk += b"\xa5\x00\xa5\xa5\x5a\x02\x01\x00\x00\x00" + b"\xa5"
    seq, frame = raw_frame(device, FrameType.ECHO, b"after garbage")
    device.link.write(junk + frame)
    reply, before = reply_to(device, seq)
    assert reply.payload == b"after garbage"
    assert before == []


def test_bad_crc_gets_bad_crc_error_then_good_frame_works(device: DeviceClient):
    seq, frame = raw_frame(device, FrameType.ECHO, b"corrupted in transit")
    bad = bytearray(frame)
    bad[-1] ^= 0x01
    device.link.write(bytes(bad))
    reply, _ = reply_to(device, seq)
    assert_error(reply, ErrorCode.BAD_CRC, FrameType.ECHO)
    assert_echo_works(device)


def test_bad_header_check_is_dropped_then_good_frame_works(device: DeviceClient):
    bad_seq, frame = raw_frame(device, FrameType.ECHO, b"x" * 8)
    bad = bytearray(frame)
    bad[6] ^= 0xFF
    seq, good = raw_frame(device, FrameType.ECHO, b"good")
    device.link.write(bytes(bad) + good)
    reply, before = reply_to(device, seq)
    assert reply.payload == b"good"
    assert bad_seq not in before  # nothing at all answered the bad header


def test_truncated_frame_then_good_frame_recovered_after_the_silence_gap(device: DeviceClient):
    """The device waits for the 51 bytes the truncated header promises and the client's ECHO (21 bytes) joins
    that candidate; after 100 ms of silence (PROTOCOL.md: the inter-byte gap) the device drops the candidate,
    rescans and answers the ECHO from inside its buffer: on the first attempt, before the client's 1 s reply
    timeout would resend it."""
    seq, frame = raw_frame(device, FrameType.ECHO, bytes(40))
    device.link.write(frame[:17])
    timeout, resends = device.timeout, device.resends
    device.timeout = 1.0
    started = time.monotonic()
    try:
        assert device.echo(b"0123456789") == b"0123456789"
    finally:
        device.timeout = timeout
    assert 0.09 <= time.monotonic() - started < 1.0
    assert device.resends == resends
    assert_echo_works(device)


def test_oversize_gets_oversize_error(device: DeviceClient):
    n = device.info.rx_max + 1
    seq = device.next_seq()
    head = struct.pack("<BBH", FrameType.ECHO, seq, n)
    # The payload (zeros, no magic) and a dummy CRC follow, as from a host that ignores rx_max.
    device.link.write(b"\xa5\x5a" + head + bytes([crc8_smbus(head)]) + bytes(n + 4))
    reply, _ = reply_to(device, seq)
    assert_error(reply, ErrorCode.OVERSIZE, FrameType.ECHO)
    assert_echo_works(device)


@pytest.mark.parametrize("type_", [0x00, 0x07, 0x42, 0x7F, 0x82])
def test_unknown_type_gets_unknown_type_error(device: DeviceClient, type_: int):
    with pytest.raises(DeviceErrorReply) as excinfo:
        device.request(type_)
    assert (excinfo.value.name, excinfo.value.request_type) == ("UNKNOWN_TYPE", type_)


def test_infer_offload_without_an_offload_config_is_unsupported(device: DeviceClient):
    """The identity model has no hil_offload.c: the core's stub answers UNSUPPORTED (0x06 is a known type)."""
    with pytest.raises(DeviceErrorReply) as excinfo:
        device.request(FrameType.INFER_OFFLOAD)
    assert excinfo.value.name == "UNSUPPORTED" and "no AgileNN offload config" in excinfo.value.message
    with pytest.raises(DeviceErrorReply, match="BAD_REQUEST"):
        device.request(FrameType.INFER_OFFLOAD, b"x")
    assert_echo_works(device)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (struct.pack("<BI", 1, 0) + b"x", "index 1 of 1 input"),
        (struct.pack("<BI", 0, 1000) + b"x", "offset at the end"),
        (struct.pack("<BI", 0, 999) + b"xy", "one byte past the end"),
        (struct.pack("<BI", 0, 0xFFFFFFFF) + b"xy", "offset + length wraps around 2^32"),
        (b"\x00\x00\x00", "shorter than index and offset"),
    ],
)
def test_bad_load_input_range_gets_bad_request(device: DeviceClient, payload: bytes, why: str):
    with pytest.raises(DeviceErrorReply) as excinfo:
        device.request(FrameType.LOAD_INPUT, payload)
    assert excinfo.value.name == "BAD_REQUEST", why
    # The last byte of the tensor is in range.
    reply = device.request(FrameType.LOAD_INPUT, struct.pack("<BI", 0, 999) + b"x")
    assert struct.unpack("<BII", reply.payload) == (0, 999, 1)


def test_bad_read_output_range_gets_bad_request(device: DeviceClient):
    for index, offset, length in [(2, 0, 1), (0, 1000, 1), (1, 0, 1001)]:
        with pytest.raises(DeviceErrorReply, match="BAD_REQUEST"):
            device.request(FrameType.READ_OUTPUT, struct.pack("<BIH", index, offset, length))


def test_infer_outputs_exactly_right(device: DeviceClient):
    x = np.random.default_rng(2).integers(-128, 128, size=(1, 1000), dtype=np.int8)
    x[0, :3] = [-128, 0, 127]
    result = device.infer([x])
    assert result.inline
    assert np.array_equal(result.outputs[0], x)
    negated = np.clip(-x.astype(np.int16), -128, 127).astype(np.int8).reshape(1, 10, 100)
    assert result.outputs[1].dtype == np.int8
    assert np.array_equal(result.outputs[1], negated)
    assert result.cycles > 0
    # READ_OUTPUT serves the same bytes as the inline reply.
    assert device.read_output(1, 990, 10) == negated.tobytes()[990:]


def test_infer_rejects_inputs_that_do_not_match_info(device: DeviceClient):
    with pytest.raises(InputMismatch, match=r"shape \(1, 999\)"):
        device.infer([np.zeros((1, 999), np.int8)])
    with pytest.raises(InputMismatch, match="uint8"):
        device.infer([np.zeros((1, 1000), np.uint8)])
    with pytest.raises(InputMismatch, match="got 2 inputs"):
        device.infer([np.zeros((1, 1000), np.int8)] * 2)


def test_large_output_via_read_output(large_device: DeviceClient):
    x = np.arange(16, dtype=np.int8).reshape(1, 16) * 7
    result = large_device.infer([x])
    assert not result.inline  # 90,016 output bytes do not fit one 65,535-byte reply
    assert np.array_equal(result.outputs[0], x[:, ::-1])
    i = np.arange(90_000)
    big = ((x.astype(np.int64).ravel()[i % 16] + i) & 0xFF).astype(np.uint8).view(np.int8)
    assert np.array_equal(result.outputs[1], big.reshape(1, 300, 300))


def test_random_frames_and_bytes_do_not_break_the_device(device: DeviceClient):
    """Well-formed frames of every type with random payloads, mixed with random bytes: the device answers
    or ignores each, and still works afterwards."""
    rng = np.random.default_rng(3)
    stream = bytearray()
    for _ in range(200):
        type_ = int(rng.choice([0x01, 0x02, 0x03, 0x05, 0x7F, 0x83, int(rng.integers(256))]))
        stream += encode_frame(type_, int(rng.integers(256)), rng.bytes(int(rng.integers(0, 40))))
        stream += rng.bytes(int(rng.integers(0, 20)))
    marker = os.urandom(16)
    seq, frame = raw_frame(device, FrameType.ECHO, marker)
    writer = write_in_background(device, bytes(stream) + bytes(device.info.rx_max + OVERHEAD) + frame)
    # Replies come in order: everything before the marker's echo belongs to the random frames.
    while True:
        event = device.read_event(5.0)
        if isinstance(event, Frame) and event.type == FrameType.ECHO | 0x80 and event.payload == marker:
            break
    writer.join(5.0)
    assert_echo_works(device)


def test_device_resyncs_exactly_like_the_python_decoder(device: DeviceClient):
    """Good, truncated, bit-flipped and oversize frames mixed with garbage: the device answers exactly the
    events FrameDecoder finds in the same stream (a reply per frame, BAD_CRC/OVERSIZE per corrupt one)."""
    rng = np.random.default_rng(5)
    rx_max = device.info.rx_max
    stream = bytearray()
    for _ in range(300):
        if rng.integers(4) == 0:
            stream += rng.bytes(int(rng.integers(0, 50)))
            continue
        size = int(rng.choice([0, int(rng.integers(0, 64)), int(rng.integers(0, rx_max + 900))]))
        frame = bytearray(encode_frame(FrameType.ECHO, int(rng.integers(256)), rng.bytes(size)))
        damage = rng.random()
        if damage < 0.15:
            frame = frame[: int(rng.integers(1, len(frame)))]
        elif damage < 0.3:
            frame[int(rng.integers(len(frame)))] ^= 1 << int(rng.integers(8))
        stream += frame
    stream += bytes(rx_max + OVERHEAD)  # completes any candidate still open
    expected = [
        (e.seq, "reply" if isinstance(e, Frame) else {"bad_crc": "BAD_CRC", "oversize": "OVERSIZE"}[e.reason])
        for e in FrameDecoder(rx_max).feed(bytes(stream))
    ]
    marker = os.urandom(16)
    seq, frame = raw_frame(device, FrameType.ECHO, marker)
    writer = write_in_background(device, bytes(stream) + frame)
    got = []
    while True:
        event = device.read_event(5.0)
        assert isinstance(event, Frame)
        if event.seq == seq and event.payload == marker:
            break
        got.append((event.seq, parse_error(event.payload).name if event.type == FrameType.ERROR else "reply"))
    writer.join(5.0)
    assert got == expected


def test_crashed_firmware_fails_fast_with_the_reason(port: str, tmp_path: Path):
    """A model that executes an illegal instruction: the client's next read fails at once (no retries, no
    timeout) and the error carries the program's exit, which the QEMU target decodes."""
    firmware = build_firmware(port, CRASH, kernels=False)
    with get_target(port, firmware=firmware, log_dir=tmp_path) as target:
        client = target.open_client(timeout=5.0)
        try:
            client.hello()
            started = time.monotonic()
            with pytest.raises(LinkError) as excinfo:
                client.infer([np.zeros((1, 16), np.int8)])
            assert time.monotonic() - started < 2.0
        finally:
            client.close()
    assert not isinstance(excinfo.value, LinkTimeout)
    expected = "guest CPU exception, EXCCAUSE 0" if port == "qemu" else f"killed by signal {signal.SIGILL}"
    assert expected in str(excinfo.value)


@pytest.mark.qemu
def test_qemu_cycle_counts_repeat_in_two_separate_runs(tmp_path: Path):
    require_toolchain("qemu")
    x = np.random.default_rng(4).integers(-128, 128, size=(1, 1000), dtype=np.int8)
    runs = []
    for run in range(2):
        for client in start("qemu", IDENTITY, tmp_path / f"run{run}"):
            # Different traffic before each inference shifts where in QEMU's 25-instruction CCOUNT period
            # the measurement starts; the count must not depend on it.
            counts = []
            for k in range(3):
                client.echo(bytes(run * 5 + k))
                counts.append(client.infer([x]).cycles)
            runs.append(counts)
    assert runs[0][0] > 0
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 1
