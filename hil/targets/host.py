"""The host target: the firmware built as a POSIX program (device_fw/ports/host), on a pseudo-terminal.

Its "cycles" are CLOCK_MONOTONIC nanoseconds (clock_hz 1e9): host wall-clock time, not device cycles.
"""

from __future__ import annotations

from hil.targets.base import PtyProcessTarget
from hil.targets.flash_boot import FlashBootMixin


class HostTarget(FlashBootMixin, PtyProcessTarget):  # flash_image=: boot from a flash image
    name = "host"

    def command(self) -> list[str]:
        return [str(self.firmware.resolve())]
