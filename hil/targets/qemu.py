"""The qemu target: the firmware's Xtensa build (device_fw/ports/qemu) on qemu-system-xtensa's lx106 core.

Semihosting carries the protocol (and the firmware's console text, between frames) over QEMU's stdin/stdout,
attached to a pseudo-terminal. The firmware never blocks in one long semihosting call (ports/qemu/port_qemu.c), so
QEMU honours SIGTERM at once. `-icount shift=0,sleep=off` makes CCOUNT a deterministic function of the
instructions executed (one 40 MHz tick per 25 instructions), so cycle counts repeat exactly between runs. They
are a relative measure on an emulated LX106, never an ESP32-S3 latency.
"""

from __future__ import annotations

import shutil

from hil.targets.base import PtyProcessTarget, TargetError
from hil.targets.flash_boot import FlashBootMixin

QEMU_BINARY = "qemu-system-xtensa"
# -display/-monitor/-serial none: plain -nographic would put the monitor on stdio and swallow input.
QEMU_ARGS = [
    "-M", "sim", "-cpu", "lx106",
    "-display", "none", "-monitor", "none", "-serial", "none",
    "-semihosting",
    "-icount", "shift=0,sleep=off",
]  # fmt: skip


class QemuTarget(FlashBootMixin, PtyProcessTarget):  # flash_image=: boot from a flash image
    name = "qemu"
    addr2line = "xtensa-lx106-elf-addr2line"
    addr2line_hint = "install Debian's lx106 binutils: sudo apt-get install binutils-xtensa-lx106"

    def command(self) -> list[str]:
        qemu = shutil.which(QEMU_BINARY)
        if qemu is None:
            from hil.firmware import toolchain_status

            raise TargetError(f"qemu target: {toolchain_status('qemu')}")
        return [qemu, *QEMU_ARGS, "-kernel", str(self.firmware.resolve())]

    def describe_exit(self, code: int) -> str:
        # ports/qemu/reset.S turns a guest CPU exception into a semihosting exit with 64 + EXCCAUSE, and a
        # debug exception (a `break`, e.g. __builtin_trap()) into 63.
        if 64 <= code < 128:
            return f"exit status {code}: guest CPU exception, EXCCAUSE {code - 64}"
        if code == 63:
            return "exit status 63: guest debug exception (a break instruction, e.g. __builtin_trap())"
        return super().describe_exit(code)
