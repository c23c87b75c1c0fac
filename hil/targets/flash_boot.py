"""Booting the emulated targets (host, qemu) from a flash image, as a board's second-stage bootloader does.

    image = flash image file (or a merged.bin): what the emulated ROM loader wrote when esptool flashed a build
    0x8000   partition table -> the app partition: factory, else ota_0
    0x10000  app image       -> checked (magic, chip id, checksum, SHA-256, descriptor, the firmware's sha256)
                             -> the firmware it carries, extracted byte for byte to <build cache>/flash-boot/
                             -> host: exec'd; qemu: -kernel

`boot_app(image, "host")` does that and says what went wrong in terms of the flash ("app image at 0x10000 of
FILE: bad checksum (...; flash incomplete?)"). `FlashBootMixin` gives a target a `flash_image=` option that
resolves to the extracted firmware, plus what the flashed app expects HELLO to report (`expected_app`) and the
build's merged image (`merged_image`, the bytes `esptool merge-bin` makes of the flashed files) for the run's
record.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.firmware.flashimage.app import AppImage, ExpectedApp, read_app
from hil.firmware.flashimage.espimage import ImageFormatError, parse_image
from hil.firmware.flashimage.partitions import (
    TABLE_BYTES,
    TABLE_OFFSET,
    Partition,
    PartitionTableError,
    find_app,
    parse_table,
)
from hil.targets.base import TargetError

ELF_MAGIC = b"\x7fELF"


class FlashBootError(TargetError):
    """The flash image holds nothing the emulated target can boot; the message says what is wrong."""


@dataclass(frozen=True)
class BootApp:
    flash_image: Path
    partition: Partition
    app: AppImage
    firmware: Path  # the extracted firmware file, byte for byte what the app image carries
    merged_image: Path | None  # bootloader + partition table + app as `esptool merge-bin` lays them out
    expected: ExpectedApp


def boot_cache() -> Path:
    from hil import paths

    return paths.BUILD / "flash-boot"


def is_flash_image(path: Path) -> bool:
    """Whether `path` is a flash image file (or a merged image) rather than a firmware binary or a build: it
    starts with an ESP image (0xE9) or erased flash, or has a partition table at 0x8000."""
    path = Path(path)
    if not path.is_file() or path.name == "flasher_args.json":
        return False
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(TABLE_OFFSET)
        table = f.read(2)
    return not head.startswith(ELF_MAGIC) and (head[:1] in (b"\xe9", b"\xff") or table == b"\xaa\x50")


def _read(image: Path) -> bytes:
    from hil.firmware.flashimage.flasher import image_lock

    try:
        with image_lock(image):  # not while another process flashes it
            return image.read_bytes()
    except OSError:  # e.g. a read-only directory, where no lock file can be made: read it as it is
        return image.read_bytes()


def _write_once(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Writes `data` to the content-addressed `path` unless it already holds exactly that."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return path


def merged_of(data: bytes, part: Partition, app: AppImage) -> bytes | None:
    """The merged image of what the flash holds (bootloader, partition table, app, 0xFF between them): the bytes
    `esptool merge-bin` makes of the build's three files. None when there is no bootloader image at 0x0."""
    try:
        boot_len = parse_image(data[:TABLE_OFFSET]).length
    except ImageFormatError:
        return None
    merged = bytearray(b"\xff" * (part.offset + app.length))
    merged[:boot_len] = data[:boot_len]
    merged[TABLE_OFFSET : TABLE_OFFSET + TABLE_BYTES] = data[TABLE_OFFSET : TABLE_OFFSET + TABLE_BYTES]
    merged[part.offset :] = data[part.offset : part.offset + app.length]
    return bytes(merged)


def boot_app(flash_image: Path | str, target: str, *, cache_dir: Path | None = None) -> BootApp:
    """Reads the partition table and the app image of `flash_image`, checks them and extracts the firmware for
    `target` (host or qemu). Raises FlashBootError naming what is wrong and what to do."""
    image = Path(flash_image).resolve()
    again = f"flash a {target} build into it: hil flash --target {target} --flash-image {image}"
    if not image.is_file():
        raise FlashBootError(f"flash image {image} does not exist; {again}")
    data = _read(image)
    try:
        table = parse_table(data[TABLE_OFFSET : TABLE_OFFSET + TABLE_BYTES])
    except PartitionTableError as exc:
        raise FlashBootError(f"partition table at {TABLE_OFFSET:#x} of {image}: {exc}; {again}") from None
    part = find_app(table)
    if part is None:
        listed = "; ".join(p.describe() for p in table)
        raise FlashBootError(f"no app partition (factory or ota_0) in the partition table at {TABLE_OFFSET:#x} of "
                             f"{image} (it lists: {listed}); {again}")
    where = f"app image at {part.offset:#x} of {image}"
    try:
        app = read_app(data[part.offset : part.offset + part.size])
        payload = app.payload()
    except ImageFormatError as exc:
        raise FlashBootError(f"{where}: {exc}; {again}") from None
    assert app.hil is not None  # payload() checked it
    if app.hil.port != target:
        raise FlashBootError(f"{where} holds firmware for the {app.hil.port} target, not for {target}; {again}")
    cache = cache_dir or boot_cache()
    sha = hashlib.sha256(payload).hexdigest()
    name = Path(app.hil.payload_name).name or "firmware"
    firmware = _write_once(cache / f"{target}-{sha[:16]}" / name, payload, 0o755)
    merged = merged_of(data, part, app)
    merged_path = None
    if merged is not None:
        merged_path = _write_once(cache / f"merged-{hashlib.sha256(merged).hexdigest()[:16]}.bin", merged)
    return BootApp(image, part, app, firmware, merged_path, app.expected(f"the {where}"))


class FlashBootMixin:
    """For an emulated target class (before PtyProcessTarget in its bases): `flash_image=` boots it from a flash
    image instead of a firmware file. Sets `flash_image`, `boot` (BootApp), `expected_app` (what HELLO must
    report) and `merged_image` (None unless started from a flash image)."""

    name: str

    def __init__(self, firmware: Path | str | None = None, *, flash_image: Path | str | None = None,
                 **options: Any) -> None:
        self.flash_image: Path | None = None
        self.boot: BootApp | None = None
        self.expected_app: ExpectedApp | None = None
        self.merged_image: Path | None = None
        if flash_image is not None:
            if firmware is not None:
                raise TargetError(f"{self.name}: pass firmware= or flash_image=, not both")
            self.boot = boot_app(flash_image, self.name)
            self.flash_image = self.boot.flash_image
            self.expected_app = self.boot.expected
            self.merged_image = self.boot.merged_image
            firmware = self.boot.firmware
        super().__init__(firmware, **options)  # type: ignore[call-arg]
