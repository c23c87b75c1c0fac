"""Wire format of the remote model server (hil/server/PROTOCOL.md is the byte-exact description).

One request, one reply, over a TCP stream; a connection carries any number of them in turn. Every frame is a
16-byte header followed by `length` body bytes; every multi-byte integer is little-endian (as the ESP32-S3 and
the serial protocol, device_fw/PROTOCOL.md). TF-free and numpy-only, so the device side can be written from it.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.errors import ServerError

MAGIC = b"AGRM"  # "AGileNN ReMote"
VERSION = 1
HEADER = struct.Struct("<4sBBHII")  # magic, version, type, flags (request) / status (reply), request id, length
HEADER_SIZE = HEADER.size  # 16
INFER_FIELDS = struct.Struct("<32sIB3x")  # model sha256, n_values, bits, 3 reserved zero bytes
INFER_FIELDS_SIZE = INFER_FIELDS.size  # 40
INFER_RESULT = struct.Struct("<III")  # server_us, model_us, n_logits
REPLY_BIT = 0x80
NO_TYPE = 0xFF  # reply type when the request's type is unknown (its header could not be read)
# The length field is a u32, but no endpoint ever allocates more than this; a server's own limit (INFO
# `max_body`) is at most this.
PROTOCOL_MAX_BODY = 16 * 1024 * 1024
# Default server limit: the largest AgileNN payload at hand is 32x32x19 codes x 3 bits = 7.3 KB before
# compression; 256 KiB leaves room for bigger models and a codec's worst-case expansion while keeping
# max_connections x max_body (the server's worst-case buffering) at a few MiB.
DEFAULT_MAX_BODY = 256 * 1024
MAX_MESSAGE = 1024  # error messages are cut to this many bytes


class MsgType(enum.IntEnum):
    PING = 0x01  # empty reply: liveness and round-trip time
    INFO = 0x02  # JSON: server limits and the models it serves
    INFER = 0x03  # payload in, remote logits out


class Status(enum.IntEnum):
    """Reply status. `closes` says whether the server closes the connection after the reply."""

    OK = 0
    BAD_MAGIC = 1  # framing lost
    BAD_VERSION = 2
    TOO_LARGE = 3  # length above the server's max_body; the body is not read
    TIMEOUT = 4  # a started frame did not complete within the frame timeout (slow or stalled sender)
    TRUNCATED = 5  # the peer ended its side of the stream in the middle of a frame
    UNKNOWN_TYPE = 6
    BAD_REQUEST = 7  # body too short for its type, nonzero flags or reserved bytes
    UNKNOWN_MODEL = 8  # no model with that sha256 is served
    BAD_SHAPE = 9  # n_values is not the model's, or the payload decoded to another count
    BAD_BITS = 10  # bits is not the model's bits_per_value
    BAD_PAYLOAD = 11  # the compressed codes are invalid, or a code has no centroid
    BUSY = 12  # connection limit reached (closes) or the model stayed busy too long (kept)
    INTERNAL = 13  # the server failed on a valid-looking request; it keeps serving

    @property
    def closes(self) -> bool:
        return self in _CLOSING


_CLOSING = frozenset({Status.BAD_MAGIC, Status.BAD_VERSION, Status.TOO_LARGE, Status.TIMEOUT, Status.TRUNCATED})


def type_name(code: int) -> str:
    try:
        return MsgType(code).name
    except ValueError:
        return f"type 0x{code:02x}"


def status_name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"status {code}"


class ProtocolError(ServerError, ValueError):
    """A frame that does not follow this protocol; `status` is what a server answers it with. `request_type`
    and `request_id` are the frame's when its header was read (so the error reply names the request)."""

    def __init__(self, status: Status, message: str, request_type: int = NO_TYPE, request_id: int = 0) -> None:
        self.status = status
        self.request_type = request_type
        self.request_id = request_id
        super().__init__(message)


@dataclass(frozen=True)
class Header:
    type: int
    field: int  # flags in a request, status in a reply
    request_id: int
    length: int

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.type, self.field, self.request_id, self.length)


def check_magic_prefix(data: bytes | bytearray | memoryview) -> None:
    """Raises BAD_MAGIC as soon as the first received bytes cannot start a frame, so a stray sender is answered
    at once instead of after the frame timeout."""
    n = min(len(data), len(MAGIC))
    if bytes(data[:n]) != MAGIC[:n]:
        raise ProtocolError(Status.BAD_MAGIC, f"bad magic {bytes(data[:n]).hex()} (expected {MAGIC.hex()})")


