"""The accuracy job: labelled images through the device's offload step, the remote-model server and two host
references (hil/accuracy/README.md says what each number means).

Per image:
1. uint8 image -> int8 input with the device's input scale / zero point (INFO); for an AgileNN export exactly
   uint8 - 128;
2. device: `infer_offload` -> int8 local logits + compressed codes of the remote features, cycles per stage;
3. host int8 execution of the same model and quantizer (`HostInt8`): TFLite Micro on model.tflite (both
   outputs), agilenn.json's int8 -> code table, `hil.offload.codec.encode_payload`; the device must match it
   exactly: local logits, decoded codes and payload bytes;
4. remote logits: the server's Remote NN on the device's payload (`RemoteEndpoint`: the `remote_model`
   fixture, or a `ServerModel` for a `RemoteClient`);
5. combined = alpha * dequantized local + (1 - alpha) * remote, float32, as trained (hil.agilenn.layers.Alpha).
Then, for the whole set at once, the float Keras pipeline (`FloatPipeline`) on the same images; agreement is
the share of images whose combined argmax is the same in both.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from hil import paths
from hil.accuracy.subset import ImageSet
from hil.agilenn.quant import Quant
from hil.datasets import to_model_input
from hil.dut import EMULATED_TARGETS
from hil.errors import ModelError, ServerError
from hil.export.agilenn import float_device_model
from hil.measure.measurement import Measurement, Provenance
from hil.offload.codec import PayloadError, decode_payload, encode_payload, huffman_lengths_of
from hil.offload.value_codes import ValueCodes
from hil.stats import agreement_by_part, wilson_interval

if TYPE_CHECKING:
    import keras

    from hil.dut import Dut
    from hil.server.client import RemoteClient, RemoteResult

log = logging.getLogger("hil.accuracy")

REPORT_FORMAT = "hil-accuracy/1"
FLOAT_BATCH = 250
STAGES = ("extractor", "local_nn", "compress", "total")
AGREEMENT_MIN = 0.99  # device + server against the float Keras pipeline: the accuracy check's bound

FLOAT_PIPELINE = (
    "float Keras pipeline: device_float.keras (extractor + fixed channel split + Local NN, float32) on the "
    "uint8 image / 255 -> local logits and remote features; remote features -> nearest of agilenn.json's "
    "centroids (hard quantizer: float32 squared distance, first index on ties) -> centroid values -> "
    "remote.keras -> remote logits; combined = alpha * local + (1 - alpha) * remote in float32"
)


class AccuracyError(ModelError, ValueError):
    """The model or the images cannot be checked as asked (no AgileNN export, images of another shape)."""


class RemoteMismatch(ServerError, RuntimeError):
    """The server's answer does not fit the model under test (another number of classes)."""


