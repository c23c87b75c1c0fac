"""The ESP serial loader's packets: commands, responses, status bytes and error codes.

A request is `<BBHI`: direction 0x00, command, size of the data, checksum; then the data. A response is `<BBHI`:
direction 0x01, the command echoed, size of the data, a 32-bit value (READ_REG's result); then the data, which
ends in the status: the ESP32-S3 ROM sends 4 status bytes (status, error, two reserved), the flasher stub 2.
On failure the ROM sends status 1 and its error code; the stub sends its error code (0xC0...) as the status
byte and 0. esptool reads the first two status bytes as a big-endian number: ROM 0x0107 = "Checksum error",
stub 0xC100 = "Bad data checksum" (esptool/util.py, FatalError.WithResult).

Data commands (FLASH_DATA, FLASH_DEFL_DATA, MEM_DATA) carry a 16-byte header (size, sequence number, 0, 0)
before the data, and the request's checksum field holds the XOR of the data bytes seeded with 0xEF.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from hil.errors import DeviceError


class Op(IntEnum):
    """Command bytes (esptool/loader.py, ESPLoader.ESP_CMDS)."""

    FLASH_BEGIN = 0x02
    FLASH_DATA = 0x03
    FLASH_END = 0x04
    MEM_BEGIN = 0x05
    MEM_END = 0x06
    MEM_DATA = 0x07
    SYNC = 0x08
    WRITE_REG = 0x09
    READ_REG = 0x0A
    SPI_SET_PARAMS = 0x0B
    SPI_ATTACH = 0x0D
    READ_FLASH_SLOW = 0x0E  # ROM only: 64 bytes per command
    CHANGE_BAUDRATE = 0x0F
    FLASH_DEFL_BEGIN = 0x10
    FLASH_DEFL_DATA = 0x11
    FLASH_DEFL_END = 0x12
    SPI_FLASH_MD5 = 0x13
    GET_SECURITY_INFO = 0x14
    ERASE_FLASH = 0xD0  # stub only from here on
    ERASE_REGION = 0xD1
    READ_FLASH = 0xD2
    RUN_USER_CODE = 0xD3


STUB_ONLY = frozenset({Op.ERASE_FLASH, Op.ERASE_REGION, Op.READ_FLASH, Op.RUN_USER_CODE})
ROM_ONLY = frozenset({Op.READ_FLASH_SLOW})

REQUEST = 0x00
RESPONSE = 0x01
HEADER = struct.Struct("<BBHI")
DATA_HEADER = struct.Struct("<IIII")  # size, sequence number, 0, 0

CHECKSUM_SEED = 0xEF
SYNC_DATA = b"\x07\x07\x12\x20" + b"\x55" * 32
SYNC_REPLIES = 8  # the ROM answers one SYNC with eight responses; esptool's sync() reads all eight
ROM_SYNC_VALUE = 0x20120707  # any non-zero value: esptool takes a zero SYNC value for a running stub
STUB_GREETING = b"OHAI"  # the stub's first packet after MEM_END started it


def checksum(data: bytes, seed: int = CHECKSUM_SEED) -> int:
    state = seed
    for b in data:
        state ^= b
    return state


class Failure(Enum):
    """Why a command failed, independent of who answers: the ROM and the stub report it with their own codes."""

    INVALID_MESSAGE = "invalid message"
    FAILED = "failed to act"
    BAD_CHECKSUM = "bad checksum"
    FLASH_WRITE = "flash write error"
    FLASH_READ = "flash read error"
    READ_LENGTH = "read length error"
    DEFLATE = "deflate error"
    RAM_SIZE = "invalid RAM binary size"
    RAM_ADDRESS = "invalid RAM binary address"
    BAD_DATA_LEN = "bad data length"
    BAD_BLOCKSIZE = "bad block size"
    NOT_IN_FLASH_MODE = "not in flash mode"
    NOT_ENOUGH_DATA = "not enough data"
    TOO_MUCH_DATA = "too much data"
    UNSUPPORTED = "unsupported command"


# ESP32-S3 ROM error byte (status byte 1). esptool's table names 0x0105..0x010F.
ROM_ERRORS: dict[Failure, int] = {
    Failure.INVALID_MESSAGE: 0x05,
    Failure.FAILED: 0x06,
    Failure.BAD_CHECKSUM: 0x07,
    Failure.FLASH_WRITE: 0x08,
    Failure.FLASH_READ: 0x09,
    Failure.READ_LENGTH: 0x0A,
    Failure.DEFLATE: 0x0B,
    Failure.RAM_SIZE: 0x0E,
    Failure.RAM_ADDRESS: 0x0F,
    Failure.BAD_DATA_LEN: 0x05,
    Failure.BAD_BLOCKSIZE: 0x05,
    Failure.NOT_IN_FLASH_MODE: 0x06,
    Failure.NOT_ENOUGH_DATA: 0x06,
    Failure.TOO_MUCH_DATA: 0x06,
    Failure.UNSUPPORTED: 0x05,
}

# Flasher stub status byte (esptool's table: 0xC000 "Bad data length" ... 0xFF00 "Command not implemented").
STUB_ERRORS: dict[Failure, int] = {
    Failure.INVALID_MESSAGE: 0xC0,
    Failure.FAILED: 0xC4,
    Failure.BAD_CHECKSUM: 0xC1,
    Failure.FLASH_WRITE: 0xC4,
    Failure.FLASH_READ: 0xC4,
    Failure.READ_LENGTH: 0xC0,
    Failure.DEFLATE: 0xC7,
    Failure.RAM_SIZE: 0xC0,
    Failure.RAM_ADDRESS: 0xC0,
    Failure.BAD_DATA_LEN: 0xC0,
    Failure.BAD_BLOCKSIZE: 0xC2,
    Failure.NOT_IN_FLASH_MODE: 0xC6,
    Failure.NOT_ENOUGH_DATA: 0xC8,
    Failure.TOO_MUCH_DATA: 0xC9,
    Failure.UNSUPPORTED: 0xC3,
}


class CommandError(DeviceError):
    """Raised by a command handler: the loader answers with the failure's status instead of success."""

    def __init__(self, failure: Failure, detail: str = "") -> None:
        super().__init__(f"{failure.value}: {detail}" if detail else failure.value)
        self.failure = failure
        self.detail = detail


