"""The plugin's options: the table of --hil-* flags with their ini keys and defaults, and the one lookup every
plugin module uses (command line, else ini, else the bench file, else the default)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hil.bench import Bench
from hil.dut import TARGETS

if TYPE_CHECKING:
    from hil.firmware.flashimage.flasher import FlashSettings
    from hil.transport.faults import Faults

_OPTIONS = (
    # (name, ini name, help, default)
    ("--hil-bench", "hil_bench", "bench file (YAML, fixtures/benches/): target, port, baud, firmware, model", None),
    ("--hil-target", "hil_target", f"device under test: {', '.join(TARGETS)} (default qemu)", "qemu"),
    ("--hil-port", "hil_port", "esp32s3: serial port or URL (socket://host:port, rfc2217://host:port)", None),
    ("--hil-baud", "hil_baud", "serial baud rate of the protocol link (default 2000000)", "2000000"),
    ("--hil-fw", "hil_fw", "prebuilt firmware: host/qemu binary or ESP-IDF build directory", None),
    ("--hil-model", "hil_model", "device model directory or .tflite (default: the project's)", None),
    ("--hil-images", "hil_images", "images per accuracy/bit-exact test (default 200; the accuracy tests: the "
                                   "committed 500-image subset), or 'all': the whole test set of --hil-data", "200"),
    ("--hil-timeout", "hil_timeout", "seconds to wait for each device reply (default 10)", "10"),
    ("--hil-test-timeout", "hil_test_timeout", "seconds each test that uses a hil fixture may run, setup and "
                                               "teardown included, unless it has a timeout marker or --timeout is "
                                               "given (pytest-timeout; default 300, 0: none)", "300"),
    ("--hil-report-dir", "hil_report_dir", "where runs go: <DIR>/runs/<run>/ (default reports/)", None),
    ("--hil-faults", "hil_faults", "inject link faults beneath the protocol once the device has said HELLO, e.g. "
                                   "flip=0.01,drop=0.001,garbage=0.001,stall=0.0005,reset=0.0001,seed=7 "
                                   "(hil/transport/faults.py; default none)", None),
    # --- power analyzer (hil.instruments, hil.measure) ---
    ("--hil-visa", "hil_visa", "VISA resource of the power analyzer, e.g. TCPIP0::192.0.2.10::inst0::INSTR "
                               "(default: the bench's, else the simulated N6705C)", None),
    ("--hil-analyzer", "hil_analyzer", "power analyzer driver: n6705c, ngm202, k2280s (default: from *IDN?)", None),
    # --- flashing (hil.firmware.flashimage.flasher; the flasher fixture) ---
    ("--hil-flash-baud", "hil_flash_baud", "esptool baud rate for flashing (default 921600)", "921600"),
    ("--hil-before", "hil_before", "esptool --before: default-reset, usb-reset, no-reset, no-reset-no-sync (a board "
                                   "without the auto-program circuit: no-reset, holding BOOT; default: the build's "
                                   "flasher_args.json, default-reset)", None),
    ("--hil-after", "hil_after", "esptool --after: hard-reset, soft-reset, no-reset, no-reset-stub, watchdog-reset "
                                 "(default: the build's flasher_args.json, hard-reset)", None),
    ("--hil-flash-image", "hil_flash_image", "host/qemu: flash the build through the emulated ROM loader into this "
                                             "flash image file and boot from it (--hil-no-flash: boot what it "
                                             "holds)", None),
)

# Flags (store_true), each with a boolean ini key: (name, ini name, help).
_FLAGS = (
    ("--hil-reflash", "hil_reflash", "flash every region even when the chip's MD5 says it is already there"),
    ("--hil-erase-all", "hil_erase_all", "erase the whole flash before flashing (esptool write-flash --erase-all)"),
)


_BENCH_KEY = pytest.StashKey["Bench | None"]()


def _bench_values(bench: Bench) -> dict[str, str | None]:
    return {
        "hil_target": bench.target,
        "hil_port": bench.serial.url if bench.serial else None,
        "hil_baud": str(bench.serial.baud) if bench.serial else None,
        "hil_fw": str(bench.build_dir) if bench.build_dir else None,
        "hil_model": str(bench.model_dir) if bench.model_dir else None,
    }


def _get(config: pytest.Config, ini: str) -> str | None:
    value = config.getoption(ini)
    if value is None:
        value = config.getini(ini)
    if value is None and ini != "hil_bench":
        bench = config.stash.get(_BENCH_KEY, None)
        if bench is not None:
            value = _bench_values(bench).get(ini)
    if value is None:
        value = next(d for _f, i, _h, d in _OPTIONS if i == ini)
    return value


def _int_option(config: pytest.Config, ini: str) -> int:
    raw = _get(config, ini)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"{ini.replace('_', '-')}: '{raw}' is not a whole number") from None


def _flag(config: pytest.Config, ini: str) -> bool:
    return bool(config.getoption(ini)) or bool(config.getini(ini))


def flash_settings(config: pytest.Config) -> FlashSettings:
    """--hil-flash-baud, --hil-before, --hil-after, --hil-reflash, --hil-erase-all; pytest.UsageError when one is
    malformed."""
    from hil.firmware.flashimage.flasher import FlashSettings

    try:
        return FlashSettings(baud=_int_option(config, "hil_flash_baud"), before=_get(config, "hil_before"),
                             after=_get(config, "hil_after"), reflash=_flag(config, "hil_reflash"),
                             erase_all=_flag(config, "hil_erase_all"))
    except ValueError as exc:
        raise pytest.UsageError(f"hil flash options: {exc}") from None


def faults(config: pytest.Config) -> Faults | None:
    """--hil-faults: the fault injector for the session's device (None: no faults); pytest.UsageError when the
    spec is malformed."""
    from hil.transport.faults import Faults, FaultSpec, FaultSpecError

    try:
        spec = FaultSpec.parse(_get(config, "hil_faults"))
    except FaultSpecError as exc:
        raise pytest.UsageError(f"--hil-faults: {exc}") from None
    return Faults(spec) if spec.active else None


def report_dir(config: pytest.Config) -> Path:
    """Where runs go (<report dir>/runs/<run>/): --hil-report-dir, else reports/ beside the rootdir."""
    raw = _get(config, "hil_report_dir")
    return Path(raw) if raw else Path(config.rootpath) / "reports"
