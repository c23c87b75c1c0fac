"""The files an ESP-IDF build leaves for flashing, written for an emulated build next to its binary:

    flasher_args.json                      ESP-IDF's schema (what `idf.py flash` and hil.targets.esp32s3 read)
    flash_args                             the same as esptool arguments (esptool write-flash @flash_args)
    bootloader/bootloader.bin        0x0   the emulated second stage (hil.firmware.flashimage.app)
    partition_table/partition-table.bin    0x8000: nvs, phy_init, factory app at 0x10000
    hil_fw.bin                    0x10000  the app image carrying the firmware file

Deterministic (no timestamps), so a rebuild gives identical files and esptool's --skip-flashed skips them; a
file is replaced (atomically) only when its bytes change, and flasher_args.json is written last, so its presence
means the set is complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from hil.errors import DeviceError
from hil.firmware.flashimage.app import encode_app, encode_bootloader
from hil.firmware.flashimage.espimage import FlashParams
from hil.firmware.flashimage.identity import FirmwareIdentity, identity_of
from hil.firmware.flashimage.partitions import TABLE_OFFSET, default_table, encode_table, find_app

CHIP = "esp32s3"
BOOTLOADER_OFFSET = 0x0
APP_FILE = "hil_fw.bin"
BOOTLOADER_FILE = "bootloader/bootloader.bin"
TABLE_FILE = "partition_table/partition-table.bin"
FLASHER_ARGS = "flasher_args.json"
DEFAULT_FLASH = FlashParams("dio", "80m", "8MB")  # the emulated ROM loader's default flash (hil.rom_loader)
_MB = 1 << 20


class FlashFilesError(DeviceError, RuntimeError):
    """The flash files cannot be made for this build (the message says why and what to do)."""


@dataclass(frozen=True)
class FlashFiles:
    build_dir: Path
    flasher_args: Path
    files: tuple[tuple[int, Path], ...]  # (offset, path), by offset
    identity: FirmwareIdentity

    @property
    def app(self) -> Path:
        return self.build_dir / APP_FILE


def flasher_args(flash: FlashParams, app_offset: int) -> dict:
    """flasher_args.json as ESP-IDF v5 writes it (esptool 4 spellings, which hil.targets.esp32s3 converts)."""
    files = {BOOTLOADER_OFFSET: BOOTLOADER_FILE, TABLE_OFFSET: TABLE_FILE, app_offset: APP_FILE}
    return {
        "write_flash_args": ["--flash_mode", flash.mode, "--flash_size", flash.size, "--flash_freq", flash.freq],
        "flash_settings": {"flash_mode": flash.mode, "flash_size": flash.size, "flash_freq": flash.freq},
        "flash_files": {f"{offset:#x}": name for offset, name in sorted(files.items())},
        "bootloader": {"offset": f"{BOOTLOADER_OFFSET:#x}", "file": BOOTLOADER_FILE, "encrypted": "false"},
        "app": {"offset": f"{app_offset:#x}", "file": APP_FILE, "encrypted": "false"},
        "partition-table": {"offset": f"{TABLE_OFFSET:#x}", "file": TABLE_FILE, "encrypted": "false"},
        "extra_esptool_args": {"after": "hard_reset", "before": "default_reset", "stub": True, "chip": CHIP},
    }


def flash_file_contents(binary: Path, identity: FirmwareIdentity,
                        flash: FlashParams = DEFAULT_FLASH) -> dict[str, bytes]:
    """Every file of the set (relative name -> bytes) for the firmware file `binary`."""
    payload = binary.read_bytes()
    flash_bytes = int(flash.size.removesuffix("MB")) * _MB
    table = default_table(flash_bytes)
    app_part = find_app(table)
    assert app_part is not None
    app = encode_app(payload, binary.name, identity, flash)
    if len(app) > app_part.size:
        raise FlashFilesError(f"the app image of {binary} ({len(app)} bytes) does not fit the {app_part.size:#x}-byte "
                              f"factory partition of a {flash.size} flash")
    args = flasher_args(flash, app_part.offset)
    flash_args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in args["flash_settings"].items()) + "\n"
    flash_args += "".join(f"{offset} {name}\n" for offset, name in args["flash_files"].items())
    return {
        BOOTLOADER_FILE: encode_bootloader(flash),
        TABLE_FILE: encode_table(table),
        APP_FILE: app,
        "flash_args": flash_args.encode(),
        FLASHER_ARGS: (json.dumps(args, indent=4) + "\n").encode(),  # last: its presence means the set is complete
    }


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_flash_files(
    binary: Path | str,
    port: str,
    model_dir: Path | str,
    *,
    build_id: str | None = None,
    flash: FlashParams = DEFAULT_FLASH,
) -> FlashFiles:
    """Writes the flash files of the emulated firmware `binary` (built for `port` from `model_dir`) into its
    directory; returns where they are. `build_id` defaults to the one compiled into the binary."""
    binary = Path(binary)
    try:
        identity = identity_of(binary.read_bytes(), port, Path(model_dir), build_id=build_id, where=str(binary))
        contents = flash_file_contents(binary, identity, flash)
    except (OSError, ValueError) as exc:
        raise FlashFilesError(f"cannot make the flash files of {binary}: {exc}") from exc
    build_dir = binary.parent
    for name, data in contents.items():
        _write_if_changed(build_dir / name, data)
    offsets = {BOOTLOADER_FILE: BOOTLOADER_OFFSET, TABLE_FILE: TABLE_OFFSET}
    app_offset = int(json.loads(contents[FLASHER_ARGS])["app"]["offset"], 0)
    files = tuple(sorted((offsets.get(name, app_offset), build_dir / name)
                         for name in (BOOTLOADER_FILE, TABLE_FILE, APP_FILE)))
    return FlashFiles(build_dir, build_dir / FLASHER_ARGS, files, identity)
