"""Exports a trained AgileNN run directory into a model directory the firmware and the server can use.

`export_agilenn(run_dir, out_dir, name=...)` writes:

- model.tflite: the device part (extractor + fixed channel split + Local NN) as full-integer int8 TFLite:
  int8 input (the image: scale 1/255, zero point -128, i.e. exactly uint8 - 128) and two int8 outputs in a
  fixed order, 0 = local_logits (1, classes), 1 = remote_features (1, H, W, C - k);
- hil_model.c, model.json: the C the firmware compiles (hil.model.compiler), so no TensorFlow at build time;
- hil_offload.c: the firmware's offload config (hil.offload.codegen): lookup table, output indices, Local NN ops;
- remote.keras: the server's Remote NN, input = dequantized remote channels (centroid values), output logits;
- agilenn.json: split, centroids, alpha, I/O quantization and the 256-entry int8 -> code lookup table;
- card.json + README.md: hashes, data set provenance, accuracies, skewness, payload and device cost.

Accuracy of the int8 device part is measured with TensorFlow Lite Micro (hil.model.reference.TflmReference,
the project's golden interpreter, reference kernels) on every test image, then completed on the server side in
float exactly as deployed: local logits dequantized; remote channels int8 -> code (lookup) -> centroid value ->
Remote NN; combined = alpha * local + (1 - alpha) * remote.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import io
import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil import paths
from hil.export.cards import UNHASHED, load_card, sha256_file
from hil.train.config import TrainConfig

if TYPE_CHECKING:
    import keras

    from hil.train.data import Dataset
    from hil.train.layers import TrainedAgileNN

EXPORT_FORMAT = "agilenn-export/1"
OUTPUT_NAMES = ("local_logits", "remote_features")  # the fixed output order of model.tflite
DEVICE_FILES = ("model.tflite", "hil_model.c", "model.json", "hil_offload.c")
EXPORT_FILES = (*DEVICE_FILES, "remote.keras", "agilenn.json", "README.md", "card.json")
CALIBRATION_IMAGES = 300
Z95 = 1.959963984540054  # two-sided 95% normal quantile
EVAL_BATCH = 500


class ExportError(ValueError):
    """The run directory cannot be exported as asked (unfinished run, other data, unexpected conversion)."""


# ---------------------------------------------------------------------------------------------------------
# small, TensorFlow-free pieces (unit-testable on their own)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quant:
    """Per-tensor int8 quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        # float32 like the TFLite/TFLM dequantize, so the host reproduces the same floats.
        return np.float32(self.scale) * (np.asarray(q, np.int32) - self.zero_point).astype(np.float32)

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """Round half up (TFLite's quantize of a float input), saturated to int8."""
        q = np.floor(np.asarray(real, np.float64) / self.scale + 0.5) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved near 0 and 1, unlike the normal one)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def centroid_lookup(centroids: Sequence[float], remote: Quant) -> np.ndarray:
    """table[q + 128] = index of the centroid nearest to the dequantized int8 value q, for all 256 q.

    Computed in float32 with squared distances and first-index ties, as the training quantizer's argmin
    (SoftToHardQuantizer.indices), so the device's codes are the ones the server's hard quantizer would pick
    for the same dequantized feature.
    """
    c = np.asarray(centroids, np.float32)
    values = remote.dequantize(np.arange(-128, 128))
    return np.argmin(np.square(values[:, None] - c[None, :]), axis=1).astype(np.uint8)


def keras_macs(model: keras.Model) -> int:
    """Multiply-accumulates of the Conv2D / DepthwiseConv2D / Dense layers of a functional Keras model
    (nested models included); BN, activations, adds and pooling are not counted, as in the compiler's MACs."""
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        if hasattr(layer, "layers"):  # a nested model
            total += keras_macs(layer)
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        out_shape = tuple(layer.output.shape)
        if isinstance(layer, layers.Conv2D | layers.DepthwiseConv2D):
            # kernel (kh, kw, cin / groups, cout) or (kh, kw, cin, multiplier): one MAC per weight per pixel
            total += math.prod(out_shape[1:3]) * math.prod(kernel.shape)
        elif isinstance(layer, layers.Dense):
            total += math.prod(kernel.shape)
    return int(total)


