"""Synthetic int8 models: the project's default device model and small models for kernel tests.

- `make_extractor_model(seed)`: a random-weights, full-integer int8 model with the AgileNN feature
  extractor's shape, converted by TensorFlow (imported lazily: only model generation needs it).
- `write_synthetic_model(out_dir, seed)`: writes models/synthetic-extractor (model.tflite, hil_model.c,
  model.json, card.json, README.md).
- `make_single_op_model(op, rng, **params)`: a one-operator int8 .tflite written directly with the
  flatbuffer schema (no TensorFlow, milliseconds per model) with random weights and quantization
  parameters, for bit-exactness tests of each kernel against TFLite Micro. `TfliteBuilder` builds
  arbitrary small graphs the same way. Both live in their own modules (single_op.py, tflite_builder.py)
  and are re-exported here.
- `convert_keras_int8(model, representative)`: TFLiteConverter with full-integer int8 settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import UsageError
from hil.model.single_op import make_single_op_model
from hil.model.tflite_builder import TfliteBuilder, builtin_options

__all__ = [
    "EXTRACTOR_CLASSES",
    "EXTRACTOR_INPUT_SHAPE",
    "EXTRACTOR_LOCAL_CHANNELS",
    "TfliteBuilder",
    "builtin_options",
    "convert_keras_int8",
    "make_extractor_model",
    "make_single_op_model",
    "random_images",
    "randomize_weights",
    "write_synthetic_model",
]

EXTRACTOR_INPUT_SHAPE = (96, 96, 3)
EXTRACTOR_LOCAL_CHANNELS = 5  # x[..., :5] feeds the local head, x[..., 5:] is sent to the remote side
EXTRACTOR_CLASSES = 10


# --------------------------------------------------------------------------------------------------------
# TensorFlow-converted models


def convert_keras_int8(
    model: Any, representative: Callable[[], Iterable[list[np.ndarray]]], activations: str = "int8"
) -> bytes:
    """Full-integer conversion with int8 weights, builtin ops only. activations "int8": int8 activations,
    inputs and outputs; "int16": TFLite's 16x8 scheme (int16 activations, inputs and outputs with zero point 0,
    int64 biases)."""
    import tensorflow as tf

    if activations not in ("int8", "int16"):
        raise UsageError(f"activations must be 'int8' or 'int16', not {activations!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    if activations == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        int16x8 = tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [int16x8]
    io_type = tf.int8 if activations == "int8" else tf.int16
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    return bytes(converter.convert())


def randomize_weights(model: Any, rng: np.random.Generator) -> None:
    """Non-trivial biases and batch-norm statistics, so that folding them into the convolutions matters."""
    import tensorflow as tf

    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            gamma, beta, mean, var = weights
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype(np.float32),
                    rng.normal(0.0, 0.2, beta.shape).astype(np.float32),
                    rng.normal(0.0, 0.3, mean.shape).astype(np.float32),
                    rng.uniform(0.5, 2.0, var.shape).astype(np.float32),
                ]
            )
        else:
            # Keep the initializer's kernels; give every bias (initialized to zero) random values.
            layer.set_weights([rng.normal(0.0, 0.1, w.shape).astype(np.float32) if w.ndim == 1 else w for w in weights])


def random_images(seed: int, count: int, shape: Sequence[int] = EXTRACTOR_INPUT_SHAPE) -> np.ndarray:
    """Float images in [-1, 1] with some spatial structure (waves plus noise), shape (count, *shape)."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w)
    images = np.empty((count, h, w, c), dtype=np.float32)
    for i in range(count):
        fx, fy, phase = rng.uniform(1, 6), rng.uniform(1, 6), rng.uniform(0, 2 * np.pi, size=c)
        base = np.sin(2 * np.pi * (fx * xx[..., None] + fy * yy[..., None]) + phase)
        images[i] = np.clip(0.7 * base + rng.normal(0, 0.3, size=(h, w, c)), -1, 1)
    return images


