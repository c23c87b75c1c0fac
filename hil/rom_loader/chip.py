"""What the emulated chip answers about itself: an ESP32-S3 (QFN56) revision v0.2 with external SPI flash.

esptool 5 identifies an ESP32-S3 by the chip id 9 in GET_SECURITY_INFO's reply (ESP32S3ROM.IMAGE_CHIP_ID;
ESP32S3ROM.USES_MAGIC_VALUE is False). Older tools read the magic word at 0x40001000 instead, which is 9 on an
ESP32-S3 too. Everything else it prints comes from READ_REG on the eFuse block (esptool/targets/esp32s3.py):

    MAC                 EFUSE_BLOCK1 words 0-1 (MAC_EFUSE_REG = 0x60007044)
    package, revision   EFUSE_BLOCK1 word 3 (pkg bits 21-23, minor bits 18-20), word 5 (major bits 24-25)
    embedded flash/PSRAM EFUSE_BLOCK1 words 3-5 (none here: the flash is an external chip)
    security            EFUSE_BASE + 0x30..0x3C (all zero: no secure boot, no flash encryption)

The flash chip is reached the way esptool's run_spiflash_command() reaches it: WRITE_REG to the SPI1
controller's user-command registers, a write of SPI_CMD_USR to SPI_CMD_REG, READ_REG of SPI_W0. The emulated
flash answers RDID (0x9F) with a GigaDevice GD25Q-series JEDEC id whose capacity byte gives the image size, so
esptool's flash-size detection finds the configured size, and RDSFDP (0x5A) with an SFDP header, which is
how esptool checks that a flash chip is attached.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

CHIP_NAME = "ESP32-S3"
CHIP_ID = 9  # ESP32S3ROM.IMAGE_CHIP_ID: GET_SECURITY_INFO's chip_id word
CHIP_DETECT_MAGIC_REG = 0x40001000  # ESPLoader.CHIP_DETECT_MAGIC_REG_ADDR
CHIP_DETECT_MAGIC = 0x00000009
API_VERSION = 0  # GET_SECURITY_INFO's last word (eco/API version of the ROM); esptool only prints it

EFUSE_BASE = 0x60007000
EFUSE_BLOCK1 = EFUSE_BASE + 0x44
EFUSE_BLOCK2 = EFUSE_BASE + 0x5C

SPI1_BASE = 0x60002000  # ESP32S3ROM.SPI_REG_BASE
SPI_CMD = SPI1_BASE + 0x00
SPI_ADDR = SPI1_BASE + 0x04
SPI_USER = SPI1_BASE + 0x18
SPI_USER2 = SPI1_BASE + 0x20
SPI_MISO_DLEN = SPI1_BASE + 0x28
SPI_W0 = SPI1_BASE + 0x58
SPI_CMD_USR = 1 << 18
SPI_USR_MISO = 1 << 28

GD_VENDOR = 0xC8
GD_Q_SERIES = 0x40
JEDEC_CAPACITY = {4 << 20: 0x16, 8 << 20: 0x17, 16 << 20: 0x18}  # esptool's DETECTED_FLASH_SIZES

# RAM the ROM accepts a MEM_BEGIN for (ESP32S3ROM.MEMORY_MAP: DRAM, IRAM, RTC fast and slow memory).
RAM_REGIONS = (
    (0x3FC88000, 0x3FD00000),
    (0x40370000, 0x403E0000),
    (0x600FE000, 0x60100000),
    (0x50000000, 0x50002000),
)


def in_ram(addr: int, size: int) -> bool:
    return any(lo <= addr and addr + size <= hi for lo, hi in RAM_REGIONS)


@dataclass(frozen=True)
class ChipIdentity:
    """The chip's factory eFuses, as far as esptool reads them."""

    mac: bytes = bytes.fromhex("7cdfa1e01234")  # Espressif OUI 7c:df:a1
    major: int = 0
    minor: int = 2
    package: int = 0  # 0: ESP32-S3 (QFN56)

    def __post_init__(self) -> None:
        if len(self.mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, not {len(self.mac)}")

    @property
    def description(self) -> str:
        """What esptool's get_chip_description() prints for this chip."""
        name = {0: "ESP32-S3 (QFN56)", 1: "ESP32-S3-PICO-1 (LGA56)"}.get(self.package, "Unknown ESP32-S3")
        return f"{name} (revision v{self.major}.{self.minor})"

    @property
    def mac_text(self) -> str:
        return ":".join(f"{b:02x}" for b in self.mac)

    def efuse_words(self) -> dict[int, int]:
        mac1, mac0 = struct.unpack(">HI", self.mac)
        word3 = ((self.package & 0x7) << 21) | ((self.minor & 0x7) << 18)
        word5 = ((self.major & 0x3) << 24) | (((self.minor >> 3) & 0x1) << 23)
        return {
            EFUSE_BLOCK1 + 0: mac0,
            EFUSE_BLOCK1 + 4: mac1,
            EFUSE_BLOCK1 + 12: word3,
            EFUSE_BLOCK1 + 20: word5,
            EFUSE_BLOCK2 + 16: 1,  # eFuse block version v1.x (only read to spot revision v0.0 chips)
        }

    def security_info(self) -> bytes:
        """GET_SECURITY_INFO's 20 bytes: flags, flash_crypt_cnt, 7 key purposes, chip id, API version."""
        return struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, CHIP_ID, API_VERSION)


