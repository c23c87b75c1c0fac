"""Frames of the HIL serial protocol (device_fw/PROTOCOL.md) and the payloads the client parses.

Everything here is pure: bytes in, values out. The decoder follows the device's resynchronization rules
exactly, so that host and device recover from the same corruptions in the same way.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from hil.errors import DeviceError

MAGIC = b"\xa5\x5a"
HEADER_SIZE = 7  # magic(2) type seq length(2) header-check
CRC_SIZE = 4
OVERHEAD = HEADER_SIZE + CRC_SIZE
MAX_PAYLOAD = 0xFFFF  # length is a u16
DEFAULT_RX_MAX = 32768  # the firmware's default HIL_RX_MAX; INFO reports the device's own
PROTOCOL_VERSION = 1
REPLY_BIT = 0x80

INFO_FIXED_SIZE = 148
TENSOR_DESC_SIZE = 32
INFER_FIXED_SIZE = 20
LOAD_HEADER_SIZE = 5  # u8 index, u32 offset
READ_REPLY_HEADER_SIZE = 5  # u8 index, u32 offset
MAX_READ_CHUNK = MAX_PAYLOAD - READ_REPLY_HEADER_SIZE

OFFLOAD_FIXED_SIZE = 52
DIGEST_FIXED_SIZE = 20

INFO_FLAG_DETERMINISTIC = 0x0001
INFO_FLAG_DIGEST = 0x0002  # the firmware answers INFER_DIGEST; older firmware leaves it clear
INFO_FLAG_KERNELS = 0x0004  # INFO ends with a 32-byte kernels string ("kernels portable", "kernels esp-nn 1.1.2")
INFO_KERNELS_SIZE = 32
INFER_FLAG_INLINE = 0x01
OFFLOAD_FLAG_OVERFLOW = 0x01
OFFLOAD_STAGES = ("extractor", "local_nn", "compress", "total")  # the reply's u64 cycle counts, in order


class FrameType(IntEnum):
    HELLO = 0x01
    ECHO = 0x02
    LOAD_INPUT = 0x03
    INFER = 0x04
    READ_OUTPUT = 0x05
    INFER_OFFLOAD = 0x06
    INFER_DIGEST = 0x08  # PROTOCOL.md "INFER_DIGEST"; firmware that has it sets INFO_FLAG_DIGEST
    DEBUG = 0x70  # crash-test builds only (PROTOCOL.md "DEBUG"); others answer ERROR UNKNOWN_TYPE
    ERROR = 0x7F


class ErrorCode(IntEnum):
    BAD_CRC = 1
    OVERSIZE = 2
    UNKNOWN_TYPE = 3
    BAD_REQUEST = 4
    INFER_FAILED = 5
    UNSUPPORTED = 6


class DType(IntEnum):
    INT8 = 1
    INT16 = 2  # 16x8 models: int16 activations, little-endian on the wire


NUMPY_DTYPES: dict[int, np.dtype] = {DType.INT8: np.dtype(np.int8), DType.INT16: np.dtype("<i2")}


class ProtocolError(DeviceError, ValueError):
    """A well-formed frame whose payload does not match the protocol (wrong length, unknown dtype, ...)."""


def type_name(code: int) -> str:
    """'ECHO', 'ECHO reply', or hex for a type outside the protocol."""
    try:
        return FrameType(code).name
    except ValueError:
        pass
    if code & REPLY_BIT:
        try:
            return f"{FrameType(code & ~REPLY_BIT).name} reply"
        except ValueError:
            pass
    return f"0x{code:02x}"


def error_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"error {code}"


def crc8_smbus(data: bytes) -> int:
    """CRC-8/SMBUS: poly 0x07, init 0, no reflection (the header check)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode_frame(type: int, seq: int, payload: bytes = b"") -> bytes:
    """One complete frame: magic, header, header check, payload, CRC-32."""
    if not 0 <= type <= 0xFF or not 0 <= seq <= 0xFF:
        raise ValueError(f"type {type} and seq {seq} must each fit in a byte")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds the protocol's {MAX_PAYLOAD}")
    head = struct.pack("<BBH", type, seq, len(payload))
    body = head + bytes([crc8_smbus(head)]) + bytes(payload)
    return MAGIC + body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class Frame:
    """A frame whose header check and CRC both passed."""

    type: int
    seq: int
    payload: bytes


