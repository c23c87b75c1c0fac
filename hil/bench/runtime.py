"""`hil bench runtime`: the compiled model's runtime against TensorFlow Lite Micro, measured in one run.

For one model (a model directory or a .tflite), on the same seeded random inputs:

- host instructions per inference, ours and TFLM's, counted by valgrind's callgrind inside the inference call
  only (`--toggle-collect`, one dump per call with `--dump-after`, the first call dropped as a warm-up, the mean
  of the rest): ours is the host runner (device_fw/tests/run_model_main.c, the kernels and hil_model.c at -O2,
  without the debug checks) inside `hil_model_invoke`; TFLM's is the tflite-micro Python interpreter inside
  `tflite::micro::MicroInterpreter::Invoke()`. `perf stat -e instructions` would do where the kernel exposes
  counters; the bench says which tool counted (`host.method`), and uses callgrind (the machines this project
  runs on have no counters: `perf stat` answers "not supported");
- emulated instructions per inference on qemu (the firmware's lx106 build, `-icount shift=0`: the INFER reply's
  CCOUNT ticks are 25 guest instructions each, ports/qemu/ccount.S), "before" = the model compiled with generic
  kernels only (`compile_tflite(..., specialise=False)`), "after" = the default build (specialised kernels);
- the peak arena, ours (model.json) and TFLM's: the RecordingMicroAllocator's total (activations "head" plus
  persistent "tail"), which the interpreter prints after an invoke (`print_allocations()`);
- flash of ours (constant data plus the code estimate of model.json);
- bit-exactness on every input: the host runner (with the kernels' debug checks) and the qemu firmware against TFLM.

Figures, never verdicts: the last line reads e.g. `runtime 3.4x fewer instructions than TFLite Micro, arena
0.92x, bit-exact 20/20`. Entry point: `bench_runtime(model, images=20, runs=3, qemu=True)` -> RuntimeBench;
`hil bench runtime` (hil/cli_bench.py) prints it and writes --json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil import paths
from hil.errors import DeviceError

QEMU_INSTRUCTIONS_PER_TICK = 25  # -icount shift=0: 1 ns per instruction, CCOUNT at QEMU's 40 MHz for lx106
OUR_FUNCTION = "hil_model_invoke"
TFLM_FUNCTION = "tflite::micro::MicroInterpreter::Invoke()"
HOST_CFLAGS = ["-O2", "-std=c99", "-Wall", "-Wextra", "-Werror"]  # hil.model.hostrun's, without the checks


class BenchError(DeviceError, RuntimeError):
    """A tool the bench needs is missing or failed; the message says which and how to get it."""


@dataclass
class RuntimeBench:
    model: str
    images: int
    runs: int  # inferences counted under callgrind, after one warm-up
    host: dict[str, Any] = field(default_factory=dict)  # method, ours, tflm (instructions per inference), ratio
    qemu: dict[str, Any] | None = None  # before/after CCOUNT ticks and instructions per inference, ratio
    arena: dict[str, Any] = field(default_factory=dict)  # ours, tflm, tflm_head, tflm_tail, ratio
    flash: dict[str, Any] = field(default_factory=dict)  # ours: constant_bytes, code_bytes_estimate
    bit_exact: dict[str, Any] = field(default_factory=dict)  # host / qemu: matched, images
    specialised_ops: list[str] = field(default_factory=list)  # "op N: kernel" for every specialised op
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        exact = [v for v in self.bit_exact.values() if v]
        matched = min((v["matched"] for v in exact), default=0)
        parts = [
            f"runtime {self.host['ratio']:.1f}x fewer instructions than TFLite Micro",
            f"arena {self.arena['ratio']:.2f}x",
            f"bit-exact {matched}/{self.images}",
        ]
        if self.qemu:
            parts.insert(1, f"{self.qemu['ratio']:.1f}x fewer emulated instructions than the generic kernels")
        return ", ".join(parts)

    def table(self) -> list[tuple[str, str, str, str]]:
        """(figure, ours, reference, ratio) rows for printing."""
        rows = [
            (
                "host instructions / inference (x86-64, " + self.host["method"] + ")",
                f"{self.host['ours']:,.0f}",
                f"{self.host['tflm']:,.0f} TFLM",
                f"{self.host['ratio']:.2f}x fewer",
            ),
        ]
        if self.qemu:
            rows.append(
                (
                    "qemu instructions / inference (emulated lx106)",
                    f"{self.qemu['after_instructions']:,.0f}",
                    f"{self.qemu['before_instructions']:,.0f} generic kernels",
                    f"{self.qemu['ratio']:.2f}x fewer",
                )
            )
        rows.append(
            (
                "peak arena bytes",
                f"{self.arena['ours']:,}",
                f"{self.arena['tflm']:,} TFLM (activations {self.arena['tflm_head']:,} + persistent "
                f"{self.arena['tflm_tail']:,})",
                f"{self.arena['ratio']:.2f}x",
            )
        )
        rows.append(
            (
                "flash bytes (constants + code estimate)",
                f"{self.flash['constant_bytes']:,} + {self.flash['code_bytes_estimate']:,}",
                "",
                "",
            )
        )
        for where, v in self.bit_exact.items():
            if v:
                rows.append((f"bit-exact on {where}", f"{v['matched']}/{v['images']}", "TFLM", ""))
        return rows


# --------------------------------------------------------------------------------------------------------
# TFLM: arena and a harness to count its instructions


def tflm_arena(tflite: bytes) -> dict[str, int]:
    """TFLM's arena use for the model (after one invoke on zeros): total, head (activations), tail (persistent),
    from the RecordingMicroAllocator report that print_allocations() writes to the process's stderr."""
    from hil.model.reference import TflmReference

    ref = TflmReference(tflite)
    ref.run([np.zeros(d.shape, d.dtype) for d in ref.inputs])
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            ref._interpreter.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", text)}
    if set(found) != {"total", "head", "tail"}:
        raise BenchError(f"tflite-micro printed no arena report: {text[:300]!r}")
    return found


