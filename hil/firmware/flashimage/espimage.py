"""The ESP firmware image format (what `esptool image-info` reads and the ROM / second-stage bootloader load).

    header     8 bytes   magic 0xE9, segment count, flash mode, flash size (high nibble) | frequency (low nibble),
                         entry point
    extended  16 bytes   WP pin (0xEE: disabled), 3 bytes of SPI pin drive strengths, chip id (ESP32-S3: 9),
                         legacy min revision, min and max chip revision (major * 100 + minor), 4 reserved bytes,
                         hash_appended (1: a SHA-256 of the image follows it)
    segments             each: load address and length (4 bytes each, little-endian), then that many data bytes
                         (a multiple of 4)
    footer               zero padding up to the last byte of a 16-byte block, the checksum byte (0xEF XOR every
                         data byte of every segment), then the SHA-256 of everything before it when hash_appended

Reference: ESP-IDF's "App Image Format" and esptool's bin_image.py. Writing is deterministic: the same
segments give the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from hil.errors import DeviceError, UsageError

MAGIC = 0xE9
CHIP_ID_ESP32S3 = 9
WP_PIN_DISABLED = 0xEE
CHECKSUM_SEED = 0xEF
MAX_SEGMENTS = 16
MAX_SEGMENT_BYTES = 16 * 1024 * 1024
HEADER = struct.Struct("<BBBBI")
EXTENDED_HEADER = struct.Struct("<BBBBHBHH4sB")
SEGMENT_HEADER = struct.Struct("<II")
HEADER_BYTES = HEADER.size + EXTENDED_HEADER.size  # 24
DIGEST_BYTES = 32

# esptool's names for the header's flash fields (ESP32-S3, as the ESP32).
FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
FLASH_FREQUENCIES = {"80m": 0xF, "40m": 0x0, "26m": 0x1, "20m": 0x2}
FLASH_SIZES = {"1MB": 0x00, "2MB": 0x10, "4MB": 0x20, "8MB": 0x30, "16MB": 0x40, "32MB": 0x50, "64MB": 0x60,
               "128MB": 0x70}

# ESP32-S3 address ranges (esptool's ESP32S3ROM.MEMORY_MAP): what `image-info` names a segment after.
DROM_BASE = 0x3C000000
DRAM_BASE = 0x3FC88000
MMU_PAGE = 0x10000  # flash-mapped segments keep (load address - file offset) a multiple of this


class ImageFormatError(DeviceError, ValueError):
    """The bytes are not a complete, intact ESP image; the message says what is wrong (no location: the caller
    adds where the image was read from)."""


@dataclass(frozen=True)
class Segment:
    addr: int
    data: bytes = field(repr=False)
    file_offset: int | None = None  # of the segment header, when parsed


@dataclass(frozen=True)
class FlashParams:
    """The header's flash fields, in esptool's spelling."""

    mode: str = "dio"
    freq: str = "80m"
    size: str = "8MB"

    def __post_init__(self) -> None:
        for value, table, what in ((self.mode, FLASH_MODES, "mode"), (self.freq, FLASH_FREQUENCIES, "frequency"),
                                   (self.size, FLASH_SIZES, "size")):
            if value not in table:
                raise UsageError(f"flash {what} {value!r}: expected one of {', '.join(table)}")

    @property
    def mode_byte(self) -> int:
        return FLASH_MODES[self.mode]

    @property
    def size_freq_byte(self) -> int:
        return FLASH_SIZES[self.size] | FLASH_FREQUENCIES[self.freq]


@dataclass(frozen=True)
class ParsedImage:
    segments: tuple[Segment, ...]
    flash_mode: int
    flash_size_freq: int
    entry: int
    chip_id: int
    min_rev_full: int
    max_rev_full: int
    checksum: int
    digest: bytes | None  # the appended SHA-256, None without one
    length: int  # bytes the image occupies, digest included


def xor_checksum(data: bytes, state: int = CHECKSUM_SEED) -> int:
    """The ROM's checksum: `state` XOR every byte (folded as one big integer: fast for megabytes)."""
    width = len(data)
    value = int.from_bytes(data, "little")
    while width > 1:
        half = (width + 1) // 2
        value = (value & ((1 << (8 * half)) - 1)) ^ (value >> (8 * half))
        width = half
    return (state ^ value) & 0xFF


def flash_mapped_addr(base: int, file_offset: int, page: int) -> int:
    """A load address for data at `file_offset` of a flash-mapped image, on MMU page `page` of `base`: the
    address and the offset agree modulo the MMU page, as the second-stage bootloader needs to map it."""
    return base + page * MMU_PAGE + file_offset % MMU_PAGE


