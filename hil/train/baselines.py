"""The comparison baselines of AgileNN, trained with the same data pipeline, optimizer and schedule conventions.

All four share one backbone: the AgileNN extractor (`extractor`, stride 4, ReLU6 features in [0, 6]) followed
by AgileNN's Remote NN (MobileNetV2 stages, `remote_*`). Only where the network is cut and what crosses the
link differ, so accuracy differences come from the split and the compression, not from model capacity:

- full_local (MCUNet-style): the whole backbone int8 on the device; nothing is sent (payload 0).
- edge_only: the device only compresses the raw image losslessly; the server runs the whole backbone in float.
  The payload is the compressed image, measured at export (hil.export.baselines), not a design number.
- partition (SPINN-style): the extractor on the device, its int8 output (H x W x C x 8 bits) sent, the Remote
  NN on the server. Training fake-quantizes the split tensor to 8 bits on [0, 6], what the device sends.
- encoder (DeepCOD-style): the extractor is a learned encoder whose output is quantized by a learned
  soft-to-hard quantizer (`centroids`, 3 bits per value by default) and decoded by the server's Remote NN,
  trained end to end (straight-through). Payload H x W x C x bits.

Run directory (as hil.train.trainer, one stage): config.json, state.json, ckpt/, metrics.jsonl (one record per
epoch), hardware.json (one entry per call), then front.keras, back.keras, device.keras, server.keras,
baseline.json and result.json. `train_baseline(...)` resumes from the last finished epoch.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hil.train.baseline_config import CPU_EPOCHS, FORMAT, GPU_EPOCHS, KINDS, SPLIT_BITS, BaselineConfig
from hil.train.config import ConfigError
from hil.train.data import Dataset, TrainPipeline, eval_pipeline, load_dataset
from hil.train.layers import FEATURE_MAX, SoftToHardQuantizer, build_extractor, build_remote, count_params
from hil.train.trainer import (
    RESUME_SAFE_FIELDS,
    RunDirError,
    _correct,
    _now,
    _Progress,
    _write_json_atomic,
    hardware_info,
    make_optimizer,
    smoothed_ce,
)

# ---------------------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------------------


def fake_quant_split(features: tf.Tensor) -> tf.Tensor:
    """The partition's int8 split tensor in float: 256 levels on the ReLU6 range, straight-through gradient.

    The converter calibrates the real scale from data (about 6/255 once any feature saturates); this only
    teaches the Remote NN to live with 8-bit inputs, the server always gets the device's actual dequantized
    values.
    """
    return tf.quantization.fake_quant_with_min_max_args(features, min=0.0, max=FEATURE_MAX, num_bits=SPLIT_BITS)


@dataclass
class BaselineModel:
    config: BaselineConfig
    front: keras.Model  # image -> split tensor (ReLU6 features)
    back: keras.Model  # split tensor -> logits
    quantizer: SoftToHardQuantizer | None = None  # encoder only

    @classmethod
    def build(cls, config: BaselineConfig) -> BaselineModel:
        keras.utils.set_random_seed(config.seed)
        front = build_extractor(config.input_size, config.extractor, name="front")
        fs, c = config.feature_size, config.feature_channels
        if front.output_shape[1:] != (fs, fs, c):
            raise ValueError(f"extractor output {front.output_shape[1:]} != expected {(fs, fs, c)}")
        back = build_remote(
            fs, c, config.num_classes, config.remote_width, config.remote_blocks, config.remote_stem, config.remote_head
        )
        quantizer = None
        if config.kind == "encoder":
            quantizer = SoftToHardQuantizer(config.centroids, config.quant_sigma, config.quant_ste, name="quantizer")
            quantizer.build((None, fs, fs, c))
        return cls(config, front, back, quantizer)

    def trainable_variables(self) -> list[tf.Variable]:
        parts: list[Any] = [self.front, self.back] + ([self.quantizer] if self.quantizer is not None else [])
        return [v for part in parts for v in part.trainable_variables]

    def transmit(self, features: tf.Tensor, training: bool = False) -> tf.Tensor:
        """What the server gets from the split tensor (identity where nothing is cut)."""
        if self.config.kind == "partition":
            return fake_quant_split(features)
        if self.quantizer is not None:
            return self.quantizer(features, training=training)
        return features

    def forward(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        features = self.front(images, training=training)
        return self.back(self.transmit(features, training=training), training=training)

    def centroid_values(self) -> list[float]:
        return [] if self.quantizer is None else [float(v) for v in self.quantizer.centroids().numpy()]

    # --- the deployed parts ---
    def device_model(self) -> keras.Model | None:
        """What runs int8 on the device: image -> logits (full_local) or image -> split tensor."""
        cfg = self.config
        if cfg.kind == "edge_only":
            return None
        if cfg.kind == "full_local":
            image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
            return keras.Model(image, self.back(self.front(image)), name="full_local_device")
        return self.front

    def server_model(self) -> keras.Model | None:
        """What runs float on the server: image -> logits (edge_only) or dequantized split tensor -> logits.

        The encoder's server applies the hard quantizer first: idempotent on centroid values, and it maps the
        device's dequantized int8 features to the same codes as the device's 256-entry lookup table would.
        """
        cfg = self.config
        if cfg.kind == "full_local":
            return None
        if cfg.kind == "edge_only":
            image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
            return keras.Model(image, self.back(self.front(image)), name="edge_only_server")
        if cfg.kind == "partition":
            return self.back
        assert self.quantizer is not None
        features = keras.Input(cfg.split_shape, name="features")
        return keras.Model(features, self.back(self.quantizer(features, training=False)), name="encoder_server")

    def metadata(self) -> dict[str, Any]:
        """baseline.json: what the exporter, the server and the model card need."""
        cfg = self.config
        device, server = self.device_model(), self.server_model()
        return {
            "format": FORMAT,
            "kind": cfg.kind,
            "input": {
                "size": [cfg.input_size, cfg.input_size, 3],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "meaning": "RGB uint8 / 255 (int8 input: scale 1/255, zero_point -128 gives uint8 - 128)",
            },
            "split_shape": list(cfg.split_shape) if cfg.kind in ("partition", "encoder") else None,
            "split_range": [0.0, FEATURE_MAX],
            "bits_per_value": cfg.bits_per_value if cfg.kind in ("partition", "encoder") else None,
            "centroids": self.centroid_values(),
            "centroid_logits": (
                [] if self.quantizer is None else [float(v) for v in self.quantizer.centroid_logits.numpy()]
            ),
            "payload_bits": cfg.payload_bits,
            "params": {
                "front": count_params(self.front),
                "back": count_params(self.back),
                "device": 0 if device is None else count_params(device),
                "server": 0 if server is None else count_params(server),
            },
            "config": cfg.to_dict(),
        }

    def save(self, run_dir: Path | str) -> dict[str, Path]:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        out = {"front": run_dir / "front.keras", "back": run_dir / "back.keras"}
        self.front.save(out["front"])
        self.back.save(out["back"])
        device, server = self.device_model(), self.server_model()
        if device is not None:
            out["device"] = run_dir / "device.keras"
            device.save(out["device"])
        if server is not None:
            out["server"] = run_dir / "server.keras"
            server.save(out["server"])
        out["metadata"] = run_dir / "baseline.json"
        out["metadata"].write_text(json.dumps(self.metadata(), indent=2) + "\n")
        return out


def load_baseline(run_dir: Path | str) -> BaselineModel:
    """The inverse of BaselineModel.save (from front.keras, back.keras and baseline.json)."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "baseline.json").read_text())
    config = BaselineConfig.from_dict(meta["config"])
    quantizer = None
    if config.kind == "encoder":
        quantizer = SoftToHardQuantizer(config.centroids, config.quant_sigma, config.quant_ste, name="quantizer")
        quantizer.build((None, *config.split_shape))
        quantizer.centroid_logits.assign(np.asarray(meta["centroid_logits"], dtype="float32"))
    return BaselineModel(
        config=config,
        front=keras.models.load_model(run_dir / "front.keras"),
        back=keras.models.load_model(run_dir / "back.keras"),
        quantizer=quantizer,
    )


