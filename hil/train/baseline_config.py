"""Configuration of the AgileNN comparison baselines (hil.train.baselines), as a JSON-round-trippable dataclass.

No TensorFlow here (as hil.train.config): tools and tests read it without training. The presets keep the
architecture and change only the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from hil.train.config import (
    DEFAULT_DATASET,
    DEFAULT_EXTRACTOR,
    DEFAULT_REMOTE_BLOCKS,
    REMOTE_DTYPES,
    REMOTE_KINDS,
    BackboneConfig,
    ConfigError,
    ExtractorLayer,
    RemoteBlock,
    TrainConfig,
    gpu_visible,
)

KINDS = ("full_local", "edge_only", "partition", "encoder")
FORMAT = "agilenn-baseline/1"
SPLIT_BITS = 8  # partition: the int8 tensor the device produces is what it sends

# CPU budget (2-core machine, batch 128, 390 steps/epoch): a baseline train step costs 0.66-0.74x AgileNN's
# joint step and 2.9-3.2x its reference step (measured side by side), i.e. ~0.17-0.20 s uncontended given the
# trainer's 0.255 / 0.062 s; with the ~3 s test pass an epoch is ~70-80 s, so 15 epochs take ~18-20 minutes.
CPU_EPOCHS = 15
# GPU: as many epochs as AgileNN's GPU preset gives its Remote NN in the joint stage (TrainConfig.gpu()), so a
# GPU comparison is epoch-matched.
GPU_EPOCHS = 150


@dataclass(frozen=True)
class BaselineConfig(BackboneConfig):
    kind: str = "full_local"
    preset: str = "cpu"
    # --- data (as TrainConfig) ---
    dataset: str = DEFAULT_DATASET
    input_size: int = 32
    num_classes: int = 10
    augment: bool = True  # random horizontal flip + pad-4 random crop
    train_limit: int | None = None
    test_limit: int | None = None
    # --- architecture: the AgileNN backbone (device front for partition/encoder, stem otherwise) ---
    extractor: tuple[ExtractorLayer, ...] = DEFAULT_EXTRACTOR
    remote_width: float = 0.5
    remote_blocks: tuple[RemoteBlock, ...] = DEFAULT_REMOTE_BLOCKS
    remote_stem: int = 32
    remote_head: int = 1280
    # "mobilenetv2" (remote_width/blocks/stem/head) or "plain" (remote_plain_*; the CPU recipe's Remote NN):
    # the same fields as TrainConfig, so from_agilenn gives a baseline the AgileNN run's back end.
    remote_kind: str = "mobilenetv2"
    remote_plain_widths: tuple[int, ...] = (64, 128, 256)
    remote_plain_depth: int = 1
    remote_dtype: str = "float32"
    # --- encoder: learned quantizer of the code (as AgileNN's) ---
    centroids: int = 8
    quant_sigma: float = 1.0
    quant_ste: bool = True
    # --- optimisation (as TrainConfig: SGD Nesterov, warmup + cosine, decoupled weight decay) ---
    epochs: int = CPU_EPOCHS
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    steps_per_epoch: int | None = None
    eval_batch_size: int = 500
    jit_compile: bool = False  # XLA: ~7x slower on the 2-core CPU for this backbone (measured); for GPUs
    eval_every: int = 1
    seed: int = 0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    # --- derived values (feature_channels, feature_size, raw_input_bytes: BackboneConfig) ---
    @property
    def split_shape(self) -> tuple[int, int, int]:
        """The tensor at the cut (partition, encoder): the extractor's output."""
        return (self.feature_size, self.feature_size, self.feature_channels)

    @property
    def bits_per_value(self) -> int:
        """Bits per sent value: 8 for the partition's int8 features, log2(centroids) for the encoder's codes."""
        if self.kind == "encoder":
            return max(1, math.ceil(math.log2(self.centroids)))
        return SPLIT_BITS

    @property
    def has_device_part(self) -> bool:
        return self.kind != "edge_only"

    @property
    def has_server_part(self) -> bool:
        return self.kind != "full_local"

    @property
    def payload_bits(self) -> int | None:
        """Bits sent per inference before lossless compression; None for edge_only (measured at export)."""
        if self.kind == "full_local":
            return 0
        if self.kind == "edge_only":
            return None
        return math.prod(self.split_shape) * self.bits_per_value

    def validate(self) -> None:
        errors = [f"kind {self.kind!r} not in {KINDS}"] if self.kind not in KINDS else []
        errors += self.backbone_errors()
        if self.centroids < 2:
            errors.append(f"centroids {self.centroids} < 2")
        for name in ("batch_size", "eval_batch_size", "num_classes", "input_size", "eval_every", "epochs"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1")
        if self.remote_width <= 0:
            errors.append("remote_width must be positive")
        if self.remote_kind not in REMOTE_KINDS:
            errors.append(f"remote_kind {self.remote_kind!r} not in {REMOTE_KINDS}")
        if not self.remote_plain_widths or min(self.remote_plain_widths) < 1 or self.remote_plain_depth < 1:
            errors.append("remote_plain_widths and remote_plain_depth must be positive")
        if self.remote_dtype not in REMOTE_DTYPES or (self.remote_dtype != "float32" and self.remote_kind != "plain"):
            errors.append(f"remote_dtype {self.remote_dtype!r}: float32, or mixed_bfloat16 with remote_kind 'plain'")
        if not 0.0 <= self.label_smoothing < 1.0:
            errors.append(f"label_smoothing {self.label_smoothing} not in [0, 1)")
        if errors:
            raise ConfigError("; ".join(errors))

    # --- presets ---
    @classmethod
    def cpu(cls, kind: str, **overrides: Any) -> BaselineConfig:
        """~15-20 minutes of training on a 2-core CPU for the full CIFAR-10 training set."""
        return cls(kind=kind, **overrides)

    @classmethod
    def gpu(cls, kind: str, **overrides: Any) -> BaselineConfig:
        """Same architecture, the epochs AgileNN's GPU preset gives its Remote NN."""
        return cls(**({"kind": kind, "preset": "gpu", "epochs": GPU_EPOCHS, "warmup_epochs": 2.0} | overrides))

    @classmethod
    def auto(cls, kind: str, **overrides: Any) -> BaselineConfig:
        """The GPU preset when TensorFlow sees a GPU, else the CPU preset."""
        preset = cls.gpu if gpu_visible() else cls.cpu
        return preset(kind, **overrides)

    @classmethod
    def from_agilenn(cls, kind: str, agilenn: TrainConfig, **overrides: Any) -> BaselineConfig:
        """The baseline of an AgileNN run: its data, backbone, quantizer and optimiser settings (the preset's
        epochs stay the baseline's own)."""
        shared = ({f.name for f in fields(cls)} & set(agilenn.to_dict())) - {"preset", "notes", "extra"}
        values = {name: getattr(agilenn, name) for name in shared}
        preset = cls.gpu if agilenn.preset == "gpu" else cls.cpu
        return preset(kind, **(values | overrides))

    # --- JSON: to_dict, from_dict, to_json, from_json (BackboneConfig, as TrainConfig) ---
