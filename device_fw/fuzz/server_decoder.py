"""Fuzz target "server_decoder": the server side of the offload payload (hil/offload/codec.py) and of the remote
server's requests (hil/server/protocol.py, RemoteServer.answer), under atheris (libFuzzer for Python).

    .venv/bin/python scripts/fuzz.py run server_decoder --time 60
    .venv/bin/python device_fw/fuzz/server_decoder.py CORPUS_DIR [SEED_DIR] -max_total_time=60   (the same, by hand)

`check_one(data)` is the whole property; it needs no atheris, so tests/test_fuzz.py also replays the seed corpus
and the regressions through it in-process. Byte 0 of the input picks what the rest is (modulo 4):

0 decode: u16 n_values (0..8191), u8 bits and Huffman choice, u8 max_output choice, then a payload.
  `decode_payload` either returns exactly n_values uint8 codes below 2**bits or raises PayloadError, the
  documented error (anything else escapes and is a crash; a hang is caught by libFuzzer's -timeout). A stored or
  Huffman payload that decodes is the one valid encoding of its codes (the decoder is strict: padding, trailing
  bytes); the codes re-encoded by `encode_payload` decode back to themselves and are no larger than the bound.
1 encode: u8 bits and Huffman choice, then codes (masked to bits). `encode_payload` round-trips through
  `decode_payload`, stays within `payload_bound`, obeys OFFLOAD.md "Which mode", and every forced mode
  round-trips too; a max_output below n_values is refused.
2 server INFER: u8 deviation flags, then a payload. The harness frames an INFER for a served model (3-bit codes,
  4x4x5 values, 6 centroids, Huffman lengths), with a wrong sha256, bits, n_values, flags or reserved byte when
  a flag says so. `RemoteServer.answer` must answer exactly what hil/server/PROTOCOL.md calls for (BAD_REQUEST,
  UNKNOWN_MODEL, BAD_BITS, BAD_SHAPE, BAD_PAYLOAD for a payload that does not decode or holds a code without
  centroid, else OK with the model's logits for exactly the decoded codes), and never INTERNAL (a server or
  codec exception).
3 server frame: the rest is what a client sent. `parse_header` either gives a header or raises ProtocolError with
  a closing status (BAD_MAGIC, BAD_VERSION, TOO_LARGE, TRUNCATED); a complete frame is answered by
  `RemoteServer.answer` without INTERNAL, and the reply frame parses back.

The served model is the real `RemoteModel` (dequantize, code range, lock) around a stand-in for the Keras model,
so no TensorFlow is needed; the server is constructed (a loopback socket is bound) but never serves.
"""

from __future__ import annotations

import functools
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script from anywhere: the repository's hil package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

_INSTRUMENTED = ("hil.offload.codec", "hil.server.protocol", "hil.server.service", "hil.server.remote_model")

SERVED_SHA = bytes(range(0xA0, 0xC0))
SERVED_SHAPE = (4, 4, 5)
SERVED_N = 80
SERVED_BITS = 3
SERVED_CENTROIDS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5)  # codes 6 and 7 have none: BAD_PAYLOAD
SERVED_LENGTHS = (2, 2, 2, 3, 4, 5, 6, 6)  # OFFLOAD.md's example code
CLASSES = 10


class Violation(AssertionError):
    """A property of the decoder, encoder or server does not hold."""


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise Violation(message)


@functools.cache
def _complete_lengths(bits: int) -> tuple[int, ...]:
    from hil.offload.codec import huffman_code_lengths

    return tuple(huffman_code_lengths([(7 * s + 3) % 11 * (s + 1) for s in range(1 << bits)]))


def _repaired(raw: bytes, bits: int) -> list[int]:
    """2**bits lengths from fuzz bytes, lengthened (shortest first) into a prefix code."""
    n = 1 << bits
    lengths = [1 + b % 15 for b in raw[:n].ljust(n, b"\0")]
    while sum(1 << (15 - x) for x in lengths) > 1 << 15:
        i = min(range(n), key=lambda s: lengths[s])
        lengths[i] += 1
    return lengths


def _lengths(choice: int, bits: int, rest: bytes) -> tuple[list[int] | None, bytes]:
    """None, a complete code, an incomplete one (every length bits + 1) or lengths from the input."""
    choice &= 3
    if choice == 0:
        return None, rest
    if choice == 1:
        return list(_complete_lengths(bits)), rest
    if choice == 2:
        return [bits + 1] * (1 << bits), rest
    n = 1 << bits
    return _repaired(rest[:n], bits), rest[n:]


