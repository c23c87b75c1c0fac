"""Targets: where the firmware runs. `get_target(name, **options)` imports the target's module on demand, so
the ESP32-S3 target's dependencies are needed only when it is used. The list of targets: hil/targets/registry.py
(built-ins and the `hil.targets` entry point group)."""

from __future__ import annotations

import importlib

from hil.targets.base import PtyProcessTarget, Target, TargetError, open_client
from hil.targets.registry import REGISTRY, TargetSpec


def target_names() -> list[str]:
    return list(REGISTRY)


def get_target(name: str, **options: object) -> Target:
    """A new, not yet started target. Options: firmware=, log_dir= (all); model_dir= (host, qemu);
    port=, baud=, flash= (esp32s3; accepted and ignored by the emulated targets)."""
    try:
        spec = REGISTRY[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'; choose one of {', '.join(REGISTRY)}") from None
    module_name, _, class_name = spec.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"target '{name}' is not available: cannot import {module_name}: {exc}") from exc
    return getattr(module, class_name)(**options)


__all__ = [
    "PtyProcessTarget",
    "Target",
    "TargetError",
    "TargetSpec",
    "get_target",
    "open_client",
    "target_names",
]