def _tflm_harness(tflite_path: str, inputs_path: str) -> None:
    """Runs the TFLM interpreter on every input set of an .npz (arrays in0_0, in0_1, ... in1_0, ...): the process
    that callgrind counts (python -m hil.bench.runtime --tflm-harness MODEL INPUTS)."""
    from hil.model.reference import TflmReference

    ref = TflmReference(Path(tflite_path))
    data = np.load(inputs_path)
    n_sets = len({k.split("_")[0] for k in data.files})
    for s in range(n_sets):
        ref.run([data[f"in{s}_{i}"] for i in range(len(ref.inputs))])


# --------------------------------------------------------------------------------------------------------
# callgrind


def _valgrind() -> str:
    exe = shutil.which("valgrind")
    if exe is None:
        raise BenchError("valgrind not found: install it (Debian: apt-get install valgrind)")
    return exe


def perf_counters_available() -> bool:
    """Whether `perf stat -e instructions` counts here (many VMs and containers expose no counters)."""
    perf = shutil.which("perf")
    if perf is None:
        return False
    proc = subprocess.run([perf, "stat", "-x,", "-e", "instructions", "true"], capture_output=True, text=True)
    return proc.returncode == 0 and "not supported" not in proc.stderr and "<not" not in proc.stderr


def callgrind_per_call(
    cmd: Sequence[str], function: str, stdin: bytes | None = None, cwd: Path | None = None, timeout: float = 900
) -> list[int]:
    """Instructions inside each call of `function` (callgrind, one dump after every call), in call order."""
    out_dir = Path(tempfile.mkdtemp(prefix="hil-callgrind-"))
    try:
        proc = subprocess.run(
            [_valgrind(), "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.out",
             f"--toggle-collect={function}", f"--dump-after={function}", *cmd],
            input=stdin, capture_output=True, cwd=cwd, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            raise BenchError(
                f"callgrind run of {' '.join(cmd)} failed ({proc.returncode}):\n"
                f"{proc.stderr.decode(errors='replace')[-2000:]}"
            )
        dumps = sorted(out_dir.glob("cg.out.*"), key=lambda p: int(p.suffix[1:]))
        counts = []
        for dump in dumps:
            m = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
            if m and int(m.group(1)) > 0:
                counts.append(int(m.group(1)))
        return counts
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def _per_inference(counts: list[int], runs: int, what: str) -> float:
    if len(counts) < runs + 1:
        raise BenchError(f"{what}: callgrind saw {len(counts)} calls, expected {runs + 1}")
    return float(np.mean(counts[1 : runs + 1]))


# --------------------------------------------------------------------------------------------------------
# Our runtime on the host


def build_bench_runner(model_dir: Path, build_dir: Path, extra_cflags: Sequence[str] = ()) -> Path:
    """The host runner without the kernels' debug checks (what a release build runs), cached by content.
    `extra_cflags` (e.g. -DHIL_KERNEL_CHECKS, -DHIL_SLOW_MUL64=1 for the lx106's code paths) are added."""
    from hil.model.hostrun import INCLUDE, KERNELS, MAIN

    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise BenchError(f"C compiler '{cc}' not found (set CC or install gcc)")
    flags = [*HOST_CFLAGS, *extra_cflags]
    sources = [*sorted(KERNELS.glob("*.c")), MAIN, Path(model_dir) / "hil_model.c"]
    h = hashlib.sha256(" ".join([cc, *flags]).encode())
    for f in [*sorted(INCLUDE.glob("*.h")), *sources]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    binary = Path(build_dir) / f"bench-runner-{h.hexdigest()[:20]}"
    if not binary.is_file():
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        tmp = binary.with_name(f".{binary.name}.{os.getpid()}")
        proc = subprocess.run(
            [cc, *flags, "-I", str(INCLUDE), *map(str, sources), "-o", str(tmp)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise BenchError(f"building the bench runner failed:\n{proc.stderr}")
        summary = json.loads((Path(model_dir) / "model.json").read_text())
        # the sidecar hil.model.hostrun.run_host_many reads
        sidecar = {"inputs": summary["inputs"], "outputs": summary["outputs"]}
        binary.with_name(binary.name + ".json").write_text(json.dumps(sidecar))
        os.replace(tmp, binary)
    return binary


def _input_bytes(sets: Sequence[Sequence[np.ndarray]]) -> bytes:
    return b"".join(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes() for s in sets for a in s)


# --------------------------------------------------------------------------------------------------------
# The bench


def _model_files(model: Path) -> tuple[Path, str]:
    model = Path(model)
    tflite = model / "model.tflite" if model.is_dir() else model
    if not tflite.is_file():
        raise BenchError(f"{model}: no model.tflite (give a model directory or a .tflite)")
    return tflite, model.name if model.is_dir() else model.stem


def _compile_dir(tflite: Path, root: Path, name: str, specialise: bool) -> Path:
    from hil.model.compiler import compile_tflite

    out = root / ("specialised" if specialise else "generic") / name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(tflite, out / "model.tflite")
    compile_tflite(tflite, out, name=name, specialise=specialise)
    return out


def _random_sets(reference: Any, count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        one = []
        for d in reference.inputs:
            if np.issubdtype(d.dtype, np.integer):
                info = np.iinfo(d.dtype)
                one.append(rng.integers(info.min, info.max, size=d.shape, endpoint=True).astype(d.dtype))
            else:
                one.append(rng.uniform(-1, 1, size=d.shape).astype(d.dtype))
        sets.append(one)
    return sets


def _equal(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> bool:
    return all(np.array_equal(np.asarray(g).reshape(np.asarray(w).shape), w) for g, w in zip(got, want, strict=True))


def _qemu_run(model_dir: Path, sets: list[list[np.ndarray]], log_dir: Path) -> tuple[list[int], list[list[np.ndarray]]]:
    from hil.dut import DutOptions, open_dut
    from hil.model.artifacts import resolve_model

    cycles, outputs = [], []
    with open_dut(resolve_model(model_dir), DutOptions(target="qemu", log_dir=log_dir)) as dut:
        for x in sets:
            r = dut.infer(x)
            cycles.append(int(r.cycles))
            outputs.append([np.asarray(o) for o in r.outputs])
    return cycles, outputs


def bench_runtime(
    model: Path | str | None = None,
    images: int = 20,
    runs: int = 3,
    qemu: bool = True,
    seed: int = 0,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RuntimeBench:
    """Measures the model as the module docstring says. `runs` inferences are counted under callgrind (after one
    warm-up); `images` inputs are checked for bit-exactness (host, and qemu unless qemu=False)."""
    from hil.model.hostrun import build_host_runner, run_host_many
    from hil.model.reference import TflmReference

    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    tflite, name = _model_files(Path(model) if model is not None else paths.DEFAULT_MODEL)
    data = tflite.read_bytes()
    owned = work_dir is None
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="hil-bench-runtime-"))
    try:
        reference = TflmReference(data)
        sets = _random_sets(reference, max(images, runs + 1), seed)
        want = [reference.run(s) for s in sets]
        fast_dir = _compile_dir(tflite, root, name, True)
        summary = json.loads((fast_dir / "model.json").read_text())
        result = RuntimeBench(model=name, images=images, runs=runs)
        result.specialised_ops = [
            f"op {o['index']}: {o['specialised_kernel']}" for o in summary["ops"] if o.get("specialised_kernel")
        ]

        say("bit-exactness on the host (kernel debug checks on)")
        checked = build_host_runner(fast_dir, root / "build")
        got = run_host_many(checked, sets[:images])
        result.bit_exact["host"] = {
            "matched": sum(_equal(g, w) for g, w in zip(got, want, strict=False)),
            "images": images,
        }

        say("host instructions: our runtime under callgrind")
        runner = build_bench_runner(fast_dir, root / "build")
        ours = _per_inference(
            callgrind_per_call([str(runner)], OUR_FUNCTION, stdin=_input_bytes(sets[: runs + 1])), runs, "our runtime"
        )
        say("host instructions: TFLite Micro under callgrind")
        npz = root / "inputs.npz"
        np.savez(npz, **{f"in{s}_{i}": a for s, one in enumerate(sets[: runs + 1]) for i, a in enumerate(one)})
        harness = [sys.executable, "-m", "hil.bench.runtime", "--tflm-harness", str(tflite), str(npz)]
        tflm = _per_inference(callgrind_per_call(harness, TFLM_FUNCTION, cwd=paths.PROJECT_ROOT), runs, "TFLM")
        result.host = {
            "method": "callgrind" if not perf_counters_available() else "callgrind (perf counters also available)",
            "ours": ours, "tflm": tflm, "ratio": tflm / ours,
            "ours_function": OUR_FUNCTION, "tflm_function": TFLM_FUNCTION,
        }  # fmt: skip

        say("arena: TFLite Micro's allocation report")
        arena = tflm_arena(data)
        result.arena = {
            "ours": int(summary["arena_bytes"]), "tflm": arena["total"], "tflm_head": arena["head"],
            "tflm_tail": arena["tail"], "ratio": int(summary["arena_bytes"]) / arena["total"],
            "input_preserved": bool(summary.get("input_preserved", False)),
        }  # fmt: skip
        result.flash = {k: int(v) for k, v in summary.get("flash", {}).items()}
        result.flash.setdefault("constant_bytes", int(summary["weights_bytes"]))
        result.flash.setdefault("code_bytes_estimate", 0)

        integer_io = all(t["dtype"] in ("int8", "int16") for t in (*summary["inputs"], *summary["outputs"]))
        if qemu and integer_io:
            say("qemu: generic kernels (before)")
            generic_dir = _compile_dir(tflite, root, name, False)
            before, _ = _qemu_run(generic_dir, sets[: max(runs, 1)], root / "logs-generic")
            say("qemu: specialised kernels (after)")
            after, outs = _qemu_run(fast_dir, sets[:images], root / "logs-specialised")
            b, a = float(np.mean(before)), float(np.mean(after[: max(runs, 1)]))
            result.qemu = {
                "before_ticks": b, "after_ticks": a,
                "before_instructions": b * QEMU_INSTRUCTIONS_PER_TICK,
                "after_instructions": a * QEMU_INSTRUCTIONS_PER_TICK,
                "instructions_per_tick": QEMU_INSTRUCTIONS_PER_TICK, "ratio": b / a,
                "provenance": "emulated: QEMU lx106, -icount shift=0 (deterministic instruction counts, not an "
                              "ESP32-S3 time)",
            }  # fmt: skip
            result.bit_exact["qemu"] = {
                "matched": sum(_equal(g, w) for g, w in zip(outs, want, strict=False)),
                "images": images,
            }
        result.seconds = time.monotonic() - t0
        return result
    finally:
        if owned:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # the TFLM process callgrind counts
    if len(sys.argv) == 4 and sys.argv[1] == "--tflm-harness":
        _tflm_harness(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m hil.bench.runtime --tflm-harness MODEL.tflite INPUTS.npz")