def _check_decode(data: bytes) -> None:
    from hil.offload.codec import (
        MODE_HUFFMAN,
        MODE_STORED,
        PayloadError,
        decode_payload,
        encode_payload,
        huffman_encode,
        pack_bits,
        payload_bound,
    )

    head = data[:4].ljust(4, b"\0")
    n_values = struct.unpack_from("<H", head)[0] & 0x1FFF
    bits = 1 + (head[2] & 7)
    lengths, payload = _lengths(head[2] >> 3, bits, data[4:])
    max_output = None if head[3] & 1 == 0 else (n_values if head[3] & 2 == 0 else head[3] >> 2)
    try:
        codes = decode_payload(payload, n_values, bits, max_output=max_output, huffman_lengths=lengths)
    except PayloadError:
        return
    _check(isinstance(codes, np.ndarray) and codes.dtype == np.uint8 and codes.shape == (n_values,),
           f"decode_payload returned {type(codes).__name__} {getattr(codes, 'dtype', '')} "
           f"{getattr(codes, 'shape', '')} for {n_values} values")
    _check(max_output is None or n_values <= max_output, f"{n_values} values decoded above max_output {max_output}")
    _check(n_values == 0 or int(codes.max()) < 1 << bits, f"a code of {int(codes.max())} with {bits} bits")
    mode = payload[1]
    header = bytes([1, mode, bits, payload[3]])
    if mode == MODE_STORED:
        _check(payload == header + pack_bits(codes, bits), "a stored payload that is not the packed codes decoded")
    elif mode == MODE_HUFFMAN:
        _check(lengths is not None and payload == header + huffman_encode(codes, bits, lengths),
               "a Huffman payload that is not the codes' Huffman encoding decoded")
    again = encode_payload(codes, bits, huffman_lengths=lengths)
    _check(len(again) <= payload_bound(n_values, bits), "re-encoded payload above the bound")
    if mode in (MODE_STORED, MODE_HUFFMAN):
        _check(len(again) <= len(payload), f"re-encoded {len(again)} bytes, larger than the {len(payload)}-byte "
                                           f"mode-{mode} payload")
    back = decode_payload(again, n_values, bits, max_output=n_values, huffman_lengths=lengths)
    _check(np.array_equal(back, codes), "the re-encoded codes decode to other codes")


