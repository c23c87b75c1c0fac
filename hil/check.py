"""Bit-exactness check: the same inputs through the device and through TensorFlow Lite Micro.

TFLite Micro's reference kernels are the golden int8 implementation (what runs on microcontrollers, and what
Espressif's ESP-NN kernels are tested against); every output tensor must be identical, byte for byte.

By default the device returns a CRC-32 of each output (INFER_DIGEST, device_fw/PROTOCOL.md) and the host compares
it with the CRC-32 of TFLite Micro's output: equal CRCs of equal-length tensors are identical tensors except for a
2^-32 chance per tensor, and only a mismatch costs the round trips that read the outputs back (READ_OUTPUT) to
report the differing values. The reference runs while the device computes: the request is written first, then
TFLite Micro runs in this thread (its interpreter holds the GIL, so another thread would gain nothing), then the
reply is read. `full_outputs=True` brings every output back, as firmware without INFER_DIGEST needs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hil.errors import UsageError

log = logging.getLogger("hil.check")


class InputError(UsageError):
    """Given inputs do not fit the model."""


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    dtype: np.dtype = np.dtype(np.int8)  # int16 for 16x8 models


@dataclass
class Mismatch:
    image: int
    output: int
    differing_values: int
    max_abs_diff: int
    # up to MISMATCH_EXAMPLES of the differing values: [flat index, device, reference]
    examples: list[list[int]] = field(default_factory=list)
    note: str = ""  # e.g. a digest that differed while the outputs read back are equal


MISMATCH_EXAMPLES = 5


@dataclass
class CheckResult:
    target: str
    provenance: str
    model: str
    model_sha256: str
    images: int = 0
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    clock_hz: int = 0
    wall_s: float = 0.0
    mode: str = "full"  # "digest": CRC-32 per output (INFER_DIGEST); "full": every output read back
    fallback: str = ""  # why the check ran with full outputs when the digest was the default
    wire_bytes: int = 0  # both directions, frames and console text, over every checked inference
    input_bytes: int = 0  # of one inference's inputs
    readbacks: int = 0  # digest mode: images whose outputs were read back after a digest mismatch

    @property
    def ok(self) -> bool:
        return self.images > 0 and self.matched == self.images

    @property
    def wire_bytes_per_image(self) -> float:
        return self.wire_bytes / self.images if self.images else 0.0

    def summary_line(self) -> str:
        return f"bit-exact {self.matched}/{self.images} on {self.target}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["ok"] = self.ok
        data["summary"] = self.summary_line()
        return data


def random_inputs(specs: list[InputSpec], count: int, seed: int = 0) -> Iterator[list[np.ndarray]]:
    """Uniform random int8 (int16) tensors: every code of the type exercises the kernels' full input range."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield [rng.integers(*_limits(s), size=s.shape, endpoint=True).astype(s.dtype) for s in specs]


def _limits(spec: InputSpec) -> tuple[int, int]:
    info = np.iinfo(spec.dtype)
    return int(info.min), int(info.max)


