"""Model cards: `card.json` in every model directory under models/, read by tools and tests.

A card must name every file of its directory with its sha256 (`artifacts`), so a model directory can be
checked against what was exported (and against what was committed). Only `card.json` itself and the
human-readable `README.md` are exempt. No TensorFlow here.

Required keys (all kinds): name, kind, dataset, artifacts, device {weights_bytes, arena_bytes, macs}.
Trained kinds add: accuracy (fractions), skewness, payload_bits; AgileNN needs accuracy.combined_int8 and a
numeric skewness, a baseline accuracy.top1_int8 or accuracy.top1. `synthetic` is the random-weights stand-in
(no accuracy: its outputs mean nothing).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import ModelError

TRAINED_KINDS = ("agilenn", "full_local", "edge_only", "partition", "encoder")
KINDS = (*TRAINED_KINDS, "synthetic")
BASE_KEYS = ("name", "kind", "dataset", "artifacts", "device")
TRAINED_KEYS = ("accuracy", "skewness", "payload_bits")
DEVICE_KEYS = ("weights_bytes", "arena_bytes", "macs")
UNHASHED = frozenset({"card.json", "README.md"})  # the card cannot hash itself; the README is prose


class CardError(ModelError, ValueError):
    """A card.json is missing, malformed, incomplete, or does not match the files next to it."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_fraction(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def _check_keys(card: dict[str, Any], where: str) -> None:
    missing = [k for k in BASE_KEYS if k not in card]
    kind = card.get("kind")
    if kind not in KINDS:
        raise CardError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if kind in TRAINED_KINDS:
        missing += [k for k in TRAINED_KEYS if k not in card]
    if missing:
        raise CardError(f"{where}: missing keys {', '.join(missing)}")
    if not isinstance(card["artifacts"], dict) or not card["artifacts"]:
        raise CardError(f"{where}: 'artifacts' must map file names to sha256")
    device = card["device"]
    if not isinstance(device, dict):
        raise CardError(f"{where}: 'device' must be an object with {', '.join(DEVICE_KEYS)}")
    bad = [k for k in DEVICE_KEYS if not isinstance(device.get(k), int) or device[k] < 0]
    if bad:
        raise CardError(f"{where}: device.{', device.'.join(bad)} must be non-negative integers")
    if kind not in TRAINED_KINDS:
        return
    accuracy = card["accuracy"]
    if not isinstance(accuracy, dict):
        raise CardError(f"{where}: 'accuracy' must be an object of fractions")
    needed = ("combined_int8",) if kind == "agilenn" else ("top1_int8", "top1")
    if not any(k in accuracy for k in needed):
        raise CardError(f"{where}: accuracy needs {' or '.join(needed)} for kind {kind}")
    for key in ("combined_int8", "combined_float", "local_only", "remote_only", "top1_int8", "top1"):
        if key in accuracy and not _is_fraction(accuracy[key]):
            raise CardError(f"{where}: accuracy.{key} = {accuracy[key]!r} is not a fraction in [0, 1]")
    if kind == "agilenn" and not _is_fraction(card["skewness"]):
        raise CardError(f"{where}: skewness = {card['skewness']!r} is not a fraction in [0, 1]")
    bits = card["payload_bits"]
    if bits is not None and (not isinstance(bits, int) or bits < 0):
        raise CardError(f"{where}: payload_bits = {bits!r} is not a non-negative integer")


def _files_under(model_dir: Path) -> set[str]:
    """Every regular file below model_dir as a POSIX relative path; caches and hidden files are not artifacts."""
    found = set()
    for path in model_dir.rglob("*"):
        rel = path.relative_to(model_dir)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.is_file():
            found.add(rel.as_posix())
    return found