def reorder_outputs(tflite: bytes, order: Sequence[int]) -> bytes:
    """The same model with the main subgraph's outputs permuted: new output i = old output order[i].

    Only the output list changes (tensors, buffers and signature maps keep their indices), so the function of
    each output tensor is untouched.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    sg = model.subgraphs[0]
    old = list(sg.outputs)
    if sorted(order) != list(range(len(old))):
        raise ValueError(f"{list(order)} is not a permutation of the {len(old)} outputs")
    sg.outputs = np.asarray([old[i] for i in order], dtype=np.int32)
    builder = flatbuffers.Builder(len(tflite) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def order_outputs_by_shape(tflite: bytes, shapes: Sequence[Sequence[int]]) -> bytes:
    """Puts the outputs in the order of `shapes` (the converter orders outputs by its own rules; the firmware
    and the server rely on output 0 = local logits, 1 = remote features). Shapes must be distinct."""
    from hil.model.tflite_reader import read_tflite

    graph = read_tflite(tflite)
    have = [tuple(graph.tensors[i].shape) for i in graph.outputs]
    want = [tuple(int(d) for d in s) for s in shapes]
    if sorted(have) != sorted(want) or len(set(want)) != len(want):
        raise ExportError(f"converted model outputs {have}, expected the shapes {want}")
    order = [have.index(s) for s in want]
    return tflite if order == list(range(len(order))) else reorder_outputs(tflite, order)


# ---------------------------------------------------------------------------------------------------------
# the run directory
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFiles:
    """What the trainer left in a finished run directory (see hil.train.trainer)."""

    run_dir: Path
    config: TrainConfig
    meta: dict[str, Any]  # agilenn.json
    result: dict[str, Any]  # result.json: evaluation, provenance, sessions, artifacts
    sessions: list[dict[str, Any]]  # hardware.json
    metrics: list[dict[str, Any]]  # metrics.jsonl

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        run_dir = Path(run_dir)
        needed = ("config.json", "agilenn.json", "result.json", "hardware.json", "metrics.jsonl")
        missing = [f for f in needed if not (run_dir / f).is_file()]
        if missing:
            raise ExportError(
                f"{run_dir} is not a finished training run (lacks {', '.join(missing)}); "
                f"finish it with: hil train --run-dir {run_dir}"
            )
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return cls(
            run_dir=run_dir,
            config=TrainConfig.from_json(run_dir / "config.json"),
            meta=json.loads((run_dir / "agilenn.json").read_text()),
            result=json.loads((run_dir / "result.json").read_text()),
            sessions=json.loads((run_dir / "hardware.json").read_text()),
            metrics=[json.loads(line) for line in lines if line.strip()],
        )

    @property
    def provenance(self) -> str:
        return str(self.result["provenance"])

    def training_summary(self) -> dict[str, Any]:
        """Epochs, time and machines, from metrics.jsonl and hardware.json."""
        epochs = {
            stage: max((r["epoch"] for r in self.metrics if r.get("stage") == stage), default=0)
            for stage in ("reference", "joint")
        }
        compute = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in self.metrics)
        compute += sum(r.get("seconds", 0.0) for r in self.metrics if r.get("stage") == "preprocess")
        times = [_parse_time(r["time"]) for r in self.metrics if "time" in r]
        starts = [_parse_time(s["started"]) for s in self.sessions if "started" in s]
        wall = (max(times) - min(starts)).total_seconds() if times and starts else None
        machines = []
        for session in self.sessions:
            hw = session.get("hardware", {})
            text = (
                f"{hw.get('cpu_model') or 'unknown CPU'} ({hw.get('cpu_usable')} of {hw.get('cpu_count')} CPUs "
                f"usable), accelerator: {hw.get('accelerator', 'unknown')}, TensorFlow {hw.get('tensorflow')}, "
                f"Keras {hw.get('keras')}"
            )
            if text not in machines:
                machines.append(text)
        last = self.sessions[-1] if self.sessions else {}
        return {
            "preset": last.get("preset", self.config.preset),
            "schedule": last.get("schedule", {}),
            "epochs": epochs,
            "sessions": len(self.sessions),
            # Sum of the logged epoch, evaluation and pre-processing times: the training compute itself.
            "compute_seconds": round(compute, 1),
            # First start to the last log line; includes start-up, the final evaluation and any pauses between
            # resumed sessions.
            "wall_seconds": None if wall is None else round(wall, 1),
            "hardware": machines,
        }


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _display_path(path: Path) -> str:
    """Relative to the project root when inside it: cards are committed and must not carry machine paths."""
    path = Path(path).resolve()
    try:
        return path.relative_to(paths.PROJECT_ROOT).as_posix()
    except ValueError:
        return path.name


def _dataset(run: RunFiles, data: Dataset | None) -> Dataset:
    """The run's data set, checked to be the one it was trained and evaluated on."""
    from hil.train.data import load_dataset

    cfg = run.config
    dataset = data if data is not None else load_dataset(cfg.dataset, allow_download=False)
    as_trained = dataset.limit(cfg.train_limit, cfg.test_limit)
    if as_trained.provenance != run.provenance:
        raise ExportError(
            f"the data set is '{as_trained.provenance}' but {run.run_dir} was trained on '{run.provenance}'; "
            "pass the same data set"
        )
    return dataset


