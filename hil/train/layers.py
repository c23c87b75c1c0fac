"""AgileNN model parts: extractor, reference NN, Local NN, Remote NN, soft-to-hard quantizer, alpha.

Export contract (the int8 exporter is written elsewhere): the device part is `device_keras_model(trained)`,
image (float32 RGB in [0, 1] = uint8 / 255; with input scale 1/255 and zero point -128 the int8 input is
exactly uint8 - 128) -> (local logits, remote-bound channels). Its graph uses only Conv2D, DepthwiseConv2D,
BatchNormalization (folded at conversion), ReLU6 (fused), a channel slice (STRIDED_SLICE), global average
pooling (MEAN) and Dense (FULLY_CONNECTED). The important channels are the first k, fixed at training time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

# The custom layers live in hil.agilenn.layers (the server and the accuracy job load saved parts without the
# training code); re-exported here for the code and the tests that build models with them.
from hil.agilenn.layers import FEATURE_MAX, PACKAGE, Alpha, ChannelSlice, SoftToHardQuantizer  # noqa: F401
from hil.train.config import BackboneConfig, ExtractorLayer, RemoteBlock, TrainConfig


def _relu6(name: str) -> layers.Layer:
    return layers.ReLU(max_value=FEATURE_MAX, name=name)


def _bn(name: str) -> layers.Layer:
    # Momentum 0.9 (PyTorch's 0.1) instead of Keras' 0.99: the moving statistics settle within tens of
    # steps, which short schedules (and tiny smoke runs) need for a meaningful test accuracy.
    return layers.BatchNormalization(momentum=0.9, name=name)


# ---------------------------------------------------------------------------------------------------------
# builders
# ---------------------------------------------------------------------------------------------------------


def build_extractor(input_size: int, spec: Sequence[ExtractorLayer], name: str = "extractor") -> keras.Model:
    """Conv/separable stack, every conv without bias (BN supplies it and folds into it at export) + ReLU6.

    The last layer's BN and ReLU6 stay: ReLU6 bounds the features to [0, 6], the quantizer's range and a fixed
    int8 scale for the exporter.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = inputs
    for i, (kind, filters, kernel, stride) in enumerate(spec):
        if kind == "conv":
            x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"e{i}_conv")(x)
        elif kind == "sep":
            x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"e{i}_dw")(x)
            x = _bn(name=f"e{i}_dw_bn")(x)
            x = _relu6(f"e{i}_dw_relu6")(x)
            x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"e{i}_pw")(x)
        else:
            raise ValueError(f"unknown extractor layer kind {kind!r}")
        x = _bn(name=f"e{i}_bn")(x)
        x = _relu6(f"e{i}_relu6")(x)
    return keras.Model(inputs, x, name=name)


