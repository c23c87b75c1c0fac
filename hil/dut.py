"""The device under test: a started target plus a protocol client that has said hello.

Shared by the pytest plugin's session-scoped `dut` fixture and the `hil` command, so a bench run and a CI run
go through the same code: model -> firmware -> target -> link -> client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hil.model.artifacts import DeviceModel

log = logging.getLogger("hil.dut")

EMULATED_TARGETS = ("host", "qemu")
TARGETS = (*EMULATED_TARGETS, "esp32s3")

# What a figure from each target is, so that no emulated number is ever mistaken for a hardware one.
PROVENANCE = {
    "host": "emulated (host build, POSIX; timings are host wall-clock, not device cycles)",
    "qemu": "emulated (QEMU Xtensa lx106, instruction-counted; relative measure, not ESP32-S3 hardware)",
    "esp32s3": "measured on hardware (ESP32-S3)",
}


class DutError(RuntimeError):
    """The device under test could not be started or does not run the expected model."""


@dataclass
class DutOptions:
    target: str = "qemu"
    port: str | None = None  # esp32s3: serial device or URL (socket://, rfc2217://)
    baud: int = 2_000_000
    firmware: Path | None = None  # prebuilt firmware (host/qemu binary, or an ESP-IDF build dir)
    flash: bool = True  # esp32s3 only
    log_dir: Path | None = None
    timeout_s: float = 10.0


@dataclass
class Dut:
    """A running device with the model loaded. Use as a context manager or call close()."""

    target: object
    client: object
    info: object
    model: DeviceModel
    options: DutOptions
    _closed: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.options.target

    @property
    def provenance(self) -> str:
        return PROVENANCE[self.options.target]

    def infer(self, inputs: list[np.ndarray]):
        return self.client.infer(inputs)

    def infer_offload(self, inputs: list[np.ndarray] | None = None):
        """The AgileNN device step (INFER_OFFLOAD): local logits, compressed codes, cycles per stage."""
        return self.client.infer_offload(inputs)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            self.target.stop()

    def __enter__(self) -> Dut:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def firmware_for(model: DeviceModel, options: DutOptions) -> Path | None:
    """The firmware to start: the one given, or a build of the model for an emulated port."""
    if options.firmware is not None:
        if not Path(options.firmware).exists():
            raise DutError(f"firmware '{options.firmware}' does not exist (--hil-fw)")
        return Path(options.firmware)
    if options.target in EMULATED_TARGETS:
        from hil.firmware import build_firmware

        return build_firmware(options.target, model.c_dir)
    return None  # esp32s3 without --hil-fw: the board already runs the firmware; checked by sha256 below


def open_dut(model: DeviceModel, options: DutOptions) -> Dut:
    """Builds (if needed) and starts the target, connects and checks that the device runs `model`."""
    from hil.targets import get_target
    from hil.transport.client import DeviceClient
    from hil.transport.link import open_link

    if options.target not in TARGETS:
        raise DutError(f"unknown target '{options.target}'; choose one of {', '.join(TARGETS)}")
    firmware = firmware_for(model, options)
    target = get_target(
        options.target, firmware=firmware, port=options.port, baud=options.baud,
        flash=options.flash, log_dir=options.log_dir,
    )
    url = target.start()
    try:
        link = open_link(url, baudrate=options.baud, timeout=options.timeout_s)
        # A dead emulator fails the next read at once, with the target's own account of why it exited.
        link.diagnose = getattr(target, "diagnose", None)
        client = DeviceClient(link)
        info = client.hello()
    except BaseException:
        target.stop()
        raise
    dut = Dut(target, client, info, model, options)
    if info.model_sha256 != model.sha256:
        dut.close()
        raise DutError(
            f"the {options.target} device runs model {info.model_name!r} (sha256 {info.model_sha256[:16]}...), "
            f"not {model.name!r} (sha256 {model.sha256[:16]}...); rebuild/flash the firmware for this model "
            f"or pass the matching --hil-model"
        )
    log.info("connected to %s: %s", options.target, info)
    return dut