@dataclass(frozen=True)
class CorruptFrame:
    """A frame with a valid header whose payload was rejected: `reason` is 'bad_crc' or 'oversize'.

    The header check passed, so `type`, `seq` and `length` can be trusted (PROTOCOL.md).
    """

    type: int
    seq: int
    length: int
    reason: str


class FrameDecoder:
    """Incremental decoder with the device's resynchronization rules (PROTOCOL.md):

    1. discard bytes until the magic;
    2. header check fails: drop the first byte of the candidate and rescan the bytes already received;
    3. length above `max_payload`: report `CorruptFrame(reason='oversize')`, resume after the magic;
    4. CRC fails: report `CorruptFrame(reason='bad_crc')`, rescan the bytes after the magic;
    5. silence with a candidate incomplete (`expire()`, called by the receiver after its gap): drop the
       candidate's first byte and rescan, until nothing is left waiting.

    `feed()` never raises: corruption is reported as `CorruptFrame` values or skipped (garbage, bad header
    checks). Every byte that is not part of a good frame (the device's console text, garbage, the start of a
    rejected frame) goes to `sink`, in stream order, once its fate is decided. At most one candidate frame
    (`max_payload + 11` bytes) is ever buffered.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD, sink: Callable[[bytes], None] | None = None) -> None:
        if not 0 <= max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be within 0..{MAX_PAYLOAD}")
        self.max_payload = max_payload
        self.sink = sink
        self._buf = bytearray()
        self._pos = 0
        self._need = 0  # buffer length below which no new decision is possible (a frame still arriving)
        self.dropped = 0  # bytes skipped as garbage or as the start of a rejected frame

    @property
    def pending(self) -> int:
        """Bytes received but not yet decided on."""
        return len(self._buf) - self._pos

    def reset(self) -> None:
        self._buf.clear()
        self._pos = 0
        self._need = 0

    def feed(self, data: bytes) -> list[Frame | CorruptFrame]:
        self._buf += data
        if len(self._buf) < self._need:
            return []  # the pending frame is still incomplete; rechecking its header would decide nothing
        self._need = 0
        events: list[Frame | CorruptFrame] = []
        buf = self._buf
        while True:
            start = buf.find(MAGIC[0], self._pos)
            if start < 0:
                self._skip(len(buf) - self._pos)
                break
            self._skip(start - self._pos)
            avail = len(buf) - start
            if avail < 2:
                break
            if buf[start + 1] != MAGIC[1]:
                self._skip(1)
                continue
            if avail < HEADER_SIZE:
                break
            if crc8_smbus(buf[start + 2 : start + 6]) != buf[start + 6]:
                self._skip(1)
                continue
            type_, seq, length = struct.unpack_from("<BBH", buf, start + 2)
            if length > self.max_payload:
                self._skip(2)
                events.append(CorruptFrame(type_, seq, length, "oversize"))
                continue
            total = OVERHEAD + length
            if avail < total:
                self._need = start + total
                break
            end = start + HEADER_SIZE + length
            (crc,) = struct.unpack_from("<I", buf, end)
            if zlib.crc32(memoryview(buf)[start + 2 : end]) != crc:
                self._skip(2)
                events.append(CorruptFrame(type_, seq, length, "bad_crc"))
                continue
            events.append(Frame(type_, seq, bytes(buf[start + HEADER_SIZE : end])))
            self._pos = start + total
        self._compact()
        return events

    def expire(self) -> list[Frame | CorruptFrame]:
        """The line was silent with a candidate frame incomplete (a sender cut short): it will never complete.
        Drops its first byte and rescans what followed (console text, or a whole frame sent after the cut),
        repeating while a candidate is left waiting: every byte held arrived before the silence."""
        events: list[Frame | CorruptFrame] = []
        while self.pending:
            self._need = 0
            self._skip(1)
            events += self.feed(b"")
        return events

    def _skip(self, n: int) -> None:
        if n <= 0:
            return
        if self.sink is not None:
            self.sink(bytes(self._buf[self._pos : self._pos + n]))
        self._pos += n
        self.dropped += n

    def _compact(self) -> None:
        # Drop consumed bytes once they dominate, so a long stream costs amortized O(1) per byte.
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            if self._need:
                self._need -= self._pos
            self._pos = 0


# ---- payloads ----


@dataclass(frozen=True)
class TensorSpec:
    """One tensor descriptor from INFO."""

    dtype: np.dtype
    shape: tuple[int, ...]
    zero_point: int
    scale: float
    size: int  # bytes
    dtype_code: int = DType.INT8

    def __post_init__(self) -> None:
        expected = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if expected != self.size:
            raise ProtocolError(f"tensor of shape {self.shape} and {self.dtype} has {expected} bytes, not {self.size}")


@dataclass(frozen=True)
class DeviceInfo:
    """The INFO payload of a HELLO reply."""

    protocol_version: int
    flags: int
    firmware_version: str
    build_id: str
    port: str
    model_name: str
    model_sha256: str  # hex, as hil.model.artifacts.DeviceModel.sha256
    arena_bytes: int
    clock_hz: int
    rx_max: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    kernels: str = ""  # which kernels the firmware runs (INFO_FLAG_KERNELS); "" from firmware without it

    @property
    def cycles_deterministic(self) -> bool:
        return bool(self.flags & INFO_FLAG_DETERMINISTIC)

    @property
    def supports_digest(self) -> bool:
        """The firmware answers INFER_DIGEST (INFO flags bit 1); firmware from before it leaves the bit clear."""
        return bool(self.flags & INFO_FLAG_DIGEST)

    @property
    def input_bytes(self) -> int:
        """All input tensors together: what one inference's inputs cost on the wire."""
        return sum(t.size for t in self.inputs)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace")


