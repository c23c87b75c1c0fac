"""App and bootloader images for the emulated targets, and what a flashed app says the device must report.

The app image of an emulated build (host: the POSIX program, qemu: the lx106 ELF) is an ordinary ESP32-S3 app
image: segment 0 (DROM, 0x3C000020) holds esp_app_desc_t (version: the build id; project name hil_fw; idf_ver
"hil emulated <port>"; app_elf_sha256: the sha256 of the firmware file) followed by hil_app_desc_t (port,
firmware file name, size and sha256, build id, model name and sha256); segment 1 (DROM, the next MMU page) holds
the firmware file byte for byte, zero-padded to a multiple of 4. No timestamps: a rebuild gives the same bytes.

The bootloader is a small image that says it is the emulated second stage (esp_bootloader_desc_t, idf_ver
"hil emulated 2nd stage", in a DRAM segment, and a line of text); the launcher (hil/targets/flash_boot.py) does
its work on the host.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hil.firmware.flashimage.descriptors import APP_DESC, AppDesc, BootloaderDesc, HilAppDesc
from hil.firmware.flashimage.espimage import (
    DRAM_BASE,
    DROM_BASE,
    FlashParams,
    ImageFormatError,
    ParsedImage,
    Segment,
    encode_image,
    flash_mapped_addr,
    parse_image,
    segment_data_offset,
)
from hil.firmware.flashimage.identity import HELLO_FIELD, FirmwareIdentity

if TYPE_CHECKING:
    from hil.transport.frame import DeviceInfo

log = logging.getLogger("hil.firmware.flashimage")

PROJECT_NAME = "hil_fw"
BOOTLOADER_IDF_VER = "hil emulated 2nd stage"
BOOTLOADER_TEXT = (b"hil emulated ESP32-S3 second-stage bootloader: the host or qemu launcher reads the partition "
                   b"table at 0x8000, checks the factory (else ota_0) app image and runs the firmware it holds "
                   b"(hil/targets/flash_boot.py)\0")
# A real second stage runs from here; nothing runs this one, but image-info names the segment DRAM.
BOOTLOADER_DRAM = DRAM_BASE + 0x5A000


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def encode_bootloader(flash: FlashParams) -> bytes:
    desc = BootloaderDesc(version=1, idf_ver=BOOTLOADER_IDF_VER)
    return encode_image([Segment(BOOTLOADER_DRAM, _pad4(desc.encode() + BOOTLOADER_TEXT))], flash=flash)


def encode_app(payload: bytes, payload_name: str, identity: FirmwareIdentity, flash: FlashParams) -> bytes:
    """The app image carrying `payload` (the emulated firmware file) and what it will report in HELLO."""
    sha = hashlib.sha256(payload).digest()
    desc = AppDesc(version=identity.build_id, project_name=PROJECT_NAME, idf_ver=f"hil emulated {identity.port}",
                   app_elf_sha256=sha)
    hil = HilAppDesc(identity.port, payload_name, len(payload), sha, identity.build_id, identity.model_name,
                     identity.model_sha256_bytes)
    segments = [Segment(DROM_BASE + 0x20, desc.encode() + hil.encode()), Segment(0, _pad4(payload))]
    # the firmware on the next MMU page, at an address that agrees with its file offset (as esptool lays out IROM)
    segments[1] = Segment(flash_mapped_addr(DROM_BASE, segment_data_offset(segments, 1), 1), segments[1].data)
    return encode_image(segments, flash=flash)


@dataclass(frozen=True)
class ExpectedApp:
    """What the device must report in HELLO after `source` was flashed (None: not known from the image)."""

    build_id: str | None
    model_sha256: str | None
    model_name: str | None
    source: str  # e.g. "the app image at 0x10000 of /path/flash.bin"

    def mismatch(self, info: DeviceInfo, target: str) -> str | None:
        """Why HELLO does not match what was flashed, or None when it does."""
        wrong = []
        if self.build_id is not None and info.build_id != self.build_id:
            wrong.append("build id")
        if self.model_sha256 is not None and info.model_sha256 != self.model_sha256:
            wrong.append("model sha256")
        if not wrong:
            return None
        return (f"the {target} device does not run what was flashed ({' and '.join(wrong)} differ): it reports "
                f"build id {info.build_id!r}, model {info.model_name!r} sha256 {info.model_sha256}; {self.source} "
                f"holds build id {self.build_id!r}, model {self.model_name!r} sha256 {self.model_sha256}. The flash "
                f"did not take or the device booted something else: flash again with --hil-reflash (hil flash "
                f"--reflash), or --hil-erase-all (hil flash --erase-all)")


@dataclass(frozen=True)
class AppImage:
    """An app image read back (checked: magic, chip, checksum, SHA-256)."""

    image: ParsedImage
    desc: AppDesc
    hil: HilAppDesc | None  # None: an ESP-IDF app for a real board

    @property
    def length(self) -> int:
        return self.image.length

    def payload(self) -> bytes:
        """The emulated firmware file it carries, checked against its size and sha256."""
        if self.hil is None:
            raise ImageFormatError(f"holds ESP-IDF app {self.desc.project_name!r} version {self.desc.version!r} "
                                   f"(IDF {self.desc.idf_ver}) for a real ESP32-S3, not an emulated hil firmware")
        data = b"".join(s.data for s in self.image.segments[1:])[: self.hil.payload_size]
        if len(data) != self.hil.payload_size:
            raise ImageFormatError(f"holds {len(data)} firmware bytes, its descriptor says {self.hil.payload_size}")
        if hashlib.sha256(data).digest() != self.hil.payload_sha256:
            raise ImageFormatError("the firmware it holds does not match the sha256 in its descriptor")
        return data

    def expected(self, source: str) -> ExpectedApp:
        if self.hil is not None:
            return ExpectedApp(self.hil.build_id, self.hil.model_sha256.hex(), self.hil.model_name, source)
        # ESP-IDF port: BUILD_ID="${PROJECT_VER} idf ${IDF_VER}" (ports/esp32s3/main/CMakeLists.txt), truncated to
        # HELLO's 32 bytes; esp_app_desc_t holds both, unless PROJECT_VER was cut to its 32-byte field.
        known = self.desc.version and len(self.desc.version) < 31 and self.desc.idf_ver
        build_id = f"{self.desc.version} idf {self.desc.idf_ver}"[:HELLO_FIELD] if known else None
        return ExpectedApp(build_id, None, None, source)


def read_app(data: bytes) -> AppImage:
    """The app image at the start of `data`. Raises ImageFormatError naming what is wrong."""
    image = parse_image(data)
    first = image.segments[0].data
    desc = AppDesc.decode(first)
    if desc is None:
        raise ImageFormatError("no application descriptor (esp_app_desc_t, magic 0xabcd5432) at the start of its "
                               "first segment: not an app image")
    return AppImage(image, desc, HilAppDesc.decode(first[APP_DESC.size :]))


def expected_app_of_build(build_dir: Path) -> ExpectedApp | None:
    """What the app of a build directory (flasher_args.json's "app" entry) says HELLO must report after it is
    flashed; None when the build names no app or its app cannot be read (then only the model is checked)."""
    args_file = Path(build_dir) / "flasher_args.json"
    try:
        entry = json.loads(args_file.read_text()).get("app") or {}
        app_file = Path(build_dir) / str(entry["file"])
        app = read_app(app_file.read_bytes())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("cannot read the app of %s (%s): HELLO's build id is not checked against it", build_dir, exc)
        return None
    return app.expected(f"the app image {app_file} flashed at {entry.get('offset', '?')}")
