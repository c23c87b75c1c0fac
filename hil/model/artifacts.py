"""Finds the device model to run: a model directory under models/ or any .tflite file.

A model directory holds `model.tflite` (the source of truth), `hil_model.c` generated from it by the compiler
and `model.json` (the compiler's summary, with the .tflite's sha256). A bare .tflite is compiled on demand into
a cache directory keyed by its hash, so `hil check --model any.tflite` needs no manual step. The cache is under
hil.paths.BUILD: device_fw/build/models in a checkout, the user cache directory when hil is installed from a wheel
(whose package data holds the default model, hil.paths.DEFAULT_MODEL).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from hil import paths
from hil.errors import ModelError


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not name a model directory or a .tflite file."""


class StaleModelError(ModelError, RuntimeError):
    """The generated C source does not belong to the .tflite next to it."""


@dataclass(frozen=True)
class DeviceModel:
    name: str
    tflite_path: Path
    c_dir: Path  # directory holding hil_model.c
    sha256: str  # of the .tflite bytes; the firmware reports the same in INFO
    summary: dict  # model.json written by the compiler

    @property
    def tflite_bytes(self) -> bytes:
        return self.tflite_path.read_bytes()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_model(path: Path | str | None = None, cache_root: Path | None = None) -> DeviceModel:
    """Returns the model at `path` (default: the project's current device model), compiling a bare .tflite."""
    path = Path(path) if path is not None else paths.DEFAULT_MODEL
    if path.is_dir():
        return _from_dir(path)
    if path.is_file() and path.suffix == ".tflite":
        return _compile_cached(path, cache_root or paths.BUILD / "models")
    raise ModelNotFoundError(
        f"model '{path}' is neither a model directory (with model.tflite and hil_model.c) nor a .tflite file"
    )


def _from_dir(model_dir: Path) -> DeviceModel:
    tflite = model_dir / "model.tflite"
    c_file = model_dir / "hil_model.c"
    summary_file = model_dir / "model.json"
    missing = [p.name for p in (tflite, c_file, summary_file) if not p.is_file()]
    if missing:
        raise ModelNotFoundError(
            f"model directory '{model_dir}' lacks {', '.join(missing)}; "
            f"regenerate with: hil compile {tflite} --out {model_dir}"
        )
    summary = json.loads(summary_file.read_text())
    digest = sha256_file(tflite)
    if summary.get("sha256") != digest:
        raise StaleModelError(
            f"'{c_file}' was generated from another .tflite (model.json sha256 {summary.get('sha256')}, "
            f"model.tflite sha256 {digest}); regenerate with: hil compile {tflite} --out {model_dir}"
        )
    return DeviceModel(summary.get("name", model_dir.name), tflite, model_dir, digest, summary)


def _compile_cached(tflite: Path, cache_root: Path) -> DeviceModel:
    from hil.model.compiler import compile_tflite

    digest = sha256_file(tflite)
    out_dir = cache_root / digest[:16]
    if not (out_dir / "model.json").is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        # Keep the source next to the C so the cache directory is a complete model directory; model.json is
        # written last by the compiler, so its presence means the directory is complete.
        (out_dir / "model.tflite").write_bytes(tflite.read_bytes())
        compile_tflite(tflite, out_dir, name=tflite.stem)
    return _from_dir(out_dir)
