"""Bit-exactness check: the same inputs through the device and through TensorFlow Lite Micro.

TFLite Micro's reference kernels are the golden int8 implementation (what runs on microcontrollers, and what
Espressif's ESP-NN kernels are tested against); every output tensor must be identical, byte for byte.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


class InputError(ValueError):
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

    @property
    def ok(self) -> bool:
        return self.images > 0 and self.matched == self.images

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
) -> CheckResult:
    """Runs every input through `dut` and `reference`; counts images whose every output is identical."""
    info = dut.info
    result = CheckResult(
        target=dut.name, provenance=dut.provenance, model=dut.model.name, model_sha256=dut.model.sha256,
        clock_hz=info.clock_hz,
    )
    start = time.perf_counter()
    for index, tensors in enumerate(inputs):
        device = dut.infer(tensors)
        golden = reference.run(tensors)
        image_ok = True
        for o, (got, want) in enumerate(zip(device.outputs, golden, strict=True)):
            got = np.asarray(got).reshape(want.shape)
            if not np.array_equal(got, want):
                image_ok = False
                diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
                result.mismatches.append(Mismatch(index, o, int(np.count_nonzero(diff)), int(diff.max())))
        result.images += 1
        result.matched += image_ok
        result.cycles.append(int(device.cycles))
        if on_image is not None:
            on_image(index, image_ok)
    result.wall_s = time.perf_counter() - start
    if result.images != total:
        raise InputError(f"expected {total} images, ran {result.images}")
    return result


def write_report(result: CheckResult, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"check-{result.target}.json"
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return path