def _check_out_dir(out_dir: Path) -> None:
    """Refuses to mix an export with foreign files: the card must account for every file in the directory."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a directory")
    foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES and not p.name.startswith("."))
    if foreign:
        raise ExportError(
            f"{out_dir} holds files that are not part of an export ({', '.join(foreign)}); "
            "remove them or export into another directory"
        )


# ---------------------------------------------------------------------------------------------------------
# conversion and evaluation (TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def calibration_images(x_train: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, bool]:
    """`count` training images drawn without replacement with `seed`; returns (images, patched).

    The converter takes the int8 input's range from the calibration data. For the input quantization to be
    exactly x/255 (scale 1/255, zero point -128, i.e. int8 = uint8 - 128) the data must reach 0 and 255; when
    it does not, one pixel of the first image is set to 0 and one to 255 (patched = True): a negligible change
    to the activation ranges, and the input stays exact.
    """
    if len(x_train) == 0:
        raise ExportError("no training images to calibrate the int8 conversion with")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(x_train), size=min(count, len(x_train)), replace=False))
    images = np.array(x_train[idx], copy=True)
    patched = bool(images.min() > 0 or images.max() < 255)
    if patched:
        images[0, 0, 0, :] = 0
        images[0, 0, -1, :] = 255
    return images, patched


def model_input(images: np.ndarray, input_size: int, batch: int = EVAL_BATCH) -> Iterator[np.ndarray]:
    """uint8 images -> float32 model input (x / 255, resized like training when the size differs), in batches."""
    from hil.train.data import to_model_input

    for start in range(0, len(images), batch):
        yield to_model_input(images[start : start + batch], input_size).numpy()


def convert_device_int8(trained: TrainedAgileNN, calibration: np.ndarray) -> bytes:
    """device_keras_model(trained) as full-integer int8 TFLite with batch 1, outputs [local_logits,
    remote_features]. calibration: float32 model inputs for the representative dataset."""
    import keras

    from hil.model.synthetic import convert_keras_int8
    from hil.train.layers import device_keras_model

    cfg = trained.config
    device = device_keras_model(trained)
    image = keras.Input((cfg.input_size, cfg.input_size, 3), batch_size=1, name="image")
    local, remote = device(image)
    # Named outputs: the converter orders a dict's outputs by name, which already gives the wanted order;
    # order_outputs_by_shape still enforces it, since that is converter behaviour, not a documented contract.
    wrapper = keras.Model(image, dict(zip(OUTPUT_NAMES, (local, remote), strict=True)), name="agilenn_device")

    def representative() -> Iterator[list[np.ndarray]]:
        for img in calibration:
            yield [img[None].astype(np.float32)]

    # The Keras export prints every captured variable to stdout; keep the command's output readable. The
    # converter also warns that the int8 input has no given statistics: the representative images are them.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        tflite = convert_keras_int8(wrapper, representative)
    fs, rc = cfg.feature_size, cfg.remote_channels
    return order_outputs_by_shape(tflite, [(1, cfg.num_classes), (1, fs, fs, rc)])


@dataclass(frozen=True)
class DeviceIO:
    input: Quant
    local: Quant
    remote: Quant
    input_shape: tuple[int, ...]
    local_shape: tuple[int, ...]
    remote_shape: tuple[int, ...]

    @classmethod
    def of(cls, tflite: bytes) -> DeviceIO:
        from hil.model.tflite_reader import read_tflite

        graph = read_tflite(tflite)
        tensors = [graph.tensors[i] for i in (*graph.inputs, *graph.outputs)]
        for t in tensors:
            if t.dtype != "int8" or t.quant is None or t.quant.per_channel:
                raise ExportError(f"tensor '{t.name}' is {t.dtype}, not per-tensor int8: not a full-integer model")
        q = [Quant(float(t.quant.scale), int(t.quant.zero_point)) for t in tensors]
        return cls(q[0], q[1], q[2], *(tuple(t.shape) for t in tensors))


def check_uint8_input(io_: DeviceIO) -> bool:
    """True when quantizing x = u / 255 with the input's parameters gives exactly u - 128 for all 256 u."""
    u = np.arange(256)
    return bool(np.array_equal(io_.input.quantize(u / 255.0).astype(np.int16), u - 128))