def _check_encode(data: bytes) -> None:
    from hil.offload.codec import (
        MODE_HUFFMAN,
        MODE_LZW,
        MODE_STORED,
        PayloadError,
        decode_payload,
        encode_payload,
        payload_bound,
        stored_size,
    )

    head = data[:1].ljust(1, b"\0")
    bits = 1 + (head[0] & 7)
    lengths, rest = _lengths(head[0] >> 3, bits, data[1:])
    codes = np.frombuffer(rest, np.uint8) & np.uint8((1 << bits) - 1)
    n = codes.size
    payload = encode_payload(codes, bits, huffman_lengths=lengths)
    _check(len(payload) <= payload_bound(n, bits), f"payload of {len(payload)} bytes above the bound")
    back = decode_payload(payload, n, bits, max_output=n, huffman_lengths=lengths)
    _check(np.array_equal(back, codes), "encode_payload's output decodes to other codes")
    stored = 4 + stored_size(n, bits)
    best = stored
    if lengths is not None:
        best = min(best, 4 + (sum(lengths[c] for c in codes.tolist()) + 7) // 8)
    mode = payload[1]
    if mode == MODE_STORED:
        _check(len(payload) == stored == best, f"stored payload of {len(payload)} bytes, best {best}")
    elif mode == MODE_HUFFMAN:
        _check(len(payload) == best < stored, f"Huffman payload of {len(payload)} bytes, best {best}")
    else:
        _check(mode == MODE_LZW and len(payload) < best, f"mode {mode} payload of {len(payload)} bytes, best {best}")
    for forced in (MODE_STORED, MODE_LZW) + ((MODE_HUFFMAN,) if lengths is not None else ()):
        one = encode_payload(codes, bits, mode=forced, huffman_lengths=lengths)
        _check(one[1] == forced and len(one) >= len(payload), f"forced mode {forced}")
        _check(np.array_equal(decode_payload(one, n, bits, huffman_lengths=lengths), codes),
               f"forced mode {forced} does not round-trip")
    if n > 0:
        try:
            decode_payload(payload, n, bits, max_output=n - 1, huffman_lengths=lengths)
        except PayloadError:
            pass
        else:
            raise Violation("a payload of n values decoded with max_output n - 1")


class _KerasStandIn:
    """What RemoteModel needs of a Keras model: one input, one output, predict_on_batch. Logits depend on the
    values, so the check can tell which codes reached the model."""

    class _T:
        def __init__(self, shape: tuple[Any, ...]) -> None:
            self.shape = shape

    def __init__(self) -> None:
        self.inputs = (self._T((None, *SERVED_SHAPE)),)
        self.outputs = (self._T((None, CLASSES)),)
        self.last: np.ndarray | None = None

    def predict_on_batch(self, values: np.ndarray) -> np.ndarray:
        self.last = np.array(values, copy=True)
        return np.arange(CLASSES, dtype=np.float32)[None, :] + np.float32(values.sum())


@functools.cache
def _server() -> tuple[Any, _KerasStandIn]:
    from hil.server.remote_model import RemoteModel, RemoteSpec
    from hil.server.service import RemoteServer, ServerConfig

    spec = RemoteSpec(name="fuzz", directory=Path("."), sha256=SERVED_SHA.hex(), centroids=SERVED_CENTROIDS,
                      bits=SERVED_BITS, input_shape=SERVED_SHAPE, alpha=None, huffman_lengths=SERVED_LENGTHS)
    keras_model = _KerasStandIn()
    model = RemoteModel(spec, keras_model, wait_s=5.0)  # type: ignore[arg-type]
    return RemoteServer([model], ServerConfig(max_body=4096)), keras_model


def _expected_infer(flags: int, body: bytes) -> tuple[str, np.ndarray | None]:
    """The status PROTOCOL.md calls for, and the codes that must reach the model when it is OK."""
    from hil.offload.codec import PayloadError, decode_payload

    if flags != 0:
        return "BAD_REQUEST", None
    if len(body) < 40 or any(body[37:40]):
        return "BAD_REQUEST", None
    sha, n_values, bits = struct.unpack_from("<32sIB", body)
    if sha != SERVED_SHA:
        return "UNKNOWN_MODEL", None
    if bits != SERVED_BITS:
        return "BAD_BITS", None
    if n_values != SERVED_N:
        return "BAD_SHAPE", None
    try:
        codes = decode_payload(body[40:], SERVED_N, SERVED_BITS, max_output=SERVED_N, huffman_lengths=SERVED_LENGTHS)
    except PayloadError:
        return "BAD_PAYLOAD", None
    if codes.size and int(codes.max()) >= len(SERVED_CENTROIDS):
        return "BAD_PAYLOAD", None
    return "OK", codes


def _answer(header: Any, body: bytes) -> tuple[Any, bytes]:
    server, _ = _server()
    status, reply = server.answer(header, bytearray(body), time.perf_counter_ns())
    _check(status.name != "INTERNAL", f"the server failed on type 0x{header.type:02x}: {reply[:300]!r}")
    _check(isinstance(reply, bytes | bytearray), "reply body is not bytes")
    return status, bytes(reply)


def _check_server_infer(data: bytes) -> None:
    from hil.server import protocol as p

    dev = data[:1].ljust(1, b"\0")[0]
    payload = data[1:]
    sha = SERVED_SHA if dev & 1 == 0 else bytes(32)
    bits = SERVED_BITS if dev & 2 == 0 else (dev >> 5)
    n_values = SERVED_N if dev & 4 == 0 else SERVED_N + 1 - ((dev >> 5) & 2)
    flags = 0 if dev & 8 == 0 else 1 << (dev >> 5)
    body = struct.pack("<32sIB3s", sha, n_values, bits, b"\0\0\x01" if dev & 16 else b"\0\0\0") + payload
    header = p.Header(p.MsgType.INFER, flags, 7, len(body))
    want, codes = _expected_infer(flags, body)
    _, keras_model = _server()
    keras_model.last = None
    status, reply = _answer(header, body)
    _check(status.name == want, f"INFER answered {status.name}, {want} expected ({reply[:200]!r})")
    if want == "OK":
        result = p.InferResult.unpack(reply)
        _check(result.logits.shape == (CLASSES,), "logits")
        _check(keras_model.last is not None and np.array_equal(
            keras_model.last.reshape(-1), np.asarray(SERVED_CENTROIDS, np.float32)[codes]),
            "the model did not get the centroids of the decoded codes")
    else:
        _check(len(reply) <= p.MAX_MESSAGE, "error message too long")
        reply.decode("utf-8")


def _check_server_frame(data: bytes) -> None:
    from hil.server import protocol as p

    server, _ = _server()
    try:
        p.check_magic_prefix(data[: p.HEADER_SIZE])
        header = p.parse_header(data[: p.HEADER_SIZE], server.config.max_body)
    except p.ProtocolError as exc:
        _check(exc.status.closes, f"parse_header raised {exc.status.name}, which does not close the connection")
        return
    body = data[p.HEADER_SIZE : p.HEADER_SIZE + header.length]
    if len(body) < header.length:
        return  # the handler answers TRUNCATED: nothing of the server's is left to check
    status, reply = _answer(header, body)
    frame = p.encode_reply(header.type, status, header.request_id, reply)
    back = p.parse_header(frame[: p.HEADER_SIZE])
    _check(back.field == int(status) and back.request_id == header.request_id and back.length == len(reply),
           "the reply frame does not parse back")
    if header.type == p.MsgType.INFO and status.name == "OK":
        _check(isinstance(p.decode_info(reply), dict), "INFO reply")


def check_one(data: bytes) -> None:
    """The property for one input; raises on a violation (Violation) or an undocumented exception."""
    if not data:
        return
    kind = data[0] & 3
    rest = data[1:]
    if kind == 0:
        _check_decode(rest)
    elif kind == 1:
        _check_encode(rest)
    elif kind == 2:
        _check_server_infer(rest)
    else:
        _check_server_frame(rest)


def main(argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=list(_INSTRUMENTED)):
        import hil.offload.codec  # noqa: F401
        import hil.server.protocol  # noqa: F401
        import hil.server.remote_model  # noqa: F401
        import hil.server.service  # noqa: F401
    _server()
    atheris.Setup(argv, lambda data: check_one(bytes(data)))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
