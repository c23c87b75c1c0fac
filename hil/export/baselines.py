"""Exports a finished baseline run (hil.train.baselines) into a model directory, in AgileNN's card format.

`export_baseline(run_dir, out_dir, name)` writes, by kind:

| kind | device part (int8) | server part (float) | payload_bits |
|---|---|---|---|
| full_local | model.tflite: image -> logits | - | 0 (nothing is sent) |
| edge_only | - (the device only compresses) | server.keras: image -> logits | mean compressed image |
| partition | model.tflite: image -> split tensor | server.keras: dequantized split -> logits | H*W*C*8 |
| encoder | model.tflite: image -> code features | server.keras: dequantized features -> logits | H*W*C*bits |

plus, with a device part, hil_model.c and model.json (hil.model.compiler), and always baseline.json (I/O
quantization, split, centroids and the int8 -> code table), card.json and README.md.

Accuracy is measured on the test set (all of it unless test_limit): the int8 device part through TensorFlow
Lite Micro (hil.model.reference.TflmReference, the project's golden interpreter: the firmware's C core is
bit-exact with it), batch 1 as on the device, then completed on the server side in float exactly as deployed
(dequantize -> server.keras). The edge-only payload is measured on the same test images with three lossless
codecs (raw DEFLATE, LZMA2 and the paper's LZW); `edge_codec` picks the one that goes into payload_bits.
"""

from __future__ import annotations

import json
import lzma
import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.agilenn.quant import Quant
from hil.datasets import Dataset, eval_pipeline, load_dataset, resolve_path, to_model_input
from hil.export import common
from hil.export.agilenn import calibration_images, centroid_lookup, device_inputs, keras_macs
from hil.export.common import ExportError, FinishedRun, pct
from hil.stats import hist_entropy_bits, wilson_interval
from hil.train.baseline_config import BaselineConfig

if TYPE_CHECKING:
    import keras

    from hil.model.compiler import CompiledModel
    from hil.train.baselines import BaselineModel

EXPORT_FORMAT = "agilenn-baseline-export/1"
DEVICE_FILES = ("model.tflite", "hil_model.c", "model.json")
EXPORT_FILES = (*DEVICE_FILES, "server.keras", "baseline.json", "README.md", "card.json")
CALIBRATION_IMAGES = 300
EVAL_BATCH = 500
# ESP32-S3: 512 KB of on-chip SRAM for the arena; weights stay in (memory-mapped) flash.
SRAM_BYTES = 512 * 1024
LZW_MAX_BITS = 12  # classic LZW (compress/GIF): a 4096-entry dictionary, small enough for a microcontroller
EDGE_CODECS = ("deflate", "lzma", "lzw")
LZMA_DICT_BYTES = 1 << 16


# ---------------------------------------------------------------------------------------------------------
# lossless codecs (no TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def _lzw_width(index: int, alphabet: int, max_bits: int) -> int:
    """Bits of the index-th code: enough for every code the decoder can receive at that point.

    The decoder adds dictionary entry alphabet + i - 1 on receiving code i (one behind the encoder), and
    code i may be exactly that entry (the KwKwK case), so code i is at most alphabet - 1 + i (capped once the
    dictionary is full)."""
    return min(alphabet - 1 + index, (1 << max_bits) - 1).bit_length()


def lzw_compress(data: Iterable[int], alphabet: int = 256, max_bits: int = LZW_MAX_BITS) -> tuple[bytes, int]:
    """LZW with variable-width codes (MSB first) and a dictionary frozen when full; returns (bytes, bits).

    `data` are symbols in [0, alphabet): the bytes of an image (alphabet 256) or quantizer codes (alphabet =
    number of centroids). bits is the exact code length; the last byte is zero-padded.
    """
    limit = 1 << max_bits
    # (prefix code, next symbol) -> code: O(1) per symbol, no string building (the textbook encoder).
    table: dict[tuple[int, int], int] = {}
    out = bytearray()
    acc = n_acc = total = index = 0
    next_code = alphabet

    def emit(code: int) -> None:
        nonlocal acc, n_acc, total, index
        width = _lzw_width(index, alphabet, max_bits)
        index += 1
        acc = (acc << width) | code
        n_acc += width
        total += width
        while n_acc >= 8:
            n_acc -= 8
            out.append((acc >> n_acc) & 0xFF)
        acc &= (1 << n_acc) - 1

    w = -1  # code of the current prefix; -1 = empty
    for symbol in data:
        s = int(symbol)
        if not 0 <= s < alphabet:
            raise ValueError(f"symbol {s} outside the alphabet [0, {alphabet})")
        if w < 0:
            w = s
            continue
        code = table.get((w, s))
        if code is not None:
            w = code
            continue
        emit(w)
        if next_code < limit:
            table[(w, s)] = next_code
            next_code += 1
        w = s
    if w >= 0:
        emit(w)
    if n_acc:
        out.append((acc << (8 - n_acc)) & 0xFF)
    return bytes(out), total


