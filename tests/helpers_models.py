"""Helpers for the kernel and compiler tests: compile a .tflite, run it natively and compare with TFLM.

Not a conftest: test modules import these functions directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hil.model.compiler import CompiledModel, compile_tflite
from hil.model.hostrun import build_host_runner, run_host_many
from hil.model.reference import TflmReference


def compile_and_build(tflite: bytes, work_dir: Path, build_dir: Path) -> tuple[CompiledModel, Path]:
    """Compiles into work_dir/<hash>/ and links the host runner (cached in build_dir)."""
    model_dir = Path(work_dir) / hashlib.sha256(tflite).hexdigest()[:16]
    compiled = compile_tflite(tflite, model_dir, name="test")
    return compiled, build_host_runner(model_dir, build_dir)


def random_input_sets(reference: TflmReference, rng: np.random.Generator, count: int) -> list[list[np.ndarray]]:
    """Uniform int8 (int16) inputs over the whole range, so every zero point and clamp is exercised."""
    def one(d) -> np.ndarray:
        info = np.iinfo(d.dtype)
        return rng.integers(info.min, info.max + 1, size=d.shape, dtype=d.dtype)

    return [[one(d) for d in reference.inputs] for _ in range(count)]


def mismatch_report(label: str, got: Sequence[np.ndarray], want: Sequence[np.ndarray], set_index: int) -> str:
    """'' when every output is bit-identical, else which outputs differ and by how much."""
    problems = []
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        w = np.asarray(w)
        if g.shape != w.shape:
            problems.append(f"output {k}: shape {g.shape} != TFLM {w.shape}")
            continue
        if not np.array_equal(g, w):
            diff = np.abs(g.astype(np.int32) - w.astype(np.int32))
            first = tuple(int(i) for i in np.argwhere(diff)[0])
            problems.append(
                f"output {k} {list(w.shape)}: {int(np.count_nonzero(diff))} of {w.size} values differ "
                f"(max |diff| {int(diff.max())}, first at {first}: got {int(g[first])}, TFLM {int(w[first])})"
            )
    if not problems:
        return ""
    return f"{label}, input set {set_index}: " + "; ".join(problems)


def assert_bit_exact(
    tflite: bytes,
    work_dir: Path,
    build_dir: Path,
    rng: np.random.Generator,
    count: int = 3,
    label: str = "model",
) -> CompiledModel:
    """Compiles the model, runs `count` random input sets natively and through TFLM, requires equality."""
    compiled, binary = compile_and_build(tflite, work_dir, build_dir)
    reference = TflmReference(tflite)
    input_sets = random_input_sets(reference, rng, count)
    got_all = run_host_many(binary, input_sets)
    failures = []
    for i, (inputs, got) in enumerate(zip(input_sets, got_all, strict=True)):
        report = mismatch_report(label, got, reference.run(inputs), i)
        if report:
            failures.append(report)
    assert not failures, "\n".join(failures)
    return compiled