def make_extractor_model(seed: int = 0) -> bytes:
    """Random-weights int8 model with the AgileNN extractor's shape.

    input 1x96x96x3 -> SeparableConv2D(4, 3x3, stride 3, same) + BN + ReLU6
    -> SeparableConv2D(24, 3x3, same) + BN + ReLU6 -> x;
    outputs: local_logits = Dense(10)(GlobalAveragePooling2D(x[..., :5])) as (1, 10) (logits, no softmax)
    and remote_features = x[..., 5:] as (1, 32, 32, 19), in that order.
    """
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    layers = tf.keras.layers
    inp = tf.keras.Input(EXTRACTOR_INPUT_SHAPE, batch_size=1, name="image")
    x = layers.SeparableConv2D(4, 3, strides=3, padding="same", name="sep_conv1")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(6.0, name="relu6_1")(x)
    x = layers.SeparableConv2D(24, 3, padding="same", name="sep_conv2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(6.0, name="relu6_2")(x)
    local = x[..., :EXTRACTOR_LOCAL_CHANNELS]
    remote = x[..., EXTRACTOR_LOCAL_CHANNELS:]
    local = layers.GlobalAveragePooling2D(name="gap")(local)
    logits = layers.Dense(EXTRACTOR_CLASSES, name="local_head")(local)
    # Named outputs: the converter orders a dict's outputs by name, which puts the logits first.
    model = tf.keras.Model(inp, {"local_logits": logits, "remote_features": remote}, name="synthetic_extractor")
    randomize_weights(model, np.random.default_rng(seed))

    images = random_images(seed + 1, 64)

    def representative() -> Iterable[list[np.ndarray]]:
        for img in images:
            yield [img[None]]

    return convert_keras_int8(model, representative)


SYNTHETIC_README = """# synthetic-extractor

A **random-weights stand-in** for the AgileNN feature extractor, used as the default device model until the
trained AgileNN model exists. It has the extractor's shape and operators but its outputs mean nothing.

- input: 1x96x96x3 int8 image
- SeparableConv2D(4, 3x3, stride 3, same) + BatchNorm + ReLU6
- SeparableConv2D(24, 3x3, same) + BatchNorm + ReLU6
- output 0 `local_logits` (1x10): x[..., :5] -> GlobalAveragePooling2D -> Dense(10), logits
- output 1 `remote_features` (1x32x32x19): x[..., 5:], the channels sent to the remote side

Full-integer int8 (weights, activations, inputs, outputs), converted by TensorFlow with a representative
dataset of random images. Files: `model.tflite` (source of truth), `hil_model.c` and `model.json` generated
from it by `hil.model.compiler`, `card.json` (hashes and device cost).

Regenerate with `hil.model.synthetic.write_synthetic_model(out_dir, seed=0)`.
"""


def write_synthetic_model(out_dir: Path, seed: int = 0, name: str = "synthetic-extractor") -> Any:
    """Generates the default device model into out_dir and returns its CompiledModel.

    Writes model.tflite, hil_model.c, model.json, card.json and README.md. The same seed gives the same
    files as far as TensorFlow's conversion is deterministic.
    """
    from hil.model.compiler import compile_tflite

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tflite = make_extractor_model(seed)
    (out_dir / "model.tflite").write_bytes(tflite)
    (out_dir / "README.md").write_text(SYNTHETIC_README)
    compiled = compile_tflite(tflite, out_dir, name=name)
    card = {
        "name": name,
        "kind": "synthetic",
        "dataset": "none (random weights)",
        "seed": seed,
        "artifacts": {
            f: hashlib.sha256((out_dir / f).read_bytes()).hexdigest()
            for f in ("model.tflite", "hil_model.c", "model.json")
        },
        "device": {
            "weights_bytes": compiled.weights_bytes,
            "arena_bytes": compiled.arena_bytes,
            "macs": compiled.macs,
        },
    }
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return compiled
