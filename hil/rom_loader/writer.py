"""One flash download: FLASH_BEGIN (or FLASH_DEFL_BEGIN), its data blocks, FLASH_END.

The ROM and the stub differ in what they do with it (esptool/loader.py, flash_begin / flash_defl_begin):

- the ROM erases the whole region up front (FLASH_BEGIN's first word is the size to erase, FLASH_DEFL_BEGIN's
  the uncompressed size rounded up to whole 1 KiB blocks) and writes every block as it comes, padding and all;
- the stub is told the number of bytes to write, erases sector by sector just ahead of the data, trims the
  0xFF padding of the last block, and answers FLASH_END with "not enough data" when bytes are missing.

Compressed data is one zlib stream over all blocks, inflated block by block as it arrives.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from hil.rom_loader.flash import SECTOR_SIZE, FlashImage, size_name
from hil.rom_loader.protocol import CommandError, Failure

MAX_BLOCK_SIZE = 0x10000


@dataclass
class FlashDownload:
    flash: FlashImage
    offset: int
    size: int  # ROM: bytes to erase; stub: bytes to write (uncompressed)
    blocks: int
    block_size: int
    compressed: bool
    stub: bool
    written: int = 0  # bytes programmed, at offset + written
    next_seq: int = 0
    _last_block: bytes | None = None
    erased: int = 0  # bytes erased so far
    erased_to: int = 0  # stub: sectors up to here are erased
    _inflate: zlib._Decompress | None = field(default=None, repr=False)

    @classmethod
    def begin(
        cls, flash: FlashImage, words: tuple[int, ...], *, compressed: bool, stub: bool, limit: int | None = None
    ) -> FlashDownload:
        """`words`: FLASH_BEGIN's size, block count, block size, offset (and the encryption flag, ignored).

        `limit` is the flash size the ROM was told by SPI_SET_PARAMS, when smaller than the image.
        """
        size, blocks, block_size, offset = words[:4]
        if len(words) > 4 and words[4]:
            raise CommandError(Failure.FAILED, "encrypted writes need eFuse keys this chip does not have")
        if not 0 < block_size <= MAX_BLOCK_SIZE:
            raise CommandError(Failure.BAD_BLOCKSIZE, f"block size {block_size}")
        end = min(flash.size, limit or flash.size)
        if offset + size > end or offset >= flash.size:
            raise CommandError(
                Failure.FAILED,
                f"{size} bytes at {offset:#x} end at {offset + size:#x}, past the {size_name(end)} flash",
            )
        op = cls(flash, offset, size, blocks, block_size, compressed, stub)
        op.erased_to = offset - offset % SECTOR_SIZE
        if compressed:
            op._inflate = zlib.decompressobj()
        if not stub:
            op.erased = flash.erase(offset, size)
        return op

    def data(self, seq: int, payload: bytes) -> int | None:
        """Writes one block; returns the bytes programmed (None for a repeat of the last block; 0 when the
        block only fed the decompressor)."""
        if seq == self.next_seq - 1 and payload == self._last_block:
            return None  # resent because our answer got lost: already written
        if seq != self.next_seq:
            raise CommandError(Failure.INVALID_MESSAGE, f"block {seq} where block {self.next_seq} was due")
        if seq >= self.blocks:
            raise CommandError(Failure.TOO_MUCH_DATA, f"block {seq} of {self.blocks}")
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(payload)
            except zlib.error as e:
                raise CommandError(Failure.DEFLATE, f"block {seq}: {e}") from None
        elif len(payload) != self.block_size:
            raise CommandError(Failure.BAD_DATA_LEN, f"block {seq} has {len(payload)} bytes, not {self.block_size}")
        else:
            chunk = payload
        if self.stub:
            remaining = self.size - self.written
            if len(chunk) > remaining:
                if self.compressed or remaining == 0:
                    raise CommandError(Failure.TOO_MUCH_DATA, f"block {seq} goes past the {self.size} bytes")
                chunk = chunk[:remaining]  # the padding of the last block
        self._program(chunk)
        self.next_seq += 1
        self._last_block = payload
        return len(chunk)

    def _program(self, data: bytes) -> None:
        addr = self.offset + self.written
        if not self.flash.contains(addr, len(data)):
            raise CommandError(Failure.FLASH_WRITE, f"{len(data)} bytes at {addr:#x} are past the end of flash")
        if self.stub:
            while self.erased_to < addr + len(data):
                self.erased += self.flash.erase(self.erased_to, SECTOR_SIZE)
                self.erased_to += SECTOR_SIZE
        self.flash.program(addr, data)
        self.written += len(data)

    @property
    def complete(self) -> bool:
        """All announced blocks arrived (the ROM gets no FLASH_END from esptool after a write)."""
        return self.next_seq >= self.blocks

    def finish(self) -> None:
        """FLASH_END / FLASH_DEFL_END: the stub checks that everything arrived."""
        if not self.stub:
            return
        if self.written < self.size or (self._inflate is not None and self.size and not self._inflate.eof):
            raise CommandError(Failure.NOT_ENOUGH_DATA, f"{self.written} of {self.size} bytes written")