class PacketError(DeviceError, ValueError):
    """A frame that is not a request packet."""


@dataclass(frozen=True)
class Request:
    op: int
    data: bytes
    checksum: int

    @classmethod
    def parse(cls, frame: bytes) -> Request:
        if len(frame) < HEADER.size:
            raise PacketError(f"{len(frame)}-byte frame is shorter than a command header")
        direction, op, size, chk = HEADER.unpack_from(frame)
        if direction != REQUEST:
            raise PacketError(f"direction byte {direction:#04x}, not a request")
        data = frame[HEADER.size :]
        if size != len(data):
            raise PacketError(f"command {op:#04x} says {size} data bytes but carries {len(data)}")
        return cls(op, data, chk)

    def words(self, *counts: int) -> tuple[int, ...]:
        """The data as little-endian 32-bit words; its length must be one of `counts` words."""
        if len(self.data) % 4 or len(self.data) // 4 not in counts:
            raise CommandError(Failure.INVALID_MESSAGE, f"{len(self.data)} data bytes for command {self.op:#04x}")
        return struct.unpack(f"<{len(self.data) // 4}I", self.data)

    def data_block(self) -> tuple[int, bytes]:
        """(sequence number, payload) of a data command, with its length and checksum checked."""
        if len(self.data) < DATA_HEADER.size:
            raise CommandError(Failure.BAD_DATA_LEN, "data command without its 16-byte header")
        size, seq, _, _ = DATA_HEADER.unpack_from(self.data)
        payload = self.data[DATA_HEADER.size :]
        if size != len(payload):
            raise CommandError(Failure.BAD_DATA_LEN, f"block says {size} bytes but carries {len(payload)}")
        if checksum(payload) != self.checksum:
            raise CommandError(
                Failure.BAD_CHECKSUM, f"block {seq}: checksum {self.checksum:#x}, data sums to {checksum(payload):#x}"
            )
        return seq, payload


def status_bytes(failure: Failure | None, *, stub: bool) -> bytes:
    if stub:
        return b"\x00\x00" if failure is None else bytes([STUB_ERRORS[failure], 0])
    return b"\x00\x00\x00\x00" if failure is None else bytes([1, ROM_ERRORS[failure], 0, 0])


def response(op: int, *, value: int = 0, data: bytes = b"", failure: Failure | None = None, stub: bool) -> bytes:
    """A response packet (not yet SLIP-framed): header, data, status."""
    body = data + status_bytes(failure, stub=stub)
    return HEADER.pack(RESPONSE, op & 0xFF, len(body), value & 0xFFFFFFFF) + body


def request(op: int, data: bytes = b"", chk: int = 0) -> bytes:
    """A request packet as esptool builds it (for clients and tests)."""
    return HEADER.pack(REQUEST, op, len(data), chk) + data


def data_request(op: int, seq: int, payload: bytes, chk: int | None = None) -> bytes:
    """A data command (FLASH_DATA, FLASH_DEFL_DATA, MEM_DATA); `chk` overrides the correct checksum."""
    body = DATA_HEADER.pack(len(payload), seq, 0, 0) + payload
    return request(op, body, checksum(payload) if chk is None else chk)


def parse_response(frame: bytes, *, stub: bool) -> tuple[int, int, bytes, bytes]:
    """(op, value, data, status) of a response frame; the inverse of response() for clients and tests."""
    direction, op, size, value = HEADER.unpack_from(frame)
    if direction != RESPONSE or size != len(frame) - HEADER.size:
        raise PacketError(f"not a response: {frame[:16].hex()}")
    body = frame[HEADER.size :]
    n = 2 if stub else 4
    return op, value, body[:-n], body[-n:]
