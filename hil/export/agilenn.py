"""Exports a trained AgileNN run directory into a model directory the firmware and the server can use.

`export_agilenn(run_dir, out_dir, name=...)` writes:

- model.tflite: the device part (extractor + fixed channel split + Local NN) as full-integer int8 TFLite:
  int8 input (the image: scale 1/255, zero point -128, i.e. exactly uint8 - 128) and two int8 outputs in a
  fixed order, 0 = local_logits (1, classes), 1 = remote_features (1, H, W, C - k);
- hil_model.c, model.json: the C the firmware compiles (hil.model.compiler), so no TensorFlow at build time;
- hil_offload.c: the firmware's offload config (hil.offload.codegen): lookup table, output indices, Local NN ops;
- remote.keras: the server's Remote NN, input = dequantized remote channels (centroid values), output logits;
- device_float.keras: the float device part (hil.train.layers.device_keras_model): image x / 255 -> [local
  logits, remote features], both float; with agilenn.json's centroids, remote.keras and alpha it is the float
  Keras pipeline that `hil accuracy` compares the int8 device against, without the training run directory;
- agilenn.json: split, centroids, alpha, I/O quantization and the 256-entry int8 -> code lookup table;
- card.json + README.md: hashes, data set provenance, accuracies, skewness, payload and device cost.

Accuracy of the int8 device part is measured with TensorFlow Lite Micro (hil.model.reference.TflmReference,
the project's golden interpreter, reference kernels) on every test image, then completed on the server side in
float exactly as deployed: local logits dequantized; remote channels int8 -> code (lookup) -> centroid value ->
Remote NN; combined = alpha * local + (1 - alpha) * remote.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.agilenn.quant import Quant
from hil.datasets import Dataset, eval_pipeline, load_dataset, to_model_input
from hil.export.common import (
    ExportError,
    FinishedRun,
    Laps,
    byte_exact_accuracy,
    card_head,
    check_out_dir,
    convert_int8,
    exported_at,
    int8_quants,
    op_counts,
    pct,
    tf_version,
    tflm_outputs,
    tflm_runtime,
    top1,
    version,
    write_card,
)
from hil.stats import hist_entropy_bits, wilson_interval
from hil.train.config import TrainConfig

if TYPE_CHECKING:
    import keras

    from hil.train.layers import TrainedAgileNN

EXPORT_FORMAT = "agilenn-export/1"
OUTPUT_NAMES = ("local_logits", "remote_features")  # the fixed output order of model.tflite
DEVICE_FILES = ("model.tflite", "hil_model.c", "model.json", "hil_offload.c")
EXPORT_FILES = (*DEVICE_FILES, "remote.keras", "device_float.keras", "agilenn.json", "README.md", "card.json")
CALIBRATION_IMAGES = 300
EVAL_BATCH = 500
HUFFMAN_TRAIN_IMAGES = 10000  # training images whose code counts give the payload's Huffman code lengths


# ---------------------------------------------------------------------------------------------------------
# small, TensorFlow-free pieces (unit-testable on their own)
# ---------------------------------------------------------------------------------------------------------


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


class RunFiles(FinishedRun):
    """What the trainer left in a finished run directory (see hil.train.trainer; meta: agilenn.json)."""

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        return cls.read_files(run_dir, TrainConfig, "agilenn.json", "training run", "hil train")

    def training_summary(self) -> dict[str, Any]:
        """Epochs, time and machines, from metrics.jsonl and hardware.json."""
        epochs = {
            stage: max((r["epoch"] for r in self.metrics if r.get("stage") == stage), default=0)
            for stage in ("reference", "joint", "remote_finetune")
        }
        if not epochs["remote_finetune"]:  # only runs that went through `hil finetune` mention it
            del epochs["remote_finetune"]
        compute = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in self.metrics)
        compute += sum(r.get("seconds", 0.0) for r in self.metrics if r.get("stage") == "preprocess")
        return self.summary(epochs, compute)


def run_dataset(run: RunFiles, data: Dataset | None) -> Dataset:
    """The run's data set, checked to be the one it was trained and evaluated on."""
    cfg = run.config
    dataset = data if data is not None else load_dataset(cfg.dataset, allow_download=False)
    as_trained = dataset.limit(cfg.train_limit, cfg.test_limit)
    if as_trained.provenance != run.provenance:
        raise ExportError(
            f"the data set is '{as_trained.provenance}' but {run.run_dir} was trained on '{run.provenance}'; "
            "pass the same data set"
        )
    return dataset


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
    for start in range(0, len(images), batch):
        yield to_model_input(images[start : start + batch], input_size).numpy()