def parse_header(data: bytes | bytearray | memoryview, max_body: int = PROTOCOL_MAX_BODY) -> Header:
    if len(data) != HEADER_SIZE:
        raise ProtocolError(Status.TRUNCATED, f"header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, type_, field, request_id, length = HEADER.unpack(bytes(data))
    check_magic_prefix(magic)
    if version != VERSION:
        raise ProtocolError(Status.BAD_VERSION, f"protocol version {version}, this endpoint speaks {VERSION}")
    limit = min(max_body, PROTOCOL_MAX_BODY)
    if length > limit:
        raise ProtocolError(Status.TOO_LARGE, f"body of {length} bytes exceeds the limit of {limit}", type_,
                            request_id)
    return Header(type_, field, request_id, length)


def encode_request(type_: int, request_id: int, body: bytes = b"", flags: int = 0) -> bytes:
    return Header(type_, flags, request_id & 0xFFFFFFFF, len(body)).pack() + body


def encode_reply(request_type: int, status: Status, request_id: int, body: bytes = b"") -> bytes:
    reply_type = NO_TYPE if request_type == NO_TYPE else (request_type | REPLY_BIT) & 0xFF
    return Header(reply_type, int(status), request_id & 0xFFFFFFFF, len(body)).pack() + body


# --- INFER ---


@dataclass(frozen=True)
class InferRequest:
    model_sha256: bytes  # 32 raw bytes: sha256 of the device model's model.tflite
    n_values: int  # number of codes the payload decompresses to (H x W x remote channels)
    bits: int  # bits per code (the model's bits_per_value)
    payload: bytes  # the compressed codes (hil.offload.codec)

    def pack(self) -> bytes:
        return INFER_FIELDS.pack(self.model_sha256, self.n_values, self.bits) + self.payload

    @classmethod
    def unpack(cls, body: bytes | bytearray | memoryview) -> InferRequest:
        if len(body) < INFER_FIELDS_SIZE:
            raise ProtocolError(Status.BAD_REQUEST, f"INFER body is {len(body)} bytes, the fields alone are "
                                                    f"{INFER_FIELDS_SIZE}")
        if any(bytes(body[37:40])):
            raise ProtocolError(Status.BAD_REQUEST, "INFER reserved bytes 37..39 must be zero")
        sha, n_values, bits = INFER_FIELDS.unpack(bytes(body[:INFER_FIELDS_SIZE]))
        return cls(sha, n_values, bits, bytes(body[INFER_FIELDS_SIZE:]))


def sha256_bytes(model_sha256: str | bytes) -> bytes:
    """A model id as the 32 raw bytes on the wire, from the raw bytes or 64 hex digits."""
    raw = bytes.fromhex(model_sha256) if isinstance(model_sha256, str) else bytes(model_sha256)
    if len(raw) != 32:
        raise ValueError(f"a model sha256 is 32 bytes (64 hex digits), got {len(raw)} bytes")
    return raw


@dataclass(frozen=True)
class InferResult:
    logits: np.ndarray  # float32, the Remote NN's logits
    server_us: int  # request fully received -> reply ready: decode, dequantize, wait for the model, run it
    model_us: int  # the Remote NN call alone

    def pack(self) -> bytes:
        logits = np.ascontiguousarray(self.logits, dtype="<f4").reshape(-1)
        return INFER_RESULT.pack(_u32(self.server_us), _u32(self.model_us), logits.size) + logits.tobytes()

    @classmethod
    def unpack(cls, body: bytes) -> InferResult:
        if len(body) < INFER_RESULT.size:
            raise ProtocolError(Status.BAD_REQUEST, f"INFER reply body is {len(body)} bytes")
        server_us, model_us, n = INFER_RESULT.unpack_from(body)
        if len(body) != INFER_RESULT.size + 4 * n:
            raise ProtocolError(Status.BAD_REQUEST, f"INFER reply announces {n} logits in {len(body)} bytes")
        logits = np.frombuffer(body, dtype="<f4", count=n, offset=INFER_RESULT.size).astype(np.float32)
        return cls(logits, server_us, model_us)


def _u32(value: int) -> int:
    return max(0, min(int(value), 0xFFFFFFFF))  # saturate: a > 71 minute request is not worth an exception


# --- errors and INFO ---


def encode_message(message: str) -> bytes:
    return message.encode("utf-8", "replace")[:MAX_MESSAGE]


def decode_message(body: bytes) -> str:
    return body[:MAX_MESSAGE].decode("utf-8", "replace")


def encode_info(info: dict[str, Any]) -> bytes:
    return json.dumps(info, separators=(",", ":"), sort_keys=True).encode()


def decode_info(body: bytes) -> dict[str, Any]:
    try:
        info = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(Status.BAD_REQUEST, f"INFO reply is not JSON: {exc}") from None
    if not isinstance(info, dict):
        raise ProtocolError(Status.BAD_REQUEST, "INFO reply is not a JSON object")
    return info
