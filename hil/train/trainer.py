"""The AgileNN training stages, resumable from the run directory.

Stages, in order:
1. reference: extractor + reference NN trained together with cross-entropy; afterwards the reference is
   frozen (the pretrained EfficientNet of the paper cannot be downloaded here, so it is trained on the
   extractor's own features, and the extractor starts the joint stage already useful).
2. preprocess (optional): IG over training images, the channels most often in a sample's top-k are moved to
   the front by permuting the extractor's last conv + BN and the reference's first conv (function unchanged).
3. joint: extractor, Local NN, quantizer, Remote NN and alpha with
   L = lam * CE(combined) + (1 - lam) * (L_skewness + L_disorder), importance by IG inside the loss.
4. final: evaluation (>= 20-step IG skewness), .keras files, agilenn.json, result.json.

Run directory: config.json, state.json (stage, epoch, permutation, checkpoint), ckpt/ (tf.train.Checkpoint of
every model and both optimizers after each epoch), metrics.jsonl (one JSON object per epoch), hardware.json
(one entry per call of train(): which machine and schedule did which epochs), then the artifacts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hil.train.config import TrainConfig
from hil.train.data import Dataset, TrainPipeline, eval_pipeline, load_dataset
from hil.train.importance import (
    disorder_loss,
    integrated_gradients,
    skewness,
    skewness_loss,
    topk_frequency,
)
from hil.train.layers import TrainedAgileNN, load_trained, permute_extractor_outputs, permute_reference_inputs

STAGES = ("reference", "preprocess", "joint", "final", "done")
# Config fields that may differ when resuming: they do not change what has been trained so far.
RESUME_SAFE_FIELDS = frozenset({"notes", "extra", "eval_every", "eval_batch_size", "ig_eval_samples"})
NO_DECAY = ["gamma", "beta", "bias", "centroid_logits", "alpha_w"]
SKEW_MONITOR_IMAGES = 1000  # test images for the cheap per-epoch 2-point skewness


class RunDirError(RuntimeError):
    """The run directory belongs to another configuration or data set."""


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    trained: TrainedAgileNN
    complete: bool  # False when stop_after_epochs ended the call before the final stage
    state: dict[str, Any]
    evaluation: dict[str, Any] | None  # evaluate(...).to_dict() once complete
    provenance: str
    seconds: float  # wall time of this call
    artifacts: dict[str, str] = field(default_factory=dict)


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak`, then cosine decay to 0 at `total_steps` (one schedule per stage)."""

    def __init__(self, peak: float, warmup_steps: int, total_steps: int) -> None:
        self.peak = float(peak)
        self.warmup_steps = max(0, int(warmup_steps))
        self.total_steps = max(1, int(total_steps))

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        warm = self.peak * (step + 1.0) / float(max(1, self.warmup_steps))
        span = float(max(1, self.total_steps - self.warmup_steps))
        progress = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        cosine = 0.5 * self.peak * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < self.warmup_steps, warm, cosine)

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def make_optimizer(config: TrainConfig, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    schedule = WarmupCosine(config.lr, round(config.warmup_epochs * steps_per_epoch), max(1, epochs * steps_per_epoch))
    opt = keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def smoothed_ce(labels: tf.Tensor, logits: tf.Tensor, smoothing: float) -> tf.Tensor:
    """Mean cross-entropy against label-smoothed one-hot targets."""
    n = tf.shape(logits)[-1]
    target = tf.one_hot(labels, n) * (1.0 - smoothing) + smoothing / tf.cast(n, tf.float32)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(target, logits))


def _correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)


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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


class _Progress:
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


