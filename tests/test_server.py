"""The remote model server (hil.server) through real TCP on loopback: correct logits against Keras, concurrent
clients, every class of malformed request (error reply or clean close, and the server keeps serving), a
hypothesis fuzz of payloads and frames, bounded memory, `hil serve` as a process, and the pytest fixture.

The Remote NNs here are tiny Keras models built in a temporary directory (the real one would cost seconds per
test on a CPU that is busy training); the payloads go through the project's codec (hil.offload.codec)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil import paths
from hil.server import protocol as p
from hil.server.client import RemoteClient, RemoteError, parse_address

# Keras' predict_on_batch converts its tensors with np.array(x, copy=False), which numpy 2 flags; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

# --------------------------------------------------------------------------------------------------------------
# protocol, TensorFlow-free
# --------------------------------------------------------------------------------------------------------------


def test_header_round_trip_and_layout():
    frame = p.encode_request(p.MsgType.INFER, 0x01020304, b"xyz", flags=0)
    assert frame[:16] == b"AGRM\x01\x03\x00\x00\x04\x03\x02\x01\x03\x00\x00\x00"  # PROTOCOL.md's example
    header = p.parse_header(frame[:16])
    assert (header.type, header.field, header.request_id, header.length) == (3, 0, 0x01020304, 3)
    reply = p.encode_reply(p.MsgType.INFER, p.Status.BAD_SHAPE, 7, b"m")
    assert reply[4:8] == bytes([1, 0x83, 9, 0])


@pytest.mark.parametrize(("data", "status"), [
    (b"AGRX" + bytes(12), p.Status.BAD_MAGIC),
    (b"AGRM\x02" + bytes(11), p.Status.BAD_VERSION),
    (p.Header(1, 0, 1, p.PROTOCOL_MAX_BODY + 1).pack(), p.Status.TOO_LARGE),
    (b"AGRM\x01", p.Status.TRUNCATED),
])
def test_bad_headers_name_their_status(data, status):
    with pytest.raises(p.ProtocolError) as info:
        p.parse_header(data)
    assert info.value.status == status


def test_infer_request_and_result_round_trip():
    sha = bytes(range(32))
    req = p.InferRequest(sha, 48, 3, b"\x01\x02")
    body = req.pack()
    assert len(body) == 42 and body[32:40] == b"\x30\x00\x00\x00\x03\x00\x00\x00"
    assert p.InferRequest.unpack(body) == req
    with pytest.raises(p.ProtocolError, match="reserved"):
        p.InferRequest.unpack(body[:37] + b"\x01" + body[38:])
    result = p.InferResult(np.array([1.5, -2.0], np.float32), 1234, 56)
    back = p.InferResult.unpack(result.pack())
    assert back.server_us == 1234 and back.model_us == 56 and np.array_equal(back.logits, result.logits)
    with pytest.raises(p.ProtocolError):
        p.InferResult.unpack(result.pack()[:-1])


def test_parse_address():
    assert parse_address("127.0.0.1:7070") == ("127.0.0.1", 7070)
    assert parse_address("[::1]:80") == ("::1", 80)
    for bad in ("localhost", ":80", "host:0", "host:x", "host:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


# --------------------------------------------------------------------------------------------------------------
# tiny model directories and a running server
# --------------------------------------------------------------------------------------------------------------

FRAME_TIMEOUT_S = 0.5
MAX_BODY = 64 * 1024


@dataclass
class TinyModel:
    directory: Path
    sha256: str
    centroids: np.ndarray
    shape: tuple[int, int, int]
    keras_model: object  # the Keras model as built, before the server saved and reloaded it

    @property
    def n_values(self) -> int:
        return int(np.prod(self.shape))

    def reference(self, codes: np.ndarray) -> np.ndarray:
        values = self.centroids[codes.reshape(-1, self.n_values)].reshape(-1, *self.shape)
        return np.asarray(self.keras_model.predict_on_batch(values), np.float32)  # type: ignore[attr-defined]


def write_tiny_model(directory: Path, shape: tuple[int, int, int], classes: int, centroids: list[float],
                     seed: int) -> TinyModel:
    """A model directory as `hil export` writes it, as far as the server and the plugin read it: agilenn.json,
    remote.keras, and stand-ins for the device files (model.tflite is only hashed; model.json and hil_model.c
    let hil.model.artifacts.resolve_model accept the directory)."""
    import hashlib

    import keras

    directory.mkdir(parents=True)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 1, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(classes)(keras.layers.Flatten()(x)))
    model.save(directory / "remote.keras")
    tflite = b"TFL3 stand-in " + directory.name.encode() + np.random.default_rng(seed).bytes(64)
    (directory / "model.tflite").write_bytes(tflite)
    sha = hashlib.sha256(tflite).hexdigest()
    (directory / "model.json").write_text(json.dumps({"name": directory.name, "sha256": sha}))
    (directory / "hil_model.c").write_text("/* stand-in */\n")
    (directory / "agilenn.json").write_text(json.dumps({
        "name": directory.name, "centroids": centroids, "bits_per_value": 3, "alpha": 0.5,
        "payload": {"values": int(np.prod(shape)), "bits_per_value": 3},
        "remote_model": {"file": "remote.keras", "input": [None, *shape], "output": "logits"},
    }))
    return TinyModel(directory, sha, np.asarray(centroids, np.float32), shape, model)


@pytest.fixture(scope="module")
def codec():
    return pytest.importorskip("hil.offload.codec", reason="hil.offload.codec (the payload codec) is not there")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[TinyModel, TinyModel]:
    pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("remote")
    a = write_tiny_model(root / "tiny", (4, 4, 3), 10, [0.1, 0.6, 1.2, 2.0, 2.9, 3.8, 4.9, 5.9], seed=1)
    # 5 centroids for 3-bit codes: codes 5..7 are valid bits but have no centroid.
    b = write_tiny_model(root / "tiny5", (2, 2, 2), 4, [0.0, 1.0, 2.0, 3.0, 4.0], seed=2)
    return a, b


@pytest.fixture(scope="module")
def server(tiny):
    from hil.server import RemoteModel, RemoteServer, ServerConfig

    config = ServerConfig(max_body=MAX_BODY, max_connections=24, frame_timeout_s=FRAME_TIMEOUT_S,
                          idle_timeout_s=10.0)
    srv = RemoteServer([RemoteModel.load(m.directory) for m in tiny], config).start()
    try:
        yield srv
    finally:
        srv.close()
    assert not srv.alive


@pytest.fixture
def client(server) -> Iterator[RemoteClient]:
    with RemoteClient(*server.address, timeout=10.0) as c:
        yield c


def random_codes(rng: np.random.Generator, model: TinyModel) -> np.ndarray:
    return rng.integers(0, len(model.centroids), model.n_values).astype(np.uint8)


def assert_serves(server, model: TinyModel, codec, seed: int = 0) -> None:
    """A fresh client gets correct logits: the server survived whatever the test did before."""
    assert server.alive
    codes = random_codes(np.random.default_rng(seed), model)
    with RemoteClient(*server.address, timeout=10.0) as c:
        result = c.infer(model.sha256, codec.encode_payload(codes, 3), model.n_values, 3)
    np.testing.assert_allclose(result.logits, model.reference(codes)[0], rtol=1e-5, atol=1e-5)


class RawConn:
    """A plain socket for sending what a client never would."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, n: int) -> bytes | None:
        buf = b""
        deadline = time.monotonic() + self.timeout
        while len(buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return None
            buf += chunk
        return buf

    def reply(self) -> tuple[p.Header, bytes] | None:
        """The next reply, or None when the server closed the connection first."""
        head = self.read_exact(p.HEADER_SIZE)
        if head is None:
            return None
        header = p.parse_header(head)
        body = self.read_exact(header.length) if header.length else b""
        assert body is not None, "reply cut short"
        return header, body

    def closed(self) -> bool:
        """True when the server has closed the connection (EOF within the timeout)."""
        return self.read_exact(1) is None

    def close(self) -> None:
        self.sock.close()


def infer_body(model: TinyModel, payload: bytes, n_values: int | None = None, bits: int = 3,
               sha: str | None = None) -> bytes:
    return p.InferRequest(bytes.fromhex(sha or model.sha256), model.n_values if n_values is None else n_values,
                          bits, payload).pack()


# --------------------------------------------------------------------------------------------------------------
# correct answers
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_logits_match_keras_on_the_dequantized_codes(server, client, tiny, codec):
    rng = np.random.default_rng(0)
    for model in tiny:
        for _ in range(5):
            codes = random_codes(rng, model)
            result = client.infer(model.sha256, codec.encode_payload(codes, 3), model.n_values, 3)
            np.testing.assert_allclose(result.logits, model.reference(codes)[0], rtol=1e-5, atol=1e-5)
            assert result.logits.dtype == np.float32
            assert 0 < result.model_us <= result.server_us < 10_000_000
    codes = np.full(tiny[0].n_values, 7, np.uint8)  # all codes the highest centroid
    result = client.infer(tiny[0].sha256, codec.encode_payload(codes, 3), tiny[0].n_values)
    np.testing.assert_allclose(result.logits, tiny[0].reference(codes)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.tf
@pytest.mark.timeout(60)
def test_info_and_ping(client, tiny):
    assert client.ping() < 5
    info = client.info()
    assert info.protocol == 1 and info.max_body == MAX_BODY
    a = info.model(tiny[0].sha256)
    assert a is not None and (a.name, a.n_values, a.bits, a.input_shape, a.classes) == ("tiny", 48, 3, (4, 4, 3), 10)
    assert a.alpha == 0.5 and len(a.centroids) == 8
    b = info.model(tiny[1].sha256)
    assert b is not None and (b.n_values, b.classes, len(b.centroids)) == (8, 4, 5)


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_concurrent_clients_all_get_their_own_answers(server, tiny, codec):
    model = tiny[0]
    threads, per_thread = 8, 10
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 8, (threads, per_thread, model.n_values)).astype(np.uint8)
    want = model.reference(codes).reshape(threads, per_thread, -1)
    barrier = threading.Barrier(threads, timeout=30)

    def worker(t: int) -> list[np.ndarray]:
        with RemoteClient(*server.address, timeout=30.0) as c:
            barrier.wait()  # all connected, then all at once
            return [c.infer(model.sha256, codec.encode_payload(codes[t, i], 3), model.n_values).logits
                    for i in range(per_thread)]

    with ThreadPoolExecutor(threads) as pool:
        got = [f.result(timeout=90) for f in [pool.submit(worker, t) for t in range(threads)]]
    for t in range(threads):
        np.testing.assert_allclose(np.stack(got[t]), want[t], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# malformed requests: each class, then a good client still works
# --------------------------------------------------------------------------------------------------------------


def _invalid_payload(codec, n_values: int) -> bytes:
    """Bytes the codec refuses (found by trying seeded random streams: the codec's format is its own)."""
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 5, 8, 16, 64):
        for _ in range(50):
            data = rng.bytes(size)
            try:
                codec.decode_payload(data, n_values, 3, max_output=n_values)
            except codec.PayloadError:
                return data
    pytest.fail("no random byte string is an invalid payload for this codec")


# (case, reply status or None for "closed without a reply", connection stays usable)
KEPT, CLOSED = True, False


def _malformed_cases(tiny, codec) -> dict[str, tuple[bytes, p.Status, bool]]:
    a, b = tiny
    good = codec.encode_payload(np.zeros(a.n_values, np.uint8), 3)
    req = p.encode_request
    return {
        "garbage bytes": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", p.Status.BAD_MAGIC, CLOSED),
        "bad version": (b"AGRM\x07" + bytes(11), p.Status.BAD_VERSION, CLOSED),
        "oversize length": (p.Header(p.MsgType.INFER, 0, 1, MAX_BODY + 1).pack() + bytes(100), p.Status.TOO_LARGE,
                            CLOSED),
        "u32 max length": (p.Header(p.MsgType.INFER, 0, 1, 0xFFFFFFFF).pack(), p.Status.TOO_LARGE, CLOSED),
        "unknown type": (req(0x42, 2, b"abc"), p.Status.UNKNOWN_TYPE, KEPT),
        "infer body too short": (req(p.MsgType.INFER, 3, bytes(39)), p.Status.BAD_REQUEST, KEPT),
        "nonzero flags": (req(p.MsgType.INFER, 4, infer_body(a, good), flags=1), p.Status.BAD_REQUEST, KEPT),
        "unknown model hash": (req(p.MsgType.INFER, 5, infer_body(a, good, sha="ab" * 32)), p.Status.UNKNOWN_MODEL,
                               KEPT),
        "wrong n_values": (req(p.MsgType.INFER, 6, infer_body(a, good, n_values=47)), p.Status.BAD_SHAPE, KEPT),
        "wrong bits": (req(p.MsgType.INFER, 7, infer_body(a, good, bits=4)), p.Status.BAD_BITS, KEPT),
        "invalid compressed codes": (req(p.MsgType.INFER, 8, infer_body(a, _invalid_payload(codec, a.n_values))),
                                     p.Status.BAD_PAYLOAD, KEPT),
        "code without a centroid": (req(p.MsgType.INFER, 9, infer_body(b, codec.encode_payload(
            np.full(b.n_values, 7, np.uint8), 3))), p.Status.BAD_PAYLOAD, KEPT),
        "empty payload": (req(p.MsgType.INFER, 10, infer_body(a, b"")), p.Status.BAD_PAYLOAD, KEPT),
    }


MALFORMED = ["garbage bytes", "bad version", "oversize length", "u32 max length", "unknown type",
             "infer body too short", "nonzero flags", "unknown model hash", "wrong n_values", "wrong bits",
             "invalid compressed codes", "code without a centroid", "empty payload"]


@pytest.mark.tf
@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_gets_an_error_reply(server, tiny, codec, case):
    data, status, kept = _malformed_cases(tiny, codec)[case]
    conn = RawConn(server.address)
    try:
        conn.send(data)
        got = conn.reply()
        assert got is not None, "closed without a reply"
        header, body = got
        assert header.field == status, f"{p.status_name(header.field)}: {p.decode_message(body)}"
        assert p.decode_message(body)  # every error says why
        if kept:
            assert header.request_id == p.parse_header(data[:16]).request_id
            conn.send(p.encode_request(p.MsgType.PING, 99))
            again = conn.reply()
            assert again is not None and again[0].field == p.Status.OK and again[0].request_id == 99
        else:
            if status == p.Status.TOO_LARGE:  # the header was read: the reply names the request
                assert (header.type, header.request_id) == (p.MsgType.INFER | p.REPLY_BIT, 1)
            assert conn.closed()
    finally:
        conn.close()
    assert_serves(server, tiny[0], codec)


@pytest.mark.tf
@pytest.mark.timeout(60)
def test_wrong_count_of_codes_is_refused(server, tiny, codec):
    """Valid streams of one code too few or too many: the server never runs the model on another shape."""
    model = tiny[0]
    with RemoteClient(*server.address, timeout=10.0) as c:
        for count in (model.n_values - 1, model.n_values + 1, 10 * model.n_values):
            payload = codec.encode_payload(np.ones(count, np.uint8), 3)
            with pytest.raises(RemoteError) as info:
                c.infer(model.sha256, payload, model.n_values)
            assert info.value.status in (p.Status.BAD_PAYLOAD, p.Status.BAD_SHAPE)
    assert_serves(server, model, codec)


@pytest.mark.tf
@pytest.mark.timeout(60)
@pytest.mark.parametrize("split", ["header", "body"])
def test_truncated_frame_gets_truncated_and_close(server, tiny, codec, split):
    model = tiny[0]
    frame = p.encode_request(p.MsgType.INFER, 11, infer_body(model, codec.encode_payload(
        np.zeros(model.n_values, np.uint8), 3)))
    conn = RawConn(server.address)
    try:
        conn.send(frame[:9] if split == "header" else frame[:-3])
        conn.sock.shutdown(socket.SHUT_WR)  # the peer stops sending mid-frame but still reads
        got = conn.reply()
        assert got is not None and got[0].field == p.Status.TRUNCATED
        assert conn.closed()
    finally:
        conn.close()
    assert_serves(server, model, codec)


@pytest.mark.tf
@pytest.mark.timeout(60)
@pytest.mark.parametrize("pace_s", [None, 0.1])
def test_slow_loris_hits_the_frame_timeout(server, tiny, codec, pace_s):
    """A frame that stalls (pace None) or dribbles one byte per 0.1 s, each byte well inside any per-read
    timeout, is cut off FRAME_TIMEOUT_S after its first byte, and meanwhile others are served."""
    model = tiny[0]
    frame = p.encode_request(p.MsgType.INFER, 12, infer_body(model, b"\x00" * 64))
    conn = RawConn(server.address)
    start = time.monotonic()
    try:
        conn.send(frame[:5])
        assert_serves(server, model, codec)  # while this frame hangs, others are answered
        if pace_s is not None:
            for byte in frame[5:]:
                try:
                    conn.send(bytes([byte]))
                except OSError:  # the server closed while we were still dribbling
                    break
                time.sleep(pace_s)
                if time.monotonic() - start > 3 * FRAME_TIMEOUT_S:
                    break
        got = conn.reply()
        elapsed = time.monotonic() - start
        assert got is not None and got[0].field == p.Status.TIMEOUT
        assert FRAME_TIMEOUT_S * 0.9 <= elapsed < FRAME_TIMEOUT_S * 4 + 2
        assert conn.closed()
    finally:
        conn.close()
    assert_serves(server, model, codec)


@pytest.mark.tf
@pytest.mark.timeout(60)
def test_connection_limit_answers_busy_and_frees_slots(tiny, codec):
    from hil.server import RemoteModel, RemoteServer, ServerConfig

    model = tiny[0]
    with RemoteServer([RemoteModel.load(model.directory)], ServerConfig(max_connections=2)).start() as srv:
        held = [RawConn(srv.address) for _ in range(2)]
        try:
            for c in held:  # both admitted (a PING answers), so both slots are taken
                c.send(p.encode_request(p.MsgType.PING, 1))
                assert c.reply() is not None
            extra = RawConn(srv.address)
            got = extra.reply()
            assert got is not None and got[0].field == p.Status.BUSY and got[0].type == p.NO_TYPE
            assert extra.closed()
            extra.close()
        finally:
            for c in held:
                c.close()
        deadline = time.monotonic() + 5
        while srv.stats().active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_serves(srv, model, codec)
        assert srv.stats().rejected == 1


@pytest.mark.tf
@pytest.mark.timeout(60)
def test_client_reconnects_after_a_closing_error(server, tiny, codec):
    """An error that closes the connection (here TOO_LARGE, sent through the client's raw request) is followed by
    a working request on the same RemoteClient."""
    with RemoteClient(*server.address, timeout=10.0) as c:
        status, _ = c.request(p.MsgType.PING, bytes(MAX_BODY + 1))
        assert status == p.Status.TOO_LARGE
        codes = random_codes(np.random.default_rng(3), tiny[0])
        result = c.infer(tiny[0].sha256, codec.encode_payload(codes, 3), tiny[0].n_values)
        np.testing.assert_allclose(result.logits, tiny[0].reference(codes)[0], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# fuzzing and memory
# --------------------------------------------------------------------------------------------------------------

# Bounded and reproducible: a fixed number of examples from a fixed seed, no example database on disk, no
# per-example deadline (the CPU is shared with training; the pytest-timeout marks bound the whole test).
FUZZ = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
ALLOWED_INFER = {p.Status.OK, p.Status.BAD_PAYLOAD, p.Status.BAD_SHAPE}


def _payloads(codec, n_values: int):
    """Random bytes; a valid payload header (stored or LZW) over random bytes; valid payloads; valid payloads
    with a flipped bit, cut short or extended. Most are invalid, some decode (and must then be answered right)."""
    codes = st.lists(st.integers(0, 7), min_size=n_values, max_size=n_values).map(lambda c: np.array(c, np.uint8))
    # Both of the codec's modes when it lets a caller force one (its documented API is encode_payload(codes, bits)).
    modes = [None] + [getattr(codec, name) for name in ("MODE_LZW", "MODE_STORED") if hasattr(codec, name)]
    valid = st.tuples(codes, st.sampled_from(modes)).map(
        lambda t: codec.encode_payload(t[0], 3) if t[1] is None else codec.encode_payload(t[0], 3, mode=t[1]))

    def mutate(payload: bytes, how: str, where: int, bit: int) -> bytes:
        i = where % len(payload)
        if how == "flip":
            return payload[:i] + bytes([payload[i] ^ (1 << bit)]) + payload[i + 1:]
        return payload[:i] if how == "cut" else payload + bytes([where & 0xFF]) * (1 + bit)

    mutated = st.builds(mutate, valid, st.sampled_from(["flip", "flip", "cut", "extend"]), st.integers(0, 2**16),
                        st.integers(0, 7))
    headed = st.builds(lambda head, body: head + body, st.sampled_from([b"\x01\x00\x03\x00", b"\x01\x01\x03\x0c"]),
                       st.binary(max_size=80))
    return st.one_of(st.binary(max_size=400), headed, valid, mutated)


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_fuzz_random_payload_bytes(server, tiny, codec):
    """Payload bytes for the right model, n_values and bits: BAD_PAYLOAD / BAD_SHAPE, or OK with exactly the
    logits of what the codec decodes, on one connection that stays usable throughout."""
    model = tiny[0]
    client = RemoteClient(*server.address, timeout=10.0)
    seen: set[p.Status] = set()

    @FUZZ
    @given(_payloads(codec, model.n_values))
    def check(payload: bytes) -> None:
        status, body = client.request(p.MsgType.INFER, infer_body(model, payload))
        assert status in ALLOWED_INFER, f"{p.status_name(status)}: {p.decode_message(body)}"
        seen.add(p.Status(status))
        if status == p.Status.OK:
            codes = codec.decode_payload(payload, model.n_values, 3)
            np.testing.assert_allclose(p.InferResult.unpack(body).logits, model.reference(codes)[0], rtol=1e-5,
                                       atol=1e-5)
        else:
            with pytest.raises(codec.PayloadError):
                codec.decode_payload(payload, model.n_values, 3, max_output=model.n_values)

    try:
        check()
    finally:
        client.close()
    assert {p.Status.OK, p.Status.BAD_PAYLOAD} <= seen  # the fuzz reached both sides
    assert_serves(server, model, codec)


def _frames():
    """Frames with plausible headers: real or random type, flags, length right or wrong, random body."""
    types = st.one_of(st.sampled_from([1, 2, 3, 3, 3]), st.integers(0, 255))
    return st.builds(
        lambda t, flags, body, delta, rid: p.Header(t, flags, rid, max(0, len(body) + delta)).pack() + body,
        types, st.sampled_from([0, 0, 0, 1, 0xFFFF]), st.binary(max_size=120), st.sampled_from([0, 0, 0, -1, 1, 7]),
        st.integers(0, 2**32 - 1))


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_fuzz_frame_streams(server, tiny, codec):
    """Arbitrary byte streams (random bytes, or frames with wrong lengths, types, flags), then the client stops
    sending: every reply the server writes is a well-formed frame, and the server answers correctly after."""

    @FUZZ
    @given(st.one_of(st.binary(max_size=64), st.lists(_frames(), min_size=1, max_size=3).map(b"".join)))
    def check(stream: bytes) -> None:
        conn = RawConn(server.address, timeout=FRAME_TIMEOUT_S * 4 + 5)
        try:
            conn.send(stream)
            conn.sock.shutdown(socket.SHUT_WR)
            while (got := conn.reply()) is not None:
                header, body = got
                assert header.field in {s.value for s in p.Status}
                if header.field != p.Status.OK:
                    assert p.decode_message(body)
        finally:
            conn.close()
        assert server.alive

    check()
    assert_serves(server, tiny[0], codec)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.tf
@pytest.mark.timeout(300)
def test_memory_stays_bounded_under_malformed_requests(server, tiny, codec):
    """Large malformed requests, new connections and kept ones, many times: if the server kept anything per
    request (bodies, decode buffers, threads), the RSS of this process would grow by tens of MiB."""
    model = tiny[0]
    rng = np.random.default_rng(9)
    # The largest body the server accepts: an LZW payload header over random bytes, so the decoder runs on it.
    big = b"\x01\x01\x03\x0c" + rng.bytes(MAX_BODY - p.INFER_FIELDS_SIZE - 4)

    def burst(rounds: int) -> None:
        with RemoteClient(*server.address, timeout=10.0) as c:
            for i in range(rounds):
                status, _ = c.request(p.MsgType.INFER, infer_body(model, big[: len(big) - i % 7]))
                assert status in ALLOWED_INFER
                status, _ = c.request(p.MsgType.INFER, infer_body(model, big, sha="cd" * 32))
                assert status == p.Status.UNKNOWN_MODEL
                if i % 10 == 0:  # a new connection that dies in three different ways
                    for data in (p.Header(3, 0, 1, MAX_BODY + 1).pack(), b"\xff" * 16,
                                 p.Header(3, 0, 1, 1000).pack() + big[:500]):
                        conn = RawConn(server.address)
                        conn.send(data)
                        conn.sock.shutdown(socket.SHUT_WR)
                        assert conn.reply() is not None
                        conn.close()

    burst(60)  # warm-up: allocator pools, thread stacks, codec caches reach their steady state
    before = rss_bytes()
    burst(300)  # 300 x 2 x 64 KiB = 37.5 MiB of request bodies
    grown = rss_bytes() - before
    assert grown < 12 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 600 large malformed requests"
    assert server.stats().active <= 2
    assert_serves(server, model, codec)


# --------------------------------------------------------------------------------------------------------------
# hil serve, and the pytest fixture
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_hil_serve_prints_its_address_answers_and_stops_on_sigterm(tiny, codec, tmp_path):
    model = tiny[0]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    stderr = (tmp_path / "stderr.txt").open("wb")  # a file, not a pipe nobody drains (TensorFlow logs there)
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "serve", "--port", "0", "--model",
                             str(model.directory), "--model", str(tiny[1].directory)],
                            stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 180)  # TensorFlow's import dominates
        assert ready, f"hil serve printed nothing within 180 s: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
        line = proc.stdout.readline().decode()
        match = re.fullmatch(r"serving tiny, tiny5 on (127\.0\.0\.1):(\d+)\n", line)
        assert match, f"{line!r}: {(tmp_path / 'stderr.txt').read_text()[-2000:]}"
        with RemoteClient(match[1], int(match[2]), timeout=30.0) as c:
            assert {m.name for m in c.info().models} == {"tiny", "tiny5"}
            codes = random_codes(np.random.default_rng(4), model)
            result = c.infer(model.sha256, codec.encode_payload(codes, 3), model.n_values)
            np.testing.assert_allclose(result.logits, model.reference(codes)[0], rtol=1e-5, atol=1e-5)
            idle = RawConn((match[1], int(match[2])))  # an open idle connection must not delay the shutdown
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            assert idle.closed()
            idle.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr.close()