def quantize_images(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 images (0..255, read as x/255) quantized with the input tensor's scale and zero point."""
    real = images.astype(np.float64) / 255.0
    q = np.floor(real / spec.scale + 0.5) + spec.zero_point
    return np.clip(q, *_limits(spec)).astype(spec.dtype)


def file_inputs(path: Path, specs: list[InputSpec], count: int) -> Iterator[list[np.ndarray]]:
    """Inputs from a .npy (one input tensor, first axis = image) or .npz (one array per input, in order).

    int8 arrays (int16 for a 16x8 model) are used as they are; uint8 arrays are images and are quantized with
    the input's parameters.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"input file '{path}' does not exist")
    if path.suffix == ".npy":
        arrays = [np.load(path)]
    elif path.suffix == ".npz":
        with np.load(path) as data:
            arrays = [data[k] for k in data.files]
    else:
        raise InputError(f"input file '{path}' must be .npy or .npz")
    if len(arrays) != len(specs):
        raise InputError(f"'{path}' holds {len(arrays)} arrays but the model has {len(specs)} inputs")
    prepared = []
    for i, (arr, spec) in enumerate(zip(arrays, specs, strict=True)):
        per_image = tuple(spec.shape[1:]) if spec.shape and spec.shape[0] == 1 else tuple(spec.shape)
        if tuple(arr.shape[1:]) != per_image:
            raise InputError(
                f"input {i} in '{path}' has images of shape {arr.shape[1:]}, the model expects {per_image}"
            )
        if arr.dtype == np.uint8:
            arr = quantize_images(arr, spec)
        elif arr.dtype != spec.dtype:
            raise InputError(f"input {i} in '{path}' is {arr.dtype}; give {spec.dtype.name} tensors or uint8 images")
        prepared.append(arr)
    available = min(len(a) for a in prepared)
    if count > available:
        raise InputError(f"asked for {count} images but '{path}' holds {available}")
    for n in range(count):
        yield [a[n].reshape(s.shape) for a, s in zip(prepared, specs, strict=True)]


def run_check(
    dut,
    reference,
    inputs: Iterator[list[np.ndarray]],
    total: int,
    on_image: Callable[[int, bool], None] | None = None,
    *,
    full_outputs: bool = False,
    overlap: bool = True,
) -> CheckResult:
    """Runs every input through `dut` and `reference`; counts images whose every output is identical.

    Digest mode (the default) needs a `dut` with a protocol client (`dut.client`) whose firmware answers
    INFER_DIGEST; otherwise, or with `full_outputs`, every output comes back (`result.fallback` says why when the
    digest was not asked away). `overlap=False` runs the reference only after the device's reply (the old, serial
    path, kept for comparisons).
    """
    info = dut.info
    result = CheckResult(
        target=dut.name, provenance=dut.provenance, model=dut.model.name, model_sha256=dut.model.sha256,
        clock_hz=info.clock_hz,
    )
    client = getattr(dut, "client", None)
    digest = not full_outputs
    if digest and client is None:
        digest, result.fallback = False, "the device under test has no protocol client: full outputs"
    elif digest and not client.info.supports_digest:
        result.fallback = (f"firmware {client.info.firmware_version} (build {client.info.build_id}) does not answer "
                           f"INFER_DIGEST (INFO flag bit 1 clear): full outputs, every output read back")
        digest = False
    if result.fallback:
        log.warning("%s: %s", dut.name, result.fallback)
    result.mode = "digest" if digest else "full"
    result.input_bytes = sum(int(t.size) for t in info.inputs) if hasattr(info, "inputs") else 0
    start = time.perf_counter()
    for index, tensors in enumerate(inputs):
        link = dut.client.link if client is not None else None
        before = link.wire_bytes if link is not None else 0
        if digest:
            image_ok, cycles = _check_digest(dut.client, reference, tensors, index, result, overlap)
        else:
            image_ok, cycles = _check_full(dut, reference, tensors, index, result, overlap)
        if link is not None and link is dut.client.link:
            result.wire_bytes += max(link.wire_bytes - before, 0)
        result.images += 1
        result.matched += image_ok
        result.cycles.append(int(cycles))
        if on_image is not None:
            on_image(index, image_ok)
    result.wall_s = time.perf_counter() - start
    if result.images != total:
        raise InputError(f"expected {total} images, ran {result.images}")
    return result


def _check_full(dut, reference, tensors: list[np.ndarray], index: int, result: CheckResult,
                overlap: bool) -> tuple[bool, int]:
    client = getattr(dut, "client", None)
    if overlap and client is not None:
        pending = client.start_infer(tensors)
        golden = reference.run(tensors)  # while the device computes
        device = pending.wait()
    else:
        device = dut.infer(tensors)
        golden = reference.run(tensors)
    image_ok = True
    for o, (got, want) in enumerate(zip(device.outputs, golden, strict=True)):
        mismatch = _compare(index, o, got, want)
        if mismatch is not None:
            image_ok = False
            result.mismatches.append(mismatch)
    return image_ok, device.cycles


def _check_digest(client, reference, tensors: list[np.ndarray], index: int, result: CheckResult,
                  overlap: bool) -> tuple[bool, int]:
    from hil.transport.frame import tensor_digest

    specs = client.info.outputs
    if overlap:
        pending = client.start_infer_digest(tensors)
        golden = reference.run(tensors)  # while the device computes
        device = pending.wait()
    else:
        device = client.infer_digest(tensors)
        golden = reference.run(tensors)
    if len(golden) != len(specs):
        raise InputError(f"the reference has {len(golden)} outputs, the device {len(specs)}")
    differing = [o for o, (want, spec) in enumerate(zip(golden, specs, strict=True))
                 if device.digests[o] != tensor_digest(np.asarray(want), spec)]
    if not differing:
        return True, device.cycles
    # A digest differs: read those outputs back and report their values as the full mode does.
    result.readbacks += 1
    fetched = client.read_outputs(differing)
    for o in differing:
        mismatch = _compare(index, o, fetched[o], golden[o])
        if mismatch is None:
            mismatch = Mismatch(index, o, 0, 0, note=(
                f"device digest 0x{device.digests[o]:08x} differs from the reference's "
                f"0x{tensor_digest(np.asarray(golden[o]), specs[o]):08x}, but the output read back equals the "
                f"reference: the firmware's digest is wrong"))
        result.mismatches.append(mismatch)
    return False, device.cycles


def _compare(image: int, output: int, got: np.ndarray, want: np.ndarray) -> Mismatch | None:
    want = np.asarray(want)
    got = np.asarray(got)
    if got.size != want.size:
        return Mismatch(image, output, max(got.size, want.size), 0,
                        note=f"device output has {got.size} values, the reference {want.size}")
    got = got.reshape(want.shape)
    if np.array_equal(got, want):
        return None
    diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
    where = np.flatnonzero(diff)
    examples = [[int(i), int(got.flat[i]), int(want.flat[i])] for i in where[:MISMATCH_EXAMPLES]]
    return Mismatch(image, output, int(where.size), int(diff.max()), examples)


def write_report(result: CheckResult, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"check-{result.target}.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path
