"""Shared settings for the tiny training runs that tests make in seconds."""

from pathlib import Path

from hil.train.config import TrainConfig

# The default device architecture (so an exported int8 model has the real one's ops and shapes), a much smaller
# Remote NN and reference, two steps per stage.
TINY_TRAINING = dict(
    batch_size=16,
    ref_epochs=1,
    joint_epochs=1,
    steps_per_epoch=2,
    reference_width=8,
    remote_width=0.25,
    remote_blocks=((1, 16, 1, 1), (6, 24, 1, 2)),
    remote_head=64,
    remote_plain_widths=(8, 16),
    local_hidden=4,
    channel_preprocess=True,  # the staged flow (reference stage, pre-processing, joint) stays covered
    preprocess_samples=32,
    ig_eval_samples=16,
    eval_batch_size=32,
)


def tiny_config(dataset: Path | str, **overrides) -> TrainConfig:
    return TrainConfig.cpu(**(TINY_TRAINING | {"dataset": str(dataset)} | overrides))