@pytest.mark.timeout(30)
def test_hil_serve_refuses_a_directory_without_a_remote_model(tmp_path, capsys):
    from hil.cli import main

    assert main(["serve", "--model", str(tmp_path)]) == 6  # EXIT_MODEL
    err = capsys.readouterr().err
    assert "model error: " in err and "lacks model.tflite, agilenn.json, remote.keras" in err


PLUGIN_TEST = """
import numpy as np
from hil.offload.codec import encode_payload

def test_remote(remote_model):
    assert remote_model.model.name == "tiny"
    assert (remote_model.server is None) == EXTERNAL
    codes = np.zeros(remote_model.model.n_values, np.uint8)
    result = remote_model.infer(encode_payload(codes, 3))
    assert result.logits.shape == (remote_model.model.classes,)
"""


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_remote_model_fixture_in_process_and_external(pytester, server, tiny, codec):
    # --hil-model=DIR, one word: pytest takes any existing path among the arguments into its rootdir (and ini
    # file) search, which would miss the ini file written below.
    model_opt = f"--hil-model={tiny[0].directory}"
    pytester.makepyfile(test_inner=PLUGIN_TEST.replace("EXTERNAL", "False"))
    pytester.runpytest(model_opt, "-p", "no:cacheprovider").assert_outcomes(passed=1)
    host, port = server.address
    pytester.makepyfile(test_inner=PLUGIN_TEST.replace("EXTERNAL", "True"))
    pytester.runpytest(model_opt, "--hil-server", f"{host}:{port}", "-p",
                       "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makeini(f"[pytest]\nhil_server = {host}:{port}\n")  # the ini key does the same
    pytester.runpytest(model_opt, "-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.timeout(60)
def test_remote_model_fixture_skips_without_a_remote_model(pytester):
    pytester.makepyfile(test_inner="def test_remote(remote_model):\n    pass\n")
    result = pytester.runpytest(f"--hil-model={paths.SYNTHETIC_MODEL}", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*has no remote model (lacks agilenn.json, remote.keras)*"])


@pytest.mark.timeout(60)
def test_malformed_hil_server_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-server", "nohost")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-server: 'nohost' is not host:port*"])


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_external_server_without_the_sessions_model_fails_clearly(pytester, server):
    host, port = server.address
    pytester.makepyfile(test_inner="def test_remote(remote_model):\n    pass\n")
    result = pytester.runpytest(f"--hil-model={paths.SYNTHETIC_MODEL}", "--hil-server", f"{host}:{port}", "-p",
                                "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*does not serve synthetic-extractor*it serves tiny*tiny5*"])


