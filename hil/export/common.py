"""What the exporters (hil.export.agilenn, hil.export.baselines) share: the finished run directory, the output
directory check, the quiet int8 conversion, the per-tensor int8 I/O, batch-1 TFLM evaluation, versions, and
writing the card last. No TensorFlow at import time (conversion and TFLM are imported when called).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from hil import paths
from hil.agilenn.quant import Quant
from hil.errors import ModelError
from hil.export.cards import UNHASHED, load_card, sha256_file

if TYPE_CHECKING:
    import keras

    from hil.model.compiler import CompiledModel
    from hil.model.tflite_reader import Tensor


class ExportError(ModelError, ValueError):
    """The run directory cannot be exported as asked (unfinished run, other data, unexpected conversion)."""


# ---------------------------------------------------------------------------------------------------------
# the run directory and the output directory
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinishedRun:
    """What a trainer (hil.train.loop) left in a finished run directory; subclasses add `read`."""

    run_dir: Path
    config: Any  # TrainConfig, BaselineConfig
    meta: dict[str, Any]  # the trainer's metadata file: agilenn.json, baseline.json
    result: dict[str, Any]  # result.json: evaluation, provenance, sessions, artifacts
    sessions: list[dict[str, Any]]  # hardware.json
    metrics: list[dict[str, Any]]  # metrics.jsonl

    @classmethod
    def read_files(cls, run_dir: Path, config_class: Any, meta_file: str, what: str, train_command: str) -> Self:
        """Reads run_dir's files (config.json with `config_class`); ExportError naming the `what` and the
        `train_command` that finishes it when any is missing."""
        run_dir = Path(run_dir)
        needed = ("config.json", meta_file, "result.json", "hardware.json", "metrics.jsonl")
        missing = [f for f in needed if not (run_dir / f).is_file()]
        if missing:
            raise ExportError(
                f"{run_dir} is not a finished {what} (lacks {', '.join(missing)}); "
                f"finish it with: {train_command} --run-dir {run_dir}"
            )
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return cls(
            run_dir=run_dir,
            config=config_class.from_json(run_dir / "config.json"),
            meta=json.loads((run_dir / meta_file).read_text()),
            result=json.loads((run_dir / "result.json").read_text()),
            sessions=json.loads((run_dir / "hardware.json").read_text()),
            metrics=[json.loads(line) for line in lines if line.strip()],
        )

    @property
    def provenance(self) -> str:
        return str(self.result["provenance"])

    def summary(self, epochs: Any, compute: float, **extra: Any) -> dict[str, Any]:
        """The card's training summary: `epochs`, the logged `compute` seconds, `extra`, sessions and machines."""
        times = [dt.datetime.fromisoformat(r["time"]) for r in self.metrics if "time" in r]
        starts = [dt.datetime.fromisoformat(s["started"]) for s in self.sessions if "started" in s]
        wall = (max(times) - min(starts)).total_seconds() if times and starts else None
        machines = []
        for session in self.sessions:
            hw = session.get("hardware", {})
            text = (
                f"{hw.get('cpu_model') or 'unknown CPU'} ({hw.get('cpu_usable')} of {hw.get('cpu_count')} CPUs "
                f"usable), accelerator: {hw.get('accelerator', 'unknown')}, TensorFlow {hw.get('tensorflow')}, "
                f"Keras {hw.get('keras')}"
            )
            if text not in machines:
                machines.append(text)
        last = self.sessions[-1] if self.sessions else {}
        return {
            "preset": last.get("preset", self.config.preset),
            "schedule": last.get("schedule", {}),
            "epochs": epochs,
            "sessions": len(self.sessions),
            # The logged epoch, evaluation (and pre-processing) times: the training compute itself.
            "compute_seconds": round(compute, 1),
            # First start to the last log line; includes start-up, the final evaluation and any pauses between
            # resumed sessions.
            "wall_seconds": None if wall is None else round(wall, 1),
            **extra,
            "hardware": machines,
        }


def display_path(path: Path) -> str:
    """Relative to the project root when inside it: cards are committed and must not carry machine paths."""
    return paths.display(path, outside="name")


def check_out_dir(out_dir: Path, export_files: Iterable[str], what: str = "an export") -> None:
    """Refuses to mix an export with foreign files: the card must account for every file in the directory."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    known = set(export_files)
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in known and not p.name.startswith("."))
    if foreign:
        raise ExportError(
            f"{out_dir} holds files that are not part of {what} ({', '.join(foreign)}); "
            "remove them or export into another directory"
        )


# ---------------------------------------------------------------------------------------------------------
# conversion and evaluation
# ---------------------------------------------------------------------------------------------------------


def convert_int8(wrapper: keras.Model, calibration: np.ndarray, activations: str = "int8") -> bytes:
    """hil.model.synthetic.convert_keras_int8 of `wrapper` with `calibration` (float32 model inputs, one
    representative sample each), quietly; activations "int16" gives TFLite's 16x8 scheme."""
    from hil.model.synthetic import convert_keras_int8

    def representative() -> Iterator[list[np.ndarray]]:
        for img in calibration:
            yield [img[None].astype(np.float32)]

    # The Keras export prints every captured variable to stdout; keep the command's output readable. The
    # converter also warns that the int8 input has no given statistics: the representative images are them.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return convert_keras_int8(wrapper, representative, activations)


