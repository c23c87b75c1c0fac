"""MLPerf Tiny (v1.x) reference architectures in Keras, converted to full-integer int8 for the kernel core.

The four closed-division models of the MLPerf Tiny benchmark (github.com/mlcommons/tiny, `benchmark/training/`),
layer for layer as the reference training scripts build them, with random weights: the tests that use them
check compilation, memory budgets and bit-exactness with TensorFlow Lite Micro, never accuracy, so nothing is
trained. Batch size 1 everywhere (the device runs one input at a time; a fixed batch also keeps the
converter's Flatten free of run-time shape arithmetic).

- `resnet8`: image classification (CIFAR-10), 32x32x3: conv 16, three residual stacks of 16/32/64 filters,
  average pool, FC 10, softmax;
- `ds_cnn`: keyword spotting (Speech Commands), 49x10x1 MFCCs: conv 64 10x4 stride 2, four depthwise-separable
  blocks, average pool, FC 12, softmax;
- `mobilenet_v1_025`: visual wake words, 96x96x3: MobileNetV1 alpha 0.25, conv 8 stride 2, 13
  depthwise-separable blocks, average pool, FC 2, softmax;
- `autoencoder`: anomaly detection (ToyADMOS), 640 log-mel values: dense 128x4, 8, 128x4, 640 (BatchNorm and
  ReLU after each hidden layer).

- `build_keras(name, seed)`: the Keras model, weights randomized (hil.model.synthetic.randomize_weights: random
  biases and batch-norm parameters, so that folding them matters), then the batch-norm statistics measured on
  representative inputs, so that the outputs depend on the input (as a trained model's do) and every layer's
  arithmetic shows in them.
- `representative_dataset(name, seed, count)`: random float inputs in the range the real pipelines feed
  (images in [0, 1], MFCCs around 0, log-mel features around 0); the converter calibrates on them.
- `convert(model, name, seed, per_channel_dense=False)`: full-integer int8, per-tensor dense layers by default.
- `make_mlperf_model(name, seed)`: both, returns the .tflite bytes. TensorFlow is imported lazily.
- `python -m hil.model.mlperf NAME OUT.tflite [--seed N] [--per-channel-dense]`: writes one, e.g. for a bench
  (`hil compile OUT.tflite --out models/NAME`, then the ESP32-S3 build with `-DHIL_MODEL_DIR=...`).

Budgets of the ESP32-S3 (module with 4 MB flash, no PSRAM; the port's sdkconfig.defaults): `SRAM_BUDGET_BYTES`
for the tensor arena plus ESP-NN's scratch area, `FLASH_WEIGHTS_BUDGET_BYTES` for the constant data (weights,
biases, requantization parameters) in the 1.5 MB factory app partition next to the firmware's code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.errors import UsageError

__all__ = [
    "FLASH_WEIGHTS_BUDGET_BYTES",
    "MODELS",
    "SRAM_BUDGET_BYTES",
    "MlperfModel",
    "build_keras",
    "convert",
    "make_mlperf_model",
    "representative_dataset",
]

# The ESP32-S3 has 512 KB of internal SRAM; with the 64 KB data cache of sdkconfig.defaults, the IRAM the
# firmware's code and ESP-IDF need, FreeRTOS, the UART driver and the task stacks, about 320 KB of DRAM is left
# for static data. The arena and ESP-NN's scratch area (CONFIG_HIL_ESP_NN_SCRATCH_BYTES) must fit well inside
# that: 200 KB leaves room for the rest.
SRAM_BUDGET_BYTES = 200 * 1024
# The factory app partition is 1.5 MB (CONFIG_PARTITION_TABLE_SINGLE_APP_LARGE); the firmware's code with
# ESP-IDF and the drivers takes about 250 KB of it. Weights up to 1 MB leave a margin.
FLASH_WEIGHTS_BUDGET_BYTES = 1024 * 1024


@dataclass(frozen=True)
class MlperfModel:
    name: str
    task: str
    input_shape: tuple[int, ...]
    classes: int  # output width (the autoencoder: its reconstruction, 640)
    builder: Callable[..., Any]  # (tf module, batch_size) -> keras.Model


def _l2(tf: Any) -> Any:
    return tf.keras.regularizers.l2(1e-4)


def _resnet8(tf: Any, batch_size: int | None = 1) -> Any:
    """benchmark/training/image_classification/keras_model.py: resnet_v1_eembc()."""
    L = tf.keras.layers
    kw = {"kernel_initializer": "he_normal", "kernel_regularizer": _l2(tf)}
    inputs = tf.keras.Input((32, 32, 3), batch_size=batch_size, name="image")
    x = L.Conv2D(16, 3, strides=1, padding="same", **kw)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    # First stack: identity shortcut
    y = L.Conv2D(16, 3, strides=1, padding="same", **kw)(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(16, 3, strides=1, padding="same", **kw)(y)
    y = L.BatchNormalization()(y)
    x = L.add([x, y])
    x = L.Activation("relu")(x)
    # Second and third stacks: stride 2, 1x1 stride-2 convolution on the shortcut
    for filters in (32, 64):
        y = L.Conv2D(filters, 3, strides=2, padding="same", **kw)(x)
        y = L.BatchNormalization()(y)
        y = L.Activation("relu")(y)
        y = L.Conv2D(filters, 3, strides=1, padding="same", **kw)(y)
        y = L.BatchNormalization()(y)
        x = L.Conv2D(filters, 1, strides=2, padding="same", **kw)(x)
        x = L.add([x, y])
        x = L.Activation("relu")(x)
    pool = int(min(x.shape[1:3]))
    x = L.AveragePooling2D(pool_size=pool)(x)
    x = L.Flatten()(x)
    outputs = L.Dense(10, activation="softmax", kernel_initializer="he_normal")(x)
    return tf.keras.Model(inputs, outputs, name="resnet8")


def _ds_cnn(tf: Any, batch_size: int | None = 1) -> Any:
    """benchmark/training/keyword_spotting/keras_model.py: ds_cnn (the small model of the benchmark)."""
    L = tf.keras.layers
    reg = _l2(tf)
    filters = 64
    inputs = tf.keras.Input((49, 10, 1), batch_size=batch_size, name="mfcc")
    x = L.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", kernel_regularizer=reg)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    x = L.Dropout(rate=0.2)(x)
    for _ in range(4):
        # Keras 3 names the depthwise kernel's regularizer depthwise_regularizer (Keras 2 took kernel_regularizer)
        x = L.DepthwiseConv2D(depth_multiplier=1, kernel_size=(3, 3), padding="same", depthwise_regularizer=reg)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, (1, 1), padding="same", kernel_regularizer=reg)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    x = L.Dropout(rate=0.4)(x)
    # final_pool_size = (int(49 / 2), int(10 / 2)) = (24, 5), on the 25x5 feature map
    x = L.AveragePooling2D(pool_size=(24, 5))(x)
    x = L.Flatten()(x)
    outputs = L.Dense(12, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="ds_cnn")


# (depthwise stride, pointwise filters) of MobileNetV1's 13 depthwise-separable blocks at alpha 0.25.
_MOBILENET_BLOCKS = (
    (1, 16),
    (2, 32),
    (1, 32),
    (2, 64),
    (1, 64),
    (2, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (1, 128),
    (2, 256),
    (1, 256),
)


def _mobilenet_v1_025(tf: Any, batch_size: int | None = 1) -> Any:
    """benchmark/training/visual_wake_words/vww_model.py: mobilenet_v1() (alpha 0.25, 96x96, 2 classes)."""
    L = tf.keras.layers
    kw = {"kernel_initializer": "he_normal", "kernel_regularizer": _l2(tf)}
    dw_kw = {"depthwise_initializer": "he_normal", "depthwise_regularizer": _l2(tf)}
    inputs = tf.keras.Input((96, 96, 3), batch_size=batch_size, name="image")
    x = L.Conv2D(8, 3, strides=2, padding="same", **kw)(inputs)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    for stride, filters in _MOBILENET_BLOCKS:
        x = L.DepthwiseConv2D(3, strides=stride, padding="same", **dw_kw)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, 1, strides=1, padding="same", **kw)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
    x = L.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]))(x)
    x = L.Flatten()(x)
    outputs = L.Dense(2, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs, name="mobilenet_v1_025")


def _autoencoder(tf: Any, batch_size: int | None = 1) -> Any:
    """benchmark/training/anomaly_detection/keras_model.py: get_model(640)."""
    L = tf.keras.layers
    inputs = tf.keras.Input((640,), batch_size=batch_size, name="log_mel")
    h = inputs
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        h = L.Dense(units)(h)
        h = L.BatchNormalization()(h)
        h = L.Activation("relu")(h)
    outputs = L.Dense(640)(h)
    return tf.keras.Model(inputs, outputs, name="autoencoder")


MODELS: dict[str, MlperfModel] = {
    m.name: m
    for m in (
        MlperfModel("resnet8", "image classification, CIFAR-10", (32, 32, 3), 10, _resnet8),
        MlperfModel("ds_cnn", "keyword spotting, Speech Commands", (49, 10, 1), 12, _ds_cnn),
        MlperfModel("mobilenet_v1_025", "visual wake words", (96, 96, 3), 2, _mobilenet_v1_025),
        MlperfModel("autoencoder", "anomaly detection, ToyADMOS", (640,), 640, _autoencoder),
    )
}


def _spec(name: str) -> MlperfModel:
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown MLPerf Tiny model '{name}'; choose one of {', '.join(MODELS)}") from None


def _calibrate_batch_norm(tf: Any, name: str, weights: list[np.ndarray], data: np.ndarray) -> list[np.ndarray]:
    """Weights whose batch-norm moving statistics are the actual mean and variance of each layer's input on
    `data`. Random statistics (hil.model.synthetic.randomize_weights) do not match the activations they
    normalize: in a deep random network the input-dependent part of the signal then shrinks layer by layer
    until the outputs no longer depend on the input (MobileNet and DS-CNN did), which would leave the deeper
    layers' arithmetic untested. One forward pass in training mode with momentum 0 sets every layer's
    statistics at once, each from the normalized activations below it (a copy of the model without a fixed
    batch size, so that the statistics are taken over a batch); gamma and beta stay random."""
    model = _spec(name).builder(tf, None)
    model.set_weights(weights)
    norms = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0
    model(data, training=True)
    return model.get_weights()


def build_keras(name: str, seed: int = 0, calibrate: bool = True) -> Any:
    """The Keras model `name` with reproducible random weights: the initializers' kernels, random biases and
    batch-norm gamma/beta, and (calibrate=True) batch-norm statistics measured on representative inputs, so
    that the outputs depend on the input as a trained model's do."""
    import tensorflow as tf

    from hil.model.synthetic import randomize_weights

    tf.keras.utils.set_random_seed(seed)
    model = _spec(name).builder(tf)
    randomize_weights(model, np.random.default_rng(seed))
    if calibrate:
        data = np.concatenate([x for (x,) in representative_dataset(name, seed + 2, 64)()])
        model.set_weights(_calibrate_batch_norm(tf, name, model.get_weights(), data))
    return model