def _tensor_from(raw: bytes, where: str) -> TensorSpec:
    dtype_code, rank, _reserved, d0, d1, d2, d3, zero_point, scale, size = struct.unpack("<BBH4IifI", raw)
    if dtype_code not in NUMPY_DTYPES:
        raise ProtocolError(f"{where}: unknown dtype code {dtype_code}")
    if not 1 <= rank <= 4:
        raise ProtocolError(f"{where}: rank {rank} outside 1..4")
    shape = (d0, d1, d2, d3)[:rank]
    try:
        return TensorSpec(NUMPY_DTYPES[dtype_code], shape, zero_point, float(scale), size, dtype_code)
    except ProtocolError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def parse_info(payload: bytes) -> DeviceInfo:
    if len(payload) < INFO_FIXED_SIZE:
        raise ProtocolError(f"INFO of {len(payload)} bytes is shorter than the fixed {INFO_FIXED_SIZE}")
    (version, flags, fw, build, port, model, sha, arena, clock, rx_max, n_in, n_out, _reserved) = struct.unpack_from(
        "<HH16s32s16s32s32sIIIBBH", payload
    )
    expected = INFO_FIXED_SIZE + TENSOR_DESC_SIZE * (n_in + n_out)
    kernels = ""
    if flags & INFO_FLAG_KERNELS:
        kernels = _cstr(payload[expected : expected + INFO_KERNELS_SIZE])
        expected += INFO_KERNELS_SIZE
    if len(payload) != expected:
        raise ProtocolError(f"INFO with {n_in} inputs and {n_out} outputs must be {expected} bytes, not {len(payload)}")
    tensors = []
    for i in range(n_in + n_out):
        off = INFO_FIXED_SIZE + TENSOR_DESC_SIZE * i
        where = f"input {i}" if i < n_in else f"output {i - n_in}"
        tensors.append(_tensor_from(payload[off : off + TENSOR_DESC_SIZE], where))
    return DeviceInfo(
        protocol_version=version,
        flags=flags,
        firmware_version=_cstr(fw),
        build_id=_cstr(build),
        port=_cstr(port),
        model_name=_cstr(model),
        model_sha256=sha.hex(),
        arena_bytes=arena,
        clock_hz=clock,
        rx_max=rx_max,
        inputs=tensors[:n_in],
        outputs=tensors[n_in:],
        kernels=kernels,
    )


def encode_info(info: DeviceInfo) -> bytes:
    """The INFO payload for `info` (what the firmware sends; used by tests and fake devices)."""

    def pad(text: str, width: int) -> bytes:
        return text.encode("ascii")[:width].ljust(width, b"\0")

    out = bytearray(
        struct.pack(
            "<HH16s32s16s32s32sIIIBBH",
            info.protocol_version,
            info.flags,
            pad(info.firmware_version, 16),
            pad(info.build_id, 32),
            pad(info.port, 16),
            pad(info.model_name, 32),
            bytes.fromhex(info.model_sha256),
            info.arena_bytes,
            info.clock_hz,
            info.rx_max,
            len(info.inputs),
            len(info.outputs),
            0,
        )
    )
    for t in (*info.inputs, *info.outputs):
        dims = (*t.shape, *(0,) * (4 - len(t.shape)))
        out += struct.pack("<BBH4IifI", t.dtype_code, len(t.shape), 0, *dims, t.zero_point, t.scale, t.size)
    if info.flags & INFO_FLAG_KERNELS:
        out += pad(info.kernels, INFO_KERNELS_SIZE)
    return bytes(out)