def lzw_decompress(blob: bytes, length: int, alphabet: int = 256, max_bits: int = LZW_MAX_BITS) -> list[int]:
    """The inverse of lzw_compress; `length` symbols (the receiver knows the tensor's size)."""
    limit = 1 << max_bits
    table: list[tuple[int, ...]] = [(s,) for s in range(alphabet)]
    bits = int.from_bytes(blob, "big") if blob else 0
    n_bits = 8 * len(blob)
    pos = index = 0
    out: list[int] = []
    prev: tuple[int, ...] = ()
    while len(out) < length:
        width = _lzw_width(index, alphabet, max_bits)
        index += 1
        if pos + width > n_bits:
            raise ValueError("LZW stream ends before the expected length")
        code = (bits >> (n_bits - pos - width)) & ((1 << width) - 1)
        pos += width
        if code < len(table):
            entry = table[code]
        elif code == len(table) and prev:
            entry = (*prev, prev[0])  # KwKwK: the entry the encoder has just added
        else:
            raise ValueError(f"invalid LZW code {code}")
        if prev and len(table) < limit:
            table.append((*prev, entry[0]))
        out.extend(entry)
        prev = entry
    if len(out) != length:
        raise ValueError(f"LZW stream decodes to {len(out)} symbols, expected {length}")
    return out


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE (no zlib header/checksum: the link frames the payload), level 9, 32 KB window."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def lzma2(data: bytes) -> bytes:
    """Raw LZMA2 stream at preset 9e: the strongest general-purpose codec here, a bound on what lossless
    compression buys rather than a device codec. The dictionary is 64 KB instead of the preset's 64 MB: the
    same output for payloads this small, and 65x faster (the preset's dictionary is allocated on every call)."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": LZMA_DICT_BYTES}]
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def compressed_sizes(payloads: Iterable[bytes], alphabet: int = 256) -> dict[str, np.ndarray]:
    """Per-payload compressed byte counts for every codec (and the raw size). LZW sees the bytes as symbols of
    `alphabet` (quantizer codes: the number of centroids)."""
    sizes: dict[str, list[int]] = {"raw": [], "deflate": [], "lzma": [], "lzw": []}
    for data in payloads:
        sizes["raw"].append(len(data))
        sizes["deflate"].append(len(deflate(data)))
        sizes["lzma"].append(len(lzma2(data)))
        sizes["lzw"].append(len(lzw_compress(data, alphabet)[0]))
    return {codec: np.asarray(v, np.int64) for codec, v in sizes.items()}


def size_summary(sizes: dict[str, np.ndarray], mask: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    out = {}
    for codec, values in sizes.items():
        v = values if mask is None else values[mask]
        if v.size:
            out[codec] = {"mean_bytes": float(v.mean()), "min_bytes": int(v.min()), "max_bytes": int(v.max())}
    return out


def entropy_bits(values: np.ndarray, symbols: int) -> float:
    """Empirical entropy (bits per value) of non-negative integer values."""
    return hist_entropy_bits(np.bincount(np.asarray(values).reshape(-1), minlength=symbols))


def exact_test_mask(dataset_spec: str, n: int) -> np.ndarray | None:
    """The project's hybrid CIFAR-10 copy marks its byte-exact test images (exact_test); None elsewhere."""
    path = resolve_path(dataset_spec)
    if not (path.is_file() and path.suffix == ".npz"):
        return None
    with np.load(path) as npz:
        if "exact_test" not in npz.files:
            return None
        mask = npz["exact_test"].astype(bool)
    return mask[:n] if len(mask) >= n else None


# ---------------------------------------------------------------------------------------------------------
# the run directory
# ---------------------------------------------------------------------------------------------------------