def encode_image(
    segments: list[Segment],
    *,
    flash: FlashParams,
    entry: int = 0,
    chip_id: int = CHIP_ID_ESP32S3,
    min_rev_full: int = 0,
    max_rev_full: int = 99,
    append_digest: bool = True,
) -> bytes:
    """The image holding `segments`, in order. Every segment's data must be a multiple of 4 bytes."""
    if not 1 <= len(segments) <= MAX_SEGMENTS:
        raise ValueError(f"an image holds 1 to {MAX_SEGMENTS} segments, not {len(segments)}")
    out = bytearray(HEADER.pack(MAGIC, len(segments), flash.mode_byte, flash.size_freq_byte, entry))
    out += EXTENDED_HEADER.pack(WP_PIN_DISABLED, 0, 0, 0, chip_id, min_rev_full // 100, min_rev_full, max_rev_full,
                                bytes(4), 1 if append_digest else 0)
    checksum = CHECKSUM_SEED
    for i, seg in enumerate(segments):
        if len(seg.data) % 4 or len(seg.data) >= MAX_SEGMENT_BYTES:
            raise ValueError(f"segment {i}: {len(seg.data)} bytes; must be a multiple of 4 below 16 MB")
        out += SEGMENT_HEADER.pack(seg.addr, len(seg.data)) + seg.data
        checksum = xor_checksum(seg.data, checksum)
    out += bytes(15 - len(out) % 16)  # the checksum is the last byte of a 16-byte block
    out.append(checksum)
    if append_digest:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def segment_data_offset(segments: list[Segment], index: int) -> int:
    """The file offset at which segment `index`'s data will start in encode_image's output."""
    return HEADER_BYTES + sum(SEGMENT_HEADER.size + len(s.data) for s in segments[:index]) + SEGMENT_HEADER.size


def parse_image(data: bytes) -> ParsedImage:
    """Parses and checks an image at the start of `data` (which may go on past its end, as a flash partition
    does): magic, chip id, segment bounds, checksum, appended SHA-256. Raises ImageFormatError."""
    if len(data) < HEADER_BYTES:
        raise ImageFormatError(f"only {len(data)} bytes, less than the {HEADER_BYTES}-byte image header "
                               f"(flash incomplete?)")
    magic, count, flash_mode, size_freq, entry = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        erased = " (erased flash: nothing was flashed there)" if data[:4] == b"\xff" * 4 else ""
        raise ImageFormatError(f"bad magic {magic:#04x}, expected {MAGIC:#04x}{erased}")
    _wp, _d1, _d2, _d3, chip_id, _min_rev, min_rev_full, max_rev_full, _res, hashed = \
        EXTENDED_HEADER.unpack_from(data, HEADER.size)
    if chip_id != CHIP_ID_ESP32S3:
        raise ImageFormatError(f"built for chip id {chip_id}, not the ESP32-S3 ({CHIP_ID_ESP32S3})")
    if hashed not in (0, 1):
        raise ImageFormatError(f"bad extended header (hash_appended is {hashed:#04x}, not 0 or 1)")
    if not 1 <= count <= MAX_SEGMENTS:
        raise ImageFormatError(f"{count} segments; an image has 1 to {MAX_SEGMENTS}")
    pos = HEADER_BYTES
    segments = []
    checksum = CHECKSUM_SEED
    for i in range(count):
        if pos + SEGMENT_HEADER.size > len(data):
            raise ImageFormatError(f"segment {i} header at {pos:#x} is past the end of the data (flash incomplete?)")
        addr, size = SEGMENT_HEADER.unpack_from(data, pos)
        if pos + SEGMENT_HEADER.size + size > len(data):
            raise ImageFormatError(f"segment {i} at {pos:#x} ({size} bytes) runs past the end of the data "
                                   f"(flash incomplete?)")
        body = data[pos + SEGMENT_HEADER.size : pos + SEGMENT_HEADER.size + size]
        segments.append(Segment(addr, body, pos))
        checksum = xor_checksum(body, checksum)
        pos += SEGMENT_HEADER.size + size
    pos += 15 - pos % 16
    if pos >= len(data):
        raise ImageFormatError("the checksum byte is past the end of the data (flash incomplete?)")
    stored = data[pos]
    pos += 1
    if stored != checksum:
        raise ImageFormatError(f"bad checksum (stored {stored:#04x}, computed {checksum:#04x}; flash incomplete?)")
    digest = None
    if hashed:
        digest = data[pos : pos + DIGEST_BYTES]
        computed = hashlib.sha256(data[:pos]).digest()
        if digest != computed:
            raise ImageFormatError(f"bad SHA-256 (stored {digest.hex()[:16]}..., computed {computed.hex()[:16]}...; "
                                   f"flash incomplete or corrupted?)")
        pos += DIGEST_BYTES
    return ParsedImage(tuple(segments), flash_mode, size_freq, entry, chip_id, min_rev_full, max_rev_full, stored,
                       digest, pos)