# ---------------------------------------------------------------------------------------------------------
# the model directory
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgileSpec:
    """What the checks need from an AgileNN model directory's agilenn.json (models/README.md)."""

    model_dir: Path
    name: str
    num_classes: int
    alpha: float
    centroids: np.ndarray  # float32 (n_centroids,)
    bits: int
    value_codes: ValueCodes  # quantized remote value -> code: int8_to_code, or int16_code_runs (16x8 export)
    local_index: int  # output index of the local logits in model.tflite
    remote_index: int
    local_quant: Quant
    remote_shape: tuple[int, ...]  # (1, H, W, C - k)
    huffman_lengths: list[int] | None = None  # the payload's static Huffman code (OFFLOAD.md mode 2), if any

    @property
    def n_values(self) -> int:
        return math.prod(self.remote_shape)

    @classmethod
    def load(cls, model_dir: Path | str) -> AgileSpec:
        model_dir = Path(model_dir)
        if model_dir.is_file():  # a .tflite given as --model: its directory holds the export, if anything
            model_dir = model_dir.parent
        meta_path = model_dir / "agilenn.json"
        if not meta_path.is_file():
            raise AccuracyError(f"model directory '{model_dir}' has no agilenn.json: not an AgileNN export "
                                "(hil export); the accuracy checks need its split, centroids and alpha")
        try:
            meta = json.loads(meta_path.read_text())
            outputs = {o["name"]: o for o in meta["outputs"]}
            local, remote = outputs["local_logits"], outputs["remote_features"]
            value_codes = ValueCodes.of_export(meta)
            spec = cls(
                model_dir=model_dir,
                name=str(meta.get("name") or model_dir.name),
                num_classes=int(meta["num_classes"]),
                alpha=float(meta["alpha"]),
                centroids=np.asarray(meta["centroids"], np.float32),
                bits=int(meta["bits_per_value"]),
                value_codes=value_codes,
                local_index=int(local["index"]),
                remote_index=int(remote["index"]),
                local_quant=Quant(float(local["scale"]), int(local["zero_point"])),
                remote_shape=tuple(int(d) for d in remote["shape"]),
                huffman_lengths=huffman_lengths_of(meta),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AccuracyError(f"{meta_path}: {type(exc).__name__}: {exc}") from None
        if value_codes.max_code() >= len(spec.centroids):
            raise AccuracyError(f"{meta_path}: its code mapping holds code {value_codes.max_code()}, but there are "
                                f"only {len(spec.centroids)} centroids")
        if not 0.0 < spec.alpha < 1.0:
            raise AccuracyError(f"{meta_path}: alpha {spec.alpha} is not inside (0, 1)")
        return spec

    def combine(self, local_q: np.ndarray, remote_logits: np.ndarray) -> np.ndarray:
        """alpha * dequantized local + (1 - alpha) * remote, float32 (as Alpha and the export's server_logits)."""
        a = np.float32(self.alpha)
        local = self.local_quant.dequantize(local_q)
        return a * local + (np.float32(1.0) - a) * np.asarray(remote_logits, np.float32)


# ---------------------------------------------------------------------------------------------------------
# host int8 execution
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostStep:
    local: np.ndarray  # int8, the model's local logits shape
    codes: np.ndarray  # uint8 (n_values,)
    payload: bytes


class HostInt8:
    """The same int8 model and quantizer on the host: TFLite Micro (the project's golden interpreter) on
    model.tflite, agilenn.json's lookup table, the reference encoder of device_fw/OFFLOAD.md."""

    def __init__(self, spec: AgileSpec) -> None:
        from hil.model.reference import TflmReference

        self.spec = spec
        self.reference = TflmReference(spec.model_dir / "model.tflite")
        local = self.reference.outputs[spec.local_index]
        remote = self.reference.outputs[spec.remote_index]
        if np.dtype(remote.dtype).name != spec.value_codes.dtype:
            raise AccuracyError(f"{spec.model_dir}: model.tflite's remote features are {np.dtype(remote.dtype).name}, "
                                f"but agilenn.json maps {spec.value_codes.dtype} values to codes")
        # agilenn.json must describe this very model.tflite, or the server would dequantize with other numbers.
        if (np.float32(local.scale), local.zero_point) != (np.float32(spec.local_quant.scale),
                                                           spec.local_quant.zero_point):
            raise AccuracyError(f"{spec.model_dir}: agilenn.json's local_logits quantization {spec.local_quant} "
                                f"is not model.tflite's ({local.scale}, {local.zero_point})")
        if tuple(remote.shape) != spec.remote_shape:
            raise AccuracyError(f"{spec.model_dir}: agilenn.json's remote_features shape {spec.remote_shape} is "
                                f"not model.tflite's {remote.shape}")

    def run(self, x: np.ndarray) -> HostStep:
        outputs = self.reference.run([x])
        remote = outputs[self.spec.remote_index].reshape(-1)
        codes = self.spec.value_codes.codes(remote)
        payload = encode_payload(codes, self.spec.bits, huffman_lengths=self.spec.huffman_lengths)
        return HostStep(outputs[self.spec.local_index], codes, payload)


# ---------------------------------------------------------------------------------------------------------
# the float Keras pipeline
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FloatLogits:
    local: np.ndarray
    remote: np.ndarray
    combined: np.ndarray


class FloatPipeline:
    """FLOAT_PIPELINE (module constant) for an AgileNN model directory. `origin` says where the float device
    part came from: the export's device_float.keras, or (older exports without it) the training run named by
    the card's `source_run`, rebuilt with hil.export.agilenn.float_device_model."""

    def __init__(self, spec: AgileSpec, device: keras.Model, remote: keras.Model, origin: str) -> None:
        self.spec = spec
        self.device = device
        self.remote = remote
        self.origin = origin
        self.input_size = int(device.inputs[0].shape[1])

    @property
    def description(self) -> str:
        return f"{FLOAT_PIPELINE} (device part from {self.origin})"

    @classmethod
    def load(cls, spec: AgileSpec) -> FloatPipeline:
        """Raises AccuracyError when neither device_float.keras nor the training run is available."""
        import keras

        # Registers the custom layers (ChannelSlice, ...) before loading; here, not at the top, because it
        # imports TensorFlow, which the host-only parts of the job (and `hil accuracy --help`) do without.
        import hil.agilenn.layers  # noqa: F401

        model_dir = spec.model_dir
        remote = keras.models.load_model(model_dir / "remote.keras", compile=False)
        if (model_dir / "device_float.keras").is_file():
            device = keras.models.load_model(model_dir / "device_float.keras", compile=False)
            return cls(spec, device, remote, f"{paths.display(model_dir / 'device_float.keras')}")
        run_dir = _source_run(model_dir)
        if run_dir is None:
            raise AccuracyError(f"{model_dir} has no device_float.keras (exported before it existed) and its "
                                "training run is not here; re-export it with hil export to get the float pipeline")
        return cls(spec, float_device_model(run_dir), remote,
                   f"training run {paths.display(run_dir)} (the export has no device_float.keras)")

    def logits(self, images: np.ndarray, batch: int = FLOAT_BATCH) -> FloatLogits:
        c = self.spec.centroids
        parts: dict[str, list[np.ndarray]] = {"local": [], "remote": []}
        for start in range(0, len(images), batch):
            x = to_model_input(images[start : start + batch], self.input_size).numpy()
            local, features = self.device.predict_on_batch(x)
            features = np.asarray(features, np.float32)
            # Nearest centroid in float32, first index on ties: SoftToHardQuantizer.indices / centroid_lookup.
            codes = np.argmin(np.square(features[..., None] - c), axis=-1)
            parts["local"].append(np.asarray(local, np.float32))
            parts["remote"].append(np.asarray(self.remote.predict_on_batch(c[codes]), np.float32))
        local, remote = (np.concatenate(parts[k]) for k in ("local", "remote"))
        a = np.float32(self.spec.alpha)
        return FloatLogits(local, remote, a * local + (np.float32(1.0) - a) * remote)


def _source_run(model_dir: Path) -> Path | None:
    """The training run a card names (`source_run`, relative to the project root), when it is finished here."""
    try:
        card = json.loads((model_dir / "card.json").read_text())
    except (OSError, ValueError):
        return None
    source = card.get("source_run")
    if not source:
        return None
    run_dir = paths.PROJECT_ROOT / source
    return run_dir if (run_dir / "agilenn.json").is_file() and (run_dir / "extractor.keras").is_file() else None


# ---------------------------------------------------------------------------------------------------------
# the server side
# ---------------------------------------------------------------------------------------------------------


class RemoteEndpoint(Protocol):
    """Remote logits of one payload: the plugin's RemoteModelHandle, or ServerModel below."""

    def infer(self, payload: bytes, n_values: int, bits: int) -> RemoteResult: ...


@dataclass
class ServerModel:
    """A RemoteClient bound to one model (the server keys models by the sha256 of model.tflite)."""

    client: RemoteClient
    sha256: str

    def infer(self, payload: bytes, n_values: int, bits: int) -> RemoteResult:
        return self.client.infer(self.sha256, payload, n_values, bits)


# ---------------------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Mismatch:
    """An image where the device's offload step differs from the host int8 execution."""

    image: int  # position in the image set
    test_index: int  # index in the source test set
    problems: list[str]


@dataclass
class AccuracyResult:
    target: str
    provenance: str
    model: str
    model_sha256: str
    images_source: str
    float_pipeline: str | None  # FloatPipeline.description, None when it could not be run
    clock_hz: int
    labels: np.ndarray = field(repr=False)
    test_index: np.ndarray = field(repr=False)
    local_q: np.ndarray = field(repr=False)  # (N, classes) int8 (16x8: int16) from the device
    remote: np.ndarray = field(repr=False)  # (N, classes) float32 from the server (NaN when it could not run)
    combined: np.ndarray = field(repr=False)  # (N, classes) float32
    float_logits: FloatLogits | None = field(repr=False)
    payload_bytes: list[int]
    cycles: list[dict[str, int]]
    server_us: list[int]
    host_match: list[bool]
    mismatches: list[Mismatch]
    wall_s: float
    notes: list[str] = field(default_factory=list)
    input: dict[str, Any] = field(default_factory=dict)  # the device's input scale / zero point, uint8 - 128?
    # Agreement with the float pipeline when only one side is the device's (split_agreement); None without it.
    agreement_by_part: dict[str, float] | None = None
    device_part: str = "int8"  # the quantized device part: "int8", or "16x8" (int16 activations)

    # ---- figures ----

    @property
    def images(self) -> int:
        return len(self.labels)

    @property
    def matched(self) -> int:
        return int(sum(self.host_match))

    @property
    def ok(self) -> bool:
        """The device agrees with the host int8 execution on every image."""
        return self.images > 0 and self.matched == self.images

    @property
    def predictions(self) -> np.ndarray:
        # An image without remote logits (invalid payload) is a wrong prediction: -1 matches no label.
        pred = np.argmax(self.combined, axis=-1)
        return np.where(np.isfinite(self.combined).all(axis=-1), pred, -1)

    @property
    def correct(self) -> int:
        return int(np.sum(self.predictions == self.labels))

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.images)

    @property
    def float_predictions(self) -> np.ndarray | None:
        return None if self.float_logits is None else np.argmax(self.float_logits.combined, axis=-1)

    @property
    def agreement(self) -> float | None:
        fp = self.float_predictions
        return None if fp is None else float(np.mean(self.predictions == fp))

    @property
    def float_accuracy(self) -> float | None:
        fp = self.float_predictions
        return None if fp is None else float(np.mean(fp == self.labels))

    @property
    def mean_payload_bytes(self) -> float:
        return float(np.mean(self.payload_bytes)) if self.payload_bytes else float("nan")

    def median_cycles(self) -> dict[str, float]:
        stages = [s for s in STAGES if all(s in c for c in self.cycles)] if self.cycles else []
        return {s: float(statistics.median(c[s] for c in self.cycles)) for s in stages}

    def measurements(self) -> list[Measurement]:
        """The figures a run records (hil accuracy and the HIL suite's accuracy tests): device == host, accuracy
        with its interval, agreement with the float pipeline, payload and per-stage cycles."""
        kind: Provenance = "emulated" if self.target in EMULATED_TARGETS else "measured"
        lo, hi = self.ci95
        source = f"{self.images} images: {self.images_source}"
        figures = [
            Measurement("device_equals_host_int8", self.matched, "images", kind,
                        f"of {self.images} images ({self.images_source}); {self.provenance}",
                        low=self.images, high=self.images),
            Measurement("accuracy_top1", self.accuracy, "fraction", kind,
                        f"combined prediction vs labels, Wilson 95% [{lo:.4f}, {hi:.4f}], {source}"),
            Measurement("accuracy_top1_ci95_low", lo, "fraction", kind, "Wilson score, 95%"),
            Measurement("accuracy_top1_ci95_high", hi, "fraction", kind, "Wilson score, 95%"),
            Measurement("payload_bytes_mean", self.mean_payload_bytes, "B", kind,
                        "compressed remote codes per image, header included (OFFLOAD.md)",
                        values=tuple(self.payload_bytes)),
        ]
        if self.agreement is not None:
            figures.append(Measurement(
                "agreement_with_float", self.agreement, "fraction", kind,
                f"argmax(combined, device {self.device_part} + server) == argmax(combined, float Keras pipeline) on "
                f"{self.images} images; float top-1 {self.float_accuracy:.4f}", low=AGREEMENT_MIN))
        for stage, cycles in self.median_cycles().items():
            figures.append(Measurement(f"cycles_{stage}_median", cycles, "cycles", kind,
                                       f"{self.provenance}; {self.clock_hz / 1e6:g} MHz counter",
                                       values=tuple(c[stage] for c in self.cycles)))
        return figures

    def confusion(self) -> dict[str, Any]:
        """Counts of (label, combined prediction); a prediction of -1 (no remote logits) is its own column."""
        classes = int(self.local_q.shape[-1]) if self.local_q.ndim == 2 else int(self.labels.max(initial=0)) + 1
        matrix = np.zeros((classes, classes + 1), dtype=np.int64)
        for y, p in zip(self.labels.astype(np.int64), self.predictions.astype(np.int64), strict=True):
            matrix[y, p if p >= 0 else classes] += 1
        labels = [str(c) for c in range(classes)]
        if matrix[:, classes].any():
            return {"labels": labels, "predicted": [*labels, "none"], "matrix": matrix.tolist()}
        return {"labels": labels, "matrix": matrix[:, :classes].tolist()}

    def summary_line(self) -> str:
        lo, hi = self.ci95
        agreement = "n/a" if self.agreement is None else f"{self.agreement:.3f}"
        return (f"accuracy {self.accuracy:.3f} [{lo:.3f}, {hi:.3f}] on {self.images} images, agreement with float "
                f"{agreement}, mean payload {self.mean_payload_bytes:.1f} B, device == host {self.device_part} on "
                f"{self.matched}/{self.images} ({self.target})")

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.ci95
        local_acc = float(np.mean(np.argmax(self.local_q, -1) == self.labels)) if self.images else None
        finite = np.isfinite(self.remote).all(axis=-1)
        remote_acc = float(np.mean((np.argmax(self.remote, -1) == self.labels) & finite)) if self.images else None
        fp = self.float_predictions
        return {
            "format": REPORT_FORMAT,
            "summary": self.summary_line(),
            "ok": self.ok,
            "target": self.target,
            "provenance": self.provenance,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "images": self.images,
            "images_source": self.images_source,
            "input_quantization": self.input,
            "class_counts": np.bincount(self.labels.astype(np.int64), minlength=self.local_q.shape[-1]).tolist(),
            "accuracy": {
                "combined": self.accuracy,
                "combined_ci95": [lo, hi],
                "ci_method": "Wilson score interval, 95%",
                "local_only_int8": local_acc,
                "remote_only": remote_acc,
                "float_pipeline": self.float_accuracy,
            },
            "agreement_with_float": self.agreement,
            "agreement_by_part": self.agreement_by_part,
            "float_pipeline": self.float_pipeline,
            "device_part": self.device_part,
            "device_equals_host_int8": {"matched": self.matched, "images": self.images,
                                        "host": "TFLite Micro on model.tflite + agilenn.json's code mapping + "
                                                "encode_payload"},
            "mismatches": [{"image": m.image, "test_index": m.test_index, "problems": m.problems}
                           for m in self.mismatches],
            "payload_bytes": {"mean": self.mean_payload_bytes,
                              "min": min(self.payload_bytes, default=None),
                              "max": max(self.payload_bytes, default=None)},
            "cycles_median": self.median_cycles(),
            "cycles_provenance": self.provenance,
            "clock_hz": self.clock_hz,
            "server_us_median": float(statistics.median(self.server_us)) if self.server_us else None,
            "wall_s": round(self.wall_s, 2),
            "notes": self.notes,
            "per_image": [
                {"test_index": int(t), "label": int(y), "device": int(p), "float": None if fp is None else int(fp[i]),
                 "payload_bytes": b, "cycles_total": c.get("total"), "host_match": m}
                for i, (t, y, p, b, c, m) in enumerate(zip(self.test_index, self.labels, self.predictions,
                                                            self.payload_bytes, self.cycles, self.host_match,
                                                            strict=True))
            ],
        }


