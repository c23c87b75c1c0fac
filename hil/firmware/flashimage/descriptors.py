"""The descriptors at the start of an image's first segment: ESP-IDF's esp_app_desc_t (apps) and
esp_bootloader_desc_t (bootloaders), which `esptool image-info` prints, and hil's own descriptor of an emulated
firmware image, which follows esp_app_desc_t in the app's first segment.

    esp_app_desc_t (256 bytes): magic 0xABCD5432, secure_version, 8 reserved bytes, version[32],
        project_name[32], time[16], date[16], idf_ver[32], app_elf_sha256[32], min/max eFuse block revision
        (2 x u16), mmu_page_size (log2), 3 + 72 reserved bytes
    esp_bootloader_desc_t (80 bytes): magic byte 0x50, 3 reserved bytes, version (u32), idf_ver[32],
        date_time[24], 16 reserved bytes
    hil_app_desc_t (256 bytes): magic "HILFWv1\\0", format version (u32), port[16] (host, qemu), payload_name[32]
        (the firmware file's name), payload_size (u32), payload_sha256[32], build_id[32] (what HELLO reports),
        model_name[32], model_sha256[32] (what HELLO reports), reserved to 256 bytes

Strings are ASCII, NUL-padded; a string that fills its field has no NUL (as in ESP-IDF).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

APP_DESC_MAGIC = 0xABCD5432
APP_DESC = struct.Struct("<II8s32s32s16s16s32s32sHHB3s72s")  # 256 bytes
BOOTLOADER_DESC_MAGIC = 0x50
BOOTLOADER_DESC = struct.Struct("<B3sI32s24s16s")  # 80 bytes
HIL_DESC_MAGIC = b"HILFWv1\0"
HIL_DESC_VERSION = 1
HIL_DESC = struct.Struct("<8sI16s32sI32s32s32s32s64s")  # 256 bytes


def _text(value: str, width: int, what: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{what} {value!r} is longer than its {width}-byte field")
    return raw.ljust(width, b"\0")


def _str(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace")


@dataclass(frozen=True)
class AppDesc:
    """ESP-IDF's esp_app_desc_t."""

    version: str
    project_name: str
    idf_ver: str
    app_elf_sha256: bytes
    time: str = ""
    date: str = ""
    secure_version: int = 0
    min_efuse_blk_rev_full: int = 0
    max_efuse_blk_rev_full: int = 99
    mmu_page_size: int = 16  # log2(64 KB)

    def encode(self) -> bytes:
        return APP_DESC.pack(
            APP_DESC_MAGIC, self.secure_version, bytes(8), _text(self.version, 32, "version"),
            _text(self.project_name, 32, "project name"), _text(self.time, 16, "time"), _text(self.date, 16, "date"),
            _text(self.idf_ver, 32, "idf_ver"), self.app_elf_sha256, self.min_efuse_blk_rev_full,
            self.max_efuse_blk_rev_full, self.mmu_page_size, bytes(3), bytes(72),
        )

    @classmethod
    def decode(cls, data: bytes) -> AppDesc | None:
        """The descriptor at the start of `data`, or None when its magic word is not there."""
        if len(data) < APP_DESC.size:
            return None
        (magic, secure, _r1, version, project, time, date, idf_ver, elf_sha, min_rev, max_rev, mmu, _r3,
         _r2) = APP_DESC.unpack_from(data)
        if magic != APP_DESC_MAGIC:
            return None
        return cls(_str(version), _str(project), _str(idf_ver), elf_sha, _str(time), _str(date), secure, min_rev,
                   max_rev, mmu)


@dataclass(frozen=True)
class BootloaderDesc:
    """ESP-IDF's esp_bootloader_desc_t."""

    version: int
    idf_ver: str
    date_time: str = ""

    def encode(self) -> bytes:
        return BOOTLOADER_DESC.pack(BOOTLOADER_DESC_MAGIC, bytes(3), self.version, _text(self.idf_ver, 32, "idf_ver"),
                                    _text(self.date_time, 24, "date_time"), bytes(16))

    @classmethod
    def decode(cls, data: bytes) -> BootloaderDesc | None:
        if len(data) < BOOTLOADER_DESC.size:
            return None
        magic, _r1, version, idf_ver, date_time, _r2 = BOOTLOADER_DESC.unpack_from(data)
        return cls(version, _str(idf_ver), _str(date_time)) if magic == BOOTLOADER_DESC_MAGIC else None


@dataclass(frozen=True)
class HilAppDesc:
    """What an emulated firmware image holds: the firmware file (name, size, sha256) and what the firmware will
    report in HELLO (build id, model name and sha256)."""

    port: str
    payload_name: str
    payload_size: int
    payload_sha256: bytes
    build_id: str
    model_name: str
    model_sha256: bytes

    def encode(self) -> bytes:
        return HIL_DESC.pack(
            HIL_DESC_MAGIC, HIL_DESC_VERSION, _text(self.port, 16, "port"),
            _text(self.payload_name, 32, "firmware file name"), self.payload_size, self.payload_sha256,
            _text(self.build_id, 32, "build id"), _text(self.model_name, 32, "model name"), self.model_sha256,
            bytes(64),
        )

    @classmethod
    def decode(cls, data: bytes) -> HilAppDesc | None:
        """The descriptor at the start of `data`, or None when it is not one (an ESP-IDF app has none)."""
        if len(data) < HIL_DESC.size or not data.startswith(HIL_DESC_MAGIC):
            return None
        _magic, _version, port, name, size, payload_sha, build_id, model_name, model_sha, _r = \
            HIL_DESC.unpack_from(data)
        return cls(_str(port), _str(name), size, payload_sha, _str(build_id), _str(model_name), model_sha)