@dataclass(frozen=True)
class Int8Outputs:
    local: np.ndarray  # (N, classes) int8
    remote: np.ndarray  # (N, H, W, C - k) int8
    seconds: float  # interpreter time for the N images

    @property
    def images_per_s(self) -> float:
        return len(self.local) / self.seconds if self.seconds > 0 else float("inf")


def device_inputs(images: np.ndarray, input_size: int, input_q: Quant) -> Iterator[np.ndarray]:
    """uint8 images -> the int8 device input, in batches: uint8 - 128 when that is exact (as the firmware and
    `hil check --inputs` do it), else quantized from the float model input."""
    if images.shape[1] == input_size and input_q == Quant(np.float32(1 / 255).item(), -128):
        for start in range(0, len(images), EVAL_BATCH):
            yield (images[start : start + EVAL_BATCH].astype(np.int16) - 128).astype(np.int8)
        return
    for batch in model_input(images, input_size):
        yield input_q.quantize(batch)


def run_int8_tflm(tflite: bytes, images: np.ndarray, input_size: int, input_q: Quant) -> Int8Outputs:
    """Every image through TFLite Micro one at a time (batch 1, as on the device)."""
    from hil.model.reference import TflmReference

    ref = TflmReference(tflite)
    local = np.empty((len(images), *ref.outputs[0].shape[1:]), np.int8)
    remote = np.empty((len(images), *ref.outputs[1].shape[1:]), np.int8)
    seconds = 0.0
    n = 0
    for q in device_inputs(images, input_size, input_q):
        started = time.perf_counter()
        for x in q:
            out_local, out_remote = ref.run([x[None]])
            local[n], remote[n] = out_local[0], out_remote[0]
            n += 1
        seconds += time.perf_counter() - started
    return Int8Outputs(local, remote, seconds)


def server_logits(
    local_q: np.ndarray,
    remote_q: np.ndarray,
    io_: DeviceIO,
    lookup: np.ndarray,
    centroids: Sequence[float],
    remote_model: keras.Model,
    alpha: float,
) -> dict[str, np.ndarray]:
    """What the server computes from the device's int8 outputs: local logits dequantized, remote channels
    int8 -> code (lookup) -> centroid value -> Remote NN (float), then alpha * local + (1 - alpha) * remote."""
    codes = lookup[remote_q.astype(np.int16) + 128]
    values = np.asarray(centroids, np.float32)[codes]
    local = io_.local.dequantize(local_q)
    remote = np.asarray(remote_model.predict(values, batch_size=EVAL_BATCH, verbose=0), np.float32)
    a = np.float32(alpha)
    return {"local": local, "remote": remote, "combined": a * local + (np.float32(1.0) - a) * remote, "codes": codes}