# ---------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class BaselineResult:
    run_dir: Path
    config: BaselineConfig
    model: BaselineModel
    complete: bool  # False when stop_after_epochs ended the call first
    state: dict[str, Any]
    evaluation: dict[str, Any] | None  # {"samples", "top1_float"} once complete
    provenance: str
    seconds: float  # wall time of this call
    artifacts: dict[str, str] = field(default_factory=dict)


class _BaselineRunner:
    def __init__(self, config: BaselineConfig, run_dir: Path, model: BaselineModel, data: Dataset, progress: bool):
        self.cfg = config
        self.run_dir = run_dir
        self.m = model
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
        # make_optimizer reads only lr, momentum, weight_decay and warmup_epochs, which BaselineConfig shares
        # with TrainConfig: the same SGD Nesterov + warmup/cosine + decoupled decay (not on BN, biases, centroids).
        self.opt = make_optimizer(config, self.pipeline.steps_per_epoch, config.epochs)  # type: ignore[arg-type]
        self.variables = model.trainable_variables()
        self.opt.build(self.variables)
        parts: dict[str, Any] = {"front": model.front, "back": model.back, "opt": self.opt}
        if model.quantizer is not None:
            parts["quantizer"] = model.quantizer
        self.ckpt = tf.train.Checkpoint(**parts)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(run_dir / "ckpt"), max_to_keep=2)
        self.metrics_path = run_dir / "metrics.jsonl"
        self.state_path = run_dir / "state.json"
        self._step = self._make_step()
        self._eval = self._make_eval()

    def fresh_state(self) -> dict[str, Any]:
        return {
            "kind": self.cfg.kind,
            "stage": "train",
            "epoch": 0,
            "checkpoint": None,
            "provenance": self.data.provenance,
            "updated": _now(),
        }

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

    def save(self, state: dict[str, Any]) -> None:
        # Checkpoint first, then the state that points at it (relative, so the run directory can move).
        state["checkpoint"] = os.path.relpath(self.manager.save(), self.run_dir)
        state["updated"] = _now()
        _write_json_atomic(self.state_path, state)

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _make_step(self) -> Callable:
        m, cfg, opt, variables = self.m, self.cfg, self.opt, self.variables

        @tf.function(jit_compile=cfg.jit_compile)
        def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape() as tape:
                logits = m.forward(x, training=True)
                loss = smoothed_ce(y, logits, cfg.label_smoothing)
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return {"loss": loss, "acc": tf.reduce_mean(_correct(y, logits))}

        return step

    def _make_eval(self) -> Callable:
        m = self.m

        @tf.function(reduce_retracing=True)
        def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            return tf.reduce_sum(_correct(y, m.forward(x, training=False)))

        return step

    def test_accuracy(self) -> tuple[float, int]:
        correct, n = 0.0, 0
        for x, y in eval_pipeline(
            self.data.x_test, self.data.y_test, self.cfg.eval_batch_size, input_size=self.cfg.input_size
        ):
            correct += float(self._eval(x, y))
            n += int(x.shape[0])
        return correct / max(n, 1), n

    def run_epochs(self, state: dict[str, Any], budget: list[int]) -> bool:
        """Trains from state['epoch']; False when this call's epoch budget ran out first."""
        cfg = self.cfg
        while state["epoch"] < cfg.epochs:
            if budget[0] == 0:
                return False
            epoch = state["epoch"]
            sums: dict[str, float] = {}
            started = time.perf_counter()
            steps, first_step = 0, 0.0
            lr = float(self.opt.learning_rate)
            with self.progress.epoch(f"{cfg.kind} {epoch + 1}/{cfg.epochs}", self.pipeline.steps_per_epoch) as update:
                for x, y in self.pipeline.epoch(epoch):
                    out = {name: float(v) for name, v in self._step(x, y).items()}
                    steps += 1
                    if steps == 1:
                        first_step = time.perf_counter() - started  # includes tracing
                    for name, value in out.items():
                        sums[name] = sums.get(name, 0.0) + value
                    update({name: sums[name] / steps for name in ("loss", "acc")})
            train_seconds = time.perf_counter() - started
            record: dict[str, Any] = {
                "stage": "train",
                "kind": cfg.kind,
                "epoch": epoch + 1,
                "epochs": cfg.epochs,
                "steps": steps,
                "lr_start": lr,
                "lr_end": float(self.opt.learning_rate),
                "train_seconds": round(train_seconds, 3),
                "first_step_seconds": round(first_step, 3),
                "sec_per_step": round((train_seconds - first_step) / max(steps - 1, 1), 4),
            }
            record |= {f"train_{name}": value / max(steps, 1) for name, value in sums.items()}
            if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                eval_started = time.perf_counter()
                record["test_acc"], _ = self.test_accuracy()
                record["eval_seconds"] = round(time.perf_counter() - eval_started, 3)
            record["time"] = _now()
            self.log(record)
            state["epoch"] = epoch + 1
            self.save(state)
            budget[0] -= 1
        return True