def check_artifacts(model_dir: Path, artifacts: dict[str, str]) -> None:
    """Every listed file exists with the listed sha256, and no other file hides in the directory."""
    model_dir = Path(model_dir)
    problems = []
    for rel, want in sorted(artifacts.items()):
        path = model_dir / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems.append(f"{rel}: artifact names must be relative paths inside the directory")
        elif not path.is_file():
            problems.append(f"{rel}: listed in card.json but missing")
        elif (got := sha256_file(path)) != want:
            problems.append(f"{rel}: sha256 {got} != card.json {want}")
    unlisted = sorted(_files_under(model_dir) - set(artifacts) - UNHASHED)
    problems += [f"{rel}: present but not listed in card.json artifacts" for rel in unlisted]
    if problems:
        raise CardError(f"{model_dir}: " + "; ".join(problems))


def load_card(model_dir: Path | str) -> dict[str, Any]:
    """Reads model_dir/card.json, validates its keys and every artifact's sha256; returns the card."""
    model_dir = Path(model_dir)
    path = model_dir / "card.json"
    if not path.is_file():
        raise CardError(f"{path} does not exist")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CardError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise CardError(f"{path} must hold a JSON object")
    _check_keys(card, str(path))
    check_artifacts(model_dir, card["artifacts"])
    _check_generated_c(model_dir, card["artifacts"])
    return card


def _check_generated_c(model_dir: Path, artifacts: dict[str, str]) -> None:
    """hil_model.c must come from the model.tflite next to it (the compiler records that in model.json): a
    card can list consistent hashes of a stale C file if someone recompiled one side only."""
    if "model.tflite" not in artifacts or "model.json" not in artifacts:
        return
    summary = json.loads((model_dir / "model.json").read_text())
    if summary.get("sha256") != artifacts["model.tflite"]:
        raise CardError(
            f"{model_dir}: model.json (and hil_model.c) were generated from another .tflite "
            f"(sha256 {summary.get('sha256')}, model.tflite {artifacts['model.tflite']})"
        )


@dataclass(frozen=True)
class CardSummary:
    """One line of `hil models`: a model directory and its headline numbers, or what is wrong with its card."""

    directory: str
    name: str | None = None
    kind: str | None = None
    accuracy: float | None = None  # combined_int8 (AgileNN), top1_int8 or top1 (baselines); None: synthetic
    accuracy_key: str | None = None  # which of those: top1 is a float model (edge_only: no device network)
    payload_bits: int | None = None
    weights_bytes: int | None = None
    arena_bytes: int | None = None
    macs: int | None = None
    activations: str = "int8"  # the device part's activation type: int8, or int16 (16x8 re-export)
    problem: str | None = None  # the CardError, when the card does not check out

    @property
    def ok(self) -> bool:
        return self.problem is None


def summarize(model_dir: Path | str) -> CardSummary:
    """Loads and checks model_dir's card (load_card); a failing card becomes a summary with `problem`."""
    model_dir = Path(model_dir)
    try:
        card = load_card(model_dir)
    except CardError as exc:
        return CardSummary(model_dir.name, problem=str(exc))
    accuracy = card.get("accuracy") or {}
    key = next((k for k in ("combined_int8", "top1_int8", "top1") if k in accuracy), None)
    device = card["device"]
    return CardSummary(
        directory=model_dir.name,
        name=card["name"],
        kind=card["kind"],
        accuracy=None if key is None else accuracy[key],
        accuracy_key=key,
        payload_bits=card.get("payload_bits"),
        weights_bytes=device["weights_bytes"],
        arena_bytes=device["arena_bytes"],
        macs=device["macs"],
        activations=str(device.get("activations", "int8")),
    )


def scan_models(root: Path | str) -> list[CardSummary]:
    """Every directory under root that has a card.json, checked, in name order."""
    root = Path(root)
    if not root.is_dir():
        raise CardError(f"{root} is not a directory")
    return [summarize(d) for d in sorted(root.iterdir()) if d.is_dir() and (d / "card.json").is_file()]


__all__ = [
    "KINDS",
    "TRAINED_KINDS",
    "CardError",
    "CardSummary",
    "check_artifacts",
    "load_card",
    "scan_models",
    "sha256_file",
    "summarize",
]
