"""The emulated SPI flash: a file of exactly the flash size, mapped into memory.

Erased flash reads 0xFF; programming can only clear bits (the new byte is old AND data), as on a NOR flash,
so the loader erases before it writes just as the ROM and the stub do. Writes go through a shared mmap and
are flushed (msync) after every block, so the file holds everything acknowledged so far even when the loader
is killed, and it persists between runs. The file is locked (flock) while a loader uses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import re
from pathlib import Path

from hil.errors import DeviceError, UsageError

SECTOR_SIZE = 0x1000
FLASH_SIZES = {"4MB": 4 << 20, "8MB": 8 << 20, "16MB": 16 << 20}
DEFAULT_FLASH_SIZE = FLASH_SIZES["8MB"]


class FlashImageError(DeviceError):
    """The flash image file cannot be used (wrong size, not writable, in use)."""


def parse_flash_size(value: str | int) -> int:
    """'4MB', '8MB', '16MB' (or the byte count) -> bytes; ValueError for any other size."""
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+)\s*(MB|M|MiB)?\s*", value, re.IGNORECASE)
        if not m:
            raise UsageError(f"flash size {value!r}: expected one of {', '.join(FLASH_SIZES)}")
        size = int(m.group(1)) << 20 if m.group(2) else int(m.group(1))
    if size not in FLASH_SIZES.values():
        raise UsageError(f"flash size {value!r}: expected one of {', '.join(FLASH_SIZES)}")
    return size


def size_name(size: int) -> str:
    return f"{size >> 20}MB" if size % (1 << 20) == 0 else f"{size} bytes"


class FlashImage:
    """The flash contents in `path`, created (all 0xFF) when missing."""

    def __init__(self, path: Path | str, size: int = DEFAULT_FLASH_SIZE) -> None:
        self.path = Path(path)
        self.size = parse_flash_size(size)
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._open()

    def _open(self) -> None:
        created = not self.path.exists()
        if created:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                chunk = b"\xff" * (1 << 20)
                for _ in range(self.size // len(chunk)):
                    f.write(chunk)
            os.replace(tmp, self.path)
        actual = self.path.stat().st_size
        if actual != self.size:
            hint = (
                f"pass --flash-size {size_name(actual)} to use it as it is, or delete it"
                if actual in FLASH_SIZES.values()
                else f"no flash has that size ({', '.join(FLASH_SIZES)}): delete it or pass another file"
            )
            raise FlashImageError(
                f"flash image {self.path} is {actual} bytes, not the {size_name(self.size)} ({self.size} bytes) "
                f"of the configured flash: {hint}"
            )
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise FlashImageError(f"cannot open flash image {self.path} for writing: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FlashImageError(f"flash image {self.path} is in use by another ROM loader") from None
        self._fd = fd
        self._map = mmap.mmap(fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @property
    def _mm(self) -> mmap.mmap:
        if self._map is None:
            raise FlashImageError(f"flash image {self.path} is closed")
        return self._map

    def contains(self, offset: int, length: int) -> bool:
        return offset >= 0 and length >= 0 and offset + length <= self.size

    def read(self, offset: int, length: int) -> bytes:
        if not self.contains(offset, length):
            raise ValueError(f"read of {length} bytes at {offset:#x} is outside the {size_name(self.size)} flash")
        return self._mm[offset : offset + length]

    def md5(self, offset: int, length: int) -> bytes:
        return hashlib.md5(self.read(offset, length)).digest()

    def erase(self, offset: int, length: int) -> int:
        """Erases every sector that [offset, offset + length) touches; returns the bytes erased."""
        if length <= 0:
            return 0
        start = offset - offset % SECTOR_SIZE
        end = -(-(offset + length) // SECTOR_SIZE) * SECTOR_SIZE
        if not self.contains(start, end - start):
            raise ValueError(f"erase of {start:#x}..{end:#x} is outside the {size_name(self.size)} flash")
        self._mm[start:end] = b"\xff" * (end - start)
        self._flush(start, end - start)
        return end - start

    def program(self, offset: int, data: bytes) -> None:
        """NOR programming: every bit already 0 stays 0 (erase first to write arbitrary data)."""
        if not self.contains(offset, len(data)):
            raise ValueError(
                f"write of {len(data)} bytes at {offset:#x} is outside the {size_name(self.size)} flash"
            )
        if not data:
            return
        old = self._mm[offset : offset + len(data)]
        if old != b"\xff" * len(old):
            n = len(data)
            data = (int.from_bytes(old, "little") & int.from_bytes(data, "little")).to_bytes(n, "little")
        self._mm[offset : offset + len(data)] = data
        self._flush(offset, len(data))

    def _flush(self, offset: int, length: int) -> None:
        page = mmap.PAGESIZE
        start = offset - offset % page
        self._mm.flush(start, min(self.size, offset + length) - start)

    def close(self) -> None:
        if self._map is not None:
            self._map.flush()
            self._map.close()
            self._map = None
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FlashImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