def _check_config(run_dir: Path, config: BaselineConfig) -> None:
    path = run_dir / "config.json"
    if not path.is_file():
        config.to_json(path)
        return
    saved = BaselineConfig.from_json(path).to_dict()
    wanted = config.to_dict()
    differing = sorted(k for k in wanted if wanted[k] != saved.get(k) and k not in RESUME_SAFE_FIELDS)
    if differing:
        raise RunDirError(
            f"{run_dir} holds a run with another configuration (differs in: {', '.join(differing)}); "
            "use a new run directory"
        )
    config.to_json(path)


def train_baseline(
    kind: str,
    config: BaselineConfig | None,
    run_dir: Path | str,
    *,
    progress: bool = True,
    data: Dataset | None = None,
    stop_after_epochs: int | None = None,
) -> BaselineResult:
    """Trains (or resumes) the `kind` baseline in `run_dir`; config None = BaselineConfig.auto(kind).

    data: an already loaded Dataset (default: load_dataset(config.dataset)). stop_after_epochs: at most this
    many epochs in this call (time-sliced runs); call again with the same run_dir to resume.
    """
    call_started = time.perf_counter()
    config = config if config is not None else BaselineConfig.auto(kind)
    if config.kind != kind:
        raise ConfigError(f"config.kind is {config.kind!r}, asked to train {kind!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_config(run_dir, config)
    dataset = (data or load_dataset(config.dataset)).limit(config.train_limit, config.test_limit)
    if dataset.num_classes > config.num_classes:
        raise ValueError(f"data has {dataset.num_classes} classes, config.num_classes is {config.num_classes}")

    model = BaselineModel.build(config)
    runner = _BaselineRunner(config, run_dir, model, dataset, progress)
    state = runner.restore()
    resumed_from = None if state is None else f"{state['stage']} epoch {state['epoch']}"
    if state is None:
        state = runner.fresh_state()
    elif state["stage"] == "done":
        return _finished(run_dir, config, dataset, call_started)

    sessions_path = run_dir / "hardware.json"
    sessions = json.loads(sessions_path.read_text()) if sessions_path.is_file() else []
    session = {
        "started": _now(),
        "preset": config.preset,
        "kind": kind,
        "schedule": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "steps_per_epoch": runner.pipeline.steps_per_epoch,
        },
        "resumed_from": resumed_from,
        "hardware": hardware_info(),
    }
    sessions.append(session)
    _write_json_atomic(sessions_path, sessions)

    budget = [stop_after_epochs if stop_after_epochs is not None else -1]
    if state["stage"] == "train" and not runner.run_epochs(state, budget):
        return BaselineResult(
            run_dir, config, model, False, state, None, dataset.provenance, time.perf_counter() - call_started
        )
    # final: the float test accuracy as trained, the deployable parts, result.json.
    top1, n = runner.test_accuracy()
    evaluation = {"samples": n, "top1_float": top1, "payload_bits": config.payload_bits}
    artifacts = {name: str(p) for name, p in model.save(run_dir).items()}
    runner.log({"stage": "final", **evaluation, "time": _now()})
    session["finished"] = _now()
    _write_json_atomic(sessions_path, sessions)
    result = {
        "kind": kind,
        "evaluation": evaluation,
        "provenance": dataset.provenance,
        "config": config.to_dict(),
        "sessions": sessions,
        "artifacts": artifacts,
    }
    _write_json_atomic(run_dir / "result.json", result)
    state["stage"], state["epoch"] = "done", config.epochs
    runner.save(state)
    return _finished(run_dir, config, dataset, call_started, model)


def _finished(
    run_dir: Path, config: BaselineConfig, dataset: Dataset, started: float, model: BaselineModel | None = None
) -> BaselineResult:
    result = json.loads((run_dir / "result.json").read_text())
    return BaselineResult(
        run_dir=run_dir,
        config=config,
        model=model or load_baseline(run_dir),
        complete=True,
        state=json.loads((run_dir / "state.json").read_text()),
        evaluation=result["evaluation"],
        provenance=dataset.provenance,
        seconds=time.perf_counter() - started,
        artifacts=result["artifacts"],
    )


__all__ = [
    "CPU_EPOCHS",
    "GPU_EPOCHS",
    "KINDS",
    "BaselineConfig",
    "BaselineModel",
    "BaselineResult",
    "fake_quant_split",
    "load_baseline",
    "train_baseline",
]