def build_reference(
    feature_shape: tuple[int, int, int], num_classes: int, width: int = 64, pool: int = 1
) -> keras.Model:
    """A plain VGG-style CNN on the feature map; it only has to rank channels, and it runs inside the loss.

    Its first weighted layer is a Conv2D so that channel pre-processing can permute its input channels (see
    `permute_reference_inputs`), keeping ref(permuted features) == ref(features). `pool` > 1 average-pools the
    features first (a channel-wise op, so IG's per-channel importance keeps its meaning) for a ~pool^2 cheaper
    reference inside the loss.
    """
    inputs = keras.Input(feature_shape, name="features")
    x = inputs
    if pool > 1:
        x = layers.AveragePooling2D(pool, name="r_pool")(x)
    plan = [(width, 1), (width, 1), (2 * width, 2), (2 * width, 1), (4 * width, 2)]
    for i, (filters, stride) in enumerate(plan):
        x = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"r{i}_conv")(x)
        x = _bn(name=f"r{i}_bn")(x)
        x = layers.ReLU(name=f"r{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="reference")


def build_local(feature_size: int, k: int, num_classes: int, hidden: int = 0, kind: str = "gap") -> keras.Model:
    """GAP + Dense on the k device channels (the paper). The authors' trailing BN is left out: a BN after a
    Dense becomes a separate MUL/ADD in TFLite, outside the device compiler's op set. kind "conv": a 3x3 conv
    of `hidden` and a stride-2 3x3 conv of 2 x `hidden` first, a classifier in its own right."""
    inputs = keras.Input((feature_size, feature_size, k), name="local_channels")
    x = inputs
    if kind == "conv":
        for i, (filters, stride) in enumerate(((hidden, 1), (2 * hidden, 2))):
            x = layers.Conv2D(filters, 3, stride, padding="same", use_bias=False, name=f"l{i}_conv")(x)
            x = _bn(name=f"l{i}_bn")(x)
            x = _relu6(f"l{i}_relu6")(x)
    elif hidden > 0:
        x = layers.Conv2D(hidden, 1, use_bias=False, name="l_conv")(x)
        x = _bn(name="l_bn")(x)
        x = _relu6("l_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="l_gap")(x)
    outputs = layers.Dense(num_classes, name="l_logits")(x)
    return keras.Model(inputs, outputs, name="local_nn")


def _make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNetV2's channel rounding: nearest multiple of `divisor`, never more than 10% below `value`."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if out < 0.9 * value:
        out += divisor
    return out


def build_remote(
    feature_size: int,
    channels: int,
    num_classes: int,
    width: float = 0.5,
    blocks: Sequence[RemoteBlock] = (),
    stem: int = 32,
    head: int = 1280,
) -> keras.Model:
    """MobileNetV2 without its strided first conv: a 3x3 stem conv on the dequantized remote channels, the
    inverted-residual stages scaled by `width`, a 1x1 head conv, GAP, Dense. Float, runs on the server."""
    inputs = keras.Input((feature_size, feature_size, channels), name="remote_channels")
    c_in = _make_divisible(stem * width)
    x = layers.Conv2D(c_in, 3, padding="same", use_bias=False, name="m_stem")(inputs)
    x = _bn(name="m_stem_bn")(x)
    x = _relu6("m_stem_relu6")(x)
    for b, (t, c, n, s) in enumerate(blocks):
        c_out = _make_divisible(c * width)
        for j in range(n):
            stride = s if j == 0 else 1
            prefix = f"m{b}_{j}"
            y = x
            if t != 1:
                y = layers.Conv2D(c_in * t, 1, use_bias=False, name=f"{prefix}_expand")(y)
                y = _bn(name=f"{prefix}_expand_bn")(y)
                y = _relu6(f"{prefix}_expand_relu6")(y)
            y = layers.DepthwiseConv2D(3, stride, padding="same", use_bias=False, name=f"{prefix}_dw")(y)
            y = _bn(name=f"{prefix}_dw_bn")(y)
            y = _relu6(f"{prefix}_dw_relu6")(y)
            y = layers.Conv2D(c_out, 1, use_bias=False, name=f"{prefix}_project")(y)
            y = _bn(name=f"{prefix}_project_bn")(y)
            x = layers.Add(name=f"{prefix}_add")([x, y]) if stride == 1 and c_in == c_out else y
            c_in = c_out
    head_channels = _make_divisible(head * width) if width > 1.0 else head
    x = layers.Conv2D(head_channels, 1, use_bias=False, name="m_head")(x)
    x = _bn(name="m_head_bn")(x)
    x = _relu6("m_head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="m_gap")(x)
    outputs = layers.Dense(num_classes, name="m_logits")(x)
    return keras.Model(inputs, outputs, name="remote_nn")


def build_remote_plain(feature_size: int, channels: int, num_classes: int, widths: Sequence[int],
                       depth: int = 1, dtype: str = "float32") -> keras.Model:
    """Airbench-style plain Remote NN: a 3x3 conv of widths[0], then per further width a 3x3 conv and a 2x2
    max-pool, and `depth` - 1 more 3x3 convs at that width; BN + ReLU after every conv, global max-pool, Dense.
    `dtype` is a Keras dtype policy for training speed ("mixed_bfloat16": bfloat16 compute on float32
    weights); the logits are float32 either way, and what a run saves is a float32 copy (float32_twin)."""
    inputs = keras.Input((feature_size, feature_size, channels), name="remote_channels")
    x = inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"p{i}_conv", dtype=dtype)(x)
        if i > 0:
            x = layers.MaxPooling2D(2, name=f"p{i}_pool", dtype=dtype)(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"p{i}_bn", dtype=dtype)(x)
        x = layers.ReLU(name=f"p{i}_relu", dtype=dtype)(x)
        for j in range(1, depth if i > 0 else 1):
            x = layers.Conv2D(int(width), 3, padding="same", use_bias=False, name=f"p{i}_conv{j}", dtype=dtype)(x)
            x = layers.BatchNormalization(momentum=0.9, name=f"p{i}_bn{j}", dtype=dtype)(x)
            x = layers.ReLU(name=f"p{i}_relu{j}", dtype=dtype)(x)
    # The global max-pool as a max-pool over the whole map and a reshape: the same numbers, and ops the device's
    # C core has (TFLite converts GlobalMaxPooling2D to REDUCE_MAX), so a full-local baseline runs on the device.
    x = layers.MaxPooling2D(tuple(int(d) for d in x.shape[1:3]), name="p_gmp", dtype=dtype)(x)
    x = layers.Flatten(name="p_flat", dtype=dtype)(x)
    outputs = layers.Dense(num_classes, name="p_logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="remote_nn")


def float32_twin(config: BackboneConfig, remote: keras.Model, feature_size: int, channels: int) -> keras.Model:
    """The Remote NN with float32 compute and `remote`'s weights: what is saved, served and exported, so that a
    run trained with remote_dtype="mixed_bfloat16" gives the same files as a float32 one. `remote` itself when it
    already computes in float32."""
    if getattr(config, "remote_dtype", "float32") == "float32":
        return remote
    twin = build_remote_plain(feature_size, channels, config.num_classes, config.remote_plain_widths,
                              config.remote_plain_depth, "float32")
    twin.set_weights(remote.get_weights())
    return twin


def build_remote_for(config: TrainConfig, feature_size: int, channels: int) -> keras.Model:
    """The Remote NN `config.remote_kind` names (TrainConfig and BaselineConfig both read the mobilenetv2
    fields; only TrainConfig has remote_kind)."""
    if getattr(config, "remote_kind", "mobilenetv2") == "plain":
        return build_remote_plain(feature_size, channels, config.num_classes, config.remote_plain_widths,
                                  getattr(config, "remote_plain_depth", 1), getattr(config, "remote_dtype", "float32"))
    return build_remote(
        feature_size,
        channels,
        config.num_classes,
        config.remote_width,
        config.remote_blocks,
        config.remote_stem,
        config.remote_head,
    )


# ---------------------------------------------------------------------------------------------------------
# channel pre-processing: permutations that keep the function unchanged
# ---------------------------------------------------------------------------------------------------------


def _last_conv_and_bn(model: keras.Model) -> tuple[layers.Conv2D, layers.BatchNormalization]:
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    if not convs or not bns:
        raise ValueError(f"model '{model.name}' has no Conv2D + BatchNormalization to permute")
    return convs[-1], bns[-1]


def permute_extractor_outputs(extractor: keras.Model, perm: Sequence[int]) -> None:
    """Reorders the extractor's output channels so new channel i is old channel perm[i].

    Permutes the last (pointwise) conv's output filters and the BN after it (gamma, beta and the moving
    statistics; the authors' script moved only the kernel, which leaves BN mismatched). ReLU6 is per element.
    """
    perm_arr = np.asarray(perm, dtype=np.int64)
    conv, bn = _last_conv_and_bn(extractor)
    kernel = conv.kernel
    kernel.assign(tf.gather(kernel, perm_arr, axis=3))
    for var in bn.weights:
        var.assign(tf.gather(var, perm_arr, axis=0))


def permute_reference_inputs(reference: keras.Model, perm: Sequence[int]) -> None:
    """Reorders the first conv's input channels to match `permute_extractor_outputs(extractor, perm)`."""
    first = next(layer for layer in reference.layers if isinstance(layer, layers.Conv2D))
    if isinstance(first, layers.DepthwiseConv2D):
        raise ValueError("the reference NN must start with a Conv2D to be permutable")
    first.kernel.assign(tf.gather(first.kernel, np.asarray(perm, dtype=np.int64), axis=2))


# ---------------------------------------------------------------------------------------------------------
# the trained system
# ---------------------------------------------------------------------------------------------------------


def make_quantizer(config: TrainConfig) -> SoftToHardQuantizer:
    return SoftToHardQuantizer(
        config.centroids, config.quant_sigma, config.quant_ste, config.quant_min_gap, name="quantizer"
    )


@dataclass
class TrainedAgileNN:
    """All parts of one AgileNN instance plus what the export and the server need to know."""

    config: TrainConfig
    extractor: keras.Model
    reference: keras.Model
    local: keras.Model
    remote: keras.Model
    quantizer: SoftToHardQuantizer
    alpha: Alpha
    permutation: list[int] = field(default_factory=list)  # applied by channel pre-processing (new <- old)

    @classmethod
    def build(cls, config: TrainConfig) -> TrainedAgileNN:
        keras.utils.set_random_seed(config.seed)
        fs, c, k = config.feature_size, config.feature_channels, config.k
        extractor = build_extractor(config.input_size, config.extractor)
        if extractor.output_shape[1:] != (fs, fs, c):
            raise ValueError(f"extractor output {extractor.output_shape[1:]} != expected {(fs, fs, c)}")
        quantizer = make_quantizer(config)
        quantizer.build((None, fs, fs, c - k))
        alpha = Alpha(config.alpha_temperature, name="alpha")
        alpha.build([(None, config.num_classes), (None, config.num_classes)])
        pool = config.reference_pool if config.reference_kind == "pooled" else 1
        return cls(
            config=config,
            extractor=extractor,
            reference=build_reference((fs, fs, c), config.num_classes, config.reference_width, pool),
            local=build_local(fs, k, config.num_classes, config.local_hidden, config.local_kind),
            remote=build_remote_for(config, fs, c - k),
            quantizer=quantizer,
            alpha=alpha,
            permutation=list(range(c)),
        )

    @property
    def k(self) -> int:
        return self.config.k

    def joint_variables(self) -> list[tf.Variable]:
        """What joint training updates: everything but the frozen reference NN."""
        out: list[tf.Variable] = []
        for part in (self.extractor, self.local, self.remote, self.quantizer, self.alpha):
            out.extend(part.trainable_variables)
        return out

    def forward(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        features = self.extractor(images, training=training)
        return self.heads(features, training=training) | {"features": features}

    def heads(self, features: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        k = self.k
        local = self.local(features[..., :k], training=training)
        remote = self.remote(self.quantizer(features[..., k:], training=training), training=training)
        return {"local": local, "remote": remote, "combined": self.alpha([local, remote])}

    def heads_with_code_noise(self, features: tf.Tensor, noise_steps: float) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        """heads(features, training=True) plus the combined logits of the same local logits and the Remote NN on
        the codes of remote features + N(0, (noise_steps * 6/255)^2), i.e. noise in int8 steps of the features
        (TrainConfig.code_noise). One Remote NN pass over both views, so batch normalization sees them together."""
        k, b = self.k, tf.shape(features)[0]
        local = self.local(features[..., :k], training=True)
        clean = features[..., k:]
        noisy = clean + tf.random.normal(tf.shape(clean), stddev=noise_steps * FEATURE_MAX / 255.0)
        both = self.remote(self.quantizer(tf.concat([clean, noisy], 0), training=True), training=True)
        out = {"local": local, "remote": both[:b], "combined": self.alpha([local, both[:b]])}
        return out, self.alpha([local, both[b:]])

    def alpha_value(self) -> float:
        return float(self.alpha.alpha().numpy())

    def centroid_values(self) -> list[float]:
        return [float(v) for v in self.quantizer.centroids().numpy()]

    def metadata(self) -> dict[str, Any]:
        """agilenn.json: the facts the exporter, the server and the model card need."""
        cfg = self.config
        return {
            "format": "agilenn-train/1",
            "input": {
                "size": [cfg.input_size, cfg.input_size, 3],
                "dtype": "float32",
                "range": [0.0, 1.0],
                "meaning": "RGB uint8 / 255 (int8 input: scale 1/255, zero_point -128 gives uint8 - 128)",
            },
            "feature_map": [cfg.feature_size, cfg.feature_size, cfg.feature_channels],
            "feature_range": [0.0, FEATURE_MAX],
            "k": cfg.k,
            "local_channels": [0, cfg.k],
            "remote_channels": [cfg.k, cfg.feature_channels],
            "channel_permutation": list(self.permutation),
            "centroids": self.centroid_values(),
            "centroid_logits": [float(v) for v in self.quantizer.centroid_logits.numpy()],
            "quant_sigma": self.quantizer.sigma,
            "bits_per_value": cfg.bits_per_value,
            "alpha": self.alpha_value(),
            "alpha_w": float(self.alpha.w.numpy()),
            "alpha_temperature": self.alpha.temperature,
            "combine": "combined_logits = alpha * local_logits + (1 - alpha) * remote_logits",
            "payload": cfg.describe(),
        }

    def save(self, run_dir: Path | str) -> dict[str, Path]:
        """Writes the parts with model.save(.keras), the device/server models and agilenn.json."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "extractor": run_dir / "extractor.keras",
            "reference": run_dir / "reference.keras",
            "local": run_dir / "local_nn.keras",
            "remote": run_dir / "remote_nn.keras",
            "device": run_dir / "device.keras",
            "server": run_dir / "server.keras",
            "metadata": run_dir / "agilenn.json",
        }
        cfg = self.config
        saved = replace(self, remote=float32_twin(cfg, self.remote, cfg.feature_size, cfg.remote_channels))
        saved.extractor.save(paths["extractor"])
        saved.reference.save(paths["reference"])
        saved.local.save(paths["local"])
        saved.remote.save(paths["remote"])
        device_keras_model(saved).save(paths["device"])
        remote_keras_model(saved).save(paths["server"])
        meta = self.metadata() | {"config": self.config.to_dict()}
        paths["metadata"].write_text(json.dumps(meta, indent=2) + "\n")
        return paths


def load_trained(run_dir: Path | str) -> TrainedAgileNN:
    """The inverse of TrainedAgileNN.save."""
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "agilenn.json").read_text())
    config = TrainConfig.from_dict(meta["config"])
    quantizer = make_quantizer(config)
    quantizer.build((None, config.feature_size, config.feature_size, config.remote_channels))
    quantizer.centroid_logits.assign(np.asarray(meta["centroid_logits"], dtype="float32"))
    alpha = Alpha(meta["alpha_temperature"], name="alpha")
    alpha.build([(None, config.num_classes), (None, config.num_classes)])
    alpha.w.assign(meta["alpha_w"])
    return TrainedAgileNN(
        config=config,
        extractor=keras.models.load_model(run_dir / "extractor.keras"),
        reference=keras.models.load_model(run_dir / "reference.keras"),
        local=keras.models.load_model(run_dir / "local_nn.keras"),
        remote=keras.models.load_model(run_dir / "remote_nn.keras"),
        quantizer=quantizer,
        alpha=alpha,
        permutation=list(meta["channel_permutation"]),
    )


def device_keras_model(trained: TrainedAgileNN) -> keras.Model:
    """Extractor + fixed channel split + Local NN: image -> (local logits, remote-bound channels).

    The remote channels leave unquantized (the ReLU6 features); the 3-bit codes are the nearest of
    `trained.centroid_values()`, which on the device is a 256-entry table over the int8 feature values.
    """
    cfg = trained.config
    image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    features = trained.extractor(image)
    local_in = ChannelSlice(0, cfg.k, name="local_split")(features)
    remote_out = ChannelSlice(cfg.k, cfg.feature_channels, name="remote_channels")(features)
    local_logits = trained.local(local_in)
    return keras.Model(image, [local_logits, remote_out], name="agilenn_device")


def remote_keras_model(trained: TrainedAgileNN) -> keras.Model:
    """Server side: remote channels (raw features or dequantized centroid values) -> hard quantizer -> Remote
    NN logits. Hard quantization is idempotent on centroid values, so both inputs give the same logits."""
    cfg = trained.config
    channels = keras.Input((cfg.feature_size, cfg.feature_size, cfg.remote_channels), name="remote_channels")
    dequantized = trained.quantizer(channels, training=False)
    return keras.Model(channels, trained.remote(dequantized), name="agilenn_server")


def full_keras_model(trained: TrainedAgileNN) -> keras.Model:
    """Image -> (local, remote, combined) logits in one graph, inference mode (hard quantizer)."""
    cfg = trained.config
    image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    features = trained.extractor(image)
    local = trained.local(ChannelSlice(0, cfg.k, name="local_split")(features))
    remote_in = ChannelSlice(cfg.k, cfg.feature_channels, name="remote_split")(features)
    remote = trained.remote(trained.quantizer(remote_in, training=False))
    combined = trained.alpha([local, remote])
    return keras.Model(image, [local, remote, combined], name="agilenn_full")


def count_params(model: keras.Model) -> int:
    return int(sum(np.prod(v.shape) for v in model.weights))
