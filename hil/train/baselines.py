"""The comparison baselines of AgileNN, trained with the same data pipeline, optimizer and schedule conventions.

All four share one backbone: the AgileNN extractor (`extractor`, ReLU6 features in [0, 6]) followed by
AgileNN's Remote NN (`remote_kind`: MobileNetV2 stages or the CPU recipe's plain convolutions; `hil baseline
train --from-agilenn RUN` takes both from an AgileNN run). Only where the network is cut and what crosses the
link differ, so accuracy differences come from the split and the compression, not from model capacity:

- full_local (MCUNet-style): the whole backbone int8 on the device; nothing is sent (payload 0).
- edge_only: the device only compresses the raw image losslessly; the server runs the whole backbone in float.
  The payload is the compressed image, measured at export (hil.export.baselines), not a design number.
- partition (SPINN-style): the extractor on the device, its int8 output (H x W x C x 8 bits) sent, the Remote
  NN on the server. Training fake-quantizes the split tensor to 8 bits on [0, 6], what the device sends.
- encoder (DeepCOD-style): the extractor is a learned encoder whose output is quantized by a learned
  soft-to-hard quantizer (`centroids`, 3 bits per value by default) and decoded by the server's Remote NN,
  trained end to end (straight-through). Payload H x W x C x bits.

Run directory (hil.train.loop, as hil.train.trainer with one stage): config.json, state.json, ckpt/,
metrics.jsonl (one record per epoch), hardware.json (one entry per call), then front.keras, back.keras,
device.keras, server.keras, baseline.json and result.json. `train_baseline(...)` resumes from the last finished epoch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hil.datasets import Dataset, eval_pipeline
from hil.train.baseline_config import CPU_EPOCHS, FORMAT, GPU_EPOCHS, KINDS, SPLIT_BITS, BaselineConfig
from hil.train.config import ConfigError
from hil.train.layers import (
    FEATURE_MAX,
    SoftToHardQuantizer,
    build_extractor,
    build_remote_for,
    count_params,
    float32_twin,
)
from hil.train.loop import EpochRunner, Sessions, finished_fields, now, prepare_run
from hil.train.trainer import _correct, make_optimizer, smoothed_ce

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
        back = build_remote_for(config, fs, c)
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
        cfg = self.config
        # float32 files whatever the training precision (remote_dtype): the converter and the server get those
        saved = replace(self, back=float32_twin(cfg, self.back, cfg.feature_size, cfg.feature_channels))
        saved.front.save(out["front"])
        saved.back.save(out["back"])
        device, server = saved.device_model(), saved.server_model()
        if device is not None:
            out["device"] = run_dir / "device.keras"
            device.save(out["device"])
        if server is not None:
            out["server"] = run_dir / "server.keras"
            server.save(out["server"])
        out["metadata"] = run_dir / "baseline.json"
        out["metadata"].write_text(json.dumps(saved.metadata(), indent=2) + "\n")
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
    artifacts: dict[str, str] = field(default_factory=dict)  # part -> file name in the run directory


class _BaselineRunner(EpochRunner):
    cfg: BaselineConfig

    def __init__(self, config: BaselineConfig, run_dir: Path, model: BaselineModel, data: Dataset, progress: bool):
        super().__init__(config, run_dir, data, progress)
        self.m = model
        # make_optimizer reads only lr, momentum, weight_decay and warmup_epochs, which BaselineConfig shares
        # with TrainConfig: the same SGD Nesterov + warmup/cosine + decoupled decay (not on BN, biases, centroids).
        self.opt = make_optimizer(config, self.pipeline.steps_per_epoch, config.epochs)  # type: ignore[arg-type]
        self.variables = model.trainable_variables()
        self.opt.build(self.variables)
        parts: dict[str, Any] = {"front": model.front, "back": model.back, "opt": self.opt}
        if model.quantizer is not None:
            parts["quantizer"] = model.quantizer
        self.track(**parts)
        self._step = self._make_step()
        self._eval = self._make_eval()

    def fresh_state(self) -> dict[str, Any]:
        return {
            "kind": self.cfg.kind,
            "stage": "train",
            "epoch": 0,
            "checkpoint": None,
            "provenance": self.data.provenance,
            "updated": now(),
        }

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
        return self.train_epochs(
            state,
            budget,
            epochs=cfg.epochs,
            step=self._step,
            opt=self.opt,
            title=cfg.kind,
            head={"stage": "train", "kind": cfg.kind},
            batches=self.pipeline.epoch,
            test=lambda: {"test_acc": self.test_accuracy()[0]},
        )


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
    run_dir, dataset = prepare_run(run_dir, config, data)

    model = BaselineModel.build(config)
    runner = _BaselineRunner(config, run_dir, model, dataset, progress)
    state, resumed_from = runner.start()
    if state["stage"] == "done":
        return _finished(run_dir, config, dataset, call_started)

    spe = runner.pipeline.steps_per_epoch
    schedule = {"epochs": config.epochs, "batch_size": config.batch_size, "steps_per_epoch": spe}
    session = {"preset": config.preset, "kind": kind, "schedule": schedule, "resumed_from": resumed_from}
    sessions = Sessions(run_dir, session)

    budget = [stop_after_epochs if stop_after_epochs is not None else -1]
    if state["stage"] == "train" and not runner.run_epochs(state, budget):
        return BaselineResult(
            run_dir, config, model, False, state, None, dataset.provenance, time.perf_counter() - call_started
        )
    # final: the float test accuracy as trained, the deployable parts, result.json.
    top1, n = runner.test_accuracy()
    evaluation = {"samples": n, "top1_float": top1, "payload_bits": config.payload_bits}
    artifacts = {name: p.name for name, p in model.save(run_dir).items()}  # in the run directory
    runner.finish(sessions, evaluation, artifacts, kind=kind)
    state["stage"], state["epoch"] = "done", config.epochs
    runner.save(state)
    return _finished(run_dir, config, dataset, call_started, model)


def _finished(
    run_dir: Path, config: BaselineConfig, dataset: Dataset, started: float, model: BaselineModel | None = None
) -> BaselineResult:
    return BaselineResult(
        run_dir=run_dir,
        config=config,
        model=model or load_baseline(run_dir),
        **finished_fields(run_dir, dataset, started),
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
