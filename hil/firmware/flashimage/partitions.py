"""ESP-IDF's binary partition table (what gen_esp32part.py writes and the second-stage bootloader reads at 0x8000).

    32-byte entries: magic b"\\xAA\\x50" (0x50AA little-endian), type, subtype, offset (u32), size (u32),
    label[16] (NUL-padded), flags (u32: bit 0 encrypted, bit 1 readonly);
    then the MD5 entry: b"\\xEB\\xEB", 14 bytes 0xFF, the MD5 of every entry before it;
    then 0xFF up to 0xC00 bytes (the table's maximum length).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from hil.errors import DeviceError

TABLE_OFFSET = 0x8000
TABLE_BYTES = 0xC00
ENTRY = struct.Struct("<2sBBII16sI")
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"

TYPE_APP, TYPE_DATA = 0x00, 0x01
SUBTYPE_FACTORY, SUBTYPE_OTA_0 = 0x00, 0x10
SUBTYPE_DATA_OTA, SUBTYPE_PHY, SUBTYPE_NVS = 0x00, 0x01, 0x02
APP_ALIGN = 0x10000


class PartitionTableError(DeviceError, ValueError):
    """Not a valid partition table; the message says what is wrong (the caller adds where it was read)."""


@dataclass(frozen=True)
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int = 0

    def describe(self) -> str:
        kind = "app" if self.type == TYPE_APP else "data" if self.type == TYPE_DATA else f"type {self.type:#x}"
        names = {TYPE_APP: {SUBTYPE_FACTORY: "factory", **{SUBTYPE_OTA_0 + i: f"ota_{i}" for i in range(16)}},
                 TYPE_DATA: {SUBTYPE_DATA_OTA: "ota", SUBTYPE_PHY: "phy", SUBTYPE_NVS: "nvs"}}
        sub = names.get(self.type, {}).get(self.subtype, f"{self.subtype:#x}")
        return f"{self.label} ({kind}/{sub}) at {self.offset:#x}, {self.size:#x} bytes"


def default_table(flash_bytes: int) -> list[Partition]:
    """ESP-IDF's single-factory-app layout (partitions_singleapp.csv) with the factory app taking the rest of
    the flash: nvs at 0x9000, phy_init at 0xf000, factory at 0x10000."""
    return [
        Partition("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x6000),
        Partition("phy_init", TYPE_DATA, SUBTYPE_PHY, 0xF000, 0x1000),
        Partition("factory", TYPE_APP, SUBTYPE_FACTORY, APP_ALIGN, flash_bytes - APP_ALIGN),
    ]


def encode_table(partitions: list[Partition]) -> bytes:
    """The 0xC00-byte binary table, as gen_esp32part.py writes it (with its MD5 entry)."""
    body = b""
    for p in partitions:
        if p.type == TYPE_APP and p.offset % APP_ALIGN:
            raise ValueError(f"app partition {p.label} at {p.offset:#x} is not 64 KB aligned")
        label = p.label.encode("ascii")[:16].ljust(16, b"\0")
        body += ENTRY.pack(ENTRY_MAGIC, p.type, p.subtype, p.offset, p.size, label, p.flags)
    body += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(body).digest()
    if len(body) > TABLE_BYTES:
        raise ValueError(f"{len(partitions)} partitions do not fit in {TABLE_BYTES:#x} bytes")
    return body + b"\xff" * (TABLE_BYTES - len(body))


def parse_table(data: bytes) -> list[Partition]:
    """The partitions of a binary table (its MD5 checked when present). Raises PartitionTableError."""
    partitions: list[Partition] = []
    for pos in range(0, min(len(data), TABLE_BYTES) - ENTRY.size + 1, ENTRY.size):
        raw = data[pos : pos + ENTRY.size]
        if raw[:2] == MD5_MAGIC:
            if hashlib.md5(data[:pos]).digest() != raw[16:]:
                raise PartitionTableError("MD5 of the entries does not match the table's MD5 entry "
                                          "(flash incomplete or corrupted?)")
            break
        if raw[:2] == b"\xff\xff":
            break
        magic, ptype, subtype, offset, size, label, flags = ENTRY.unpack(raw)
        if magic != ENTRY_MAGIC:
            raise PartitionTableError(f"entry {len(partitions)} at +{pos:#x} has magic {magic.hex()}, not aa50")
        partitions.append(Partition(label.split(b"\0", 1)[0].decode("ascii", errors="replace"), ptype, subtype,
                                    offset, size, flags))
    if not partitions:
        erased = data[:2] == b"\xff\xff"
        raise PartitionTableError("no partition table" + (" (erased flash: nothing was flashed there)" if erased
                                                          else f" (starts with {data[:4].hex()})"))
    return partitions


def find_app(partitions: list[Partition]) -> Partition | None:
    """The partition the bootloader starts without OTA data: the factory app, else ota_0."""
    for subtype in (SUBTYPE_FACTORY, SUBTYPE_OTA_0):
        for p in partitions:
            if p.type == TYPE_APP and p.subtype == subtype:
                return p
    return None