def convert_device_int8(trained: TrainedAgileNN, calibration: np.ndarray) -> bytes:
    """device_keras_model(trained) as full-integer int8 TFLite with batch 1, outputs [local_logits,
    remote_features]. calibration: float32 model inputs for the representative dataset."""
    import keras

    # hil.train.layers imports TensorFlow: imported when called, so that importing the exporter stays cheap.
    from hil.train.layers import device_keras_model

    cfg = trained.config
    device = device_keras_model(trained)
    image = keras.Input((cfg.input_size, cfg.input_size, 3), batch_size=1, name="image")
    local, remote = device(image)
    # Named outputs: the converter orders a dict's outputs by name, which already gives the wanted order;
    # order_outputs_by_shape still enforces it, since that is converter behaviour, not a documented contract.
    wrapper = keras.Model(image, dict(zip(OUTPUT_NAMES, (local, remote), strict=True)), name="agilenn_device")
    tflite = convert_int8(wrapper, calibration)
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
        q = int8_quants(tensors)
        return cls(q[0], q[1], q[2], *(tuple(t.shape) for t in tensors))


def check_uint8_input(io_: DeviceIO) -> bool:
    """True when quantizing x = u / 255 with the input's parameters gives exactly u - 128 for all 256 u."""
    return io_.input.uint8_exact()


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
    (local, remote), seconds = tflm_outputs(tflite, device_inputs(images, input_size, input_q), len(images))
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


def float_device_model(run_dir: Path | str) -> keras.Model:
    """The float device part of a finished training run (device_float.keras as the export writes it), for
    exports made before device_float.keras existed; the accuracy job's fallback."""
    # hil.train.layers imports TensorFlow: imported when called, so that importing the exporter stays cheap.
    from hil.train.layers import device_keras_model, load_trained

    return device_keras_model(load_trained(run_dir))


def training_code_counts(
    trained: TrainedAgileNN, x_u8: np.ndarray, remote_q: Quant, lookup: np.ndarray, n_codes: int
) -> np.ndarray:
    """How often each code is sent for these training images: the float extractor's remote channels on the
    int8 output grid, through the device's int8 -> code table (the export's Huffman statistics; the float
    extractor stands in for the int8 one, whose codes agree on all but a fraction of a percent)."""
    counts = np.zeros(n_codes, np.int64)
    k = trained.config.k
    for xb in model_input(x_u8, trained.config.input_size):
        remote = trained.extractor(xb, training=False).numpy()[..., k:]
        q = np.clip(np.round(remote / remote_q.scale) + remote_q.zero_point, -128, 127).astype(np.int16)
        counts += np.bincount(lookup[q + 128].reshape(-1), minlength=n_codes)
    return counts