# --------------------------------------------------------------------------------------------------------------
# payload mode 2: a model with a static Huffman code (agilenn.json huffman_code_lengths)
# --------------------------------------------------------------------------------------------------------------


def test_read_spec_takes_the_huffman_code_lengths(tmp_path):
    from hil.server.remote_model import RemoteModelError, read_spec

    d = tmp_path / "m"
    d.mkdir()
    (d / "model.tflite").write_bytes(b"stand-in")
    (d / "remote.keras").write_bytes(b"stand-in")
    meta = {"centroids": [0.0] * 8, "bits_per_value": 3, "remote_model": {"input": [None, 2, 2, 2]}}
    (d / "agilenn.json").write_text(json.dumps(meta))
    assert read_spec(d).huffman_lengths is None
    (d / "agilenn.json").write_text(json.dumps(meta | {"huffman_code_lengths": [2, 2, 2, 3, 4, 5, 6, 6]}))
    assert read_spec(d).huffman_lengths == (2, 2, 2, 3, 4, 5, 6, 6)
    (d / "agilenn.json").write_text(json.dumps(meta | {"huffman_code_lengths": [1] * 8}))
    with pytest.raises(RemoteModelError, match="huffman_code_lengths: .*oversubscribed"):
        read_spec(d)


@pytest.mark.tf
@pytest.mark.timeout(120)
def test_huffman_payloads_are_decoded_with_the_models_lengths(tiny, codec, tmp_path):
    """The server decodes mode 2 with the model's own lengths; a model without lengths refuses mode 2."""
    from hil.server import RemoteModel, RemoteServer, ServerConfig

    lengths = [2, 2, 2, 3, 4, 5, 6, 6]
    model = write_tiny_model(tmp_path / "tinyhuff", (4, 4, 3), 10, [0.1, 0.6, 1.2, 2.0, 2.9, 3.8, 4.9, 5.9], seed=3)
    meta = json.loads((model.directory / "agilenn.json").read_text())
    (model.directory / "agilenn.json").write_text(json.dumps(meta | {"huffman_code_lengths": lengths}))
    plain = tiny[0]
    rng = np.random.default_rng(4)
    codes = rng.choice(8, model.n_values, p=[0.37, 0.2, 0.19, 0.13, 0.06, 0.03, 0.015, 0.005]).astype(np.uint8)
    payload = codec.encode_payload(codes, 3, huffman_lengths=lengths)
    assert payload[1] == codec.MODE_HUFFMAN
    config = ServerConfig(max_body=MAX_BODY, max_connections=4, frame_timeout_s=FRAME_TIMEOUT_S, idle_timeout_s=10.0)
    srv = RemoteServer([RemoteModel.load(model.directory), RemoteModel.load(plain.directory)], config).start()
    try:
        with RemoteClient(*srv.address, timeout=10.0) as c:
            result = c.infer(model.sha256, payload, model.n_values, 3)
            np.testing.assert_allclose(result.logits, model.reference(codes)[0], rtol=1e-5, atol=1e-5)
            # stored and LZW payloads still work for a model with lengths
            for mode in (codec.MODE_STORED, codec.MODE_LZW):
                other = codec.encode_payload(codes, 3, mode=mode)
                np.testing.assert_allclose(c.infer(model.sha256, other, model.n_values, 3).logits, result.logits)
            with pytest.raises(RemoteError) as info:
                c.infer(plain.sha256, payload, plain.n_values, 3)
            assert info.value.status == p.Status.BAD_PAYLOAD and "no huffman_code_lengths" in str(info.value)
            with pytest.raises(RemoteError) as info:
                c.infer(model.sha256, payload + b"\x00", model.n_values, 3)
            assert info.value.status == p.Status.BAD_PAYLOAD
    finally:
        srv.close()