class BaselineRun(FinishedRun):
    """What hil.train.baselines left in a finished run directory (meta: baseline.json)."""

    @classmethod
    def read(cls, run_dir: Path) -> BaselineRun:
        return cls.read_files(run_dir, BaselineConfig, "baseline.json", "baseline run", "hil baseline train")

    def training_summary(self) -> dict[str, Any]:
        """Epochs, time, step cost and machines, from metrics.jsonl and hardware.json (as AgileNN's card)."""
        epochs = [r for r in self.metrics if r.get("stage") == "train"]
        compute = sum(r.get("train_seconds", 0.0) + r.get("eval_seconds", 0.0) for r in epochs)
        step_costs = [r["sec_per_step"] for r in epochs if r.get("steps", 0) > 1]
        return self.summary(
            max((r["epoch"] for r in epochs), default=0),
            compute,  # logged epochs and test passes
            median_sec_per_step=float(np.median(step_costs)) if step_costs else None,
        )


def _prepare_out_dir(out_dir: Path) -> None:
    """Refuses foreign files (the card must account for every file); removes a previous export's files, since
    a kind without a device part must not leave a stale model.tflite behind."""
    common.check_out_dir(out_dir, EXPORT_FILES, "a baseline export")
    if out_dir.exists():
        for name in EXPORT_FILES:
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------------------------------
# conversion and evaluation (TensorFlow)
# ---------------------------------------------------------------------------------------------------------


def convert_device(model: BaselineModel, calibration: np.ndarray) -> bytes:
    """The device part as full-integer int8 TFLite with batch 1 (one input, one output)."""
    import keras

    cfg = model.config
    device = model.device_model()
    if device is None:
        raise ExportError(f"kind {cfg.kind} has no device part")
    image = keras.Input((cfg.input_size, cfg.input_size, 3), batch_size=1, name="image")
    return common.convert_int8(keras.Model(image, device(image), name=f"{cfg.kind}_device"), calibration)


@dataclass(frozen=True)
class DeviceIO:
    input: Quant
    output: Quant
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @classmethod
    def of(cls, tflite: bytes) -> DeviceIO:
        from hil.model.tflite_reader import read_tflite

        graph = read_tflite(tflite)
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ExportError(f"expected one input and one output, got {len(graph.inputs)} / {len(graph.outputs)}")
        tensors = [graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]]
        q = common.int8_quants(tensors)
        return cls(q[0], q[1], tuple(tensors[0].shape), tuple(tensors[1].shape))

    def uint8_exact(self) -> bool:
        """True when quantizing u / 255 gives exactly u - 128 for all 256 u (the firmware's input path)."""
        return self.input.uint8_exact()


def run_tflm(tflite: bytes, images: np.ndarray, input_size: int, input_q: Quant) -> tuple[np.ndarray, float]:
    """Every image through TFLite Micro, batch 1; returns (int8 outputs, interpreter seconds)."""
    (out,), seconds = common.tflm_outputs(tflite, device_inputs(images, input_size, input_q), len(images))
    return out, seconds


