"""The plugin's options: the table of --hil-* flags with their ini keys and defaults, and the one lookup every
plugin module uses (command line, else ini, else the bench file, else the default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.bench import Bench
from hil.dut import TARGETS

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
    # --- power analyzer (hil.instruments, hil.measure) ---
    ("--hil-visa", "hil_visa", "VISA resource of the power analyzer, e.g. TCPIP0::192.0.2.10::inst0::INSTR "
                               "(default: the bench's, else the simulated N6705C)", None),
    ("--hil-analyzer", "hil_analyzer", "power analyzer driver: n6705c, ngm202, k2280s (default: from *IDN?)", None),
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


def report_dir(config: pytest.Config) -> Path:
    """Where runs go (<report dir>/runs/<run>/): --hil-report-dir, else reports/ beside the rootdir."""
    raw = _get(config, "hil_report_dir")
    return Path(raw) if raw else Path(config.rootpath) / "reports"
