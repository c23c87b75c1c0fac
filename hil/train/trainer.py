"""The AgileNN training stages, resumable from the run directory.

Stages, in order:
1. reference: extractor + reference NN trained together with cross-entropy; afterwards the reference is
   frozen (the pretrained EfficientNet of the paper cannot be downloaded here, so it is trained on the
   extractor's own features, and the extractor starts the joint stage already useful).
2. preprocess (optional): IG over training images, the channels most often in a sample's top-k are moved to
   the front by permuting the extractor's last conv + BN and the reference's first conv (function unchanged).
3. joint: extractor, Local NN, quantizer, Remote NN and alpha with
   L = lam * CE(combined) + (1 - lam) * (L_skewness + L_disorder), importance by IG inside the loss (lam per
   joint epoch: config.lam_at).
4. final: evaluation (>= 20-step IG skewness), .keras files, agilenn.json, result.json.

Run directory (hil.train.loop): config.json, state.json (stage, epoch, permutation, checkpoint), ckpt/
(tf.train.Checkpoint of every model and both optimizers after each epoch), metrics.jsonl (one JSON object per
epoch), hardware.json (one entry per call of train(): which machine and schedule did which epochs), then the
artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hil.datasets import Dataset, eval_pipeline
from hil.stats import hist_entropy_bits
from hil.train.config import TrainConfig
from hil.train.importance import (
    disorder_loss,
    integrated_gradients,
    skewness,
    skewness_loss,
    topk_frequency,
)
from hil.train.layers import TrainedAgileNN, load_trained, permute_extractor_outputs, permute_reference_inputs
from hil.train.loop import EpochRunner, RunDirError, Sessions, finished_fields, now, prepare_run
from hil.train.refit import refit_reference
from hil.train.schedule import WarmupCosine, smoothed_ce

STAGES = ("reference", "preprocess", "joint", "final", "done")
NO_DECAY = ["gamma", "beta", "bias", "centroid_logits", "alpha_w"]
SKEW_MONITOR_IMAGES = 1000  # test images for the per-epoch skewness monitor
# Per-epoch skewness monitor: 4-point midpoint IG. On a trained CPU run it matched 20-point IG (0.665 both)
# where the authors' 2-point trapezoid read 0.772, so a 2-point monitor would flatter the run.
MONITOR_IG_STEPS, MONITOR_IG_RULE = 4, "midpoint"


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
    artifacts: dict[str, str] = field(default_factory=dict)  # part -> file name in the run directory


def make_optimizer(config: TrainConfig, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    schedule = WarmupCosine(config.lr, round(config.warmup_epochs * steps_per_epoch), max(1, epochs * steps_per_epoch))
    opt = keras.optimizers.SGD(
        learning_rate=schedule, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


def symmetric_kl(logits_a: tf.Tensor, logits_b: tf.Tensor) -> tf.Tensor:
    """Mean over the batch of (KL(p_a || p_b) + KL(p_b || p_a)) / 2 of the softmax distributions."""
    la, lb = tf.nn.log_softmax(logits_a), tf.nn.log_softmax(logits_b)
    return 0.5 * tf.reduce_mean(tf.reduce_sum((tf.exp(la) - tf.exp(lb)) * (la - lb), -1))


def _correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32)


class _Runner(EpochRunner):
    cfg: TrainConfig

    def __init__(
        self, config: TrainConfig, run_dir: Path, trained: TrainedAgileNN, data: Dataset, progress: bool
    ) -> None:
        super().__init__(config, run_dir, data, progress)
        self.t = trained
        spe = self.pipeline.steps_per_epoch
        # A co-trained reference keeps learning through the joint stage, on that stage's schedule.
        ref_epochs = config.joint_epochs if config.reference_cotrain else config.ref_epochs
        self.ref_opt = make_optimizer(config, spe, ref_epochs)
        self.joint_opt = make_optimizer(config, spe, config.joint_epochs)
        # Built now so that checkpoints always hold (and restore into) the same variables.
        self.ref_vars = trained.extractor.trainable_variables + trained.reference.trainable_variables
        self.joint_vars = trained.joint_variables()
        self.ref_opt.build(self.ref_vars)
        self.joint_opt.build(self.joint_vars)
        self.track(
            extractor=trained.extractor,
            reference=trained.reference,
            local=trained.local,
            remote=trained.remote,
            quantizer=trained.quantizer,
            alpha=trained.alpha,
            ref_opt=self.ref_opt,
            joint_opt=self.joint_opt,
        )
        # Set at the start of every joint epoch from config.lam_at (not checkpointed: the config decides).
        self.lam = tf.Variable(config.lam, trainable=False, dtype=tf.float32, name="lam")
        self.rate_weight = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="rate_weight")
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
            "updated": now(),
        }

    def _after(self, stage: str) -> str:
        nxt = STAGES[STAGES.index(stage) + 1]
        if nxt == "preprocess" and not self.cfg.channel_preprocess:
            return self._after(nxt)
        if nxt == "joint" and self.cfg.joint_epochs == 0:
            return self._after(nxt)
        return nxt

    def restore(self) -> dict[str, Any] | None:
        state = super().restore()
        if state is not None:
            self.t.permutation = list(state["permutation"])
        return state

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
        t, cfg, opt, variables, lam = self.t, self.cfg, self.joint_opt, self.joint_vars, self.lam
        rate_weight = self.rate_weight
        ref_opt, ref_vars = self.ref_opt, self.t.reference.trainable_variables
        k = cfg.k
        n_ig = cfg.ig_train_images

        @tf.function(jit_compile=cfg.jit_compile)
        def step(x: tf.Tensor, y: tf.Tensor) -> dict[str, tf.Tensor]:
            with tf.GradientTape(persistent=cfg.reference_cotrain) as tape:
                features = t.extractor(x, training=True)
                ref_loss = tf.constant(0.0)
                if cfg.reference_cotrain:
                    # The reference's own loss, on features it cannot change: it learns to classify them,
                    # and only the importance losses below reach the extractor through it.
                    ref_logits = t.reference(tf.stop_gradient(features), training=True)
                    ref_loss = smoothed_ce(y, ref_logits, cfg.label_smoothing)
                # Differentiable IG: the importance losses reach the extractor through a second-order
                # gradient of the reference (its BN in inference mode, its weights not updated by them).
                ig_x, ig_y = (features[:n_ig], y[:n_ig]) if n_ig > 0 else (features, y)
                importance = integrated_gradients(t.reference, ig_x, ig_y, cfg.ig_train_steps, cfg.ig_train_rule)
                mask = None
                if cfg.ig_train_correct_only:
                    mask = _correct(ig_y, t.reference(ig_x, training=False))
                l_skew = skewness_loss(importance, k, cfg.rho, mask)
                l_dis = disorder_loss(importance, k, mask)
                if cfg.code_noise > 0:
                    out, noisy_combined = t.heads_with_code_noise(features, cfg.code_noise)
                    ce_clean = smoothed_ce(y, out["combined"], cfg.label_smoothing)
                    ce = 0.5 * (ce_clean + smoothed_ce(y, noisy_combined, cfg.label_smoothing))
                    noise_kl = symmetric_kl(out["combined"], noisy_combined)
                else:
                    out = t.heads(features, training=True)
                    ce = smoothed_ce(y, out["combined"], cfg.label_smoothing)
                    noise_kl = tf.constant(0.0)
                loss = lam * ce + (1.0 - lam) * (l_skew + l_dis)
                aux = tf.constant(0.0)
                if cfg.aux_weight > 0:
                    aux = smoothed_ce(y, out["local"], cfg.label_smoothing)
                    aux += smoothed_ce(y, out["remote"], cfg.label_smoothing)
                    loss += cfg.aux_weight * aux
                margin = tf.constant(0.0)
                if cfg.margin_weight > 0:
                    margin = t.quantizer.margin_loss(features[..., k:], cfg.margin_delta)
                    loss += cfg.margin_weight * margin
                rate, rate_loss = tf.constant(0.0), tf.constant(0.0)
                if cfg.rate_weight > 0:
                    rate = t.quantizer.code_entropy_bits(features[..., k:], cfg.rate_sigma)
                    rate_loss = tf.nn.relu(rate - cfg.rate_target_bits)
                    if cfg.rate_floor_bits > 0:
                        rate_loss += tf.nn.relu(cfg.rate_floor_bits - rate)
                    loss += rate_weight * rate_loss
                loss += cfg.code_noise_consistency * noise_kl
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            ref_acc = tf.constant(0.0)
            if cfg.reference_cotrain:
                ref_opt.apply_gradients(zip(tape.gradient(ref_loss, ref_vars), ref_vars, strict=True))
                ref_acc = tf.reduce_mean(_correct(y, ref_logits))
            return {
                "loss": loss,
                "ce": ce,
                "aux_loss": aux,
                "ref_loss": ref_loss,
                "ref_acc": ref_acc,
                "code_noise_kl": noise_kl,
                "skew_loss": l_skew,
                "disorder_loss": l_dis,
                "margin_loss": margin,
                "rate_bits": rate,
                "rate_loss": rate_loss,
                "skewness": tf.reduce_mean(skewness(importance, k)),
                "acc": tf.reduce_mean(_correct(y, out["combined"])),
                "local_acc": tf.reduce_mean(_correct(y, out["local"])),
            }

        return step

    def _make_eval_step(self) -> Callable:
        t, k, n_codes = self.t, self.cfg.k, self.cfg.centroids

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
                imp = integrated_gradients(t.reference, out["features"], y, MONITOR_IG_STEPS, MONITOR_IG_RULE)
                result["skewness_ig4"] = tf.reduce_sum(skewness(imp, k))
            # How often each code is sent: a collapse of the remote channels to a few codes shows here first.
            codes = tf.reshape(t.quantizer.indices(out["features"][..., k:]), [-1])
            result["code_counts"] = tf.math.bincount(codes, minlength=n_codes, maxlength=n_codes, dtype=tf.float32)
            return result

        return step

    # --- stages ---
    def test_metrics(self, joint: bool) -> dict[str, float]:
        sums: dict[str, float] = {}
        counts = np.zeros(self.cfg.centroids)
        seen = 0
        ds = eval_pipeline(self.data.x_test, self.data.y_test, self.cfg.eval_batch_size, input_size=self.cfg.input_size)
        for x, y in ds:
            with_skew = joint and seen < SKEW_MONITOR_IMAGES
            out = self._eval_step(x, y, with_skew)
            counts = counts + out.pop("code_counts").numpy()
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
                "test_skewness_ig4": sums.get("skewness_ig4", 0.0) / max(sums["_skew_n"], 1.0),
                "test_code_entropy_bits": hist_entropy_bits(counts),
            }
        return result

    def run_epochs(self, stage: str, state: dict[str, Any], budget: list[int]) -> bool:
        """Trains `stage` from state['epoch']; returns False when the epoch budget of this call ran out."""
        reference = stage == "reference"
        return self.train_epochs(
            state,
            budget,
            epochs=self.cfg.ref_epochs if reference else self.cfg.joint_epochs,
            step=self._ref_step if reference else self._joint_step,
            opt=self.ref_opt if reference else self.joint_opt,
            title=stage,
            head={"stage": stage},
            batches=self.pipeline.epoch if reference else self._joint_batches,
            test=lambda: self.test_metrics(joint=stage == "joint"),
            tail=None if reference else lambda: {
                "alpha": self.t.alpha_value(),
                "lam": float(self.lam.numpy()),
                "rate_weight": float(self.rate_weight.numpy()),
                "centroids": [round(c, 4) for c in self.t.centroid_values()],
            },
        )

    def _joint_batches(self, epoch: int) -> Any:
        """Joint epoch `epoch` (0-based): its lam, and its data in an order distinct from the reference stage's
        (reproducible on resume)."""
        self.lam.assign(self.cfg.lam_at(epoch + 1))
        self.rate_weight.assign(self.cfg.rate_weight if epoch + 1 >= self.cfg.rate_from_epoch else 0.0)
        return self.pipeline.epoch(epoch + 10_000)

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
                "time": now(),
            }
        )


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
    run_dir, dataset = prepare_run(run_dir, config, data)

    trained = TrainedAgileNN.build(config)
    runner = _Runner(config, run_dir, trained, dataset, progress)
    state, resumed_from = runner.start()
    if state["stage"] == "done":
        return _finished_result(run_dir, config, dataset, call_started)

    schedule = {
        "ref_epochs": config.ref_epochs,
        "joint_epochs": config.joint_epochs,
        "batch_size": config.batch_size,
        "steps_per_epoch": runner.pipeline.steps_per_epoch,
        "ig_train": f"{config.ig_train_steps} {config.ig_train_rule}",
    }
    sessions = Sessions(run_dir, {"preset": config.preset, "schedule": schedule, "resumed_from": resumed_from})

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
            head = {}
            if config.reference_refit_epochs > 0:
                head["reference_refit"] = refit_reference(trained, dataset, config.reference_refit_epochs)
            evaluation = evaluate(trained, dataset.x_test, dataset.y_test)
            artifacts = {name: p.name for name, p in trained.save(run_dir).items()}  # in the run directory
            runner.finish(sessions, evaluation.to_dict(), artifacts, **head)
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
    return TrainResult(
        run_dir=run_dir,
        config=config,
        trained=trained or load_trained(run_dir),
        **finished_fields(run_dir, dataset, started),
    )