def float_logits(trained: TrainedAgileNN, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The float Keras pipeline (hard quantizer, as the server sees it): local, remote and combined logits."""
    import tensorflow as tf

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
    limits: dict[str, Any] | None = None,
    limits_source: str | None = None,
) -> dict[str, Any]:
    """Exports a finished run into out_dir (see the module docstring); returns the model card.

    limits: what kept the model from its targets (`targets_missed`, `what_limited_it` (a list), `next_steps`),
    written into the card and its README as they are (hil export --limits FILE.json); limits_source: that file,
    for the README's regenerate line.

    data: the run's data set when it cannot be loaded from config.dataset (tests); it must have the
    provenance the run was trained on. test_limit: evaluate on the first N test images only (tests, smoke
    runs; the card says so). calibration_count / seed: the representative training images of the int8
    conversion.
    """
    laps = Laps()
    lap, started = laps.lap, laps.started

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = RunFiles.read(run_dir)
    cfg = run.config
    check_out_dir(out_dir, EXPORT_FILES)
    dataset = run_dataset(run, data)
    # TensorFlow only now: a wrong run directory or data set is reported in a fraction of a second.
    from hil.model.compiler import compile_tflite
    from hil.offload.codec import encode_payload, huffman_code_lengths
    from hil.offload.codegen import write_offload_c
    from hil.train.layers import device_keras_model, load_trained

    trained = load_trained(run_dir)
    x_train = dataset.x_train[: cfg.train_limit]
    x_test, y_test = dataset.x_test[:test_limit], dataset.y_test[:test_limit]
    eval_provenance = dataset.limit(None, test_limit).provenance
    t = lap("load", started)

    # --- int8 device part ---
    calib_u8, patched = calibration_images(x_train, calibration_count, seed)
    calibration = np.concatenate(list(model_input(calib_u8, cfg.input_size)))
    tflite = convert_device_int8(trained, calibration)
    finetune = _finetune_record(run_dir, tflite, calibration_count, seed)
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
    # The float device part, so the float pipeline (hil.accuracy) can run from the model directory alone.
    device_keras_model(trained).save(out_dir / "device_float.keras")

    # --- the payload's static Huffman code: lengths from the training set's code frequencies ---
    train_codes = training_code_counts(trained, x_train[:HUFFMAN_TRAIN_IMAGES], io_.remote, lookup, len(centroids))
    huffman_lengths = huffman_code_lengths(train_codes)
    t = lap("huffman", t)

    # --- accuracy: float pipeline, then the int8 device part through TFLM ---
    flt = float_logits(trained, x_test, y_test)
    t = lap("float_eval", t)
    int8 = run_int8_tflm(tflite, x_test, cfg.input_size, io_.input)
    srv = server_logits(int8.local, int8.remote, io_, lookup, centroids, trained.remote, alpha)
    t = lap("int8_eval", t)
    n = len(y_test)
    correct_int8 = int(np.sum(np.argmax(srv["combined"], -1) == y_test))
    code_hist = np.bincount(srv["codes"].reshape(-1), minlength=len(centroids))
    # Every test image's payload as the device sends it (encode_payload is byte-identical to offload.c).
    payload_sizes = np.array([len(encode_payload(codes.reshape(-1), cfg.bits_per_value,
                                                 huffman_lengths=huffman_lengths)) for codes in srv["codes"]])
    t = lap("payload", t)

    evaluation = run.result["evaluation"]
    values_per_inference = cfg.feature_size**2 * cfg.remote_channels
    accuracy = {
        "local_only": top1(flt["local"], y_test),
        "remote_only": top1(flt["remote"], y_test),
        "combined_float": top1(flt["combined"], y_test),
        "combined_int8": correct_int8 / n if n else float("nan"),
        "combined_int8_ci95": list(wilson_interval(correct_int8, n)),
        "local_only_int8": top1(srv["local"], y_test),
        "remote_only_int8": top1(srv["remote"], y_test),
        # How often the int8 device part changes the float pipeline's decision.
        "int8_float_agreement": float(np.mean(np.argmax(srv["combined"], -1) == np.argmax(flt["combined"], -1))),
        "samples": n,
        "full_test_set": test_limit is None or test_limit >= len(dataset.x_test),
        "test_set": eval_provenance,
        "int8_runtime": tflm_runtime(int8.images_per_s),
        "float_runtime": f"TensorFlow {tf_version()}, Keras {version('keras')}",
    }
    exact = byte_exact_accuracy(dataset.exact_test, np.argmax(srv["combined"], -1), np.argmax(flt["combined"], -1),
                                y_test)
    if exact is not None:
        accuracy["byte_exact"] = exact

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
        # OFFLOAD.md mode 2: from the code counts of the first HUFFMAN_TRAIN_IMAGES training images.
        "huffman_code_lengths": huffman_lengths,
    }
    (out_dir / "agilenn.json").write_text(json.dumps(agilenn, indent=2) + "\n")
    write_offload_c(agilenn, compiled.to_json(), out_dir)  # INFER_OFFLOAD: quantize + compress on the device

    # --- the card ---
    device_model_params = int(sum(math.prod(w.shape) for m in (trained.extractor, trained.local) for w in m.weights))
    card: dict[str, Any] = {
        **card_head(name, "agilenn", EXPORT_FORMAT, run),
        "artifacts": {},
        "accuracy": accuracy,
        "skewness": float(evaluation["skewness"]),
        "skewness_detail": {
            "mean": float(evaluation["skewness"]),
            "median": float(evaluation["skewness_median"]),
            "samples": int(evaluation["skewness_samples"]),
            "ig_steps": int(evaluation["ig_steps"]),
            "target_rho": cfg.rho,
            # IG is taken against the frozen reference: a reference that no longer classifies the final
            # features makes the skewness a statement about few, easy images.
            "reference_accuracy": float(evaluation["reference_accuracy"]),
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
            "entropy_bytes": hist_entropy_bits(code_hist) * values_per_inference / 8,
            "code_histogram": code_hist.tolist(),
            "code_usage": (code_hist / max(int(code_hist.sum()), 1)).round(5).tolist(),
            "entropy_bits_per_value": hist_entropy_bits(code_hist),
            "huffman_code_lengths": huffman_lengths,
            "huffman_from": f"code counts of {min(len(x_train), HUFFMAN_TRAIN_IMAGES)} training images "
            "(float extractor, int8 grid)",
            # What the device actually sends: its encoder's bytes (header included) over every test image.
            "compressed_mean_bytes": float(payload_sizes.mean()) if n else float("nan"),
            "compressed_p90_bytes": float(np.percentile(payload_sizes, 90)) if n else float("nan"),
            "compressed_max_bytes": int(payload_sizes.max()) if n else 0,
            "compressed_vs_raw": float(payload_sizes.mean()) / cfg.raw_input_bytes if n else float("nan"),
            "compressed_measured": f"hil.offload.codec.encode_payload (byte-identical to the device's encoder) on "
            f"the int8 device part's codes of {n} test images",
        },
        "device": {
            "weights_bytes": compiled.weights_bytes,
            "arena_bytes": compiled.arena_bytes,
            "macs": compiled.macs,
            "params": device_model_params,
            "tflite_bytes": len(tflite),
            "ops": op_counts(compiled),
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
        # The Remote NN after `hil finetune` (hil.export.finetune), or null when it is the joint-trained one.
        "server_finetune": finetune,
        "float_evaluation_at_training": {
            k_: evaluation[k_]
            for k_ in ("samples", "local_accuracy", "remote_accuracy", "combined_accuracy", "reference_accuracy")
        },
        "export": {
            "exported": exported_at(),
            "calibration": {"images": len(calib_u8), "from": "training set", "seed": seed, "patched_extremes": patched},
            "tensorflow": tf_version(),
            "tflite_micro": version("tflite-micro"),
            "hil": version("hil"),
            "int8_images_per_s": round(int8.images_per_s, 1),
            "seconds": {},
        },
    }
    if limits:
        card["limits"] = limits
    # card.json last: its presence marks a complete export; load_card re-reads and checks it.
    return write_card(out_dir, card, _readme(card, agilenn, limits_source), EXPORT_FILES, laps)


def _finetune_record(run_dir: Path, tflite: bytes, calibration_count: int, seed: int) -> dict[str, Any] | None:
    """The card's `server_finetune`: finetune.json's summary, after checking that the Remote NN was fine-tuned
    on the codes of this very int8 device part (hil.export.finetune converts with the export's defaults)."""
    import hashlib

    path = run_dir / "finetune.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not record.get("complete"):
        raise ExportError(f"{path}: the Remote NN fine-tuning is not finished; finish it with "
                          f"hil finetune --run-dir {run_dir}")
    sha = hashlib.sha256(tflite).hexdigest()
    if record.get("device_tflite_sha256") != sha:
        raise ExportError(
            f"{path}: the Remote NN was fine-tuned on the codes of another int8 device part "
            f"(sha256 {str(record.get('device_tflite_sha256'))[:12]}..., this conversion {sha[:12]}..., "
            f"calibration {calibration_count} images, seed {seed}); export with the defaults or fine-tune again"
        )
    keys = ("why", "config", "weights_snap", "before", "after", "epochs_done", "seconds", "finished")
    return {k: record.get(k) for k in keys}


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
        "lam_schedule",
        "aux_weight",
        "margin_weight",
        "code_noise",
        "code_noise_consistency",
        "ig_train_steps",
        "ig_train_rule",
        "channel_preprocess",
        "batch_size",
        "ref_epochs",
        "joint_epochs",
        "lr",
        "seed",
        "notes",
    )
    data = cfg.to_dict()
    return {k: data[k] for k in keys}


def _readme(card: dict[str, Any], agilenn: dict[str, Any], limits_source: str | None = None) -> str:
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
- skewness (importance share in the top-k): {pct(card["skewness"])} (loss aim rho {skew_target}){_skewness_basis(card)}
- payload before compression: {card["payload_bits"]} bits = {pay["bytes"]:g} bytes per inference,
  {pct(pay["vs_raw"])} of the {pay["raw_input_bytes"]}-byte image (code entropy bound: {entropy:.0f} bytes)

| accuracy on {samples} | top-1 |
|---|---|
| local only (float) | {pct(acc["local_only"])} |
| remote only (float) | {pct(acc["remote_only"])} |
| combined, float pipeline | {pct(acc["combined_float"])} |
| combined, int8 device part | {pct(acc["combined_int8"])} (95% Wilson CI {pct(lo)} to {pct(hi)}) |

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

{finetune_section(card.get("server_finetune"))}{limits_section(card.get("limits"))}
Regenerate: `hil export --run-dir {card["source_run"]} --out models/{card["name"]}{
        f" --limits {limits_source}" if limits_source else ""}`.
"""


def _skewness_basis(card: dict[str, Any]) -> str:
    """What the skewness was measured on: the images the frozen reference still gets right."""
    detail = card["skewness_detail"]
    ref = detail["reference_accuracy"]
    return (f",\n  by {detail['ig_steps']}-step IG on the {detail['samples']} test images the frozen reference NN "
            f"predicts correctly (right on {pct(ref)} of all test images, given the final features)")


def finetune_section(ft: dict[str, Any] | None) -> str:
    if not ft:
        return ""
    b, a, cfg = ft["before"], ft["after"], ft["config"]
    snap = ft.get("weights_snap")  # cards from before weight snapping existed have none
    views = "the training images and their mirror images" if cfg["flip_views"] else "the training images"
    if snap:
        j = snap["before_snap"]
        steps = max(row["max_change_steps"] for row in snap["layers"])
        intro = (f"`hil finetune` first put the device part's weights on the int8 grid ({len(snap['layers'])} "
                 f"kernels, batch normalization folded, each weight moved by at most {steps:.2f} of its channel's "
                 "int8 step), so that the float pipeline computes with the device's weights; then it trained the "
                 f"Remote NN {ft['epochs_done']} more epochs")
        cols = ("joint-trained", "weights on the int8 grid", "Remote NN fine-tuned")
        reports = (j, b, a)
    else:
        intro = f"`hil finetune` trained the Remote NN {ft['epochs_done']} more epochs"
        cols = ("before", "after")
        reports = (b, a)
    rows = [("int8 vs float agreement", "int8_float_agreement"), ("combined, int8 device part", "combined_int8"),
            ("combined, float pipeline", "combined_float"), ("codes that differ (int8 vs float)", "code_mismatch"),
            ("agreement, int8 local logits only", "agreement_int8_local_only"),
            ("agreement, int8 codes only", "agreement_int8_codes_only")]
    table = "".join(f"| {label} | " + " | ".join(pct(r[key]) for r in reports) + " |\n"
                    for label, key in rows if all(key in r for r in reports))
    sep = "|---" * (len(cols) + 1)
    return f"""
## Remote NN fine-tuned on the device's int8 codes

{intro} (lr {cfg["lr"]}, consistency weight {cfg["consistency"]}) on pairs of float and int8 codes of {views}.

| on {b["samples"]} test images | {" | ".join(cols)} |
{sep}|
{table}"""


def limits_section(limits: dict[str, Any] | None) -> str:
    if not limits:
        return ""
    causes = "\n".join(f"- {c}" for c in limits.get("what_limited_it", []))
    known = ("targets_missed", "what_limited_it", "next_steps")
    more = "".join(f"\n{v}\n" for k, v in limits.items() if k not in known and isinstance(v, str))
    return f"""
## What limited it

{limits.get("targets_missed", "")}

{causes}
{more}
Next: {limits.get("next_steps", "")}
"""


__all__ = [
    "DeviceIO",
    "ExportError",
    "RunFiles",
    "calibration_images",
    "centroid_lookup",
    "check_uint8_input",
    "convert_device_int8",
    "device_inputs",
    "export_agilenn",
    "float_device_model",
    "float_logits",
    "keras_macs",
    "order_outputs_by_shape",
    "reorder_outputs",
    "run_int8_tflm",
    "server_logits",
]
