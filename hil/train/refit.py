"""Refitting the reference network on the final features, before the importance measurement.

Integrated Gradients explain the reference network: importance means something only while the reference
classifies the features it is asked about. A co-trained reference follows the extractor, but at the learning
rates of the joint stage it trails it (on the 2-core CPU recipe it was right on 40-55% of test images
mid-run). The refit trains the reference alone for a few epochs on the final, frozen extractor's features of
augmented training images (its BN statistics included), continuing from its co-trained weights, so that the
reported skewness is measured against a reference that is right on the features it explains. The extractor,
Local NN, Remote NN, quantizer and alpha are not touched: the device part and the payload are unchanged.

`refit_reference` is the trainer's step (TrainConfig.reference_refit_epochs, before the final evaluation);
`refit_finished_run` does the same to a finished run directory (`hil train --refit-reference N`) and rewrites
its evaluation, keeping the co-trained reference as reference.cotrained.keras.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from hil.datasets import Dataset, TrainPipeline, eval_pipeline, load_dataset
from hil.train.layers import TrainedAgileNN, load_trained
from hil.train.loop import RunDirError, now, write_json_atomic
from hil.train.schedule import WarmupCosine, smoothed_ce

REFIT_LR = 0.05  # peak SGD learning rate of the refit (warmup 10%, cosine to 0): a fine-tune, not a restart


def reference_accuracy(trained: TrainedAgileNN, x: np.ndarray, y: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 of the reference on the extractor's features of these images (inference mode)."""
    correct, seen = 0, 0
    for xb, yb in eval_pipeline(x, y, batch_size, input_size=trained.config.input_size):
        logits = trained.reference(trained.extractor(xb, training=False), training=False)
        correct += int(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), yb), tf.int32)))
        seen += int(xb.shape[0])
    return correct / max(seen, 1)


def refit_reference(trained: TrainedAgileNN, data: Dataset, epochs: int, *, lr: float = REFIT_LR) -> dict[str, Any]:
    """Trains `trained.reference` for `epochs` on frozen features; returns a record of what it did."""
    cfg = trained.config
    started = time.perf_counter()
    before = reference_accuracy(trained, data.x_test, data.y_test, cfg.eval_batch_size)
    pipeline = TrainPipeline(data.x_train, data.y_train, cfg.batch_size, input_size=cfg.input_size,
                             augment=cfg.augment, seed=cfg.seed + 7, steps=cfg.steps_per_epoch)
    total = max(1, epochs * pipeline.steps_per_epoch)
    opt = keras.optimizers.SGD(learning_rate=WarmupCosine(lr, total // 10, total), momentum=cfg.momentum,
                               nesterov=True, weight_decay=cfg.weight_decay)
    variables = trained.reference.trainable_variables
    opt.build(variables)  # outside the traced step: tf.function may not create variables on later calls

    @tf.function
    def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        features = trained.extractor(x, training=False)
        with tf.GradientTape() as tape:
            loss = smoothed_ce(y, trained.reference(features, training=True), cfg.label_smoothing)
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
        return loss

    losses = []
    for epoch in range(epochs):
        total_loss, steps = 0.0, 0
        for x, y in pipeline.epoch(50_000 + epoch):
            total_loss += float(step(x, y))
            steps += 1
        losses.append(round(total_loss / max(steps, 1), 4))
    after = reference_accuracy(trained, data.x_test, data.y_test, cfg.eval_batch_size)
    return {
        "epochs": epochs,
        "lr": lr,
        "train_loss": losses,
        "test_reference_accuracy_before": before,
        "test_reference_accuracy_after": after,
        "seconds": round(time.perf_counter() - started, 1),
        "what": "the reference alone, on the frozen final extractor's features of augmented training images, "
        "from its co-trained weights; nothing on the device or the server changed",
    }


def refit_finished_run(run_dir: Path | str, epochs: int, *, data: Dataset | None = None) -> dict[str, Any]:
    """Refits a finished run's reference and re-evaluates (>= 20-step IG skewness against the refitted
    reference); rewrites result.json's evaluation and reference.keras, logs a `refit` record."""
    from hil.train.evaluate import evaluate

    run_dir = Path(run_dir)
    result_path = run_dir / "result.json"
    if not result_path.is_file():
        raise RunDirError(f"{run_dir} has no result.json: finish the run (hil train) before refitting its reference")
    if epochs < 1:
        raise ValueError(f"--refit-reference needs at least 1 epoch, not {epochs}")
    result = json.loads(result_path.read_text())
    trained = load_trained(run_dir)
    dataset = data or load_dataset(trained.config.dataset)
    record = refit_reference(trained, dataset, epochs)
    evaluation = evaluate(trained, dataset.x_test, dataset.y_test).to_dict()
    cotrained = run_dir / "reference.cotrained.keras"
    if not cotrained.exists():  # the first refit keeps the co-trained reference
        shutil.copyfile(run_dir / "reference.keras", cotrained)
    trained.reference.save(run_dir / "reference.keras")
    record["evaluation_before"] = result["evaluation"]
    result["evaluation"] = evaluation
    result["reference_refit"] = record
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"stage": "refit", **record, "evaluation": evaluation, "time": now()}) + "\n")
    write_json_atomic(result_path, result)
    return result


__all__ = ["REFIT_LR", "reference_accuracy", "refit_finished_run", "refit_reference"]
