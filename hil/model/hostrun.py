"""Builds and runs a compiled model natively on the host: the fast path for kernel and compiler tests.

`build_host_runner()` links device_fw/tests/run_model_main.c, the kernels in device_fw/core/kernels and one
generated hil_model.c with the host's gcc, using the strict flags the firmware uses plus the kernels' debug
checks. Binaries are cached by the hash of every source and flag. `run_host()` pipes raw input bytes (int8,
little-endian int16 for 16x8 models, little-endian float32 for float graph inputs) through the binary and
returns the outputs shaped as model.json says; `run_host_many()` does many inferences in one process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hil import paths
from hil.errors import DeviceError, UsageError

CORE = paths.DEVICE_FW / "core"
KERNELS = CORE / "kernels"
INCLUDE = CORE / "include"
MAIN = paths.DEVICE_FW / "tests" / "run_model_main.c"
# HIL_KERNEL_CHECKS compiles in the kernels' debug checks (HIL_DCHECK in hil_quant.h).
CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-DHIL_KERNEL_CHECKS"]


class HostBuildError(DeviceError, RuntimeError):
    """gcc failed (the message holds its output), or the built runner did."""


def _compiler() -> str:
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise HostBuildError(f"C compiler '{cc}' not found (set CC or install gcc)")
    return cc


def _sources(model_c_dir: Path) -> list[Path]:
    model_c = Path(model_c_dir) / "hil_model.c"
    if not model_c.is_file():
        raise FileNotFoundError(f"{model_c} not found; compile the model first (hil.model.compiler.compile_tflite)")
    return [*sorted(KERNELS.glob("*.c")), MAIN, model_c]


def _digest(files: Sequence[Path], extra: Sequence[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    for s in extra:
        h.update(s.encode() + b"\0")
    return h.hexdigest()[:20]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise HostBuildError(f"{' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def _kernel_objects(cc: str, build_dir: Path) -> list[Path]:
    """Kernels compiled once per kernel-source hash, shared by every model's runner."""
    headers = sorted(INCLUDE.glob("*.h"))
    kernels = sorted(KERNELS.glob("*.c"))
    key = _digest([*headers, *kernels], [cc, *CFLAGS])
    obj_dir = build_dir / f"kernels-{key}"
    objs = [obj_dir / (k.stem + ".o") for k in kernels]
    if all(o.is_file() for o in objs):
        return objs
    tmp = Path(tempfile.mkdtemp(prefix="kernels-", dir=build_dir))
    for k in kernels:
        _run([cc, *CFLAGS, "-I", str(INCLUDE), "-c", str(k), "-o", str(tmp / (k.stem + ".o"))])
    try:
        tmp.rename(obj_dir)  # atomic: a concurrent builder either wins or finds it complete
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return objs


def build_host_runner(model_c_dir: Path, build_dir: Path) -> Path:
    """Builds (or finds cached) the host runner for the hil_model.c in model_c_dir; returns the binary."""
    model_c_dir, build_dir = Path(model_c_dir), Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    cc = _compiler()
    headers = sorted(INCLUDE.glob("*.h"))
    key = _digest([*headers, *_sources(model_c_dir)], [cc, *CFLAGS])
    binary = build_dir / f"run_model-{key}"
    sidecar = binary.with_name(binary.name + ".json")
    if binary.is_file() and sidecar.is_file():
        return binary
    objs = _kernel_objects(cc, build_dir)
    tmp_bin = build_dir / f".{binary.name}.{os.getpid()}"
    _run(
        [
            cc,
            *CFLAGS,
            "-I",
            str(INCLUDE),
            str(MAIN),
            str(model_c_dir / "hil_model.c"),
            *map(str, objs),
            "-o",
            str(tmp_bin),
        ]
    )
    summary_file = model_c_dir / "model.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    sidecar.write_text(json.dumps({"inputs": summary.get("inputs", []), "outputs": summary.get("outputs", [])}))
    os.replace(tmp_bin, binary)
    return binary


def _io(binary: Path) -> tuple[list[dict], list[dict]]:
    sidecar = Path(binary).with_name(Path(binary).name + ".json")
    info = json.loads(sidecar.read_text())
    return info["inputs"], info["outputs"]


def _np_dtype(spec: dict) -> np.dtype:
    """A tensor's numpy type from model.json (int8, or int16 for 16x8 models, or float32 for a float graph
    input/output around QUANTIZE/DEQUANTIZE; little-endian on the device)."""
    return np.dtype({"int8": "i1", "int16": "<i2", "float32": "<f4"}[spec.get("dtype", "int8")])


def _input_bytes(inputs_spec: list[dict], inputs: Sequence[np.ndarray]) -> bytes:
    if len(inputs) != len(inputs_spec):
        raise UsageError(f"the model takes {len(inputs_spec)} inputs, got {len(inputs)}")
    chunks = []
    for spec, arr in zip(inputs_spec, inputs, strict=True):
        a = np.asarray(arr)
        want = _np_dtype(spec)
        if a.dtype != want:
            raise UsageError(f"input '{spec['name']}' must be {want.name}, got {a.dtype}")
        if a.size * want.itemsize != spec["bytes"]:
            raise UsageError(f"input '{spec['name']}' needs {spec['bytes'] // want.itemsize} values, got {a.size}")
        chunks.append(np.ascontiguousarray(a, dtype=want.newbyteorder("<")).tobytes())
    return b"".join(chunks)


def run_host_many(
    binary: Path, input_sets: Sequence[Sequence[np.ndarray]], timeout: float = 120
) -> list[list[np.ndarray]]:
    """Runs one inference per input set in a single process; returns the outputs of each, in graph order."""
    inputs_spec, outputs_spec = _io(binary)
    payload = b"".join(_input_bytes(inputs_spec, s) for s in input_sets)
    proc = subprocess.run([str(binary)], input=payload, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise HostBuildError(f"{binary} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    per_set = sum(o["bytes"] for o in outputs_spec)
    if len(proc.stdout) != per_set * len(input_sets):
        raise HostBuildError(f"{binary} wrote {len(proc.stdout)} bytes, expected {per_set * len(input_sets)}")
    results = []
    pos = 0
    for _ in input_sets:
        outs = []
        for o in outputs_spec:
            dt = _np_dtype(o)
            values = np.frombuffer(proc.stdout, dtype=dt, count=o["bytes"] // dt.itemsize, offset=pos)
            outs.append(values.astype(dt.newbyteorder("=")).reshape(o["shape"]))
            pos += o["bytes"]
        results.append(outs)
    return results


def run_host(binary: Path, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Runs one inference; returns the output tensors in the graph's output order."""
    return run_host_many(binary, [inputs])[0]
