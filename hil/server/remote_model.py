"""The server side of one AgileNN model directory: codes -> centroid values -> Remote NN -> logits.

A model directory (models/README.md, "An AgileNN export") needs three files here:
- model.tflite: only hashed; its sha256 is the model id a client must name, so a device is never answered by
  the Remote NN of another export;
- agilenn.json: `centroids`, `bits_per_value`, `remote_model.input` ([null, H, W, C - k]) and, when present,
  `payload.values` (checked to be H x W x (C - k)) and `huffman_code_lengths` (the static Huffman code of
  payload mode 2, device_fw/OFFLOAD.md; the server decodes with them);
- remote.keras: the Remote NN, input the dequantized remote channels NHWC, output logits.

A baseline export (models/README.md, "A baseline export") with a server part is served the same way
(`read_baseline_spec`): baseline.json and server.keras, the codes being the device's bytes, each mapped to the
value server.keras takes: partition: int8 feature q as code q + 128 (8 bits), value scale * (q - zero_point);
encoder: baseline.json's int8 -> code table and centroids; edge-only: the uint8 image byte u as code u (8 bits),
value u / 255. Its model id is the sha256 of model.tflite, or of server.keras for edge-only (no device model).

`read_spec` is TensorFlow-free (the plugin uses it to decide whether a directory can be served);
`RemoteModel.load` imports Keras. `has_remote_model` / `missing_files` name AgileNN exports only (what `hil serve`
serves by default and the plugin's `remote_model` fixture runs); `RemoteModel.load` also takes a baseline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.errors import ModelError, ServerError

if TYPE_CHECKING:
    import keras

log = logging.getLogger("hil.server")

REMOTE_FILES = ("model.tflite", "agilenn.json", "remote.keras")


class RemoteModelError(ModelError, ValueError):
    """The directory cannot be served (missing files, inconsistent agilenn.json and remote.keras)."""


class CodeRangeError(ServerError, ValueError):
    """A code has no centroid (e.g. code 7 with 6 centroids): invalid payload content."""


class ModelBusy(ServerError, RuntimeError):
    """The model stayed busy with other requests for longer than the wait limit."""


@dataclass(frozen=True)
class RemoteSpec:
    name: str
    directory: Path
    sha256: str  # hex sha256 of model.tflite: the model id on the wire
    centroids: tuple[float, ...]
    bits: int
    input_shape: tuple[int, int, int]  # H, W, remote channels
    alpha: float | None
    model_file: str = "remote.keras"  # the Keras model in `directory`: server.keras for a baseline
    kind: str = "agilenn"  # or the baseline kind: partition, encoder, edge_only
    huffman_lengths: tuple[int, ...] | None = None  # agilenn.json huffman_code_lengths: payload mode 2

    @property
    def n_values(self) -> int:
        return math.prod(self.input_shape)


def missing_files(model_dir: Path) -> list[str]:
    return [f for f in REMOTE_FILES if not (Path(model_dir) / f).is_file()]


def has_remote_model(model_dir: Path) -> bool:
    return not missing_files(model_dir)


def read_spec(model_dir: Path | str) -> RemoteSpec:
    model_dir = Path(model_dir)
    missing = missing_files(model_dir)
    if missing:
        raise RemoteModelError(f"{model_dir} has no remote model (lacks {', '.join(missing)}); "
                               "an AgileNN export (hil export) has one")
    try:
        meta = json.loads((model_dir / "agilenn.json").read_text())
        centroids = tuple(float(c) for c in meta["centroids"])
        bits = int(meta["bits_per_value"])
        shape = tuple(int(d) for d in meta["remote_model"]["input"][1:])
        alpha = meta.get("alpha")
        values = meta.get("payload", {}).get("values")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RemoteModelError(f"{model_dir / 'agilenn.json'}: {type(exc).__name__}: {exc}") from None
    if not 1 <= bits <= 8:
        raise RemoteModelError(f"{model_dir}: bits_per_value {bits} is outside 1..8")
    if not 1 <= len(centroids) <= 2**bits:
        raise RemoteModelError(f"{model_dir}: {len(centroids)} centroids do not fit {bits}-bit codes")
    if not all(math.isfinite(c) for c in centroids):
        raise RemoteModelError(f"{model_dir}: a centroid is not finite")
    if len(shape) != 3 or min(shape) < 1:
        raise RemoteModelError(f"{model_dir}: remote_model.input is not [null, H, W, C]")
    if values is not None and int(values) != math.prod(shape):
        raise RemoteModelError(f"{model_dir}: payload.values {values} != H x W x C of {shape}")
    from hil.offload.codec import huffman_lengths_of

    try:
        huffman = huffman_lengths_of(meta, bits)
    except ValueError as exc:
        raise RemoteModelError(f"{model_dir}: huffman_code_lengths: {exc}") from None
    sha = hashlib.sha256((model_dir / "model.tflite").read_bytes()).hexdigest()
    return RemoteSpec(
        name=str(meta.get("name") or model_dir.name), directory=model_dir, sha256=sha, centroids=centroids,
        bits=bits, input_shape=shape,  # type: ignore[arg-type]  # length checked above
        alpha=None if alpha is None else float(alpha),
        huffman_lengths=None if huffman is None else tuple(huffman),
    )


BASELINE_FILES = ("baseline.json", "server.keras")
BASELINE_KINDS = ("partition", "encoder", "edge_only")


def read_baseline_spec(model_dir: Path | str, model_id: str | None = None) -> RemoteSpec:
    """The server side of a baseline export (partition, encoder, edge_only; see the module docstring).
    `model_id`: the hex sha256 a client must name (default: model.tflite's, or server.keras's for edge-only)."""
    model_dir = Path(model_dir)
    missing = [f for f in BASELINE_FILES if not (model_dir / f).is_file()]
    if missing:
        raise RemoteModelError(f"{model_dir} has no server part (lacks {', '.join(missing)})")
    try:
        meta = json.loads((model_dir / "baseline.json").read_text())
        kind = str(meta["kind"])
        if kind not in BASELINE_KINDS:
            raise RemoteModelError(f"{model_dir}: baseline kind {kind!r} has no server part to serve")
        if kind == "edge_only":
            size = [int(d) for d in meta["input"]["shape"][1:]] if "shape" in meta["input"] else \
                [int(d) for d in meta["input"]["size"]]
            shape = tuple(size)
            bits = 8
            # The server's input is the image as float32 u / 255, exactly as the exporter evaluated it.
            centroids = tuple(float(v) for v in np.arange(256, dtype=np.float32) / np.float32(255.0))
        else:
            out = meta["outputs"][0]
            shape = tuple(int(d) for d in out["shape"][1:])
            if kind == "partition":
                bits = 8
                q = np.arange(-128, 128, dtype=np.int32)
                centroids = tuple(float(v) for v in np.float32(out["scale"]) *
                                  (q - int(out["zero_point"])).astype(np.float32))
            else:
                bits = int(meta["payload"]["bits_per_value"])
                centroids = tuple(float(c) for c in meta["centroids"])
        source = model_dir / ("server.keras" if kind == "edge_only" else "model.tflite")
        sha = model_id or hashlib.sha256(source.read_bytes()).hexdigest()
    except RemoteModelError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RemoteModelError(f"{model_dir / 'baseline.json'}: {type(exc).__name__}: {exc}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise RemoteModelError(f"{model_dir}: the server input {shape} is not H, W, C")
    if not 1 <= len(centroids) <= 2**bits:
        raise RemoteModelError(f"{model_dir}: {len(centroids)} values do not fit {bits}-bit codes")
    return RemoteSpec(
        name=str(meta.get("name") or model_dir.name), directory=model_dir, sha256=sha, centroids=centroids,
        bits=bits, input_shape=shape,  # type: ignore[arg-type]  # length checked above
        alpha=None, model_file="server.keras", kind=kind,
    )


class RemoteModel:
    """One loaded Remote NN. `run()` is thread-safe: a lock serializes the model calls (a Keras model is one set
    of variables and one traced function; concurrent calls gain nothing on the CPU and risk re-tracing), and a
    request that cannot get the lock within `wait_s` fails with ModelBusy instead of queueing without bound."""

    def __init__(self, spec: RemoteSpec, model: keras.Model, wait_s: float = 30.0) -> None:
        self.spec = spec
        self._model = model
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._centroids = np.asarray(spec.centroids, np.float32)
        inputs = tuple(model.inputs)
        outputs = tuple(model.outputs)
        if len(inputs) != 1 or len(outputs) != 1:
            raise RemoteModelError(f"{spec.directory / spec.model_file}: expected one input and one output, "
                                   f"got {len(inputs)} and {len(outputs)}")
        keras_shape = tuple(inputs[0].shape[1:])
        if keras_shape != spec.input_shape:
            raise RemoteModelError(f"{spec.directory / spec.model_file} takes {keras_shape}, its export says "
                                   f"{spec.input_shape}")
        out_shape = tuple(outputs[0].shape[1:])
        if len(out_shape) != 1 or out_shape[0] is None:
            raise RemoteModelError(f"{spec.directory / spec.model_file}: output {out_shape} is not (classes,)")
        self.classes = int(out_shape[0])
        # Warm up once: the first call traces the predict function (hundreds of ms), which must not land on the
        # first client's request or its server_us.
        start = time.perf_counter()
        logits, _ = self.run(np.zeros(spec.n_values, np.uint8))
        self.warmup_s = time.perf_counter() - start
        if not np.all(np.isfinite(logits)):
            raise RemoteModelError(f"{spec.directory / spec.model_file} gives non-finite logits on the warm-up input")

    @classmethod
    def load(cls, model_dir: Path | str, wait_s: float = 30.0, *, model_id: str | None = None) -> RemoteModel:
        """An AgileNN export's Remote NN, or a baseline export's server part (read_baseline_spec; `model_id`
        overrides its id)."""
        model_dir = Path(model_dir)
        if not (model_dir / "agilenn.json").is_file() and (model_dir / "baseline.json").is_file():
            spec = read_baseline_spec(model_dir, model_id)
        else:
            spec = read_spec(model_dir)
        import keras

        with contextlib.suppress(ImportError):  # registers the project's custom layers, should an export use one
            import hil.agilenn.layers  # noqa: F401  (TensorFlow: imported with keras, when a model is loaded)
        model = keras.models.load_model(spec.directory / spec.model_file, compile=False)
        remote = cls(spec, model, wait_s)
        log.info("loaded %s (sha256 %s): input %s, %d classes, warm-up %.3f s", spec.name, spec.sha256[:16],
                 spec.input_shape, remote.classes, remote.warmup_s)
        return remote

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """uint8 codes (n_values, NHWC order) -> (1, H, W, C) float32 centroid values."""
        codes = np.asarray(codes).reshape(-1)
        if codes.size != self.spec.n_values:
            raise ValueError(f"{codes.size} codes, the model takes {self.spec.n_values}")
        if codes.size and int(codes.max()) >= self._centroids.size:
            raise CodeRangeError(f"code {int(codes.max())} has no centroid (the model has {self._centroids.size})")
        return self._centroids[codes].reshape(1, *self.spec.input_shape)

    def run(self, codes: np.ndarray) -> tuple[np.ndarray, int]:
        """Remote logits (float32, (classes,)) and the model call's time in microseconds."""
        values = self.dequantize(codes)
        if not self._lock.acquire(timeout=self._wait_s):
            raise ModelBusy(f"{self.spec.name} stayed busy for more than {self._wait_s:g} s")
        try:
            start = time.perf_counter_ns()
            # predict_on_batch: the traced predict function on one batch, without predict()'s per-call data
            # pipeline (milliseconds per request for a model that itself takes microseconds).
            out = self._model.predict_on_batch(values)
            model_us = (time.perf_counter_ns() - start) // 1000
        finally:
            self._lock.release()
        return np.asarray(out, np.float32).reshape(-1), int(model_us)

    def describe(self) -> dict[str, Any]:
        """The model's entry in the INFO reply."""
        s = self.spec
        return {
            "name": s.name, "sha256": s.sha256, "n_values": s.n_values, "bits": s.bits,
            "input_shape": list(s.input_shape), "classes": self.classes, "centroids": list(s.centroids),
            "alpha": s.alpha,
        }