# --------------------------------------------------------------------------------------------------------------
# the error table of PROTOCOL.md: every request type against every documented error (no Keras needed)
# --------------------------------------------------------------------------------------------------------------


class StubModel:
    """What the server uses of a RemoteModel (spec, run, describe), without Keras: 5 centroids for 3-bit codes."""

    def __init__(self) -> None:
        from hil.server.remote_model import RemoteSpec

        self.spec = RemoteSpec("stub", Path("stub"), "cd" * 32, (0.0, 1.0, 2.0, 3.0, 4.0), 3, (2, 2, 2), 0.5)

    def run(self, codes: np.ndarray) -> tuple[np.ndarray, int]:
        from hil.server.remote_model import CodeRangeError

        if int(np.max(codes)) >= len(self.spec.centroids):
            raise CodeRangeError(f"code {int(np.max(codes))} has no centroid")
        return np.zeros(3, np.float32), 0

    def describe(self) -> dict[str, object]:
        return {"name": self.spec.name, "sha256": self.spec.sha256}


@pytest.fixture(scope="module")
def stub_server():
    from hil.server import RemoteServer, ServerConfig

    srv = RemoteServer([StubModel()], ServerConfig(max_body=1024, frame_timeout_s=FRAME_TIMEOUT_S)).start()
    try:
        yield srv
    finally:
        srv.close()