def sfdp_table(size: int) -> bytes:
    """A minimal JEDEC SFDP area: signature, one basic parameter header and the flash density dword."""
    header = b"SFDP" + bytes([0x06, 0x01, 0x01, 0xFF])
    basic = bytes([0x00, 0x06, 0x01, 0x10, 0x30, 0x00, 0x00, 0xFF])  # JEDEC basic table, 16 dwords at 0x30
    vendor = bytes([GD_VENDOR, 0x00, 0x01, 0x03, 0x70, 0x00, 0x00, 0xFF])
    table = bytearray(b"\xff" * 0x80)
    table[0 : len(header)] = header
    table[8:16] = basic
    table[16:24] = vendor
    table[0x30:0x34] = b"\xe5\x20\xf1\xff"
    table[0x34:0x38] = struct.pack("<I", size * 8 - 1)  # density in bits - 1
    return bytes(table)


@dataclass
class Registers:
    """The address space READ_REG and WRITE_REG reach: eFuses, the SPI1 controller and plain storage.

    Unknown addresses read 0 and keep what is written to them, which is all esptool needs of the watchdog,
    RTC and UART registers it touches (ESP32S3ROM.hard_reset writes RTC_CNTL_OPTION1, for example).
    """

    identity: ChipIdentity
    flash_size: int
    values: dict[int, int] = field(default_factory=dict)
    spi_commands: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.values = {CHIP_DETECT_MAGIC_REG: CHIP_DETECT_MAGIC, **self.identity.efuse_words()}
        self._sfdp = sfdp_table(self.flash_size)

    def read(self, addr: int) -> int:
        return self.values.get(addr, 0)

    def write(self, addr: int, value: int, mask: int = 0xFFFFFFFF) -> None:
        if CHIP_DETECT_MAGIC_REG <= addr < CHIP_DETECT_MAGIC_REG + 0x20000 or EFUSE_BASE <= addr < EFUSE_BASE + 0x200:
            return  # ROM and eFuse read registers are read-only
        old = self.values.get(addr, 0)
        self.values[addr] = ((old & ~mask) | (value & mask)) & 0xFFFFFFFF
        if addr == SPI_CMD and self.values[addr] & SPI_CMD_USR:
            self._run_spi_user_command()
            self.values[SPI_CMD] &= ~SPI_CMD_USR  # done at once: esptool's wait_done() sees the bit clear

    def _run_spi_user_command(self) -> None:
        command = self.read(SPI_USER2) & 0xFF
        self.spi_commands.append(command)
        if not self.read(SPI_USER) & SPI_USR_MISO:
            return  # write-enable, reset and the like: nothing to read back
        nbytes = min(4, (self.read(SPI_MISO_DLEN) + 1 + 7) // 8)
        if command == 0x9F:  # RDID: manufacturer, memory type, capacity
            capacity = JEDEC_CAPACITY.get(self.flash_size, 0x17)
            reply = bytes([GD_VENDOR, GD_Q_SERIES, capacity])
        elif command == 0x5A:  # RDSFDP at a 24-bit address
            addr = self.read(SPI_ADDR) & 0xFFFFFF
            reply = self._sfdp[addr : addr + nbytes].ljust(nbytes, b"\xff")
        else:  # RDSR, RDSR2, RDSR3 and anything else: status registers all zero
            reply = b"\x00" * nbytes
        self.values[SPI_W0] = int.from_bytes(reply[:nbytes].ljust(4, b"\x00"), "little")