class _Runner:
    def __init__(
        self, config: TrainConfig, run_dir: Path, trained: TrainedAgileNN, data: Dataset, progress: bool
    ) -> None:
        self.cfg = config
        self.run_dir = run_dir
        self.t = trained
        self.data = data
        self.progress = _Progress(progress)
        self.pipeline = TrainPipeline(
            data.x_train,
            data.y_train,
            config.batch_size,
            input_size=config.input_size,
            augment=config.augment,
            seed=config.seed,
            steps=config.steps_per_epoch,
        )
        spe = self.pipeline.steps_per_epoch
        self.ref_opt = make_optimizer(config, spe, config.ref_epochs)
        self.joint_opt = make_optimizer(config, spe, config.joint_epochs)
        # Built now so that checkpoints always hold (and restore into) the same variables.
        self.ref_vars = trained.extractor.trainable_variables + trained.reference.trainable_variables
        self.joint_vars = trained.joint_variables()
        self.ref_opt.build(self.ref_vars)
        self.joint_opt.build(self.joint_vars)
        self.ckpt = tf.train.Checkpoint(
            extractor=trained.extractor,
            reference=trained.reference,
            local=trained.local,
            remote=trained.remote,
            quantizer=trained.quantizer,
            alpha=trained.alpha,
            ref_opt=self.ref_opt,
            joint_opt=self.joint_opt,
        )
        self.manager = tf.train.CheckpointManager(self.ckpt, str(run_dir / "ckpt"), max_to_keep=2)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.state_path = run_dir / "state.json"
        self._ref_step = self._make_ref_step()
        self._joint_step = self._make_joint_step()
        self._eval_step = self._make_eval_step()

    # --- state ---
    def fresh_state(self) -> dict[str, Any]:
        first = "reference" if self.cfg.ref_epochs > 0 else self._after("reference")
        return {
            "stage": first,
            "epoch": 0,
            "permutation": list(range(self.cfg.feature_channels)),
            "checkpoint": None,
            "provenance": self.data.provenance,
            "updated": _now(),
        }

    def _after(self, stage: str) -> str:
        nxt = STAGES[STAGES.index(stage) + 1]
        if nxt == "preprocess" and not self.cfg.channel_preprocess:
            return self._after(nxt)
        if nxt == "joint" and self.cfg.joint_epochs == 0:
            return self._after(nxt)
        return nxt

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
        self.t.permutation = list(state["permutation"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        # Checkpoint first, then the state that points at it: a crash in between only loses this epoch.
        # Stored relative to the run directory so a run directory can be moved or copied.
        state["checkpoint"] = os.path.relpath(self.manager.save(), self.run_dir)
        state["updated"] = _now()
        _write_json_atomic(self.state_path, state)

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    # --- compiled steps ---
    def _make_ref_step(self) -> Callable:
        t, cfg, opt, variables = self.t, self.cfg, self.ref_opt, self.ref_vars

        @tf.function(jit_compile=cfg.jit_compile)
        def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = t.reference(t.extractor(x, training=True), training=True)
                loss = smoothed_ce(y, logits, cfg.label_smoothing)
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return {"loss": loss, "acc": tf.reduce_mean(_correct(y, logits))}

        return step

    def _make_joint_step(self) -> Callable:
        t, cfg, opt, variables = self.t, self.cfg, self.joint_opt, self.joint_vars
        k = cfg.k

        @tf.function(jit_compile=cfg.jit_compile)
        def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                features = t.extractor(x, training=True)
                # Differentiable IG: the importance losses reach the extractor through a second-order
                # gradient of the frozen reference (its BN in inference mode, its weights not updated).
                importance = integrated_gradients(t.reference, features, y, cfg.ig_train_steps, cfg.ig_train_rule)
                mask = None
                if cfg.ig_train_correct_only:
                    mask = _correct(y, t.reference(features, training=False))
                l_skew = skewness_loss(importance, k, cfg.rho, mask)
                l_dis = disorder_loss(importance, k, mask)
                out = t.heads(features, training=True)
                ce = smoothed_ce(y, out["combined"], cfg.label_smoothing)
                loss = cfg.lam * ce + (1.0 - cfg.lam) * (l_skew + l_dis)
                if cfg.aux_weight > 0:
                    aux = smoothed_ce(y, out["local"], cfg.label_smoothing)
                    aux += smoothed_ce(y, out["remote"], cfg.label_smoothing)
                    loss += cfg.aux_weight * aux
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return {
                "loss": loss,
                "ce": ce,
                "skew_loss": l_skew,
                "disorder_loss": l_dis,
                "skewness": tf.reduce_mean(skewness(importance, k)),
                "acc": tf.reduce_mean(_correct(y, out["combined"])),
            }

        return step

    def _make_eval_step(self) -> Callable:
        t, k = self.t, self.cfg.k

        @tf.function(reduce_retracing=True)
        def step(x: tf.Tensor, y: tf.Tensor, with_skew: bool) -> dict[str, tf.Tensor]:
            out = t.forward(x, training=False)
            result = {
                "reference": tf.reduce_sum(_correct(y, t.reference(out["features"], training=False))),
                "local": tf.reduce_sum(_correct(y, out["local"])),
                "remote": tf.reduce_sum(_correct(y, out["remote"])),
                "combined": tf.reduce_sum(_correct(y, out["combined"])),
            }
            if with_skew:  # a Python bool: two traces, no tf.cond over different dict keys
                imp = integrated_gradients(t.reference, out["features"], y, 2, "trapezoid")
                result["skewness_2pt"] = tf.reduce_sum(skewness(imp, k))
            return result

        return step

    # --- stages ---
    def test_metrics(self, joint: bool) -> dict[str, float]:
        sums: dict[str, float] = {}
        seen = 0
        ds = eval_pipeline(self.data.x_test, self.data.y_test, self.cfg.eval_batch_size, input_size=self.cfg.input_size)
        for x, y in ds:
            with_skew = joint and seen < SKEW_MONITOR_IMAGES
            out = self._eval_step(x, y, with_skew)
            for name, value in out.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            skew_n = sums.get("_skew_n", 0.0) + (int(x.shape[0]) if with_skew else 0)
            sums["_skew_n"] = skew_n
            seen += int(x.shape[0])
        n = max(seen, 1)
        result = {"test_ref_acc": sums["reference"] / n}
        if joint:
            result |= {
                "test_local_acc": sums["local"] / n,
                "test_remote_acc": sums["remote"] / n,
                "test_combined_acc": sums["combined"] / n,
                "test_skewness_2pt": sums.get("skewness_2pt", 0.0) / max(sums["_skew_n"], 1.0),
            }
        return result

    def run_epochs(self, stage: str, state: dict[str, Any], budget: list[int]) -> bool:
        """Trains `stage` from state['epoch']; returns False when the epoch budget of this call ran out."""
        epochs = self.cfg.ref_epochs if stage == "reference" else self.cfg.joint_epochs
        step = self._ref_step if stage == "reference" else self._joint_step
        opt = self.ref_opt if stage == "reference" else self.joint_opt
        while state["epoch"] < epochs:
            if budget[0] == 0:
                return False
            epoch = state["epoch"]
            # Distinct data order per stage and epoch, reproducible on resume.
            ds = self.pipeline.epoch(epoch + (10_000 if stage == "joint" else 0))
            sums: dict[str, float] = {}
            started = time.perf_counter()
            steps = 0
            first_step = 0.0
            lr = float(opt.learning_rate)
            with self.progress.epoch(f"{stage} {epoch + 1}/{epochs}", self.pipeline.steps_per_epoch) as update:
                for x, y in ds:
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
                "stage": stage,
                "epoch": epoch + 1,
                "epochs": epochs,
                "steps": steps,
                "lr_start": lr,
                "lr_end": float(opt.learning_rate),
                "train_seconds": round(train_seconds, 3),
                "first_step_seconds": round(first_step, 3),
                # Steady state, without the first (tracing) step: what to extrapolate a schedule from.
                "sec_per_step": round((train_seconds - first_step) / max(steps - 1, 1), 4),
            }
            record |= {f"train_{name}": value / max(steps, 1) for name, value in sums.items()}
            if (epoch + 1) % self.cfg.eval_every == 0 or epoch + 1 == epochs:
                eval_started = time.perf_counter()
                record |= self.test_metrics(joint=stage == "joint")
                record["eval_seconds"] = round(time.perf_counter() - eval_started, 3)
            if stage == "joint":
                record["alpha"] = self.t.alpha_value()
            record["time"] = _now()
            self.log(record)
            state["epoch"] = epoch + 1
            self.save(state)
            budget[0] -= 1
        return True

    def preprocess(self, state: dict[str, Any]) -> None:
        """Channel pre-processing: sort channels by how often IG puts them in a sample's top-k."""
        cfg, t = self.cfg, self.t
        n = min(cfg.preprocess_samples, len(self.data.x_train))
        freq = np.zeros(cfg.feature_channels)
        mean_imp = np.zeros(cfg.feature_channels)
        ds = eval_pipeline(self.data.x_train[:n], self.data.y_train[:n], cfg.eval_batch_size, input_size=cfg.input_size)

        @tf.function(reduce_retracing=True)
        def importance(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            features = t.extractor(x, training=False)
            return integrated_gradients(t.reference, features, y, cfg.preprocess_ig_steps, cfg.preprocess_ig_rule)

        started = time.perf_counter()
        with self.progress.epoch("preprocess", -(-n // cfg.eval_batch_size)) as update:
            for x, y in ds:
                imp = importance(x, y)
                freq += topk_frequency(imp, cfg.k).numpy()
                mean_imp += tf.reduce_sum(imp, axis=0).numpy()
                update({})
        # Most frequent first; ties broken by total importance. Stable, so equal channels keep their order.
        perm = sorted(range(cfg.feature_channels), key=lambda c: (-freq[c], -mean_imp[c], c))
        permute_extractor_outputs(t.extractor, perm)
        permute_reference_inputs(t.reference, perm)
        state["permutation"] = [state["permutation"][p] for p in perm]
        t.permutation = list(state["permutation"])
        self.log(
            {
                "stage": "preprocess",
                "samples": n,
                "ig_steps": cfg.preprocess_ig_steps,
                "topk_frequency": (freq / max(n, 1)).round(4).tolist(),
                "permutation": perm,
                "topk_share_before": float(np.sort(freq)[::-1][: cfg.k].sum() / max(freq.sum(), 1)),
                "seconds": round(time.perf_counter() - started, 3),
                "time": _now(),
            }
        )


def _check_config(run_dir: Path, config: TrainConfig) -> None:
    path = run_dir / "config.json"
    if not path.is_file():
        config.to_json(path)
        return
    saved = TrainConfig.from_json(path).to_dict()
    wanted = config.to_dict()
    differing = sorted(k for k in wanted if wanted[k] != saved.get(k) and k not in RESUME_SAFE_FIELDS)
    if differing:
        raise RunDirError(
            f"{run_dir} holds a run with another configuration (differs in: {', '.join(differing)}); "
            "use a new run directory"
        )
    config.to_json(path)


def train(
    config: TrainConfig,
    run_dir: Path | str,
    *,
    progress: bool = True,
    data: Dataset | None = None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Runs (or resumes) every stage of `config` in `run_dir`.

    data: an already loaded Dataset (default: load_dataset(config.dataset)).
    stop_after_epochs: train at most this many epochs in this call, then return with complete=False (time-
    sliced runs; a later call with the same run_dir resumes from the last finished epoch).
    """
    from hil.train.evaluate import evaluate

    call_started = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    dataset = (data or load_dataset(config.dataset)).limit(config.train_limit, config.test_limit)
    if dataset.num_classes > config.num_classes:
        raise ValueError(f"data has {dataset.num_classes} classes, config.num_classes is {config.num_classes}")

    trained = TrainedAgileNN.build(config)
    runner = _Runner(config, run_dir, trained, dataset, progress)
    state = runner.restore()
    resumed_from = None if state is None else f"{state['stage']} epoch {state['epoch']}"
    if state is None:
        state = runner.fresh_state()
    elif state["stage"] == "done":
        return _finished_result(run_dir, config, dataset, call_started)

    sessions_path = run_dir / "hardware.json"
    sessions = json.loads(sessions_path.read_text()) if sessions_path.is_file() else []
    session = {
        "started": _now(),
        "preset": config.preset,
        "schedule": {
            "ref_epochs": config.ref_epochs,
            "joint_epochs": config.joint_epochs,
            "batch_size": config.batch_size,
            "steps_per_epoch": runner.pipeline.steps_per_epoch,
            "ig_train": f"{config.ig_train_steps} {config.ig_train_rule}",
        },
        "resumed_from": resumed_from,
        "hardware": hardware_info(),
    }
    sessions.append(session)
    _write_json_atomic(sessions_path, sessions)

    budget = [stop_after_epochs if stop_after_epochs is not None else -1]
    complete = False
    while True:
        stage = state["stage"]
        if stage in ("reference", "joint"):
            if not runner.run_epochs(stage, state, budget):
                break
        elif stage == "preprocess":
            runner.preprocess(state)
        elif stage == "final":
            evaluation = evaluate(trained, dataset.x_test, dataset.y_test)
            artifacts = {name: str(p) for name, p in trained.save(run_dir).items()}
            runner.log({"stage": "final", **evaluation.to_dict(), "time": _now()})
            session["finished"] = _now()
            _write_json_atomic(sessions_path, sessions)
            result = {
                "evaluation": evaluation.to_dict(),
                "provenance": dataset.provenance,
                "config": config.to_dict(),
                "sessions": sessions,
                "artifacts": artifacts,
            }
            _write_json_atomic(run_dir / "result.json", result)
            complete = True
        else:
            raise RunDirError(f"unknown stage {stage!r} in {runner.state_path}")
        state["stage"] = "done" if stage == "final" else runner._after(stage)
        state["epoch"] = 0
        runner.save(state)
        if complete:
            break

    if complete:
        return _finished_result(run_dir, config, dataset, call_started, trained)
    return TrainResult(
        run_dir=run_dir,
        config=config,
        trained=trained,
        complete=False,
        state=state,
        evaluation=None,
        provenance=dataset.provenance,
        seconds=time.perf_counter() - call_started,
    )


def _finished_result(
    run_dir: Path,
    config: TrainConfig,
    dataset: Dataset,
    started: float,
    trained: TrainedAgileNN | None = None,
) -> TrainResult:
    result = json.loads((run_dir / "result.json").read_text())
    return TrainResult(
        run_dir=run_dir,
        config=config,
        trained=trained or load_trained(run_dir),
        complete=True,
        state=json.loads((run_dir / "state.json").read_text()),
        evaluation=result["evaluation"],
        provenance=dataset.provenance,
        seconds=time.perf_counter() - started,
        artifacts=result["artifacts"],
    )