def float_logits(trained: TrainedAgileNN, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The float Keras pipeline (hard quantizer, as the server sees it): local, remote and combined logits."""
    import tensorflow as tf

    from hil.train.data import eval_pipeline

    @tf.function(reduce_retracing=True)
    def step(xb: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        out = trained.forward(xb, training=False)
        return out["local"], out["remote"], out["combined"]

    parts: dict[str, list[np.ndarray]] = {"local": [], "remote": [], "combined": []}
    # The training run's evaluation batch size: the same float computation as its reported accuracies.
    cfg = trained.config
    for xb, _ in eval_pipeline(x, y, cfg.eval_batch_size, input_size=cfg.input_size):
        for key, value in zip(parts, step(xb), strict=True):
            parts[key].append(value.numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=-1) == y)) if len(y) else float("nan")


# ---------------------------------------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------------------------------------


def export_agilenn(
    run_dir: Path | str,
    out_dir: Path | str,
    *,
    name: str,
    data: Dataset | None = None,
    test_limit: int | None = None,
    calibration_count: int = CALIBRATION_IMAGES,
    seed: int = 0,
) -> dict[str, Any]:
    """Exports a finished run into out_dir (see the module docstring); returns the model card.

    data: the run's data set when it cannot be loaded from config.dataset (tests); it must have the
    provenance the run was trained on. test_limit: evaluate on the first N test images only (tests, smoke
    runs; the card says so). calibration_count / seed: the representative training images of the int8
    conversion.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(key: str, since: float) -> float:
        now = time.perf_counter()
        timings[key] = round(now - since, 2)
        return now

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = RunFiles.read(run_dir)
    cfg = run.config
    _check_out_dir(out_dir)
    dataset = _dataset(run, data)
    # TensorFlow only now: a wrong run directory or data set is reported in a fraction of a second.
    from hil.model.compiler import compile_tflite
    from hil.offload.codegen import write_offload_c
    from hil.train.layers import load_trained

    trained = load_trained(run_dir)
    x_train = dataset.x_train[: cfg.train_limit]
    x_test, y_test = dataset.x_test[:test_limit], dataset.y_test[:test_limit]
    eval_provenance = dataset.limit(None, test_limit).provenance
    t = lap("load", started)

    # --- int8 device part ---
    calib_u8, patched = calibration_images(x_train, calibration_count, seed)
    calibration = np.concatenate(list(model_input(calib_u8, cfg.input_size)))
    tflite = convert_device_int8(trained, calibration)
    io_ = DeviceIO.of(tflite)
    uint8_exact = check_uint8_input(io_)
    if cfg.input_size == dataset.image_size and not uint8_exact:
        # The firmware and `hil check --inputs` feed uint8 images as uint8 - 128; anything else would be a
        # silent accuracy loss on the device.
        raise ExportError(f"the int8 input quantization {io_.input} is not x/255 (uint8 - 128)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(tflite)
    t = lap("convert", t)
    compiled = compile_tflite(out_dir / "model.tflite", out_dir, name=name)
    t = lap("compile", t)

    # --- the server's side ---
    centroids = [float(c) for c in run.meta["centroids"]]
    alpha = float(run.meta["alpha"])
    lookup = centroid_lookup(centroids, io_.remote)
    trained.remote.save(out_dir / "remote.keras")

    # --- accuracy: float pipeline, then the int8 device part through TFLM ---
    flt = float_logits(trained, x_test, y_test)
    t = lap("float_eval", t)
    int8 = run_int8_tflm(tflite, x_test, cfg.input_size, io_.input)
    srv = server_logits(int8.local, int8.remote, io_, lookup, centroids, trained.remote, alpha)
    t = lap("int8_eval", t)
    n = len(y_test)
    correct_int8 = int(np.sum(np.argmax(srv["combined"], -1) == y_test))
    code_hist = np.bincount(srv["codes"].reshape(-1), minlength=len(centroids))

    evaluation = run.result["evaluation"]
    values_per_inference = cfg.feature_size**2 * cfg.remote_channels
    accuracy = {
        "local_only": _accuracy(flt["local"], y_test),
        "remote_only": _accuracy(flt["remote"], y_test),
        "combined_float": _accuracy(flt["combined"], y_test),
        "combined_int8": correct_int8 / n if n else float("nan"),
        "combined_int8_ci95": list(wilson_interval(correct_int8, n)),
        "local_only_int8": _accuracy(srv["local"], y_test),
        "remote_only_int8": _accuracy(srv["remote"], y_test),
        # How often the int8 device part changes the float pipeline's decision.
        "int8_float_agreement": float(np.mean(np.argmax(srv["combined"], -1) == np.argmax(flt["combined"], -1))),
        "samples": n,
        "full_test_set": test_limit is None or test_limit >= len(dataset.x_test),
        "test_set": eval_provenance,
        "int8_runtime": (
            f"TensorFlow Lite Micro {_version('tflite-micro')} (hil.model.reference.TflmReference, reference "
            f"kernels), batch 1, {int8.images_per_s:.0f} images/s on the exporting machine"
        ),
        "float_runtime": f"TensorFlow {_tf_version()}, Keras {_version('keras')}",
    }

    # --- agilenn.json: everything the device and the server need besides the two models ---
    k, c = cfg.k, cfg.feature_channels
    perm = list(run.meta.get("channel_permutation", range(c)))
    agilenn = {
        "format": EXPORT_FORMAT,
        "name": name,
        "num_classes": cfg.num_classes,
        "class_names": list(dataset.class_names) if dataset.class_names else None,
        "input": {
            "shape": list(io_.input_shape),
            "dtype": "int8",
            "scale": io_.input.scale,
            "zero_point": io_.input.zero_point,
            "from_uint8": "q = uint8 - 128" if uint8_exact else "q = round(x / scale) + zero_point",
            "float_meaning": "RGB uint8 / 255"
            + (
                ""
                if cfg.input_size == dataset.image_size
                else f", bilinear-resized to {cfg.input_size}x{cfg.input_size}"
            ),
        },
        "outputs": [
            {
                "index": 0,
                "name": OUTPUT_NAMES[0],
                "shape": list(io_.local_shape),
                "dtype": "int8",
                "scale": io_.local.scale,
                "zero_point": io_.local.zero_point,
                "meaning": "Local NN logits: float = scale * (q - zero_point)",
            },
            {
                "index": 1,
                "name": OUTPUT_NAMES[1],
                "shape": list(io_.remote_shape),
                "dtype": "int8",
                "scale": io_.remote.scale,
                "zero_point": io_.remote.zero_point,
                "meaning": "remote-bound feature channels (ReLU6 range), NHWC; code = int8_to_code[q + 128]",
            },
        ],
        "feature_map": [cfg.feature_size, cfg.feature_size, c],
        "k": k,
        "channel_split": {
            "local": [0, k],
            "remote": [k, c],
            # Channel j of remote_features is extractor output channel k + j; after channel pre-processing
            # that is channel perm[k + j] of the extractor as first trained.
            "remote_original_channels": perm[k:],
            "local_original_channels": perm[:k],
        },
        "channel_permutation": perm,
        "centroids": centroids,
        "bits_per_value": cfg.bits_per_value,
        "int8_to_code": lookup.tolist(),
        "code_to_value": "centroids[code]; the Remote NN (remote.keras) takes these values, NHWC",
        "alpha": alpha,
        "alpha_w": float(run.meta["alpha_w"]),
        "alpha_temperature": float(run.meta["alpha_temperature"]),
        "combine": "combined_logits = alpha * local_logits + (1 - alpha) * remote_logits",
        "payload": {
            "values": values_per_inference,
            "bits_per_value": cfg.bits_per_value,
            "bits": cfg.payload_bits,
            "order": "NHWC codes of remote_features, before lossless compression",
        },
        "remote_model": {"file": "remote.keras", "input": [None, *io_.remote_shape[1:]], "output": "logits"},
    }
    (out_dir / "agilenn.json").write_text(json.dumps(agilenn, indent=2) + "\n")
    write_offload_c(agilenn, compiled.to_json(), out_dir)  # INFER_OFFLOAD: quantize + compress on the device

    # --- the card ---
    device_model_params = int(sum(math.prod(w.shape) for m in (trained.extractor, trained.local) for w in m.weights))
    op_counts: dict[str, int] = {}
    for op in compiled.ops:
        op_counts[op.op] = op_counts.get(op.op, 0) + 1
    card: dict[str, Any] = {
        "name": name,
        "kind": "agilenn",
        "format": EXPORT_FORMAT,
        "dataset": run.provenance,
        "dataset_spec": cfg.dataset,
        "source_run": _display_path(run_dir),
        "artifacts": {},
        "accuracy": accuracy,
        "skewness": float(evaluation["skewness"]),
        "skewness_detail": {
            "mean": float(evaluation["skewness"]),
            "median": float(evaluation["skewness_median"]),
            "samples": int(evaluation["skewness_samples"]),
            "ig_steps": int(evaluation["ig_steps"]),
            "target_rho": cfg.rho,
            "k": k,
            "channels": c,
            "measured": f"mean share of Integrated-Gradients importance in the top-{k} channels, on the first "
            f"{cfg.ig_eval_samples} test images that the reference NN predicts correctly (training run)",
        },
        "payload_bits": cfg.payload_bits,
        "payload": {
            "bits": cfg.payload_bits,
            "bytes": cfg.payload_bits / 8,
            "raw_input_bytes": cfg.raw_input_bytes,
            "vs_raw": cfg.payload_bits / 8 / cfg.raw_input_bytes,
            # Empirical code entropy over the int8 device part's codes: a bound for lossless compression.
            "entropy_bytes": _entropy_bits(code_hist) * values_per_inference / 8,
            "code_histogram": code_hist.tolist(),
        },
        "device": {
            "weights_bytes": compiled.weights_bytes,
            "arena_bytes": compiled.arena_bytes,
            "macs": compiled.macs,
            "params": device_model_params,
            "tflite_bytes": len(tflite),
            "ops": op_counts,
            "input": {
                "shape": list(io_.input_shape),
                "scale": io_.input.scale,
                "zero_point": io_.input.zero_point,
                "from_uint8": agilenn["input"]["from_uint8"],
            },
            "outputs": agilenn["outputs"],
        },
        "remote": {
            "file": "remote.keras",
            "params": int(trained.remote.count_params()),
            "macs": keras_macs(trained.remote),
            "runs": "server, float32",
        },
        "params": {
            # Keras weights including BatchNorm statistics; on the device BN is folded into the convolutions.
            "device": device_model_params,
            "remote": int(trained.remote.count_params()),
        },
        "split": {
            "k": k,
            "channels": c,
            "centroids": centroids,
            "alpha": alpha,
            "alpha_temperature": float(run.meta["alpha_temperature"]),
        },
        "training": run.training_summary() | {"config": _config_summary(cfg)},
        "float_evaluation_at_training": {
            k_: evaluation[k_]
            for k_ in ("samples", "local_accuracy", "remote_accuracy", "combined_accuracy", "reference_accuracy")
        },
        "export": {
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "calibration": {"images": len(calib_u8), "from": "training set", "seed": seed, "patched_extremes": patched},
            "tensorflow": _tf_version(),
            "tflite_micro": _version("tflite-micro"),
            "hil": _version("hil"),
            "int8_images_per_s": round(int8.images_per_s, 1),
            "seconds": {},
        },
    }
    (out_dir / "README.md").write_text(_readme(card, agilenn))
    card["artifacts"] = {
        f: sha256_file(out_dir / f) for f in EXPORT_FILES if f not in UNHASHED and (out_dir / f).is_file()
    }
    lap("total", started)
    card["export"]["seconds"] = timings
    # card.json last: its presence marks a complete export; load_card re-reads and checks it.
    (out_dir / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return load_card(out_dir)


def _entropy_bits(hist: np.ndarray) -> float:
    total = hist.sum()
    if total == 0:
        return 0.0
    p = hist[hist > 0] / total
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no "-0.0" in the card


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tf_version() -> str | None:
    return _version("tensorflow-cpu") or _version("tensorflow")


def _config_summary(cfg: TrainConfig) -> dict[str, Any]:
    keys = (
        "preset",
        "input_size",
        "extractor",
        "local_fraction",
        "remote_width",
        "centroids",
        "rho",
        "lam",
        "ig_train_steps",
        "ig_train_rule",
        "channel_preprocess",
        "batch_size",
        "ref_epochs",
        "joint_epochs",
        "lr",
        "seed",
    )
    data = cfg.to_dict()
    return {k: data[k] for k in keys}


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _readme(card: dict[str, Any], agilenn: dict[str, Any]) -> str:
    acc, dev, pay, tr = card["accuracy"], card["device"], card["payload"], card["training"]
    lo, hi = acc["combined_int8_ci95"]
    split = agilenn["channel_split"]
    hours = tr["wall_seconds"] / 3600 if tr["wall_seconds"] else float("nan")
    skew_target, entropy = card["skewness_detail"]["target_rho"], pay["entropy_bytes"]
    samples = f"{acc['samples']} test images" + ("" if acc["full_test_set"] else " (a subset, not the full test set)")
    fmap = "x".join(map(str, agilenn["feature_map"]))
    remote = f"{split['remote'][0]}..{split['remote'][1] - 1}"
    return f"""# {card["name"]}

AgileNN exported by `hil export` from the training run `{card["source_run"]}`. `card.json` has every number
below and the sha256 of every file; the files are described in [../README.md](../README.md).

- data set: {card["dataset"]}
- split: k = {agilenn["k"]} of {agilenn["feature_map"][2]} channels stay on the device (feature map {fmap});
  channels {remote} go to the server as {agilenn["bits_per_value"]}-bit codes of {len(agilenn["centroids"])} centroids;
  alpha = {agilenn["alpha"]:.4f}
- skewness (share of importance in the top-k): {_pct(card["skewness"])} (target {skew_target})
- payload before compression: {card["payload_bits"]} bits = {pay["bytes"]:g} bytes per inference,
  {_pct(pay["vs_raw"])} of the {pay["raw_input_bytes"]}-byte image (code entropy bound: {entropy:.0f} bytes)

| accuracy on {samples} | top-1 |
|---|---|
| local only (float) | {_pct(acc["local_only"])} |
| remote only (float) | {_pct(acc["remote_only"])} |
| combined, float pipeline | {_pct(acc["combined_float"])} |
| combined, int8 device part | {_pct(acc["combined_int8"])} (95% Wilson CI {_pct(lo)} to {_pct(hi)}) |

The int8 device part ran on {acc["int8_runtime"]}.

| device part (int8) | |
|---|---|
| weights (flash) | {dev["weights_bytes"]:,} bytes |
| peak arena | {dev["arena_bytes"]:,} bytes |
| MACs | {dev["macs"]:,} |
| parameters (Keras, incl. BN) | device {card["params"]["device"]:,}, remote {card["params"]["remote"]:,} |
| Remote NN MACs (server, float) | {card["remote"]["macs"]:,} |

Training: {tr["preset"]} preset, {tr["epochs"]["reference"]} reference + {tr["epochs"]["joint"]} joint epochs,
{tr["compute_seconds"] / 3600:.2f} h of logged compute ({hours:.2f} h wall) on {"; ".join(tr["hardware"])}.

Regenerate: `hil export --run-dir {card["source_run"]} --out models/{card["name"]}`.
"""


__all__ = [
    "DeviceIO",
    "ExportError",
    "Quant",
    "RunFiles",
    "calibration_images",
    "centroid_lookup",
    "check_uint8_input",
    "convert_device_int8",
    "device_inputs",
    "export_agilenn",
    "float_logits",
    "keras_macs",
    "order_outputs_by_shape",
    "reorder_outputs",
    "run_int8_tflm",
    "server_logits",
    "wilson_interval",
]
