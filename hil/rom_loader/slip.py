"""SLIP framing (RFC 1055) as the ESP32 ROM loader and esptool use it.

Every packet travels as 0xC0, the packet with 0xC0 escaped as 0xDB 0xDC and 0xDB as 0xDB 0xDD, then 0xC0.
"""

from __future__ import annotations

END = 0xC0
ESC = 0xDB
ESC_END = 0xDC
ESC_ESC = 0xDD

# The largest packet esptool sends is a stub FLASH_DATA block: 8-byte command header, 16-byte data header and
# 0x4000 bytes (the stub's FLASH_WRITE_SIZE); anything much larger is noise, not a packet.
MAX_FRAME = 0x10000


def encode(packet: bytes) -> bytes:
    """One SLIP frame holding `packet`."""
    body = packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class SlipDecoder:
    """Incremental SLIP decoder: feed() it whatever the line delivers, get the complete frames back.

    Like the ROM, it drops bytes outside a frame (boot noise, a half frame left by a dropped connection), a
    frame with an invalid escape and a frame longer than `max_frame`; `noise_bytes` and `bad_frames` count
    them. An 0xC0 right after another one starts the frame again instead of yielding an empty frame.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.noise_bytes = 0
        self.bad_frames = 0
        self._buf = bytearray()
        self._in_frame = False
        self._escape = False
        self._discard = False

    def reset(self) -> None:
        """Forget a partial frame (the connection it came from is gone)."""
        self._buf.clear()
        self._in_frame = False
        self._escape = False
        self._discard = False

    @property
    def partial(self) -> bool:
        """True while a frame has started but not ended."""
        return self._in_frame and (bool(self._buf) or self._escape)

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for b in data:
            if not self._in_frame:
                if b == END:
                    self._in_frame = True
                else:
                    self.noise_bytes += 1
            elif b == END:
                self._end_frame(frames)
            elif self._discard:
                pass
            elif self._escape:
                self._escape = False
                if b in (ESC_END, ESC_ESC):
                    self._append(END if b == ESC_END else ESC)
                else:
                    self._discard = True
            elif b == ESC:
                self._escape = True
            else:
                self._append(b)
        return frames

    def _append(self, b: int) -> None:
        self._buf.append(b)
        if len(self._buf) > self.max_frame:
            self._discard = True

    def _end_frame(self, frames: list[bytes]) -> None:
        if self._discard or self._escape:
            # A broken frame. Its closing 0xC0 may really open the next frame (we started listening in the
            # middle of one), so stay in a frame: an 0xC0 next makes it an empty one, which is skipped.
            self.bad_frames += 1
        elif self._buf:
            frames.append(bytes(self._buf))
            self._in_frame = False
        # else: 0xC0 0xC0, an empty frame: the second 0xC0 opens the next frame
        self._buf.clear()
        self._escape = False
        self._discard = False