def device_inputs(images: np.ndarray, dut: Dut) -> np.ndarray:
    """uint8 images -> the device's int8 input tensors, (N, *input shape), with the input scale and zero point
    the device reports (INFO). For an AgileNN export that is exactly uint8 - 128 (hil.export.agilenn)."""
    from hil.check import InputSpec, quantize_images

    [spec] = dut.info.inputs  # an AgileNN device part has one input, the image
    shape = tuple(spec.shape)
    per_image = shape[1:] if shape[0] == 1 else shape
    if tuple(images.shape[1:]) != tuple(per_image):
        raise AccuracyError(f"the images are {tuple(images.shape[1:])}, the device's input is {shape}")
    q = quantize_images(images, InputSpec(shape, spec.scale, spec.zero_point, spec.dtype))
    return q.reshape(len(images), *shape)


def compare(device_local: np.ndarray, device_codes: np.ndarray | None, device_payload: bytes,
            host: HostStep) -> list[str]:
    """What differs between the device's offload step and the host int8 execution ([] when identical)."""
    problems = []
    got, want = np.asarray(device_local).reshape(-1), np.asarray(host.local).reshape(-1)
    if got.shape != want.shape:
        problems.append(f"local logits: shape {got.shape} vs host {want.shape}")
    elif not np.array_equal(got, want):
        diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
        problems.append(f"local logits: {np.count_nonzero(diff)} of {diff.size} values differ "
                        f"(max |diff| {int(diff.max())})")
    if device_codes is not None:
        if device_codes.shape != host.codes.shape:
            problems.append(f"codes: {device_codes.size} decoded vs host {host.codes.size}")
        elif not np.array_equal(device_codes, host.codes):
            problems.append(f"codes: {np.count_nonzero(device_codes != host.codes)} of {host.codes.size} differ")
    if bytes(device_payload) != host.payload:
        problems.append(f"payload bytes differ ({len(device_payload)} B vs host {len(host.payload)} B)")
    return problems


