"""The one list of targets: the built-ins (host, qemu, esp32s3) plus third-party targets declared through the
`hil.targets` entry point group. The CLI's --target choices, the plugin's --hil-target, bench files and
`get_target()` all read it, so a new target is one module plus one entry:

    # pyproject.toml of a board-support package
    [project.entry-points."hil.targets"]
    esp32c6 = "hil_esp32c6.target:TARGET"        # a hil.targets.registry.TargetSpec

A third-party spec whose name is already taken is refused with a warning: a built-in is never replaced behind the
user's back.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import metadata

ENTRY_POINT_GROUP = "hil.targets"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    factory: str  # "package.module:Class", imported only when the target is used
    emulated: bool  # its figures are "emulated", never "measured"
    provenance: str  # what a figure from it is, printed beside every number
    serial: bool = False  # opens a serial port the user names (--hil-port, a bench's serial:)
    make_port: bool = False  # `hil build` makes its firmware with device_fw/Makefile (ports/<name>)


BUILTIN = (
    TargetSpec("host", "hil.targets.host:HostTarget", emulated=True, make_port=True,
               provenance="emulated (host build, POSIX; timings are host wall-clock, not device cycles)"),
    TargetSpec("qemu", "hil.targets.qemu:QemuTarget", emulated=True, make_port=True,
               provenance="emulated (QEMU Xtensa lx106, instruction-counted; relative measure, not ESP32-S3 "
                          "hardware)"),
    TargetSpec("esp32s3", "hil.targets.esp32s3:Esp32s3Target", emulated=False, serial=True,
               provenance="measured on hardware (ESP32-S3)"),
)


def _entry_point_specs() -> list[TargetSpec]:
    found = []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            spec = ep.load()
        except Exception as exc:  # a broken plugin package must not take the built-in targets down with it
            warnings.warn(f"hil target entry point {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
            continue
        if not isinstance(spec, TargetSpec):
            warnings.warn(f"hil target entry point {ep.name!r} ({ep.value}) is not a hil.targets.registry."
                          f"TargetSpec but {type(spec).__name__}; ignored", stacklevel=2)
            continue
        found.append(spec)
    return found


def _load() -> dict[str, TargetSpec]:
    registry = {s.name: s for s in BUILTIN}
    for spec in _entry_point_specs():
        if spec.name in registry:
            warnings.warn(f"hil target {spec.name!r} from an entry point ({spec.factory}) clashes with "
                          f"{registry[spec.name].factory}; the first one stays", stacklevel=2)
            continue
        registry[spec.name] = spec
    return registry


REGISTRY: dict[str, TargetSpec] = _load()
TARGETS: tuple[str, ...] = tuple(REGISTRY)
EMULATED_TARGETS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.emulated)
SERIAL_TARGETS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.serial)
MAKE_PORTS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.make_port)
PROVENANCE: dict[str, str] = {n: s.provenance for n, s in REGISTRY.items()}
