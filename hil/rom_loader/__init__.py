"""An emulated ESP32-S3 ROM serial loader that the real esptool flashes, over TCP or a pseudo-terminal.

    from hil.rom_loader import RomLoader

    with RomLoader(tmp_path / "flash.bin", "8MB") as loader:   # RomLoader(..., transport="pty") for /dev/pts/N
        esptool.main(["--chip", "esp32s3", "--port", loader.url, "write-flash", "0x10000", "app.bin"])
        loader.stats().flash_data_packets, loader.read_flash(0x10000, 16)

It speaks the ROM's protocol (SLIP frames, 4 status bytes, SYNC, READ_REG/WRITE_REG with the ESP32-S3's chip
id and eFuses, SPI_ATTACH, SPI_SET_PARAMS, FLASH_(DEFL_)BEGIN/DATA/END, SPI_FLASH_MD5 as hex, READ_FLASH_SLOW,
CHANGE_BAUDRATE, GET_SECURITY_INFO, MEM_BEGIN/DATA/END) and, once esptool has uploaded and started its
flasher stub, the stub's (2 status bytes, "OHAI", raw MD5, ERASE_FLASH, ERASE_REGION, READ_FLASH with
acknowledgements). The flash is a file of the flash's size that persists between runs (hil.rom_loader.flash).
`hil rom-loader` (hil/cli_rom_loader.py) runs one standalone.

Modules: slip (framing), protocol (packets, status and error codes), chip (ESP32-S3 identity, registers, the
SPI flash's JEDEC id and SFDP), flash (the image file), writer (one flash download), ram (RAM downloads, the
stub's recognition), session (the command state machine), transport (TCP and pty), server (RomLoader).
"""

from hil.rom_loader.chip import CHIP_ID, CHIP_NAME, ChipIdentity
from hil.rom_loader.flash import DEFAULT_FLASH_SIZE, FLASH_SIZES, FlashImage, FlashImageError, parse_flash_size
from hil.rom_loader.protocol import Failure, Op
from hil.rom_loader.server import RomLoader
from hil.rom_loader.session import LoaderStats, Mode

__all__ = [
    "CHIP_ID",
    "CHIP_NAME",
    "DEFAULT_FLASH_SIZE",
    "FLASH_SIZES",
    "ChipIdentity",
    "Failure",
    "FlashImage",
    "FlashImageError",
    "LoaderStats",
    "Mode",
    "Op",
    "RomLoader",
    "parse_flash_size",
]