def run_accuracy(
    dut: Dut,
    remote: RemoteEndpoint,
    host: HostInt8,
    images: ImageSet,
    *,
    float_pipeline: FloatPipeline | None = None,
    on_image: Callable[[int, bool], None] | None = None,
    notes: Sequence[str] = (),
) -> AccuracyResult:
    """Runs every image through the device, the host int8 execution and the server, then the float pipeline
    over the set; see the module docstring."""
    spec = host.spec
    if dut.model.sha256 != sha256_of(spec.model_dir / "model.tflite"):
        raise AccuracyError(f"the device runs {dut.model.name} ({dut.model.sha256[:16]}), not the model.tflite of "
                            f"{spec.model_dir}")
    inputs = device_inputs(images.x, dut)
    n, classes = len(images), spec.num_classes
    [in_spec] = dut.info.inputs
    # The export promises int8 = uint8 - 128; say in the report whether the device's input parameters give that.
    minus_128 = bool(np.array_equal(inputs.reshape(n, -1).astype(np.int16),
                                    images.x.reshape(n, -1).astype(np.int16) - 128))
    input_info = {"scale": float(in_spec.scale), "zero_point": int(in_spec.zero_point), "uint8_minus_128": minus_128}
    local_q = np.zeros((n, classes), np.int32)  # int8, or int16 for a 16x8 export
    remote_logits = np.full((n, classes), np.nan, np.float32)
    payload_bytes: list[int] = []
    cycles: list[dict[str, int]] = []
    server_us: list[int] = []
    host_match: list[bool] = []
    mismatches: list[Mismatch] = []
    started = time.perf_counter()
    for i in range(n):
        step = dut.infer_offload([inputs[i]])
        golden = host.run(inputs[i])
        problems: list[str] = []
        codes = None
        if step.overflow:
            problems.append(f"payload overflowed the device's {step.payload_capacity}-byte buffer")
        elif (step.n_values, step.bits) != (spec.n_values, spec.bits):
            problems.append(f"device sent {step.n_values} values of {step.bits} bits, the model has "
                            f"{spec.n_values} of {spec.bits}")
        else:
            try:
                codes = decode_payload(step.payload, step.n_values, step.bits, max_output=spec.n_values,
                                       huffman_lengths=spec.huffman_lengths)
            except PayloadError as exc:
                problems.append(f"payload does not decode: {exc}")
        problems += compare(step.local_logits, codes, step.payload, golden)
        if codes is not None:
            # The server decodes the device's own payload: what a deployment would combine.
            reply = remote.infer(step.payload, step.n_values, step.bits)
            logits = np.asarray(reply.logits, np.float32).reshape(-1)
            if logits.size != classes:
                raise RemoteMismatch(f"the server returned {logits.size} logits, the model has {classes} classes")
            remote_logits[i] = logits
            server_us.append(int(reply.server_us))
        local_q[i] = np.asarray(step.local_logits).reshape(-1)
        payload_bytes.append(len(step.payload))
        cycles.append(dict(step.cycles))
        host_match.append(not problems)
        if problems:
            mismatches.append(Mismatch(i, int(images.index[i]), problems))
            log.warning("image %d (test index %d): %s", i, images.index[i], "; ".join(problems))
        if on_image is not None:
            on_image(i, not problems)
    wall = time.perf_counter() - started
    flt = float_pipeline.logits(images.x) if float_pipeline is not None else None
    return AccuracyResult(
        target=dut.name, provenance=dut.provenance, model=dut.model.name, model_sha256=dut.model.sha256,
        images_source=images.source,
        float_pipeline=float_pipeline.description if float_pipeline is not None else None,
        clock_hz=int(dut.info.clock_hz), labels=np.asarray(images.y, np.int64), test_index=images.index,
        local_q=local_q, remote=remote_logits, combined=spec.combine(local_q, remote_logits), float_logits=flt,
        payload_bytes=payload_bytes, cycles=cycles, server_us=server_us, host_match=host_match,
        mismatches=mismatches, wall_s=wall, notes=list(notes), input=input_info,
        agreement_by_part=split_agreement(spec, local_q, remote_logits, flt) if flt is not None else None,
        device_part="16x8" if spec.value_codes.dtype == "int16" else "int8",
    )


def split_agreement(spec: AgileSpec, local_q: np.ndarray, remote_logits: np.ndarray,
                    flt: FloatLogits) -> dict[str, float]:
    """agreement_by_part for a device run: its int8 local logits and the remote logits of its codes."""
    return agreement_by_part(spec.alpha, flt.local, flt.remote, spec.local_quant.dequantize(local_q), remote_logits)


def sha256_of(path: Path) -> str:
    from hil.model.artifacts import sha256_file

    return sha256_file(Path(path))


def write_report(result: AccuracyResult, reports_dir: Path) -> Path:
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"accuracy-{result.target}.json"
    path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    return path