@dataclass(frozen=True)
class InferReply:
    """The INFER reply payload as sent; outputs are present only when `inline`."""

    status: int
    inline: bool
    cycles: int
    time_us: int
    sizes: list[int]
    data: list[bytes]  # per output when inline, else empty


def parse_infer_reply(payload: bytes) -> InferReply:
    if len(payload) < INFER_FIXED_SIZE:
        raise ProtocolError(f"INFER reply of {len(payload)} bytes is shorter than the fixed {INFER_FIXED_SIZE}")
    status, n_out, flags, _reserved, cycles, time_us = struct.unpack_from("<BBBBQQ", payload)
    sizes_end = INFER_FIXED_SIZE + 4 * n_out
    if len(payload) < sizes_end:
        raise ProtocolError(f"INFER reply of {len(payload)} bytes is too short for {n_out} output sizes")
    sizes = list(struct.unpack_from(f"<{n_out}I", payload, INFER_FIXED_SIZE))
    inline = bool(flags & INFER_FLAG_INLINE)
    data: list[bytes] = []
    expected = sizes_end + (sum(sizes) if inline else 0)
    if len(payload) != expected:
        raise ProtocolError(f"INFER reply must be {expected} bytes (inline={inline}), not {len(payload)}")
    if inline:
        off = sizes_end
        for size in sizes:
            data.append(bytes(payload[off : off + size]))
            off += size
    return InferReply(status, inline, cycles, time_us, sizes, data)


@dataclass
class InferResult:
    """One inference: outputs shaped per INFO, and its cost on the device's counter."""

    outputs: list[np.ndarray]
    cycles: int
    time_us: int
    clock_hz: int
    inline: bool = True  # False: outputs were fetched with READ_OUTPUT

    @property
    def latency_s(self) -> float:
        """cycles / clock_hz. On emulated ports a relative measure, not a hardware latency."""
        return self.cycles / self.clock_hz if self.clock_hz else 0.0


@dataclass(frozen=True)
class OffloadReply:
    """The INFER_OFFLOAD reply payload as sent (PROTOCOL.md "INFER_OFFLOAD result")."""

    status: int
    overflow: bool
    local_output: int
    bits: int
    cycles: dict[str, int]  # OFFLOAD_STAGES -> cycles
    n_values: int
    payload_capacity: int
    local_logits: bytes
    payload: bytes


def parse_offload_reply(payload: bytes) -> OffloadReply:
    if len(payload) < OFFLOAD_FIXED_SIZE:
        raise ProtocolError(
            f"INFER_OFFLOAD reply of {len(payload)} bytes is shorter than the fixed {OFFLOAD_FIXED_SIZE}"
        )
    status, flags, local_output, bits, *cycles = struct.unpack_from("<BBBB4Q", payload)
    n_values, payload_bytes, capacity, local_bytes = struct.unpack_from("<4I", payload, 36)
    expected = OFFLOAD_FIXED_SIZE + local_bytes + payload_bytes
    if len(payload) != expected:
        raise ProtocolError(
            f"INFER_OFFLOAD reply with {local_bytes} logit bytes and a {payload_bytes}-byte payload must be "
            f"{expected} bytes, not {len(payload)}"
        )
    overflow = bool(flags & OFFLOAD_FLAG_OVERFLOW)
    if payload_bytes > capacity or (overflow and payload_bytes):
        raise ProtocolError(
            f"INFER_OFFLOAD reply: payload of {payload_bytes} bytes with capacity {capacity}, overflow={overflow}"
        )
    stages = dict(zip(OFFLOAD_STAGES, cycles, strict=True))
    if stages["extractor"] + stages["local_nn"] + stages["compress"] != stages["total"]:
        raise ProtocolError(f"INFER_OFFLOAD reply: stage cycles {stages} do not add up to the total")
    logits_end = OFFLOAD_FIXED_SIZE + local_bytes
    return OffloadReply(
        status=status,
        overflow=overflow,
        local_output=local_output,
        bits=bits,
        cycles=stages,
        n_values=n_values,
        payload_capacity=capacity,
        local_logits=bytes(payload[OFFLOAD_FIXED_SIZE:logits_end]),
        payload=bytes(payload[logits_end:]),
    )


