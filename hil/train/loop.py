"""The run-directory machinery shared by the AgileNN trainer (hil.train.trainer) and the baselines
(hil.train.baselines): resumable epochs, checkpoints, metrics, progress and the per-call hardware log.

A run directory holds config.json (a resume must not change what was trained), state.json (stage, epoch,
checkpoint, data provenance, plus what the trainer adds), ckpt/ (tf.train.CheckpointManager, the last 2 kept),
metrics.jsonl (one JSON object per epoch or stage), hardware.json (one entry per call: which machine and schedule
did which epochs) and, once finished, result.json. Every JSON file but metrics.jsonl is replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from hil.datasets import Dataset, TrainPipeline, load_dataset
from hil.errors import ModelError

# Config fields that may differ when resuming: they do not change what has been trained so far.
RESUME_SAFE_FIELDS = frozenset({"notes", "extra", "eval_every", "eval_batch_size", "ig_eval_samples"})


class RunDirError(ModelError, RuntimeError):
    """The run directory belongs to another configuration or data set."""


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def hardware_info() -> dict[str, Any]:
    """What ran this: enough to tell a 2-core CPU run from a GPU run in the artifacts."""
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "gpus": gpus,
        "accelerator": gpus[0] if gpus else "cpu",
    }


class Progress:
    """rich progress bar per epoch, or nothing (tests, logs)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    @contextmanager
    def epoch(self, title: str, total: int) -> Iterator[Callable[[dict[str, float]], None]]:
        if not self.enabled:
            yield lambda _metrics: None
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        )
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task(title, total=total, info="")

            def update(metrics: dict[str, float]) -> None:
                info = " ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                bar.update(task, advance=1, info=info)

            yield update


# ---------------------------------------------------------------------------------------------------------
# starting and finishing a call
# ---------------------------------------------------------------------------------------------------------


def check_config(run_dir: Path, config: Any) -> None:
    """Writes config.json, refusing a run directory that holds another configuration (RESUME_SAFE_FIELDS aside).

    config: a TrainConfig or BaselineConfig; the saved one is read with the same class."""
    path = run_dir / "config.json"
    if not path.is_file():
        config.to_json(path)
        return
    saved = type(config).from_json(path).to_dict()
    wanted = config.to_dict()
    differing = sorted(k for k in wanted if wanted[k] != saved.get(k) and k not in RESUME_SAFE_FIELDS)
    if differing:
        raise RunDirError(
            f"{run_dir} holds a run with another configuration (differs in: {', '.join(differing)}); "
            "use a new run directory"
        )
    config.to_json(path)


def prepare_run(run_dir: Path | str, config: Any, data: Dataset | None) -> tuple[Path, Dataset]:
    """Creates (or checks) the run directory and loads the data as the config limits it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_config(run_dir, config)
    dataset = (data or load_dataset(config.dataset)).limit(config.train_limit, config.test_limit)
    if dataset.num_classes > config.num_classes:
        raise ValueError(f"data has {dataset.num_classes} classes, config.num_classes is {config.num_classes}")
    return run_dir, dataset


class Sessions:
    """hardware.json: one entry per call of train(), this call's appended (and written) on creation."""

    def __init__(self, run_dir: Path, entry: dict[str, Any]) -> None:
        self.path = run_dir / "hardware.json"
        self.entries: list[dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else []
        self.current = {"started": now(), **entry, "hardware": hardware_info()}
        self.entries.append(self.current)
        write_json_atomic(self.path, self.entries)

    def finish(self) -> None:
        self.current["finished"] = now()
        write_json_atomic(self.path, self.entries)


def finished_fields(run_dir: Path, dataset: Dataset, started: float) -> dict[str, Any]:
    """The fields a finished run's result has in common (TrainResult, BaselineResult), from its files."""
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "complete": True,
        "state": json.loads((run_dir / "state.json").read_text()),
        "evaluation": result["evaluation"],
        "provenance": dataset.provenance,
        "seconds": time.perf_counter() - started,
        "artifacts": result["artifacts"],
    }


# ---------------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------------


