"""Bench descriptions: one YAML file says what a bench is made of (labgrid style, one bench per file).

    name: esp32s3-n6705c              # optional; defaults to the file name without .yaml
    description: free text            # optional
    target: esp32s3                   # host | qemu | esp32s3
    resources:                        # optional, and so is each resource
      serial: {url: /dev/ttyUSB0, baud: 2000000}          # any pyserial URL; esp32s3 only
      power_analyzer: {visa: "TCPIP0::...::INSTR", model: N6705C, channel: 1}   # visa: null = simulated
      marker: {gpio: 4, trigger_pin: 1}                   # DUT GPIO, analyzer input it is wired to
    firmware:                         # optional
      build_dir: ../../device_fw/ports/esp32s3/build      # null: hil builds the firmware itself
      flash: true
      esptool_baud: 921600
      erase_all: false
    model: ../../models/synthetic-extractor               # optional; null: the default model

Relative paths are taken relative to the bench file's directory, as labgrid does, so a bench file can live in
another repository. Every error names the file, the key and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

from hil.errors import UsageError
from hil.targets.registry import SERIAL_TARGETS
from hil.targets.registry import TARGETS as KNOWN_TARGETS

# SERIAL_TARGETS open a serial port the bench names; host and qemu create their own pseudo-terminal.


class BenchError(UsageError):
    """A bench file is missing, not YAML, or does not describe a valid bench."""


@dataclass(frozen=True)
class SerialResource:
    url: str  # a pyserial URL: /dev/ttyUSB0, COM3, rfc2217://host:port, socket://host:port
    baud: int = 2_000_000


@dataclass(frozen=True)
class PowerAnalyzerResource:
    visa: str | None  # VISA resource string; None: the simulated analyzer
    model: str | None = None  # e.g. "N6705C"
    channel: int = 1  # output channel that powers the DUT


@dataclass(frozen=True)
class MarkerResource:
    gpio: int  # DUT GPIO, high exactly while an inference runs
    trigger_pin: int | None = None  # analyzer input it is wired to (N6705C digital port pin 1-7)


@dataclass(frozen=True)
class Bench:
    name: str
    path: Path
    target: str
    description: str = ""
    serial: SerialResource | None = None
    power_analyzer: PowerAnalyzerResource | None = None
    marker: MarkerResource | None = None
    build_dir: Path | None = None
    flash: bool = True
    esptool_baud: int = 921_600
    erase_all: bool = False
    model_dir: Path | None = None


class _Reader:
    """Type-checked access to one mapping of the file; every error carries the file and the dotted key."""

    def __init__(self, path: Path, data: object, key: str, allowed: tuple[str, ...]) -> None:
        self.path = path
        self.prefix = key
        if not isinstance(data, dict):
            self.fail(key, f"must be a mapping, not {_type_name(data)}")
        unknown = [k for k in data if k not in allowed]
        if unknown:
            self.fail(
                self._key(str(unknown[0])),
                f"unknown key (allowed here: {', '.join(allowed)})",
            )
        self.data: dict[str, Any] = data

    def _key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, key: str, problem: str) -> NoReturn:
        raise BenchError(f"{self.path}: {key or '(top level)'}: {problem}")

    def get(
        self, name: str, kind: type | tuple[type, ...], *, required: bool = False, default: Any = None
    ) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                self.fail(self._key(name), "required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML's true/false are Python bools, which are also ints: a baud rate of `true` is a mistake.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            self.fail(self._key(name), f"must be {expected}, not {_type_name(value)} ({value!r})")
        return value

    def int_in(
        self, name: str, lo: int, hi: int, *, required: bool = False, default: int | None = None
    ) -> Any:
        value = self.get(name, int, required=required, default=default)
        if value is not None and not lo <= value <= hi:
            self.fail(self._key(name), f"must be between {lo} and {hi}, not {value}")
        return value

    def get_path(self, name: str) -> Path | None:
        value = self.get(name, str)
        if value is None:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def section(self, name: str, allowed: tuple[str, ...]) -> _Reader | None:
        if name not in self.data or self.data[name] is None:
            return None
        return _Reader(self.path, self.data[name], self._key(name), allowed)


_KIND_NAMES: dict[type, str] = {str: "a string", int: "an integer", bool: "true or false"}


def _type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def load_bench(path: Path | str) -> Bench:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BenchError(f"{path}: bench file not found") from None
    except OSError as e:
        raise BenchError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BenchError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        raise BenchError(f"{path}: empty bench file")

    top = _Reader(path, data, "", ("name", "description", "target", "resources", "firmware", "model"))
    target = top.get("target", str, required=True)
    if target not in KNOWN_TARGETS:
        top.fail("target", f"unknown target {target!r} (known: {', '.join(KNOWN_TARGETS)})")

    serial = analyzer = marker = None
    res = top.section("resources", ("serial", "power_analyzer", "marker"))
    if res is not None:
        s = res.section("serial", ("url", "baud"))
        if s is not None:
            serial = SerialResource(
                url=s.get("url", str, required=True), baud=s.int_in("baud", 1, 20_000_000, default=2_000_000)
            )
        a = res.section("power_analyzer", ("visa", "model", "channel"))
        if a is not None:
            analyzer = PowerAnalyzerResource(
                visa=a.get("visa", str),
                model=a.get("model", str),
                channel=a.int_in("channel", 1, 4, default=1),
            )
        m = res.section("marker", ("gpio", "trigger_pin"))
        if m is not None:
            marker = MarkerResource(
                gpio=m.int_in("gpio", 0, 48, required=True), trigger_pin=m.int_in("trigger_pin", 1, 7)
            )

    if target in SERIAL_TARGETS and serial is None:
        top.fail("resources.serial", f"required for target {target} (the board's serial port: url and baud)")
    if target not in SERIAL_TARGETS and serial is not None:
        top.fail("resources.serial", f"not used by target {target}, which creates its own pseudo-terminal")

    build_dir = None
    flash, esptool_baud, erase_all = True, 921_600, False
    fw = top.section("firmware", ("build_dir", "flash", "esptool_baud", "erase_all"))
    if fw is not None:
        build_dir = fw.get_path("build_dir")
        flash = fw.get("flash", bool, default=True)
        esptool_baud = fw.int_in("esptool_baud", 9600, 5_000_000, default=921_600)
        erase_all = fw.get("erase_all", bool, default=False)

    return Bench(
        name=top.get("name", str, default=path.stem),
        path=path.resolve(),
        target=target,
        description=top.get("description", str, default=""),
        serial=serial,
        power_analyzer=analyzer,
        marker=marker,
        build_dir=build_dir,
        flash=flash,
        esptool_baud=esptool_baud,
        erase_all=erase_all,
        model_dir=top.get_path("model"),
    )