def float_logits(model: BaselineModel, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Keras float model as trained (partition: split fake-quantized to 8 bits; encoder: hard quantizer)."""
    import tensorflow as tf

    step = tf.function(lambda xb: model.forward(xb, training=False), reduce_retracing=True)
    parts = [step(xb).numpy() for xb, _ in eval_pipeline(x, y, EVAL_BATCH, input_size=model.config.input_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.config.num_classes), np.float32)


def _predict(server: keras.Model, inputs: np.ndarray) -> np.ndarray:
    return np.asarray(server.predict(inputs, batch_size=EVAL_BATCH, verbose=0), np.float32)


# ---------------------------------------------------------------------------------------------------------
# the export
# ---------------------------------------------------------------------------------------------------------

ARCHITECTURE = {
    "full_local": "AgileNN extractor + Remote NN (MobileNetV2 stages), the whole classifier int8 on the device "
    "(MCUNet-style); nothing is sent, the device outputs the logits",
    "edge_only": "the device sends the raw uint8 image losslessly compressed; the server runs the AgileNN "
    "extractor + Remote NN in float on the decompressed image",
    "partition": "AgileNN extractor int8 on the device (SPINN-style split at the extractor's output); the int8 "
    "split tensor is sent; the server dequantizes it and runs the Remote NN in float",
    "encoder": "AgileNN extractor int8 on the device as a learned encoder (DeepCOD-style) whose ReLU6 output is "
    "quantized to learned centroids (int8 -> code table); the server maps codes to centroid values and decodes "
    "with the Remote NN in float",
}


@dataclass
class DevicePart:
    """The converted, compiled and evaluated int8 device part."""

    tflite: bytes
    io: DeviceIO
    compiled: CompiledModel
    outputs: np.ndarray  # int8 outputs of every test image (TFLM)
    seconds: float  # TFLM interpreter time for them
    calibration: dict[str, Any]

    def card(self, kind: str, params: int, sram_bytes: int) -> dict[str, Any]:
        return {
            "weights_bytes": self.compiled.weights_bytes,
            "arena_bytes": self.compiled.arena_bytes,
            "macs": self.compiled.macs,
            "params": params,
            "tflite_bytes": len(self.tflite),
            "ops": common.op_counts(self.compiled),
            "sram_bytes": sram_bytes,
            "fits_sram": self.compiled.arena_bytes <= sram_bytes,
            "memory": "arena in SRAM; weights in flash (memory-mapped), read in place",
            "input": self.input_meta(),
            "outputs": [self.output_meta(kind)],
        }

    def input_meta(self) -> dict[str, Any]:
        return {
            "shape": list(self.io.input_shape),
            "dtype": "int8",
            "scale": self.io.input.scale,
            "zero_point": self.io.input.zero_point,
            "from_uint8": "q = uint8 - 128" if self.io.uint8_exact() else "q = round(x / scale) + zero_point",
            "float_meaning": "RGB uint8 / 255",
        }

    def output_meta(self, kind: str) -> dict[str, Any]:
        logits = kind == "full_local"
        return {
            "index": 0,
            "name": "logits" if logits else "features",
            "shape": list(self.io.output_shape),
            "dtype": "int8",
            "scale": self.io.output.scale,
            "zero_point": self.io.output.zero_point,
            "meaning": ("logits" if logits else "split tensor (ReLU6 features), NHWC")
            + ": float = scale * (q - zero_point)",
        }


def build_device_part(
    model: BaselineModel,
    x_train: np.ndarray,
    x_test: np.ndarray,
    out_dir: Path,
    name: str,
    *,
    image_size: int,
    calibration_count: int,
    seed: int,
    sram_bytes: int,
) -> DevicePart:
    """Converts the device part to int8 (model.tflite), compiles it (hil_model.c, model.json) and runs every
    test image through TFLM."""
    from hil.model.compiler import compile_tflite

    cfg = model.config
    calib_u8, patched = calibration_images(x_train, calibration_count, seed)
    tflite = convert_device(model, to_model_input(calib_u8, cfg.input_size).numpy())
    io_ = DeviceIO.of(tflite)
    if cfg.input_size == image_size and not io_.uint8_exact():
        # The firmware feeds uint8 images as uint8 - 128; anything else would be a silent accuracy loss.
        raise ExportError(f"the int8 input quantization {io_.input} is not x/255 (uint8 - 128)")
    (out_dir / "model.tflite").write_bytes(tflite)
    compiled = compile_tflite(out_dir / "model.tflite", out_dir, name=name)
    if compiled.arena_bytes > sram_bytes:
        raise ExportError(
            f"the device part needs a {compiled.arena_bytes}-byte arena, more than the {sram_bytes} bytes of SRAM"
        )
    outputs, seconds = run_tflm(tflite, x_test, cfg.input_size, io_.input)
    calibration = {"images": len(calib_u8), "from": "training set", "seed": seed, "patched_extremes": patched}
    return DevicePart(tflite, io_, compiled, outputs, seconds, calibration)


def edge_payload(x_test: np.ndarray, codec: str, exact: np.ndarray | None) -> dict[str, Any]:
    """Edge-only: every test image's raw HWC bytes through every codec; `codec`'s mean is payload_bits."""
    sizes = compressed_sizes(img.tobytes() for img in x_test)
    bits = round(8 * float(sizes[codec].mean())) if len(x_test) else 0
    size = "x".join(map(str, x_test.shape[1:]))
    return {
        "bits": bits,
        "bytes": bits / 8,
        "codec": codec,
        "definition": f"mean {codec} size of the raw {size} uint8 test images (HWC bytes)",
        "compressed": size_summary(sizes),
        # The project's CIFAR-10 copy is partly JPEG-decoded, which changes how well images compress.
        "compressed_byte_exact_images": None if exact is None else size_summary(sizes, exact),
        "codecs": {
            "deflate": "raw DEFLATE, zlib level 9, 32 KB window (miniz on a microcontroller)",
            "lzma": "raw LZMA2 preset 9e, 64 KB dictionary (a bound: not a microcontroller codec)",
            "lzw": f"LZW, variable-width codes up to {LZW_MAX_BITS} bits (the AgileNN paper's codec)",
        },
    }


def split_payload(model: BaselineModel, part: DevicePart) -> tuple[dict[str, Any], dict[str, Any]]:
    """Partition / encoder: the design payload (H*W*C*bits) and, as information, the entropy and the
    compressed sizes of what the device actually sent for the test images. Returns (payload, extra
    baseline.json entries)."""
    cfg = model.config
    assert cfg.payload_bits is not None
    shape = "x".join(map(str, cfg.split_shape))
    extra: dict[str, Any] = {}
    if cfg.kind == "partition":
        symbols = (part.outputs.astype(np.int16) + 128).astype(np.uint8)  # the int8 bytes as sent
        alphabet = 256
        definition = f"the int8 split tensor {shape} x 8 bits, before lossless compression"
    else:
        centroids = model.centroid_values()
        lookup = centroid_lookup(centroids, part.io.output)
        extra = {
            "centroids": centroids,
            "int8_to_code": lookup.tolist(),
            "code_to_value": "centroids[code]; server.keras takes these values (or the dequantized int8)",
        }
        symbols = lookup[part.outputs.astype(np.int16) + 128]
        alphabet = len(centroids)
        definition = f"{shape} codes x {cfg.bits_per_value} bits ({alphabet} centroids), before lossless compression"
    values = math.prod(cfg.split_shape)
    sizes = compressed_sizes((s.tobytes() for s in symbols), alphabet)
    payload = {
        "bits": cfg.payload_bits,
        "bytes": cfg.payload_bits / 8,
        "values": values,
        "bits_per_value": cfg.bits_per_value,
        "definition": definition,
        "order": "NHWC",
        "entropy_bytes": entropy_bits(symbols, alphabet) * values / 8,
        # One symbol per byte into DEFLATE / LZMA; LZW starts from the real alphabet.
        "compressed": {k: v for k, v in size_summary(sizes).items() if k != "raw"},
    }
    return payload, extra


def accuracy_block(
    kind: str, flt: np.ndarray, int8_logits: np.ndarray | None, y: np.ndarray, n_test_set: int
) -> dict[str, Any]:
    n = len(y)
    acc: dict[str, Any] = {"top1_float": common.top1(flt, y)}
    if int8_logits is not None:
        correct = int(np.sum(np.argmax(int8_logits, -1) == y))
        acc["top1_int8"] = correct / n if n else float("nan")
        acc["top1_int8_ci95"] = list(wilson_interval(correct, n))
        # How often the int8 device part changes the float pipeline's decision.
        acc["int8_float_agreement"] = float(np.mean(np.argmax(int8_logits, -1) == np.argmax(flt, -1)))
    else:
        # Lossless compression: the server sees exactly the image, so the float model's result is final.
        correct = int(np.sum(np.argmax(flt, -1) == y))
        acc["top1"] = acc["top1_float"]
        acc["top1_ci95"] = list(wilson_interval(correct, n))
    acc |= {"samples": n, "full_test_set": n >= n_test_set}
    return acc


def export_baseline(
    run_dir: Path | str,
    out_dir: Path | str,
    name: str | None = None,
    *,
    data: Dataset | None = None,
    test_limit: int | None = None,
    calibration_count: int = CALIBRATION_IMAGES,
    seed: int = 0,
    edge_codec: str = "deflate",
    sram_bytes: int = SRAM_BYTES,
) -> dict[str, Any]:
    """Exports a finished baseline run into out_dir (see the module docstring); returns the checked card.

    name: the model name (default: out_dir's name). data: the run's data set when config.dataset cannot be
    loaded (tests); it must have the provenance the run was trained on. test_limit: the first N test images
    only (the card says so). edge_codec: the codec whose mean size is the edge-only payload_bits. sram_bytes:
    the device's SRAM; a device part whose arena does not fit is refused.
    """
    import keras

    # hil.train.baselines and hil.train.layers import TensorFlow: imported when called, like keras above.
    from hil.train.baselines import load_baseline
    from hil.train.layers import count_params

    if edge_codec not in EDGE_CODECS:
        raise ExportError(f"edge_codec {edge_codec!r} not in {EDGE_CODECS}")
    laps = common.Laps()
    lap, started = laps.lap, laps.started
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    name = name or out_dir.name
    run = BaselineRun.read(run_dir)
    cfg = run.config
    kind = cfg.kind
    dataset = data if data is not None else load_dataset(cfg.dataset, allow_download=False)
    if dataset.limit(cfg.train_limit, cfg.test_limit).provenance != run.provenance:
        raise ExportError(f"the data set is not the one {run_dir} was trained on ('{run.provenance}')")
    model = load_baseline(run_dir)
    x_test, y_test = dataset.x_test[:test_limit], dataset.y_test[:test_limit]
    _prepare_out_dir(out_dir)
    t = lap("load", started)

    flt = float_logits(model, x_test, y_test)
    t = lap("float_eval", t)

    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "name": name,
        "kind": kind,
        "architecture": ARCHITECTURE[kind],
        "num_classes": cfg.num_classes,
        "class_names": list(dataset.class_names) if dataset.class_names else None,
    }
    device_model, server_model = model.device_model(), model.server_model()
    part: DevicePart | None = None
    int8_logits: np.ndarray | None = None
    accuracy_runtime: dict[str, str] = {}
    if device_model is not None:
        part = build_device_part(
            model,
            dataset.x_train[: cfg.train_limit],
            x_test,
            out_dir,
            name,
            image_size=dataset.image_size,
            calibration_count=calibration_count,
            seed=seed,
            sram_bytes=sram_bytes,
        )
        device_card = part.card(kind, count_params(device_model), sram_bytes)
        meta["input"], meta["outputs"] = device_card["input"], device_card["outputs"]
        rate = len(x_test) / part.seconds if part.seconds > 0 else float("inf")
        accuracy_runtime["int8_runtime"] = common.tflm_runtime(rate)
        if kind == "full_local":
            int8_logits = part.io.output.dequantize(part.outputs)  # monotonic: the same argmax as the device's
        t = lap("device", t)
    else:
        meta["input"] = {
            "shape": [1, cfg.input_size, cfg.input_size, 3],
            "dtype": "uint8",
            "meaning": "the raw RGB image, losslessly compressed by the device; server.keras takes uint8 / 255",
        }
        device_card = {
            "weights_bytes": 0,
            "arena_bytes": 0,
            "macs": 0,
            "note": (
                "edge-only: the device runs no neural network, only the lossless compressor of the raw image; "
                f"the codec's working memory is not a model arena (LZW at {LZW_MAX_BITS} bits: a "
                f"{1 << LZW_MAX_BITS}-entry dictionary, ~16 KB; DEFLATE with a 32 KB window: ~300 KB in miniz)"
            ),
        }

    server_card = None
    if server_model is not None:
        server_model.save(out_dir / "server.keras")
        if part is not None:  # partition, encoder: the server completes the device's int8 output
            int8_logits = _predict(server_model, part.io.output.dequantize(part.outputs))
        server_card = {
            "file": "server.keras",
            "params": count_params(server_model),
            "macs": keras_macs(server_model),
            "runs": "server, float32",
            "input": {
                "edge_only": "the decompressed image as float32 uint8 / 255",
                "partition": "the dequantized int8 split tensor: scale * (q - zero_point)",
                "encoder": "the dequantized int8 features (or centroid values); hard-quantized to the centroids",
            }[kind],
        }
        meta["server_model"] = server_card
        t = lap("server", t)

    accuracy = accuracy_block(kind, flt, int8_logits, y_test, len(dataset.x_test))
    accuracy |= accuracy_runtime | {
        "test_set": dataset.limit(None, test_limit).provenance,
        "float_runtime": f"TensorFlow {common.tf_version()}, Keras {keras.__version__}",
    }

    if kind == "full_local":
        payload: dict[str, Any] = {"bits": 0, "bytes": 0, "definition": "nothing is sent: the device outputs the class"}
    elif kind == "edge_only":
        exact = exact_test_mask(cfg.dataset, len(x_test)) if data is None else None
        payload = edge_payload(x_test, edge_codec, exact)
    else:
        assert part is not None
        payload, extra = split_payload(model, part)
        meta |= extra
    payload |= {"raw_input_bytes": cfg.raw_input_bytes, "vs_raw": payload["bits"] / 8 / cfg.raw_input_bytes}
    meta["payload"] = payload
    (out_dir / "baseline.json").write_text(json.dumps(meta, indent=2) + "\n")
    lap("payload", t)

    card: dict[str, Any] = {
        **common.card_head(name, kind, EXPORT_FORMAT, run),
        "architecture": ARCHITECTURE[kind],
        "artifacts": {},
        "accuracy": accuracy,
        "skewness": None,  # an AgileNN property; the card format has the key for every trained kind
        "payload_bits": int(payload["bits"]),
        "payload": payload,
        "device": device_card,
        "server": server_card,
        "params": {
            # Keras weights incl. BatchNorm statistics; on the device BN is folded into the convolutions.
            "device": 0 if device_model is None else count_params(device_model),
            "server": 0 if server_model is None else count_params(server_model),
        },
        "training": run.training_summary() | {"config": cfg.to_dict()},
        "float_evaluation_at_training": run.result.get("evaluation"),
        "export": {
            "exported": common.exported_at(),
            "calibration": None if part is None else part.calibration,
            "tflite_micro": common.version("tflite-micro"),
            "hil": common.version("hil"),
            "seconds": {},
        },
    }
    # card.json last: its presence marks a complete export; load_card re-reads it and checks every hash.
    return common.write_card(out_dir, card, _readme(card), EXPORT_FILES, laps)


def _readme(card: dict[str, Any]) -> str:
    acc, dev, pay, tr = card["accuracy"], card["device"], card["payload"], card["training"]
    kind = card["kind"]
    samples = f"{acc['samples']} test images" + ("" if acc["full_test_set"] else " (a subset, not the full test set)")
    if "top1_int8" in acc:
        lo, hi = acc["top1_int8_ci95"]
        acc_rows = (
            f"| float model | {pct(acc['top1_float'])} |\n"
            f"| int8 device part{' + float server' if card['server'] else ''} | {pct(acc['top1_int8'])} "
            f"(95% Wilson CI {pct(lo)} to {pct(hi)}) |"
        )
        runtime = f"\nThe int8 device part ran on {acc['int8_runtime']}.\n"
    else:
        lo, hi = acc["top1_ci95"]
        acc_rows = f"| float server model, lossless input | {pct(acc['top1'])} (95% Wilson CI {pct(lo)} to {pct(hi)}) |"
        runtime = ""
    if dev["macs"]:
        device = (
            f"| device part (int8) | |\n|---|---|\n| weights (flash) | {dev['weights_bytes']:,} bytes |\n"
            f"| peak arena (SRAM) | {dev['arena_bytes']:,} bytes of {dev['sram_bytes']:,} |\n"
            f"| MACs | {dev['macs']:,} |"
        )
    else:
        device = f"No device network: {dev['note']}."
    server = ""
    if card["server"]:
        srv = card["server"]
        server = f"\nServer part: `server.keras`, {srv['params']:,} parameters, {srv['macs']:,} MACs, float32.\n"
    hours = tr["wall_seconds"] / 3600 if tr["wall_seconds"] else float("nan")
    step = f", {tr['median_sec_per_step']:.3f} s/step" if tr["median_sec_per_step"] else ""
    return f"""# {card["name"]}

Baseline `{kind}` of the AgileNN comparison, exported by `hil baseline export` from the run `{card["source_run"]}`.
`card.json` has every number below and the sha256 of every file.

- architecture: {card["architecture"]}
- data set: {card["dataset"]}
- payload: {card["payload_bits"]} bits = {pay["bytes"]:g} bytes per inference ({pay["definition"]}),
  {pct(pay["vs_raw"])} of the {pay["raw_input_bytes"]}-byte image

| accuracy on {samples} | top-1 |
|---|---|
{acc_rows}
{runtime}
{device}
{server}
Training: {tr["preset"]} preset, {tr["epochs"]} epochs{step}, {tr["compute_seconds"] / 60:.1f} min of logged compute
({hours:.2f} h wall) on {"; ".join(tr["hardware"])}.

Regenerate: `hil baseline export --run-dir {card["source_run"]} --out models/{card["name"]}`.
"""


__all__ = [
    "EDGE_CODECS",
    "BaselineRun",
    "DeviceIO",
    "compressed_sizes",
    "convert_device",
    "deflate",
    "entropy_bits",
    "export_baseline",
    "lzma2",
    "lzw_compress",
    "lzw_decompress",
    "run_tflm",
]
