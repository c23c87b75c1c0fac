"""Flash images for the emulated targets, in ESP-IDF's formats, so one flashing path serves a board and an
emulated ESP32-S3 (hil.rom_loader):

    espimage     the ESP image format (header, segments, checksum, SHA-256): write and check
    descriptors  esp_app_desc_t, esp_bootloader_desc_t and hil's descriptor of an emulated firmware image
    partitions   the binary partition table at 0x8000
    identity     what a build will report in HELLO (build id, model name and sha256), known at build time
    app          the emulated app and bootloader images; ExpectedApp: what HELLO must say after a flash
    buildfiles   flasher_args.json, flash_args, bootloader, partition table and app image next to a build's binary
    flasher      esptool write-flash (--skip-flashed) and merge-bin, for a board or the emulated ROM loader

Booting from a flash image is hil/targets/flash_boot.py's.
"""

from hil.firmware.flashimage.app import AppImage, ExpectedApp, encode_app, encode_bootloader, read_app
from hil.firmware.flashimage.buildfiles import FlashFiles, FlashFilesError, write_flash_files
from hil.firmware.flashimage.espimage import FlashParams, ImageFormatError, parse_image
from hil.firmware.flashimage.identity import FirmwareIdentity, IdentityError
from hil.firmware.flashimage.partitions import Partition, PartitionTableError, encode_table, find_app, parse_table

__all__ = [
    "AppImage",
    "ExpectedApp",
    "FirmwareIdentity",
    "FlashFiles",
    "FlashFilesError",
    "FlashParams",
    "IdentityError",
    "ImageFormatError",
    "Partition",
    "PartitionTableError",
    "encode_app",
    "encode_bootloader",
    "encode_table",
    "find_app",
    "parse_image",
    "parse_table",
    "read_app",
    "write_flash_files",
]