@dataclass
class OffloadResult:
    """One offloaded inference: the local logits (int8, shaped per INFO), the compressed codes of the remote
    features (hil.offload.codec.decode_payload(payload, n_values, bits)) and the device's cycles per stage."""

    local_logits: np.ndarray
    payload: bytes
    n_values: int
    bits: int
    cycles: dict[str, int]  # extractor, local_nn, compress (quantize + compress), total
    clock_hz: int
    overflow: bool = False  # the payload did not fit the device's buffer: payload is empty
    payload_capacity: int = 0
    local_output: int = 0

    @property
    def latency_s(self) -> float:
        """Device time of the whole offload step, cycles["total"] / clock_hz (relative on emulated ports)."""
        return self.cycles["total"] / self.clock_hz if self.clock_hz else 0.0


def tensor_digest(data: bytes | np.ndarray, spec: TensorSpec | None = None) -> int:
    """The digest INFER_DIGEST returns for an output tensor: CRC-32/ISO-HDLC (zlib.crc32, from 0) of its bytes as
    READ_OUTPUT returns them (int16 little-endian). An array is taken in `spec`'s dtype when given."""
    if isinstance(data, np.ndarray):
        array = data if spec is None else data.astype(spec.dtype, copy=False)
        data = np.ascontiguousarray(array).tobytes()
    return zlib.crc32(data)


@dataclass(frozen=True)
class DigestReply:
    """The INFER_DIGEST reply payload (PROTOCOL.md "INFER_DIGEST"): cycles and one CRC-32 per output."""

    status: int
    flags: int
    cycles: int
    time_us: int
    digests: list[int]


def parse_digest_reply(payload: bytes) -> DigestReply:
    if len(payload) < DIGEST_FIXED_SIZE:
        raise ProtocolError(f"INFER_DIGEST reply of {len(payload)} bytes is shorter than the fixed {DIGEST_FIXED_SIZE}")
    status, n_out, flags, _reserved, cycles, time_us = struct.unpack_from("<BBBBQQ", payload)
    expected = DIGEST_FIXED_SIZE + 4 * n_out
    if len(payload) != expected:
        raise ProtocolError(f"INFER_DIGEST reply with {n_out} outputs must be {expected} bytes, not {len(payload)}")
    digests = list(struct.unpack_from(f"<{n_out}I", payload, DIGEST_FIXED_SIZE))
    return DigestReply(status, flags, cycles, time_us, digests)


def encode_digest_reply(reply: DigestReply) -> bytes:
    """The INFER_DIGEST reply payload (what the firmware sends; used by tests and fake devices)."""
    head = struct.pack("<BBBBQQ", reply.status, len(reply.digests), reply.flags, 0, reply.cycles, reply.time_us)
    return head + struct.pack(f"<{len(reply.digests)}I", *reply.digests)


@dataclass
class DigestResult:
    """One inference checked by digest: the device's CRC-32 of each output (`tensor_digest`) and its cost."""

    digests: list[int]
    cycles: int
    time_us: int
    clock_hz: int

    @property
    def latency_s(self) -> float:
        """cycles / clock_hz. On emulated ports a relative measure, not a hardware latency."""
        return self.cycles / self.clock_hz if self.clock_hz else 0.0


@dataclass(frozen=True)
class ErrorReply:
    code: int
    request_type: int
    message: str

    @property
    def name(self) -> str:
        return error_name(self.code)


def parse_error(payload: bytes) -> ErrorReply:
    if len(payload) < 2:
        raise ProtocolError(f"ERROR reply of {len(payload)} bytes is shorter than 2")
    return ErrorReply(payload[0], payload[1], payload[2:].decode("ascii", errors="replace"))


def tensor_from_bytes(raw: bytes, spec: TensorSpec) -> np.ndarray:
    if len(raw) != spec.size:
        raise ProtocolError(f"got {len(raw)} bytes for a tensor of {spec.size}")
    return np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape).copy()