def int8_quants(tensors: Iterable[Tensor]) -> list[Quant]:
    """The per-tensor int8 quantization of each tensor; ExportError for anything else (not full-integer)."""
    tensors = list(tensors)
    for t in tensors:
        if t.dtype != "int8" or t.quant is None or t.quant.per_channel:
            raise ExportError(f"tensor '{t.name}' is {t.dtype}, not per-tensor int8: not a full-integer model")
    return [Quant(float(t.quant.scale), int(t.quant.zero_point)) for t in tensors]


def tflm_outputs(tflite: bytes, batches: Iterable[np.ndarray], count: int) -> tuple[list[np.ndarray], float]:
    """`count` int8 (16x8: int16) inputs (in `batches`) through TFLite Micro one at a time (batch 1, as on the
    device); returns (every output of every input, in the model's output types; interpreter seconds)."""
    from hil.model.reference import TflmReference

    ref = TflmReference(tflite)
    outputs = [np.empty((count, *spec.shape[1:]), spec.dtype) for spec in ref.outputs]
    seconds = 0.0
    n = 0
    for q in batches:
        started = time.perf_counter()
        for x in q:
            for out, value in zip(outputs, ref.run([x[None]]), strict=True):
                out[n] = value[0]
            n += 1
        seconds += time.perf_counter() - started
    return outputs, seconds


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (NaN without samples)."""
    return float(np.mean(np.argmax(logits, axis=-1) == y)) if len(y) else float("nan")


def op_counts(compiled: CompiledModel) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in compiled.ops:
        counts[op.op] = counts.get(op.op, 0) + 1
    return counts


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tf_version() -> str | None:
    return version("tensorflow-cpu") or version("tensorflow")


def tflm_runtime(images_per_s: float) -> str:
    """The card's int8_runtime."""
    return (
        f"TensorFlow Lite Micro {version('tflite-micro')} (hil.model.reference.TflmReference, reference "
        f"kernels), batch 1, {images_per_s:.0f} images/s on the exporting machine"
    )


def pct(value: float) -> str:
    return f"{100 * value:.2f}%"


# ---------------------------------------------------------------------------------------------------------
# the card
# ---------------------------------------------------------------------------------------------------------


class Laps:
    """Wall-clock seconds of the export's steps, for the card's export.seconds."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[key] = round(now - since, 2)
        return now


def card_head(name: str, kind: str, export_format: str, run: FinishedRun) -> dict[str, Any]:
    """The card's first keys: what it is and where it comes from."""
    return {
        "name": name,
        "kind": kind,
        "format": export_format,
        "dataset": run.provenance,
        "dataset_spec": run.config.dataset,
        "source_run": display_path(run.run_dir),
    }


def exported_at() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_card(out_dir: Path, card: dict[str, Any], readme: str, export_files: Iterable[str], laps: Laps) -> dict:
    """README.md, then the sha256 of every exported file and the timings into the card, then card.json last:
    its presence marks a complete export. Returns the card as load_card re-reads and checks it."""
    (out_dir / "README.md").write_text(readme)
    card["artifacts"] = {
        f: sha256_file(out_dir / f) for f in export_files if f not in UNHASHED and (out_dir / f).is_file()
    }
    laps.lap("total", laps.started)
    card["export"]["seconds"] = laps.seconds
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return load_card(out_dir)


def byte_exact_accuracy(exact_test: np.ndarray | None, device_pred: np.ndarray, float_pred: np.ndarray,
                        labels: np.ndarray) -> dict[str, Any] | None:
    """The combined accuracy on the evaluated test images that are byte-exact CIFAR-10 (Dataset.exact_test):
    the figure to compare the committed 500-image subset with, since that subset is drawn from them and the
    JPEG re-encoded rest is a few points harder. None when the data set marks no such images."""
    from hil.stats import wilson_interval

    if exact_test is None:
        return None
    mask = np.asarray(exact_test[: len(labels)], bool)
    n = int(mask.sum())
    if n == 0:
        return None
    correct = int(np.sum(device_pred[mask] == labels[mask]))
    return {
        "samples": n,
        "combined_int8": correct / n,
        "combined_int8_ci95": list(wilson_interval(correct, n)),
        "combined_float": float(np.mean(float_pred[mask] == labels[mask])),
        "what": "the test images the data set marks byte-exact (exact_test), from which the committed "
        "500-image subset is drawn",
    }

