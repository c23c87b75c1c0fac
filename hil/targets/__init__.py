"""Targets: where the firmware runs. `get_target(name, **options)` imports the target's module on demand, so
the ESP32-S3 target's dependencies are needed only when it is used."""

from __future__ import annotations

import importlib

from hil.targets.base import PtyProcessTarget, Target, TargetError, open_client

# name -> "module:class". The esp32s3 module belongs to the board support; it is imported only when asked for.
_REGISTRY: dict[str, str] = {
    "host": "hil.targets.host:HostTarget",
    "qemu": "hil.targets.qemu:QemuTarget",
    "esp32s3": "hil.targets.esp32s3:Esp32s3Target",
}


def register_target(name: str, spec: str) -> None:
    """Adds or replaces a target: `spec` is "package.module:ClassName"."""
    _REGISTRY[name] = spec


def target_names() -> list[str]:
    return list(_REGISTRY)


def get_target(name: str, **options: object) -> Target:
    """A new, not yet started target. Options: firmware=, log_dir= (all); model_dir= (host, qemu);
    port=, baud=, flash= (esp32s3; accepted and ignored by the emulated targets)."""
    try:
        spec = _REGISTRY[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; choose one of {', '.join(_REGISTRY)}") from None
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"target '{name}' is not available: cannot import {module_name}: {exc}") from exc
    return getattr(module, class_name)(**options)


__all__ = [
    "PtyProcessTarget",
    "Target",
    "TargetError",
    "get_target",
    "open_client",
    "register_target",
    "target_names",
]