def representative_dataset(name: str, seed: int = 1, count: int = 32) -> Callable[[], Iterable[list[np.ndarray]]]:
    """Random float inputs shaped like the model's (batch 1), in the range its real features take."""
    spec = _spec(name)
    rng = np.random.default_rng(seed)
    shape = (count, *spec.input_shape)
    if name in ("resnet8", "mobilenet_v1_025"):
        data = rng.uniform(0.0, 1.0, size=shape)  # images scaled to [0, 1]
    elif name == "ds_cnn":
        data = rng.normal(0.0, 10.0, size=shape)  # MFCCs
    else:
        data = rng.normal(0.0, 5.0, size=shape)  # log-mel energies, standardized-ish
    data = data.astype(np.float32)

    def gen() -> Iterable[list[np.ndarray]]:
        for d in data:
            yield [d[None]]

    return gen


def convert(model: Any, name: str, seed: int = 1, count: int = 32, per_channel_dense: bool = False) -> bytes:
    """Full-integer int8 conversion (weights, activations, inputs and outputs, builtin ops only), calibrated on
    random inputs (representative_dataset). Convolutions get per-channel weights. Dense layers get per-tensor
    weights unless per_channel_dense: TF 2.16+ quantizes them per channel by default, the converters the MLPerf
    Tiny reference .tflite files were made with per tensor, and ESP-NN's FULLY_CONNECTED is per tensor (the
    ESP32-S3 port runs a per-channel one on the portable kernel unless CONFIG_HIL_ESP_NN_FC_PER_CHANNEL)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset(name, seed, count)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    converter._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel_dense
    return bytes(converter.convert())


def make_mlperf_model(name: str, seed: int = 0, per_channel_dense: bool = False) -> bytes:
    """The int8 .tflite of MLPerf Tiny model `name`, random weights from `seed` (see build_keras, convert)."""
    return convert(build_keras(name, seed), name, seed + 1, per_channel_dense=per_channel_dense)


def main(argv: list[str] | None = None) -> int:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m hil.model.mlperf", description="Write an MLPerf Tiny reference model as an int8 .tflite"
    )
    parser.add_argument("name", choices=sorted(MODELS))
    parser.add_argument("out", type=Path, help="the .tflite to write")
    parser.add_argument("--seed", type=int, default=0, help="random weights' seed (default 0, as the tests)")
    parser.add_argument("--per-channel-dense", action="store_true", help="per-channel dense layers")
    args = parser.parse_args(argv)
    data = make_mlperf_model(args.name, args.seed, per_channel_dense=args.per_channel_dense)
    args.out.write_bytes(data)
    print(f"{args.out}: {args.name} ({MODELS[args.name].task}), {len(data)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
