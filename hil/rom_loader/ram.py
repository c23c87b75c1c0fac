"""RAM downloads (MEM_BEGIN / MEM_DATA / MEM_END) and recognising esptool's flasher stub among them.

esptool uploads its stub's text and data segments with MEM_BEGIN/MEM_DATA and starts it with MEM_END at the
stub's entry point (ESPLoader.run_stub). The emulator cannot run Xtensa code, so it compares what was loaded
with the stub images esptool ships (esptool/targets/stub_flasher/{1,2}/esp32s3.json): a match starts the
emulated stub; any other code "runs" as an application would, which means the loader goes quiet.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from hil.rom_loader.chip import in_ram
from hil.rom_loader.protocol import CommandError, Failure

MAX_SEGMENT = 0x80000  # larger than any RAM of the chip


@dataclass(frozen=True)
class KnownStub:
    version: str  # "1" (esptool-legacy-flasher-stub) or "2" (esp-flasher-stub)
    entry: int
    text_start: int
    text: bytes


@cache
def known_stubs(chip_json: str = "esp32s3.json") -> tuple[KnownStub, ...]:
    """The flasher stubs of the installed esptool for the ESP32-S3 (none when esptool is missing)."""
    stubs: list[KnownStub] = []
    try:
        root = resources.files("esptool") / "targets" / "stub_flasher"
        for version in ("1", "2"):
            path = root / version / chip_json
            if not path.is_file():
                continue
            data = json.loads(path.read_text())
            stubs.append(KnownStub(version, int(data["entry"]), int(data["text_start"]),
                                   base64.b64decode(data["text"])))
    except (ModuleNotFoundError, OSError, ValueError, KeyError):
        return ()
    return tuple(stubs)


@dataclass
class RamDownload:
    """The segments loaded so far since the chip (re)started."""

    segments: dict[int, bytearray] = field(default_factory=dict)
    _current: int | None = None
    _expected: int = 0
    _blocks: int = 0
    _block_size: int = 0
    _next_seq: int = 0

    def begin(self, words: tuple[int, ...]) -> None:
        size, blocks, block_size, offset = words
        if size > MAX_SEGMENT or (blocks and block_size * blocks < size):
            raise CommandError(Failure.RAM_SIZE, f"{size} bytes in {blocks} blocks of {block_size}")
        if not in_ram(offset, size):
            raise CommandError(Failure.RAM_ADDRESS, f"{size} bytes at {offset:#010x} are not in RAM")
        self.segments[offset] = bytearray()
        self._current = offset
        self._expected = size
        self._blocks = blocks
        self._block_size = block_size
        self._next_seq = 0

    def data(self, seq: int, payload: bytes) -> None:
        if self._current is None:
            raise CommandError(Failure.FAILED, "MEM_DATA without MEM_BEGIN")
        segment = self.segments[self._current]
        if seq == self._next_seq - 1 and segment.endswith(payload):
            return  # a resend after a lost answer
        if seq != self._next_seq:
            raise CommandError(Failure.INVALID_MESSAGE, f"RAM block {seq} where block {self._next_seq} was due")
        if len(segment) + len(payload) > self._expected or len(payload) > self._block_size:
            raise CommandError(Failure.RAM_SIZE, f"RAM block {seq} goes past the {self._expected} bytes announced")
        segment += payload
        self._next_seq += 1

    def loaded_stub(self, entry: int) -> KnownStub | None:
        """The esptool stub that MEM_END's entry point would start, if that is what was loaded."""
        for stub in known_stubs():
            text = self.segments.get(stub.text_start)
            if stub.entry == entry and text is not None and bytes(text[: len(stub.text)]) == stub.text:
                return stub
        return None