def _error_table() -> list[tuple[str, str, bytes, p.Status, bool]]:
    """(request type, condition, frame, documented status, connection kept)."""
    codec = pytest.importorskip("hil.offload.codec")
    stub = StubModel().spec
    good = codec.encode_payload(np.zeros(stub.n_values, np.uint8), 3)

    def infer(payload: bytes = good, n_values: int = stub.n_values, bits: int = 3, sha: str = stub.sha256) -> bytes:
        return p.InferRequest(bytes.fromhex(sha), n_values, bits, payload).pack()

    bodies = {"PING": b"", "INFO": b"", "INFER": infer()}
    rows = []
    for name, body in bodies.items():
        t = p.MsgType[name]
        rows += [
            (name, "OK", p.encode_request(t, 1, body), p.Status.OK, KEPT),
            (name, "flags 0x0001", p.encode_request(t, 2, body, flags=1), p.Status.BAD_REQUEST, KEPT),
            (name, "flags 0x8000", p.encode_request(t, 3, body, flags=0x8000), p.Status.BAD_REQUEST, KEPT),
            (name, "bad magic", b"AGRX" + p.encode_request(t, 4, body)[4:], p.Status.BAD_MAGIC, CLOSED),
            (name, "bad version", p.encode_request(t, 5, body)[:4] + b"\x02" + p.encode_request(t, 5, body)[5:],
             p.Status.BAD_VERSION, CLOSED),
            (name, "length above max_body", p.Header(t, 0, 6, 1025).pack() + bytes(8), p.Status.TOO_LARGE, CLOSED),
        ]
    bad_reserved = bytearray(infer())
    bad_reserved[38] = 1
    rows += [
        ("INFER", "body of 39 bytes", p.encode_request(p.MsgType.INFER, 7, infer()[:39]), p.Status.BAD_REQUEST, KEPT),
        ("INFER", "reserved byte set", p.encode_request(p.MsgType.INFER, 8, bytes(bad_reserved)),
         p.Status.BAD_REQUEST, KEPT),
        ("INFER", "unknown model", p.encode_request(p.MsgType.INFER, 9, infer(sha="ab" * 32)), p.Status.UNKNOWN_MODEL,
         KEPT),
        ("INFER", "wrong n_values", p.encode_request(p.MsgType.INFER, 10, infer(n_values=9)), p.Status.BAD_SHAPE,
         KEPT),
        ("INFER", "wrong bits", p.encode_request(p.MsgType.INFER, 11, infer(bits=4)), p.Status.BAD_BITS, KEPT),
        ("INFER", "empty payload", p.encode_request(p.MsgType.INFER, 12, infer(b"")), p.Status.BAD_PAYLOAD, KEPT),
        ("INFER", "code without a centroid", p.encode_request(p.MsgType.INFER, 13, infer(codec.encode_payload(
            np.full(stub.n_values, 7, np.uint8), 3))), p.Status.BAD_PAYLOAD, KEPT),
        ("0x42", "unknown type", p.encode_request(0x42, 14, b"x"), p.Status.UNKNOWN_TYPE, KEPT),
        ("0x42", "unknown type with flags", p.encode_request(0x42, 15, b"", flags=1), p.Status.UNKNOWN_TYPE, KEPT),
        ("0x7F", "reserved type", p.encode_request(0x7F, 16), p.Status.UNKNOWN_TYPE, KEPT),
    ]
    return rows


@pytest.mark.timeout(60)
@pytest.mark.parametrize("row", range(28))
def test_every_request_type_gets_its_documented_error(stub_server, row):
    table = _error_table()
    assert len(table) == 28  # keep the parametrize range in step with the table
    name, condition, frame, status, kept = table[row]
    conn = RawConn(stub_server.address)
    try:
        conn.send(frame)
        got = conn.reply()
        assert got is not None, f"{name} {condition}: closed without a reply"
        header, body = got
        assert header.field == status, f"{name} {condition}: {p.status_name(header.field)} {p.decode_message(body)}"
        if status != p.Status.OK:
            assert p.decode_message(body)  # every error says why
        if kept:
            conn.send(p.encode_request(p.MsgType.PING, 99))
            again = conn.reply()
            assert again is not None and again[0].field == p.Status.OK
        else:
            assert conn.closed()
    finally:
        conn.close()