class EpochRunner:
    """What both trainers' runners share: the training pipeline, the checkpoint with state.json pointing at it,
    metrics.jsonl, and the resumable epoch loop. Subclasses call `track(...)` with what to checkpoint."""

    ckpt: tf.train.Checkpoint
    manager: tf.train.CheckpointManager

    def __init__(self, config: Any, run_dir: Path, data: Dataset, progress: bool) -> None:
        self.cfg = config
        self.run_dir = run_dir
        self.data = data
        self.progress = Progress(progress)
        self.pipeline = TrainPipeline(
            data.x_train,
            data.y_train,
            config.batch_size,
            input_size=config.input_size,
            augment=config.augment,
            seed=config.seed,
            steps=config.steps_per_epoch,
        )
        self.metrics_path = run_dir / "metrics.jsonl"
        self.state_path = run_dir / "state.json"

    def track(self, **parts: Any) -> None:
        """Checkpoints `parts` (models, optimizers) under these names in ckpt/."""
        self.ckpt = tf.train.Checkpoint(**parts)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(self.run_dir / "ckpt"), max_to_keep=2)

    # --- state ---
    def fresh_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self) -> dict[str, Any] | None:
        if not self.state_path.is_file():
            return None
        state = json.loads(self.state_path.read_text())
        if state.get("provenance") != self.data.provenance:
            raise RunDirError(
                f"{self.run_dir} was trained on '{state.get('provenance')}', not on '{self.data.provenance}'"
            )
        if state.get("checkpoint"):
            self.ckpt.restore(str(self.run_dir / state["checkpoint"])).assert_existing_objects_matched()
        return state

    def start(self) -> tuple[dict[str, Any], str | None]:
        """(state, resumed_from): the restored state, or a fresh one when the run directory has none."""
        state = self.restore()
        if state is None:
            return self.fresh_state(), None
        return state, f"{state['stage']} epoch {state['epoch']}"

    def save(self, state: dict[str, Any]) -> None:
        # Checkpoint first, then the state that points at it: a crash in between only loses this epoch.
        # Stored relative to the run directory so a run directory can be moved or copied.
        state["checkpoint"] = os.path.relpath(self.manager.save(), self.run_dir)
        state["updated"] = now()
        write_json_atomic(self.state_path, state)

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    # --- training ---
    def train_epoch(self, step: Callable, batches: Iterable, opt: Any, title: str) -> dict[str, Any]:
        """`step` over every batch (it returns "loss", "acc" and any other means); the epoch's metrics fields."""
        sums: dict[str, float] = {}
        started = time.perf_counter()
        steps = 0
        first_step = 0.0
        lr = float(opt.learning_rate)
        with self.progress.epoch(title, self.pipeline.steps_per_epoch) as update:
            for x, y in batches:
                out = {name: float(v) for name, v in step(x, y).items()}
                steps += 1
                if steps == 1:
                    # The first step of a call includes tracing (seconds for the double-backprop graph).
                    first_step = time.perf_counter() - started
                for name, value in out.items():
                    sums[name] = sums.get(name, 0.0) + value
                update({name: sums[name] / steps for name in ("loss", "acc")})
        train_seconds = time.perf_counter() - started
        record: dict[str, Any] = {
            "steps": steps,
            "lr_start": lr,
            "lr_end": float(opt.learning_rate),
            "train_seconds": round(train_seconds, 3),
            "first_step_seconds": round(first_step, 3),
            # Steady state, without the first (tracing) step: what to extrapolate a schedule from.
            "sec_per_step": round((train_seconds - first_step) / max(steps - 1, 1), 4),
        }
        return record | {f"train_{name}": value / max(steps, 1) for name, value in sums.items()}

    def train_epochs(
        self,
        state: dict[str, Any],
        budget: list[int],
        *,
        epochs: int,
        step: Callable,
        opt: Any,
        title: str,
        head: dict[str, Any],
        batches: Callable[[int], Iterable],
        test: Callable[[], dict[str, Any]],
        tail: Callable[[], dict[str, Any]] | None = None,
    ) -> bool:
        """Trains from state['epoch'] to `epochs`, logging and checkpointing every epoch; False when this call's
        epoch budget (budget[0], -1 = unlimited) ran out first.

        title: the progress bar's prefix. head: the first fields of every record. batches: epoch -> its
        training batches. test: the test-set metrics, every eval_every epochs and after the last one. tail:
        fields added after them."""
        while state["epoch"] < epochs:
            if budget[0] == 0:
                return False
            epoch = state["epoch"]
            ds = batches(epoch)
            record = {**head, "epoch": epoch + 1, "epochs": epochs}
            record |= self.train_epoch(step, ds, opt, f"{title} {epoch + 1}/{epochs}")
            if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == epochs:
                eval_started = time.perf_counter()
                record |= test()
                record["eval_seconds"] = round(time.perf_counter() - eval_started, 3)
            if tail is not None:
                record |= tail()
            record["time"] = now()
            self.log(record)
            state["epoch"] = epoch + 1
            self.save(state)
            budget[0] -= 1
        return True

    def finish(self, sessions: Sessions, evaluation: dict[str, Any], artifacts: dict[str, str], **head: Any) -> None:
        """The final stage's records: metrics.jsonl's last line, the session's end and result.json (`head`
        first)."""
        self.log({"stage": "final", **evaluation, "time": now()})
        sessions.finish()
        result = {
            **head,
            "evaluation": evaluation,
            "provenance": self.data.provenance,
            "config": self.cfg.to_dict(),
            "sessions": sessions.entries,
            "artifacts": artifacts,
        }
        write_json_atomic(self.run_dir / "result.json", result)
