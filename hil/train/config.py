"""Every knob of an AgileNN training run, with a CPU and a GPU preset, as a JSON-round-trippable dataclass.

No TensorFlow here: the config is read by tools (and tests) that never train.

The CPU preset (the defaults) is sized for a full CIFAR-10 run in about 90 minutes on a 2-core machine; the
GPU preset keeps the same architecture, so the device part has the same shape, and only lengthens the
schedule and refines the Integrated Gradients used inside the loss. `describe()` gives the model card's
payload numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

from hil.errors import UsageError

# (kind, filters, kernel, stride); kind "conv" = Conv2D, "sep" = DepthwiseConv2D + 1x1 Conv2D; each is
# followed by BatchNormalization and ReLU6 so the int8 export folds BN and fuses RELU6.
ExtractorLayer = tuple[str, int, int, int]
# MobileNetV2 inverted-residual stage: (expansion t, channels c, repeats n, first stride s).
RemoteBlock = tuple[int, int, int, int]

# Relative paths are resolved against the project root (hil/..), so this works from any working directory.
DEFAULT_DATASET = "../shared/datasets/cifar10/cifar10.npz"

# 32x32x3 -> 16x16x24 -> 16x16x48 -> 8x8x48 -> 8x8x24: a stride-4 extractor so that the 19 remote channels at
# 3 bits are 8*8*19*3/8 = 456 bytes, 15% of the 3072-byte raw image (a 16x16 map would be 1824 bytes, 59%,
# and 4x the Remote NN compute on the 2-core training budget).
DEFAULT_EXTRACTOR: tuple[ExtractorLayer, ...] = (
    ("conv", 24, 3, 2),
    ("sep", 48, 3, 1),
    ("sep", 48, 3, 2),
    ("sep", 24, 3, 1),
)

# The paper's MobileNetV2 table with one stride-2 stage fewer: the Remote NN starts at 8x8 rather than 32x32,
# and 8x8 -> 4x4 -> 2x2 keeps a usable spatial map to the end.
DEFAULT_REMOTE_BLOCKS: tuple[RemoteBlock, ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 1),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

IG_RULES = ("midpoint", "trapezoid")
EXTRACTOR_KINDS = ("conv", "sep")
REMOTE_KINDS = ("mobilenetv2", "plain")
REMOTE_DTYPES = ("float32", "mixed_bfloat16")
REFERENCE_KINDS = ("vgg", "pooled")
LOCAL_KINDS = ("gap", "conv")

# The CPU recipe's backbone: 32x32x3 -> 16x16x32 -> 16x16x64 -> 16x16x64 -> 16x16x16. A stride-2 map keeps the
# detail a plain-convolution Remote NN turns into accuracy (a 2-core probe of this family reached 88.7% in 36
# epochs with 24 channels), and 16 channels (3 local, 13 remote) keep the payload within 1 KB: 16*16*13 = 3,328
# codes, at the ~1.9-2.2 bits per code the rate term holds the hard code entropy to, 780-920 bytes after the
# device's static Huffman coder, against 3,072 bytes of raw image. The second separable layer (64 -> 64) was
# added for the second CPU run: the first run's 24/48/16 extractor left the reference at 78.6%.
CPU_EXTRACTOR: tuple[ExtractorLayer, ...] = (
    ("conv", 32, 3, 2),
    ("sep", 64, 3, 1),
    ("sep", 64, 3, 1),
    ("sep", 16, 3, 1),
)


class ConfigError(UsageError):
    """A TrainConfig value is out of range or inconsistent."""


def gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (the `auto` presets); imports TensorFlow."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


class BackboneConfig:
    """What TrainConfig and BaselineConfig (frozen dataclasses deriving from it) share: the backbone's
    normalization, derived sizes and checks, and the JSON round trip. Not a dataclass itself: it adds no fields,
    only declares the ones it reads."""

    input_size: int
    extractor: tuple[ExtractorLayer, ...]
    remote_blocks: tuple[RemoteBlock, ...]
    remote_plain_widths: tuple[int, ...]

    def __post_init__(self) -> None:
        # JSON gives lists; normalize to tuples so equality and hashing of the frozen dataclass hold.
        object.__setattr__(self, "extractor", tuple(tuple(layer) for layer in self.extractor))
        object.__setattr__(self, "remote_blocks", tuple(tuple(b) for b in self.remote_blocks))
        object.__setattr__(self, "remote_plain_widths", tuple(int(w) for w in self.remote_plain_widths))
        self.validate()

    def validate(self) -> None:
        raise NotImplementedError

    # --- derived values ---
    @property
    def feature_channels(self) -> int:
        return int(self.extractor[-1][1])

    @property
    def feature_size(self) -> int:
        """Side of the feature map ('same' padding: ceil division per strided layer)."""
        size = self.input_size
        for layer in self.extractor:
            size = -(-size // int(layer[3]))
        return size

    @property
    def raw_input_bytes(self) -> int:
        """The uint8 image the device would otherwise send (at the device's input size)."""
        return self.input_size * self.input_size * 3

    def backbone_errors(self) -> list[str]:
        """What is wrong with the extractor layers and the Remote NN blocks (validate's first checks)."""
        errors: list[str] = []
        if not self.extractor:
            errors.append("extractor has no layers")
        for layer in self.extractor:
            if len(layer) != 4 or layer[0] not in EXTRACTOR_KINDS:
                errors.append(f"extractor layer {layer!r} is not (kind in {EXTRACTOR_KINDS}, filters, kernel, stride)")
            elif min(int(layer[1]), int(layer[2]), int(layer[3])) < 1:
                errors.append(f"extractor layer {layer!r} has a non-positive size")
        for block in self.remote_blocks:
            if len(block) != 4 or min(block) < 1 or block[3] not in (1, 2):
                errors.append(f"remote block {block!r} is not (t>=1, c>=1, n>=1, s in 1|2)")
        return errors

    # --- JSON ---
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extractor"] = [list(layer) for layer in self.extractor]
        data["remote_blocks"] = [list(b) for b in self.remote_blocks]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self, path: Path | str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Self:
        """Accepts JSON text or a path to a JSON file."""
        if isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        else:
            text = str(text_or_path)
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class TrainConfig(BackboneConfig):
    preset: str = "cpu"
    # --- data ---
    dataset: str = DEFAULT_DATASET  # "cifar10" (keras.datasets), a .npz path or an image folder
    input_size: int = 32  # images are resized to this after augmentation when it differs from the source
    num_classes: int = 10
    augment: bool = True  # random horizontal flip + pad-4 random crop
    train_limit: int | None = None  # use only the first N training images (smoke runs)
    test_limit: int | None = None
    # --- architecture ---
    extractor: tuple[ExtractorLayer, ...] = DEFAULT_EXTRACTOR
    local_fraction: float = 0.2  # k = round(local_fraction * feature_channels) channels stay on the device
    local_hidden: int = 0  # 0: Local NN is GAP + Dense (the paper); >0 adds a 1x1 conv of that width first
    reference_width: int = 64  # first stage width of the reference CNN (doubles twice)
    remote_width: float = 0.5  # MobileNetV2 width multiplier of the Remote NN
    remote_blocks: tuple[RemoteBlock, ...] = DEFAULT_REMOTE_BLOCKS
    remote_stem: int = 32  # stem conv channels before width scaling
    remote_head: int = 1280  # last 1x1 conv channels (scaled only when width > 1, as in MobileNetV2)
    # "mobilenetv2" (the paper; remote_width/blocks/stem/head) or "plain": airbench-style 3x3 convolutions of
    # remote_plain_widths, a 2x2 max-pool after every stage but the first, global max-pool, Dense. On a 2-core
    # CPU a plain network does ~5x the MACs per second of MobileNetV2's depthwise blocks (training-notes.md).
    remote_kind: str = "mobilenetv2"
    remote_plain_widths: tuple[int, ...] = (64, 128, 256)
    # 3x3 convs per pooled stage of the plain Remote NN (airbench uses 2; 1 was the first CPU recipe's)
    remote_plain_depth: int = 1
    # Keras dtype policy of the plain Remote NN while training: "mixed_bfloat16" runs its convolutions in
    # bfloat16 (~1.35x the images/s of float32 on a 2-core AVX512-BF16 CPU); runs save a float32 copy.
    remote_dtype: str = "float32"
    # "vgg": build_reference at the feature map's size; "pooled": a reference_pool x reference_pool average
    # pool first, which makes IG inside the loss ~4x cheaper.
    reference_kind: str = "vgg"
    reference_pool: int = 2
    # "gap": GAP + Dense (local_hidden > 0: a 1x1 conv first); "conv": a 3x3 conv of local_hidden and a
    # stride-2 3x3 conv of 2 * local_hidden before GAP + Dense, so the device's prediction means something
    # on its own (an auxiliary loss on it: aux_weight).
    local_kind: str = "gap"
    # --- quantizer and combination ---
    centroids: int = 8  # 8 centroids = 3 bits per remote value
    quant_sigma: float = 1.0  # softness of the soft assignment softmax(-sigma * d^2) (authors' code: 1)
    quant_ste: bool = True  # training forward uses the hard values, gradients flow through the soft path
    alpha_temperature: float = 6.0  # alpha = sigmoid(w / T); T = 4..8 recommended (T = 1 collapses alpha)
    # --- importance and losses ---
    rho: float = 0.8  # skewness target: share of importance in the top-k channels
    lam: float = 0.8  # L = lam * L_pred + (1 - lam) * (L_skew + L_disorder); paper 0.2-0.4, authors' code 0.8
    # Another lam from a later joint epoch on: ((first joint epoch, 1-based), lam), ascending; () = lam throughout.
    lam_schedule: tuple[tuple[int, float], ...] = ()
    aux_weight: float = 0.0  # extra CE on local-only and remote-only logits (0 = the paper)
    # Co-train the reference in the joint stage on the detached features (its own CE, its own optimizer), so
    # the network IG measures importance against stays right on the features it explains. With it, the
    # reference stage and channel pre-processing are usually off (ref_epochs 0, channel_preprocess False).
    reference_cotrain: bool = False
    # Epochs of training the reference alone on the final features before the final evaluation (hil.train.refit):
    # the reported skewness is then measured against a reference that is right on the features it explains.
    reference_refit_epochs: int = 0
    ig_train_images: int = 0  # IG inside the loss on the first N images of each batch (0 = all of them)
    # Centroids kept ordered and at least quant_min_gap apart (0 = the free sigmoid parametrization, which
    # let five of eight centroids merge in the first committed model).
    quant_min_gap: float = 0.0
    # Rate term: rate_weight x max(0, H - rate_target_bits), H the entropy (bits per value) of the batch's
    # soft code distribution at sharpness rate_sigma, which the device's static Huffman coder comes within
    # ~3% of (Agustsson et al. 2017 train with the plain entropy). A hinge, because a first CPU run with the
    # plain term (weight 0.02 from joint epoch 4) drove the entropy from 1.7 to 0.48 bits within one epoch,
    # far below what the 1 KB budget needs (~2.4 bits for 3,328 codes), starving the remote channels.
    rate_weight: float = 0.0
    rate_target_bits: float = 0.0
    # ... and a floor: rate_weight x max(0, rate_floor_bits - H) (0 = none). IG importance is features x
    # gradients, so the cheapest way to the skewness target is to silence the remote channels: a second CPU
    # run went from 1.7 to 0.53 bits per code in the epoch the importance losses came on (remote-only 62% ->
    # 52%). The floor keeps the channels the server depends on carrying information.
    rate_floor_bits: float = 0.0
    rate_sigma: float = 20.0
    rate_from_epoch: int = 1  # the rate term is on from this joint epoch (1-based): codes spread out first
    # Boundary margin on the remote features (SoftToHardQuantizer.margin_loss): weight 0 = off (the paper).
    # Keeps values margin_delta away from the centroids' decision boundaries, so the int8 device part's codes
    # follow the float ones. As a post-hoc fine-tune of the CPU run, weight 10 cut code mismatches 1.6% -> 0.9%,
    # weight 50 to 0.2% but cost 8 accuracy points. From the start (weight 15) mismatches fell to 0.08%, yet
    # agreement did not rise (95.8%): the term drove the remote features to the zero code (no boundary near
    # it), the remote branch starved, and each remaining flip decided. Off unless that is addressed.
    margin_weight: float = 0.0
    margin_delta: float = 0.2  # about 8.5 int8 steps of the ReLU6 features
    # Code-noise view (0 = off, the paper): each joint step also runs the Remote NN on the codes of
    # remote features + Gaussian noise of std code_noise int8 steps (6/255) - about what the int8 extractor's
    # compounded activation rounding does (committed CPU model: sd 0.65-1.2 steps per channel, no bias) - with
    # CE on both combined predictions and code_noise_consistency x the symmetric KL between them, so that the
    # Remote NN learns not to change its decision over the few codes the int8 device part flips.
    # Probe on CIFAR-10 (the CPU preset shortened to 12 + 12 epochs, lam 0.5 from joint epoch 6, one shared
    # reference stage; all 10000 test images; then hil finetune --set epochs=1 --set flip_views=false):
    #                        control   code_noise 1.0 (consistency 10)
    #   combined float       71.4%     72.2%      (remote only 43.3% -> 51.7%; code entropy 0.69 -> 0.89 bits)
    #   skewness (20-step)   0.794     0.797
    #   agreement, joint     95.9%     96.9%      (code flips 0.72% -> 1.10%: more values near a boundary)
    #   on the int8 grid     96.6%     97.4%
    #   Remote NN finetuned  97.2%     97.8%      (combined int8 72.2% -> 72.6%)
    # Better on every count but far from 99%, and a joint step costs about 1.3x (both arms on the same 2
    # cores), which the 90-minute CPU budget has no room for: on in the GPU preset only.
    code_noise: float = 0.0
    code_noise_consistency: float = 10.0
    # Path points for IG inside the joint loss. The authors' 2-point IG (2, trapezoid) flatters the skewness: on
    # a 2-point-trained CPU run's first 1000 test images it gave 0.772 where 4-, 8- and 20-point midpoint IG all
    # gave 0.665, so the loss met rho on a proxy. 4-point midpoint tracks the 20-step figure at ~1.2x the step
    # time. With it alone (lam 0.8) joint epochs 1-16 matched the 2-point run's accuracy, but the true skewness
    # stayed at 0.67-0.70: the CE outweighs the hinge. Lowering lam to 0.5 from joint epoch 17 on (the CPU
    # preset's lam_schedule) lifted it to 0.76 within one epoch at no cost in accuracy. With margin_weight 15
    # from the start, a 40-epoch run reached skewness 0.91 only by starving the remote channels (code entropy
    # 25 B per image, remote-only 27%, combined 70.7%).
    ig_train_steps: int = 4
    ig_train_rule: str = "midpoint"
    ig_train_correct_only: bool = False  # mask the importance losses to samples the reference gets right
    ig_eval_steps: int = 20  # IG for the reported skewness (paper: 20-100 steps)
    ig_eval_samples: int = 1000  # test images used for the reported skewness (correctly predicted ones)
    channel_preprocess: bool = True  # move the channels most often in the top-k first before joint training
    preprocess_samples: int = 10000
    preprocess_ig_steps: int = 2
    preprocess_ig_rule: str = "trapezoid"
    # --- optimisation ---
    batch_size: int = 128
    # CPU budget (measured on the 2-core machine, batch 128, 390 steps/epoch): reference ~0.07 s/step
    # (~31 s/epoch with the test pass), joint with 4-point IG ~0.29-0.36 s/step (~2-2.4 min/epoch with the
    # test pass); 12 + 40 epochs come to ~90-100 minutes on an otherwise idle machine.
    ref_epochs: int = 12
    joint_epochs: int = 40
    lr: float = 0.1  # peak SGD learning rate (Nesterov momentum), linear warmup then cosine to 0 per stage
    momentum: float = 0.9
    weight_decay: float = 5e-4  # decoupled (Keras) decay; not applied to BN, biases, centroids, alpha
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    steps_per_epoch: int | None = None  # cap on steps per epoch (timing, tests); None = the whole train set
    eval_batch_size: int = 500
    jit_compile: bool = False  # XLA-compile the train steps
    eval_every: int = 1  # test-set metrics every N epochs (always after the last epoch)
    seed: int = 0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (not used by the trainer)

    def __post_init__(self) -> None:
        schedule = tuple((int(epoch), float(lam)) for epoch, lam in self.lam_schedule)  # JSON gives lists
        object.__setattr__(self, "lam_schedule", schedule)
        super().__post_init__()

    def lam_at(self, joint_epoch: int) -> float:
        """lam during joint epoch `joint_epoch` (1-based)."""
        lam = self.lam
        for first, value in self.lam_schedule:
            if joint_epoch >= first:
                lam = value
        return lam

    # --- derived values (feature_channels, feature_size, raw_input_bytes: BackboneConfig) ---
    @property
    def extractor_stride(self) -> int:
        return math.prod(int(layer[3]) for layer in self.extractor)

    @property
    def k(self) -> int:
        """Channels kept on the device; the first k channels of the extractor's output."""
        return min(max(1, round(self.local_fraction * self.feature_channels)), self.feature_channels - 1)

    @property
    def remote_channels(self) -> int:
        return self.feature_channels - self.k

    @property
    def bits_per_value(self) -> int:
        return max(1, math.ceil(math.log2(self.centroids)))

    @property
    def payload_bits(self) -> int:
        """Bits sent per inference before lossless compression: remote channels x map x bits per value."""
        return self.feature_size**2 * self.remote_channels * self.bits_per_value

    def validate(self) -> None:
        errors = self.backbone_errors()
        if self.extractor and self.feature_channels < 2:
            errors.append("the extractor must output at least 2 channels to split")
        if not 0.0 < self.local_fraction < 1.0:
            errors.append(f"local_fraction {self.local_fraction} not in (0, 1)")
        if self.centroids < 2:
            errors.append(f"centroids {self.centroids} < 2")
        if not 0.0 < self.rho <= 1.0:
            errors.append(f"rho {self.rho} not in (0, 1]")
        if not 0.0 <= self.lam <= 1.0:
            errors.append(f"lam {self.lam} not in [0, 1]")
        firsts = [epoch for epoch, _ in self.lam_schedule]
        if firsts != sorted(set(firsts)) or any(e < 1 for e in firsts):
            errors.append(f"lam_schedule {self.lam_schedule} needs distinct, ascending joint epochs >= 1")
        if any(not 0.0 <= lam <= 1.0 for _, lam in self.lam_schedule):
            errors.append(f"lam_schedule {self.lam_schedule}: every lam must be in [0, 1]")
        if self.margin_weight < 0 or self.margin_delta <= 0:
            errors.append(f"margin_weight {self.margin_weight} must be >= 0 and margin_delta {self.margin_delta} > 0")
        if self.code_noise < 0 or self.code_noise_consistency < 0:
            errors.append(f"code_noise {self.code_noise} and code_noise_consistency {self.code_noise_consistency} "
                          "must be >= 0")
        for name, kinds in (("remote_kind", REMOTE_KINDS), ("reference_kind", REFERENCE_KINDS),
                            ("local_kind", LOCAL_KINDS)):
            if getattr(self, name) not in kinds:
                errors.append(f"{name} {getattr(self, name)!r} not in {kinds}")
        if not self.remote_plain_widths or min(self.remote_plain_widths) < 1:
            errors.append(f"remote_plain_widths {self.remote_plain_widths} must be positive widths")
        if self.remote_plain_depth < 1:
            errors.append(f"remote_plain_depth {self.remote_plain_depth} must be >= 1")
        if self.remote_dtype not in REMOTE_DTYPES:
            errors.append(f"remote_dtype {self.remote_dtype!r} not in {REMOTE_DTYPES}")
        elif self.remote_dtype != "float32" and self.remote_kind != "plain":
            errors.append(f"remote_dtype {self.remote_dtype!r} needs remote_kind 'plain'")
        if self.reference_pool < 1 or self.feature_size % self.reference_pool if self.extractor else False:
            errors.append(f"reference_pool {self.reference_pool} must be >= 1 and divide the feature map")
        if self.local_kind == "conv" and self.local_hidden < 1:
            errors.append("local_kind 'conv' needs local_hidden >= 1")
        if self.reference_refit_epochs < 0:
            errors.append(f"reference_refit_epochs {self.reference_refit_epochs} must be >= 0")
        if self.ig_train_images < 0 or self.quant_min_gap < 0 or self.rate_weight < 0 or self.rate_sigma <= 0 \
                or self.rate_target_bits < 0 or self.rate_floor_bits < 0:
            errors.append("ig_train_images, quant_min_gap and rate_weight must be >= 0 and rate_sigma > 0")
        if self.quant_min_gap * (self.centroids - 1) >= 6.0:
            errors.append(f"quant_min_gap {self.quant_min_gap} x {self.centroids - 1} gaps leaves no room in (0, 6)")
        if self.alpha_temperature <= 0:
            errors.append(f"alpha_temperature {self.alpha_temperature} <= 0")
        for name in ("ig_train_rule", "preprocess_ig_rule"):
            if getattr(self, name) not in IG_RULES:
                errors.append(f"{name} {getattr(self, name)!r} not in {IG_RULES}")
        for name in ("ig_train_steps", "preprocess_ig_steps"):
            rule = getattr(self, name.replace("steps", "rule"))
            if getattr(self, name) < (2 if rule == "trapezoid" else 1):
                errors.append(f"{name} {getattr(self, name)} too small for the {rule} rule")
        if self.ig_eval_steps < 20:
            # The reported skewness needs >= 20 steps; the 2-point variant is for training only.
            errors.append(f"ig_eval_steps {self.ig_eval_steps} < 20")
        for name in ("batch_size", "eval_batch_size", "num_classes", "input_size", "eval_every"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1")
        for name in ("ref_epochs", "joint_epochs"):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0")
        if self.remote_width <= 0 or self.reference_width < 1:
            errors.append("remote_width and reference_width must be positive")
        if errors:
            raise ConfigError("; ".join(errors))

    # --- presets ---
    @classmethod
    def cpu(cls, **overrides: Any) -> TrainConfig:
        """The CPU recipe: a full CIFAR-10 run in about 90-110 minutes on a 2-core machine (budget 150).

        Set here rather than as the fields' defaults, so that run directories written by earlier recipes
        resume with the values they started with. What it does, and why (training-notes.md has the probes;
        docs/training-runs/ has the full runs):
        - a stride-2 extractor to 16x16x16 (CPU_EXTRACTOR), 3 channels on the device, 13 sent;
        - a plain-convolution Remote NN (64/128/256, two 3x3 convs in each pooled stage), ~5x the CPU throughput
          of MobileNetV2 per MAC, trained in bfloat16 (remote_dtype; ~1.35x float32 on AVX512-BF16, saved float32);
        - the reference co-trained every step on the detached features, 2x2-pooled and 64 wide, with 4-point
          IG on a quarter of each batch (~1.2x a plain step), instead of a frozen reference that ended up
          right on 21.5% of the final features;
        - the reference refitted alone for 4 epochs on the final features before the skewness is measured;
        - lam 1 for three epochs (the reference learns before it is asked what matters), then 0.7; rho 0.78
          (0.85 gave a measured skewness of 0.87, far above the 0.75 asked, at a cost in accuracy);
        - a Local NN of two 3x3 convolutions, with CE on the local and remote predictions (aux_weight 0.3);
        - centroids ordered at least 0.3 apart (0.15 left the busiest ones where int8 rounding flips codes) and
          the soft code entropy held between 2.4 and 2.8 bits from epoch 4: the hard entropy, ~0.4-0.5 bits below
          the soft one, then lands near 2 bits, so the payload uses its 1 KB budget without passing it;
        - batch 512, SGD Nesterov peak lr 0.4, 32 epochs, label smoothing 0.2.
        """
        base = cls(
            extractor=CPU_EXTRACTOR,
            local_kind="conv",
            local_hidden=32,
            remote_kind="plain",
            remote_plain_depth=2,
            remote_dtype="mixed_bfloat16",
            reference_kind="pooled",
            reference_width=64,
            reference_cotrain=True,
            reference_refit_epochs=4,
            ref_epochs=0,
            channel_preprocess=False,
            joint_epochs=32,
            ig_train_images=128,
            lam=0.7,
            lam_schedule=((1, 1.0), (4, 0.7)),
            rho=0.78,
            aux_weight=0.3,
            quant_min_gap=0.3,
            rate_weight=1.0,
            rate_target_bits=2.8,
            rate_floor_bits=2.4,
            rate_from_epoch=4,
            batch_size=512,
            lr=0.4,
            warmup_epochs=3.0,
            label_smoothing=0.2,
            alpha_temperature=4.0,
            # the reported skewness on at least 1,000 images the reference gets right: the second CPU run's
            # reference was right on 836 of the first 1,000 (82%)
            ig_eval_samples=1300,
        )
        return replace(base, **overrides)

    @classmethod
    def gpu(cls, **overrides: Any) -> TrainConfig:
        """The CPU recipe's architecture (so the device part has the same shape), a paper-like long schedule,
        IG on every image of a batch with 8 points inside the loss, and the code-noise view (not measured on a
        GPU)."""
        base = cls.cpu(
            preset="gpu",
            joint_epochs=150,
            warmup_epochs=5.0,
            ig_train_steps=8,
            ig_train_images=0,
            lam_schedule=((1, 1.0), (6, 0.6)),
            code_noise=1.0,
            ig_eval_samples=10000,
        )
        return replace(base, **overrides)

    @classmethod
    def auto(cls, **overrides: Any) -> TrainConfig:
        """The GPU preset when TensorFlow sees a GPU, else the CPU preset."""
        preset = cls.gpu if gpu_visible() else cls.cpu
        return preset(**overrides)

    # --- JSON: to_dict, from_dict, to_json, from_json (BackboneConfig) ---

    def describe(self) -> dict[str, Any]:
        """Numbers for the model card: feature map, split, payload against the raw image."""
        payload_bytes = self.payload_bits / 8
        return {
            "input": f"{self.input_size}x{self.input_size}x3 uint8 ({self.raw_input_bytes} bytes raw)",
            "extractor_stride": self.extractor_stride,
            "feature_map": f"{self.feature_size}x{self.feature_size}x{self.feature_channels}",
            "k_local": self.k,
            "remote_channels": self.remote_channels,
            "bits_per_value": self.bits_per_value,
            "payload_bits": self.payload_bits,
            "payload_bytes": payload_bytes,
            "payload_vs_raw": payload_bytes / self.raw_input_bytes,
        }
