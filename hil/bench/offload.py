"""`hil bench offload`: AgileNN and its four baselines side by side, the paper's comparison in one command.

    hil bench offload --target {host,qemu,esp32s3} --images N [--link wifi-6mbps,bt-2mbps,bt-270kbps]
                      [--models DIR] [--json PATH]

Every model directory under --models whose card is of kind agilenn, encoder (DeepCOD-style), partition
(SPINN-style), edge_only or full_local (MCUNet-style) runs on the same N images of the committed CIFAR-10 subset
(hil/accuracy/subset.py) through the real device path, one system after the other:

- agilenn: its firmware (hil_model.c + hil_offload.c), INFER_OFFLOAD: extractor, Local NN, the remote channels
  quantized and LZW-compressed by the device; the server runs its remote.keras, combined with alpha;
- encoder: its model + a bench-generated offload config, INFER_OFFLOAD: int8 features -> 3-bit codes
  (baseline.json's table) + LZW on the device; the server runs its server.keras;
- partition: the same with the int8 features as 8-bit codes (q + 128) + LZW;
- edge_only: a bench-built input-copy model + offload config, INFER_OFFLOAD: the raw image bytes as 8-bit codes
  + LZW on the device (the copy's cycles not counted); the server runs its server.keras on u / 255;
- full_local: its firmware, INFER: the logits on the device; nothing sent, no server.

Every device step is also run on the host (TFLite Micro, the code tables, hil.offload.codec.encode_payload) and
must match the device bit for bit; the row counts the images that did. The server is the remote-model server of
`hil serve` (hil/server/), in this process, one for every system, on this machine. Per system, a power-analyzer
capture (the simulated N6705C unless a VISA resource is given) covers the N device steps.

Per row: device time per stage from the device's cycle counter, payload bytes as sent (mean, p95), the link time
under each link model (modelled), the server's time (measured here), end-to-end latency per link, top-1 accuracy
with its Wilson 95% interval, energy per inference from the analyzer, flash and arena bytes, a MODELLED
ESP32-S3 latency from the model's operators (hil/bench/costmodel.py, hil/bench/esp32s3_costs.yaml; with its
error against the board when the target is esp32s3), and the ratios of every baseline's figures to AgileNN's.
Every figure carries its provenance (measured / emulated / modelled); the paper's own figures (hil/bench/paper.py)
are a separate column, never mixed into ours. A system that cannot be built, run or served is a row that says
why; none is dropped. docs/BENCH_OFFLOAD.md explains every column.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil import paths
from hil.bench import paper as paper_figures
from hil.bench.costmodel import VARIANT_LABELS, VARIANTS, CostTable, ModelCost
from hil.errors import UsageError
from hil.measure.link import LINKS, link_by_key
from hil.measure.measurement import PROVENANCES, Measurement
from hil.stats import wilson_interval
from hil.targets.registry import EMULATED_TARGETS, PROVENANCE, TARGETS

if TYPE_CHECKING:
    from hil.accuracy.subset import ImageSet
    from hil.dut import Dut, DutOptions
    from hil.measure.run import AnalyzerHandle
    from hil.model.artifacts import DeviceModel
    from hil.report.recorder import RunRecorder
    from hil.server.client import RemoteClient

log = logging.getLogger("hil.bench.offload")

FORMAT = "hil-bench-offload/1"
BENCH_KINDS = ("agilenn", "encoder", "partition", "edge_only", "full_local")  # the paper's order
ACCURACY_GAP_POINTS = 3.0  # a baseline further than this from AgileNN's accuracy is flagged
STAGES = ("extractor", "local_head", "compress", "total")
LZW_TRIE_BYTES = 5 * (1 << 12)  # device_fw/OFFLOAD.md: 5 x 2^W bytes for W = 12
DEFAULT_IMAGES = 100
WEAKEST = {p: i for i, p in enumerate(("measured", "emulated", "modelled"))}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DEVICE = 0, 1, 2, 3


class BenchError(UsageError):
    """The bench cannot start (no models, unknown link, unknown reference)."""


# ---------------------------------------------------------------------------------------------------------
# figures and rows
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Figure:
    """One cell: a value with unit and provenance, or None with the reason in `detail`."""

    value: float | None
    unit: str
    provenance: str | None
    detail: str = ""
    values: tuple[float, ...] = ()  # per-image values, for the run journal

    def to_json(self) -> dict[str, Any]:
        v = self.value
        if v is not None and not math.isfinite(v):
            v = None
        return {"value": v, "unit": self.unit, "provenance": self.provenance if v is not None else None,
                "detail": self.detail}

    def measurement(self, name: str) -> Measurement | None:
        if self.value is None or not math.isfinite(self.value) or self.provenance not in PROVENANCES:
            return None
        return Measurement(name, self.value, self.unit, self.provenance, self.detail,  # type: ignore[arg-type]
                           values=self.values)


def na(unit: str, why: str) -> Figure:
    return Figure(None, unit, None, why)


def weakest(*provenances: str | None) -> str | None:
    """The provenance of a figure computed from others: the least hardware-like of them (measured < emulated <
    modelled); None when any part is missing."""
    if any(p is None for p in provenances):
        return None
    return max(provenances, key=lambda p: WEAKEST[p])  # type: ignore[arg-type, return-value]


def link_slug(key: str) -> str:
    return key.replace("-", "_")


def figure_names(links: Sequence[str]) -> list[str]:
    """Every column of a row, in order (a row has all of them, a figure that does not apply is None)."""
    names = [f"device_{s}_ms" for s in STAGES]
    names += ["payload_bytes_mean", "payload_bytes_p95"]
    names += [f"link_{link_slug(k)}_ms" for k in links]
    names += ["server_ms"]
    names += [f"e2e_{link_slug(k)}_ms" for k in links]
    names += ["accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "device_equals_host"]
    names += ["energy_mj", "flash_bytes", "arena_bytes", "offload_ram_bytes"]
    for v in VARIANTS:
        names += [f"s3_{v}_extractor_ms", f"s3_{v}_local_head_ms"]
    names += ["s3_compress_ms"]
    for v in VARIANTS:
        names += [f"s3_{v}_device_ms", f"s3_{v}_energy_mj"]
        names += [f"s3_{v}_e2e_{link_slug(k)}_ms" for k in links]
    names += ["s3_model_error_pct"]
    return names


def ratio_names(links: Sequence[str]) -> list[str]:
    """The figures every row is divided by AgileNN's (the reference row's)."""
    names = [f"e2e_{link_slug(k)}_ms" for k in links]
    names += ["payload_bytes_mean", "energy_mj", "device_total_ms"]
    for v in VARIANTS:
        names += [f"s3_{v}_e2e_{link_slug(k)}_ms" for k in links] + [f"s3_{v}_energy_mj"]
    return names


@dataclass
class Row:
    system: str
    kind: str
    directory: str
    status: str = "ok"  # ok | failed
    reason: str | None = None
    paths: dict[str, str] = field(default_factory=dict)  # device, payload, server: how each is produced
    figures: dict[str, Figure] = field(default_factory=dict)
    ratios: dict[str, Figure] = field(default_factory=dict)
    accuracy_gap_points: float | None = None
    comparable_accuracy: bool | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    paper: dict[str, Any] | None = None
    device: dict[str, Any] | None = None  # HELLO: build id, model sha256, clock

    def value(self, name: str) -> float | None:
        f = self.figures.get(name)
        return None if f is None else f.value

    def to_json(self) -> dict[str, Any]:
        return {
            "system": self.system, "kind": self.kind, "paper_system": paper_figures.PAPER_SYSTEM.get(self.kind),
            "directory": self.directory, "status": self.status, "reason": self.reason, "paths": self.paths,
            "figures": {k: f.to_json() for k, f in self.figures.items()},
            "ratios_to_reference": {k: f.to_json() for k, f in self.ratios.items()},
            "accuracy_gap_points": self.accuracy_gap_points, "comparable_accuracy": self.comparable_accuracy,
            "flags": self.flags, "notes": self.notes, "device": self.device,
            "paper": self.paper,  # the paper's figures for this system: NOT ours (see paper.SOURCE)
        }


# ---------------------------------------------------------------------------------------------------------
# the systems under models/
# ---------------------------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    kind: str
    directory: Path
    card: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None  # agilenn.json or baseline.json
    problem: str | None = None  # why it cannot run (its row says so)


def discover_systems(models_dir: Path, only: Sequence[str] | None = None) -> tuple[list[System], list[str]]:
    """Every model directory with a card of one of BENCH_KINDS (its card checked: hashes, keys), in the paper's
    order, then by name; and notes on the directories left out (no card, another kind). `only`: these names."""
    from hil.export.cards import CardError, load_card

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise BenchError(f"{models_dir} is not a directory of models")
    systems: list[System] = []
    notes: list[str] = []
    for d in sorted(p for p in models_dir.iterdir() if p.is_dir()):
        if only and d.name not in only:
            continue
        card_path = d / "card.json"
        if not card_path.is_file():
            notes.append(f"{d.name}: no card.json, not a model directory of the comparison")
            continue
        try:
            kind = json.loads(card_path.read_text()).get("kind")
        except (OSError, ValueError) as exc:
            systems.append(System(d.name, "unknown", d, problem=f"card.json unreadable: {exc}"))
            continue
        if kind not in BENCH_KINDS:
            notes.append(f"{d.name}: kind {kind!r} is not one of the compared systems ({', '.join(BENCH_KINDS)})")
            continue
        system = System(d.name, str(kind), d)
        try:
            system.card = load_card(d)
            meta = d / ("agilenn.json" if kind == "agilenn" else "baseline.json")
            system.meta = json.loads(meta.read_text())
        except (CardError, OSError, ValueError) as exc:
            system.problem = f"{type(exc).__name__}: {exc}"
        systems.append(system)
    if only:
        missing = sorted(set(only) - {s.name for s in systems} - {n.split(':')[0] for n in notes})
        if missing:
            raise BenchError(f"no model directory named {', '.join(missing)} under {models_dir}")
    systems.sort(key=lambda s: (BENCH_KINDS.index(s.kind) if s.kind in BENCH_KINDS else 99, s.name))
    return systems, notes


def pick_reference(systems: Sequence[System], name: str | None) -> System | None:
    """AgileNN's row, the one every ratio divides by: `name`, else the first agilenn system whose device part is
    int8 (by name), else the first agilenn system."""
    if name is not None:
        for s in systems:
            if s.name == name:
                return s
        raise BenchError(f"--reference {name}: no such system among {', '.join(s.name for s in systems)}")
    agile = [s for s in systems if s.kind == "agilenn" and s.problem is None]
    int8 = [s for s in agile if "int16_code_runs" not in (s.meta or {})]
    return (int8 or agile or [None])[0]


# ---------------------------------------------------------------------------------------------------------
# the device side of each kind
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the bench runs for one system: the firmware's model directory, how the payload is made, the server."""

    system: System
    model: DeviceModel
    step: str  # "offload" (INFER_OFFLOAD) or "infer"
    paths: dict[str, str]
    n_values: int = 0
    bits: int = 0
    lut: np.ndarray | None = None  # int8 -> code (encoder, partition)
    nn_summary: dict[str, Any] | None = None  # model.json of the device network (None: edge-only)
    local_ops: list[int] = field(default_factory=list)  # AgileNN's Local NN ops in nn_summary
    server_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def shared_output_offload_c(summary: dict[str, Any], lut: Sequence[int], bits: int) -> str:
    """hil_offload.c for a one-output model whose whole output is compressed (a baseline's features, or the
    input copy of edge-only): hil.offload.codegen's config with the local and the remote output both output 0.
    The firmware then runs the device's own quantize + compress (INFER_OFFLOAD) on it; the reply's "local"
    tensor is that output itself, which the bench checks against the host."""
    from hil.offload.codegen import offload_c_source

    if len(summary.get("outputs") or []) != 1:
        raise BenchError(f"{summary.get('name')}: expected one output, got {len(summary.get('outputs') or [])}")
    doubled = dict(summary, outputs=[summary["outputs"][0], summary["outputs"][0]])
    meta = {"k": 0, "bits_per_value": bits, "int8_to_code": [int(v) for v in lut]}
    source = offload_c_source(meta, doubled, local_ops=[])
    needle = "    .remote_output = 1,\n"
    if source.count(needle) != 1:
        raise BenchError("hil.offload.codegen's output changed: cannot point the remote output at output 0")
    header = ("/* Generated by hil bench offload (hil/bench/offload.py) for a baseline: output 0 is both the reply's\n"
              " * \"local\" tensor and the compressed one (.remote_output = 0 below). Not a model export's file. */\n")
    return header + source.replace(needle, "    .remote_output = 0,\n").replace(
        " * remote features: output 1", " * remote features: output 0")


def _write_if_changed(path: Path, data: bytes | str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    if not path.is_file() or path.read_bytes() != blob:
        path.write_bytes(blob)


def _device_copy(system: System, work_dir: Path, lut: Sequence[int], bits: int) -> Path:
    """work_dir/<name>-<sha16>/<name>/: the system's device files plus the bench's offload config."""
    import hashlib

    sha = hashlib.sha256((system.directory / "model.tflite").read_bytes()).hexdigest()
    out = work_dir / f"{system.name}-{sha[:16]}" / system.name  # the directory name names the firmware build
    out.mkdir(parents=True, exist_ok=True)
    for f in ("model.tflite", "hil_model.c", "model.json"):
        _write_if_changed(out / f, (system.directory / f).read_bytes())
    summary = json.loads((out / "model.json").read_text())
    _write_if_changed(out / "hil_offload.c", shared_output_offload_c(summary, lut, bits))
    return out


def input_copy_tflite(shape: Sequence[int]) -> bytes:
    """The edge-only device's model: the int8 image (scale 1/255, zero point -128: uint8 - 128) copied unchanged
    to the output (a full-range STRIDED_SLICE), so that the firmware's offload path compresses the raw image."""
    from hil.model.tflite_builder import TfliteBuilder, builtin_options

    b = TfliteBuilder()
    scale, zp = 1.0 / 255.0, -128
    x = b.tensor(list(shape), scale=scale, zero_point=zp, name="image")
    consts = [b.tensor([len(shape)], "int32", data=np.array(v, dtype=np.int32), name=n)
              for n, v in (("begin", [0] * len(shape)), ("end", list(shape)), ("strides", [1] * len(shape)))]
    y = b.tensor(list(shape), scale=scale, zero_point=zp, name="image_bytes")
    b.op("STRIDED_SLICE", [x, *consts], [y], builtin_options("StridedSliceOptionsT"))
    return b.finish([x], [y], description="hil bench offload: edge-only input copy")


def _edge_device(system: System, work_dir: Path) -> Path:
    from hil.model.compiler import compile_tflite

    meta = system.meta or {}
    shape = [int(d) for d in (meta.get("input") or {}).get("shape") or [1, 32, 32, 3]]
    tflite = input_copy_tflite(shape)
    import hashlib

    out = work_dir / f"{system.name}-input-{hashlib.sha256(tflite).hexdigest()[:16]}" / f"{system.name}-input"
    if not (out / "model.json").is_file() or (out / "model.tflite").read_bytes() != tflite:
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.tflite").write_bytes(tflite)
        compile_tflite(tflite, out, name=f"{system.name}-input")
    summary = json.loads((out / "model.json").read_text())
    _write_if_changed(out / "hil_offload.c", shared_output_offload_c(summary, identity_codes().tolist(), 8))
    return out


def identity_codes() -> np.ndarray:
    """int8 value q -> code q + 128 (8 bits): the int8 bytes themselves, as codes."""
    return np.arange(256, dtype=np.uint8)


def plan_system(system: System, work_dir: Path) -> Plan:
    """The firmware model and paths of one system; raises on anything that keeps it from running."""
    from hil.model.artifacts import resolve_model
    from hil.offload.codegen import local_head_ops

    if system.problem:
        raise BenchError(system.problem)
    meta = system.meta or {}
    d = system.directory
    if system.kind == "agilenn":
        if not (d / "hil_offload.c").is_file():
            raise BenchError(f"{d} has no hil_offload.c (the device's offload config); re-export it")
        model = resolve_model(d)
        outputs = {o["name"]: o for o in meta["outputs"]}
        remote = outputs["remote_features"]
        local_index = int(outputs["local_logits"]["index"])
        return Plan(system, model, "offload", {
            "device": "its firmware (hil_model.c + hil_offload.c): INFER_OFFLOAD = extractor, Local NN, the "
                      "remote channels quantized (agilenn.json's code table) and LZW-compressed on the device",
            "payload": "the device's own payload (device_fw/OFFLOAD.md), as sent",
            "server": "remote-model server (hil serve): decode, centroids, remote.keras; combined with the "
                      "device's local logits (alpha)",
        }, n_values=math.prod(remote["shape"]), bits=int(meta["bits_per_value"]), nn_summary=model.summary,
            local_ops=local_head_ops(model.summary, int(meta["k"]), local_index), server_dir=d)
    if system.kind in ("encoder", "partition"):
        out = meta["outputs"][0]
        if system.kind == "encoder":
            lut = np.asarray(meta["int8_to_code"], np.uint8)
            bits = int(meta["payload"]["bits_per_value"])
            how = f"the int8 features mapped to {bits}-bit codes by baseline.json's table ({len(meta['centroids'])} " \
                  "centroids)"
        else:
            lut, bits = identity_codes(), 8
            how = "the int8 split tensor as 8-bit codes (q + 128)"
        copy = _device_copy(system, work_dir, lut.tolist(), bits)
        model = resolve_model(copy)
        return Plan(system, model, "offload", {
            "device": f"its model (hil_model.c) + a bench-generated offload config ({paths.display(copy)}): "
                      f"INFER_OFFLOAD = the "
                      f"network, then {how}, LZW-compressed by the device (the compressor AgileNN uses)",
            "payload": "the device's own payload (device_fw/OFFLOAD.md format), as sent",
            "server": "remote-model server (hil serve): decode, codes -> values (read_baseline_spec), server.keras",
        }, n_values=math.prod(out["shape"]), bits=bits, lut=lut, nn_summary=model.summary, server_dir=d)
    if system.kind == "edge_only":
        copy = _edge_device(system, work_dir)
        model = resolve_model(copy)
        n = math.prod(model.summary["outputs"][0]["shape"])
        return Plan(system, model, "offload", {
            "device": f"no network: a bench-built input-copy model ({paths.display(copy)}) hands the image to "
                      "INFER_OFFLOAD, which "
                      "LZW-compresses its bytes as 8-bit codes on the device (stored when LZW would be larger); "
                      "the copy's cycles are not counted",
            "payload": "the device's own payload (device_fw/OFFLOAD.md format), as sent; the card's payload_bits "
                       "are DEFLATE sizes computed on the host at export",
            "server": "remote-model server (hil serve): decode, u / 255, server.keras",
        }, n_values=n, bits=8, lut=identity_codes(), nn_summary=None, server_dir=d,
            notes=["edge-only's device time is the compressor's; the bench's input copy is not counted"])
    if system.kind == "full_local":
        model = resolve_model(d)
        return Plan(system, model, "infer", {
            "device": "its firmware (hil_model.c): INFER, the whole classifier on the device",
            "payload": "nothing is sent",
            "server": "none",
        }, nn_summary=model.summary)
    raise BenchError(f"kind {system.kind!r} is not benchmarked")


# ---------------------------------------------------------------------------------------------------------
# one device step per image
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    cycles: dict[str, float | None]  # STAGES, plus "scaffold" (edge-only's input copy)
    payload: bytes | None
    prediction: int
    server_us: int | None
    problems: list[str]
    model_us: int | None = None  # the server's Keras call alone

    @property
    def active_cycles(self) -> float:
        """The device time the system itself spends (the total less the bench's scaffolding)."""
        return float(self.cycles["total"] or 0) - float(self.cycles.get("scaffold") or 0)


def _diff(name: str, got: np.ndarray, want: np.ndarray) -> list[str]:
    got, want = np.asarray(got).reshape(-1), np.asarray(want).reshape(-1)
    if got.shape != want.shape:
        return [f"{name}: {got.size} values vs host {want.size}"]
    if not np.array_equal(got, want):
        return [f"{name}: {int(np.count_nonzero(got != want))} of {want.size} values differ from the host"]
    return []


class Stepper:
    """Runs one image of one system: the device step, the host check, the server."""

    def __init__(self, plan: Plan, dut: Dut, remote: RemoteClient | None, server_sha: str | None) -> None:
        self.plan, self.dut, self.remote, self.server_sha = plan, dut, remote, server_sha
        kind = plan.system.kind
        self.reference = None
        self.agile = None
        self.huffman_lengths: list[int] | None = None  # the model's static Huffman code (payload mode 2)
        if kind == "agilenn":
            from hil.accuracy.job import AgileSpec, HostInt8
            from hil.offload.codec import huffman_lengths_of

            self.agile = HostInt8(AgileSpec.load(plan.system.directory))
            self.huffman_lengths = huffman_lengths_of(
                json.loads((Path(plan.system.directory) / "agilenn.json").read_text()))
        elif kind in ("encoder", "partition", "full_local"):
            from hil.model.reference import TflmReference

            self.reference = TflmReference(plan.model.tflite_path)

    def _server(self, payload: bytes) -> tuple[np.ndarray, int, int]:
        assert self.remote is not None and self.server_sha is not None
        reply = self.remote.infer(self.server_sha, payload, self.plan.n_values, self.plan.bits)
        return np.asarray(reply.logits, np.float32).reshape(-1), int(reply.server_us), int(reply.model_us)

    def __call__(self, x: np.ndarray, image_u8: np.ndarray) -> Step:
        from hil.offload.codec import PayloadError, decode_payload, encode_payload

        kind = self.plan.system.kind
        if self.plan.step == "infer":
            r = self.dut.infer([x])
            assert self.reference is not None
            problems = _diff("logits", r.outputs[0], self.reference.run([x])[0])
            total = float(r.cycles)
            return Step({"extractor": total, "local_head": None, "compress": None, "total": total}, None,
                        int(np.argmax(np.asarray(r.outputs[0]).reshape(-1))), None, problems)
        r = self.dut.infer_offload([x])
        c = r.cycles
        problems: list[str] = []
        if r.overflow:
            problems.append(f"payload overflowed the device's {r.payload_capacity}-byte buffer")
        if (r.n_values, r.bits) != (self.plan.n_values, self.plan.bits):
            problems.append(f"device sent {r.n_values} values of {r.bits} bits, expected {self.plan.n_values} of "
                            f"{self.plan.bits}")
        codes = None
        if not problems:
            try:
                codes = decode_payload(r.payload, r.n_values, r.bits, max_output=self.plan.n_values,
                                       huffman_lengths=self.huffman_lengths)
            except PayloadError as exc:
                problems.append(f"payload does not decode: {exc}")
        if kind == "agilenn":
            from hil.accuracy.job import compare

            assert self.agile is not None
            problems += compare(r.local_logits, codes, r.payload, self.agile.run(x))
            cycles = {"extractor": c["extractor"], "local_head": c["local_nn"], "compress": c["compress"],
                      "total": c["total"]}
        else:
            if kind == "edge_only":
                host_values = np.asarray(image_u8, np.uint8).reshape(-1)
                host_codes = host_values
                problems += _diff("image copy", r.local_logits.astype(np.int16) + 128, host_values)
                cycles = {"extractor": None, "local_head": None, "compress": c["compress"],
                          "total": c["total"], "scaffold": c["extractor"]}
            else:
                assert self.reference is not None and self.plan.lut is not None
                features = self.reference.run([x])[0]
                problems += _diff("features", r.local_logits, features)
                host_codes = self.plan.lut[features.reshape(-1).astype(np.int16) + 128]
                cycles = {"extractor": c["extractor"], "local_head": None, "compress": c["compress"],
                          "total": c["total"]}
            if codes is not None:
                problems += _diff("codes", codes, host_codes)
            if bytes(r.payload) != encode_payload(host_codes, self.plan.bits):
                problems.append("payload bytes differ from the host reference encoder's")
        if codes is None:
            return Step(cycles, bytes(r.payload), -1, None, problems)
        logits, server_us, model_us = self._server(bytes(r.payload))
        if kind == "agilenn":
            assert self.agile is not None
            logits = self.agile.spec.combine(np.asarray(r.local_logits).reshape(1, -1), logits.reshape(1, -1))
        return Step(cycles, bytes(r.payload), int(np.argmax(logits)), server_us, problems, model_us)


# ---------------------------------------------------------------------------------------------------------
# energy: one analyzer capture over a system's N device steps
# ---------------------------------------------------------------------------------------------------------


@dataclass
class EnergyResult:
    energy_mj: float | None
    windows: int
    provenance: str
    detail: str
    notes: list[str] = field(default_factory=list)


class EnergyCapture:
    """hil.measure.run.measure's procedure around any device step: plan and arm after a warm-up, tell the
    simulated analyzer each inference's cycles, fetch, find the marker windows, median energy per window."""

    def __init__(self, handle: AnalyzerHandle, images: int, seed: int) -> None:
        self.handle, self.images, self.seed = handle, images, seed
        self.round_trips: list[float] = []
        self.active_s: list[float] = []
        self.config = None

    def inference(self, cycles: float, clock_hz: int, round_trip_s: float) -> None:
        activity = self.handle.activity
        if activity is not None and cycles > 0:
            activity.inference(int(cycles), int(clock_hz), round_trip_s)
        self.round_trips.append(round_trip_s)
        self.active_s.append(cycles / clock_hz)

    def arm(self, warm_cycles: float, clock_hz: int, warm_round_trip_s: float) -> None:
        from hil.measure.run import PRETRIGGER_S, MeasureOptions, plan_capture

        time.sleep(2 * PRETRIGGER_S)
        activity = self.handle.activity
        if activity is not None:
            activity.idle(2 * PRETRIGGER_S)
        inference_s = max(warm_cycles, 1.0) / clock_hz
        if activity is not None and not activity.follow_host:
            period = inference_s + activity.gap_s
        else:
            period = warm_round_trip_s
        analyzer = self.handle.analyzer
        self.config = analyzer.configure(plan_capture(analyzer, MeasureOptions(images=self.images, seed=self.seed),
                                                      period, inference_s))
        analyzer.arm()
        if self.config.trigger == "software":
            analyzer.trigger()
        self.round_trips = []
        self.active_s = []

    def finish(self) -> EnergyResult:
        from hil.measure.energy import analyze

        assert self.config is not None
        trace = self.handle.analyzer.fetch(timeout_s=self.config.duration_s + 10.0 + 2 * sum(self.round_trips))
        analysis = analyze(trace)
        notes = list(analysis.notes)
        if analysis.count != self.images:
            notes.append(f"{analysis.count} marker windows for {self.images} device steps")
        if analysis.count:
            return EnergyResult(float(np.median(analysis.energies_j())) * 1e3, analysis.count, self.handle.provenance,
                                f"median over {analysis.count} marker windows of the integral of V*I, idle "
                                f"included; {self.handle.detail}", notes)
        simulated = self.handle.simulated
        if simulated is not None and self.active_s:
            # Windows shorter than a few samples of the instrument (host builds: microseconds) leave no edges to
            # find: the simulated analyzer's power model, applied to the same device times, gives the answer its
            # traces would integrate to.
            model = simulated.power_model
            active = float(np.median(self.active_s))
            finest = self.handle.analyzer.min_interval_s
            return EnergyResult(model.energy_j(active) * 1e3, 0, "modelled",
                                f"the simulated analyzer's power model applied to the median device time "
                                f"({active * 1e6:.1f} us, too short for its {finest * 1e6:g} us sampling to show "
                                f"windows): {model.describe()}", notes)
        return EnergyResult(None, 0, self.handle.provenance, "the analyzer found no marker windows; "
                            f"{self.handle.detail}", notes)


# ---------------------------------------------------------------------------------------------------------
# running one system
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SystemRun:
    steps: list[Step]
    labels: np.ndarray
    clock_hz: int
    info: dict[str, Any]
    energy: EnergyResult | None
    arena_bytes: int
    wall_s: float


def run_system(plan: Plan, dut_options: DutOptions, images: ImageSet, remote: RemoteClient | None,
               server_sha: str | None, handle: AnalyzerHandle | None, *, seed: int = 0,
               recorder: RunRecorder | None = None, on_step: Callable[[bool], None] | None = None) -> SystemRun:
    """Opens the device with the system's firmware, runs a warm-up step, arms the analyzer, runs every image."""
    from hil.accuracy.job import device_inputs
    from hil.dut import open_dut

    started = time.perf_counter()
    with open_dut(plan.model, dut_options) as dut:
        if recorder is not None:
            recorder.device(dut.info, target=dut_options.target, firmware=getattr(dut.target, "firmware", None))
        info = {"build_id": dut.info.build_id, "model_name": dut.info.model_name,
                "model_sha256": dut.info.model_sha256, "clock_hz": dut.info.clock_hz,
                "arena_bytes": dut.info.arena_bytes, "port": dut.info.port}
        info["kernels"] = _board_kernels(dut)
        x = device_inputs(images.x, dut)
        stepper = Stepper(plan, dut, remote, server_sha)
        clock = int(dut.info.clock_hz)
        capture = None
        energy_notes: list[str] = []
        t0 = time.perf_counter()
        warm = stepper(x[0], images.x[0])
        warm_rt = time.perf_counter() - t0
        if handle is not None:
            capture = EnergyCapture(handle, len(images), seed)
            try:
                capture.inference(warm.active_cycles, clock, warm_rt)
                capture.arm(warm.active_cycles, clock, warm_rt)
            except Exception as exc:  # an analyzer problem costs the energy figure, not the row
                energy_notes.append(f"analyzer: {type(exc).__name__}: {exc}")
                capture = None
        steps = []
        for i in range(len(images)):
            t = time.perf_counter()
            s = stepper(x[i], images.x[i])
            rt = time.perf_counter() - t
            if capture is not None:
                capture.inference(s.active_cycles, clock, rt)
            steps.append(s)
            if on_step is not None:
                on_step(not s.problems)
        energy = None
        if capture is not None:
            try:
                energy = capture.finish()
            except Exception as exc:
                energy_notes.append(f"analyzer: {type(exc).__name__}: {exc}")
        if energy is None and energy_notes:
            energy = EnergyResult(None, 0, handle.provenance if handle else "modelled", "; ".join(energy_notes))
        return SystemRun(steps, np.asarray(images.y, np.int64), clock, info, energy, int(dut.info.arena_bytes),
                         time.perf_counter() - started)


def _board_kernels(dut: Dut) -> str | None:
    """The kernel set the ESP32-S3 port says it runs ("kernels esp-nn 1.1.x" / "kernels portable", its boot line on
    the console), or None when the device said nothing of it."""
    with contextlib.suppress(Exception):
        for line in reversed(dut.console.tail(400)):
            text = str(getattr(line, "text", line))
            at = text.find("kernels ")
            if at >= 0 and ("esp-nn" in text[at:] or "portable" in text[at:]):
                return text[at:].strip()
    return None


# ---------------------------------------------------------------------------------------------------------
# a row from a run
# ---------------------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def build_row(plan: Plan, run: SystemRun, *, target: str, links: Sequence[str], cost: CostTable,
              server_machine: str, power_w: float, power_detail: str) -> Row:
    system = plan.system
    row = Row(system.name, system.kind, paths.display(system.directory), paths=dict(plan.paths),
              notes=list(plan.notes), device=run.info)
    kind = "emulated" if target in EMULATED_TARGETS else "measured"
    where = f"{PROVENANCE[target]}; mean of {len(run.steps)} images, cycles / {run.clock_hz / 1e6:g} MHz (INFO clock)"
    f = row.figures
    n = len(run.steps)

    # device time per stage
    for stage in STAGES:
        vals = [s.cycles.get(stage) for s in run.steps]
        if any(v is None for v in vals):
            why = {"local_head": "no local head (only AgileNN has one)",
                   "compress": "nothing is compressed (the device outputs the class)",
                   "extractor": "no network on the device (edge-only)"}.get(stage, "n/a")
            f[f"device_{stage}_ms"] = na("ms", why)
            continue
        ms = [float(v) / run.clock_hz * 1e3 for v in vals]  # type: ignore[arg-type]
        what = {"compress": "quantize + compress (INFER_OFFLOAD's compress stage)",
                "total": "the whole device step" + (" less the bench's input copy" if system.kind == "edge_only"
                                                    else ""),
                "extractor": "the network" + (" before the Local NN" if system.kind == "agilenn" else ""),
                "local_head": "the Local NN (AgileNN's local head)"}[stage]
        if stage == "total" and system.kind == "edge_only":
            ms = [s.active_cycles / run.clock_hz * 1e3 for s in run.steps]
        f[f"device_{stage}_ms"] = Figure(_mean(ms), "ms", kind, f"{what}; {where}", values=tuple(ms))
    device_ms = [s.active_cycles / run.clock_hz * 1e3 for s in run.steps]

    # payload and link
    sent = [len(s.payload) if s.payload is not None else 0 for s in run.steps]
    if plan.step == "offload":
        f["payload_bytes_mean"] = Figure(_mean(sent), "B", kind, "bytes the device sent per inference (4-byte "
                                         "header included), as sent", values=tuple(float(b) for b in sent))
        f["payload_bytes_p95"] = Figure(float(np.percentile(sent, 95, method="higher")), "B", kind,
                                        "95th percentile of the bytes sent (an observed value)")
    else:
        f["payload_bytes_mean"] = Figure(0.0, "B", kind, "nothing is sent: the device outputs the class")
        f["payload_bytes_p95"] = Figure(0.0, "B", kind, "nothing is sent")
    link_ms: dict[str, list[float]] = {}
    for key in links:
        lm = link_by_key(key)
        link_ms[key] = [lm.transfer_time_s(b) * 1e3 for b in sent]
        f[f"link_{link_slug(key)}_ms"] = Figure(_mean(link_ms[key]), "ms", "modelled",
                                                f"MODELLED transfer time of each payload: {lm.describe()}")

    # server
    server_ms: list[float] = []
    if plan.server_dir is not None:
        server_ms = [s.server_us / 1e3 for s in run.steps if s.server_us is not None]
        if len(server_ms) == n:
            keras_ms = _mean([s.model_us / 1e3 for s in run.steps if s.model_us is not None])
            f["server_ms"] = Figure(_mean(server_ms), "ms", "measured", f"server side on this machine "
                                    f"({server_machine}): decode, codes -> values, Keras ({keras_ms:.2f} ms of it), "
                                    f"reply (server_us)", values=tuple(server_ms))
        else:
            f["server_ms"] = na("ms", f"the server answered {len(server_ms)} of {n} images")
    else:
        f["server_ms"] = Figure(0.0, "ms", "measured", "no server part: nothing runs remotely")
        server_ms = [0.0] * n

    # end to end
    for key in links:
        fig_link = f[f"link_{link_slug(key)}_ms"]
        if len(server_ms) != n:
            f[f"e2e_{link_slug(key)}_ms"] = na("ms", "the server did not answer every image")
            continue
        e2e = [d + lk + sv for d, lk, sv in zip(device_ms, link_ms[key], server_ms, strict=True)]
        prov = weakest(kind, fig_link.provenance, f["server_ms"].provenance) if plan.step == "offload" else kind
        f[f"e2e_{link_slug(key)}_ms"] = Figure(_mean(e2e), "ms", prov, (
            f"device ({kind}) + link ({key}, modelled) + server (measured here), mean over images"
            if plan.step == "offload" else f"device only ({kind}): nothing is sent"), values=tuple(e2e))

    # accuracy
    preds = np.asarray([s.prediction for s in run.steps], np.int64)
    correct = int(np.sum(preds == run.labels))
    lo, hi = wilson_interval(correct, n)
    acc_detail = ("combined (alpha * local + (1 - alpha) * remote)" if system.kind == "agilenn" else
                  "server logits" if plan.server_dir is not None else "device logits") + \
        f" vs labels, {correct}/{n} images; the device's {kind} int8 results + float server"
    f["accuracy"] = Figure(correct / n if n else float("nan"), "fraction", kind, acc_detail)
    f["accuracy_ci95_low"] = Figure(lo, "fraction", kind, "Wilson score, 95%")
    f["accuracy_ci95_high"] = Figure(hi, "fraction", kind, "Wilson score, 95%")
    matched = sum(1 for s in run.steps if not s.problems)
    f["device_equals_host"] = Figure(float(matched), "images", kind, (
        f"of {n} images, the device's output, codes and payload bytes equal the host's (TFLite Micro + code "
        f"table + hil.offload.codec.encode_payload)"))
    if matched != n:
        first = next(s for s in run.steps if s.problems)
        row.flags.append(f"the device differs from the host reference on {n - matched} of {n} images (first: "
                         f"{'; '.join(first.problems)})")

    # energy
    if run.energy is None:
        f["energy_mj"] = na("mJ", "no power analyzer in this run")
    elif run.energy.energy_mj is None:
        f["energy_mj"] = na("mJ", run.energy.detail)
    else:
        over = ("" if target not in EMULATED_TARGETS else
                f"; windows of the {target} device time ({PROVENANCE[target]}), so not ESP32-S3 energy: see "
                f"s3_*_energy_mj")
        f["energy_mj"] = Figure(run.energy.energy_mj, "mJ", run.energy.provenance, run.energy.detail + over)
    if run.energy is not None:
        row.notes += run.energy.notes

    # memory
    static = f"static sizes, the same on every target ({PROVENANCE[target]})"
    if plan.nn_summary is not None:
        f["flash_bytes"] = Figure(float(plan.nn_summary["weights_bytes"]), "B", kind,
                                  f"model weights in flash (model.json); {static}")
        f["arena_bytes"] = Figure(float(run.arena_bytes), "B", kind, f"tensor arena (HELLO); {static}")
    else:
        f["flash_bytes"] = Figure(0.0, "B", kind, f"no network weights; {static}")
        f["arena_bytes"] = na("B", f"no network arena (the bench's input copy uses {run.arena_bytes} B, not counted)")
    if plan.step == "offload":
        from hil.offload.codec import payload_bound

        ram = LZW_TRIE_BYTES + payload_bound(plan.n_values, plan.bits)
        f["offload_ram_bytes"] = Figure(float(ram), "B", kind, f"LZW trie {LZW_TRIE_BYTES} B + payload buffer "
                                        f"{ram - LZW_TRIE_BYTES} B (device_fw/OFFLOAD.md); {static}")
    else:
        f["offload_ram_bytes"] = Figure(0.0, "B", kind, "no offload: no compressor state")

    # the modelled ESP32-S3 column
    model_cost: ModelCost | None = cost.model_cost(plan.nn_summary) if plan.nn_summary is not None else None
    if model_cost is not None:
        row.notes += [f"ESP32-S3 model: {note}" for note in model_cost.notes]
    all_ops = [o.index for o in model_cost.ops] if model_cost else []
    local = [i for i in plan.local_ops if i in all_ops]
    extractor_ops = [i for i in all_ops if i not in local]
    for v in VARIANTS:
        label = VARIANT_LABELS[v]
        if model_cost is None:
            f[f"s3_{v}_extractor_ms"] = na("ms", "no network on the device")
            f[f"s3_{v}_local_head_ms"] = na("ms", "no network on the device")
        else:
            f[f"s3_{v}_extractor_ms"] = Figure(model_cost.seconds(v, extractor_ops) * 1e3, "ms", "modelled",
                                               f"MODELLED ESP32-S3 @ 240 MHz, {label}: {len(extractor_ops)} ops of "
                                               f"model.json costed by hil/bench/esp32s3_costs.yaml")
            if system.kind == "agilenn":
                f[f"s3_{v}_local_head_ms"] = Figure(model_cost.seconds(v, local) * 1e3, "ms", "modelled",
                                                    f"MODELLED ESP32-S3, {label}: the Local NN's ops {local}")
            else:
                f[f"s3_{v}_local_head_ms"] = na("ms", "no local head (only AgileNN has one)")
    if plan.step == "offload":
        qemu_ticks = None
        if target == "qemu":
            qemu_ticks = _mean([float(s.cycles["compress"] or 0) for s in run.steps])
        cycles, how = cost.compress_cycles(plan.n_values, qemu_ticks=qemu_ticks)
        s3_compress_ms = cycles / cost.clock_hz * 1e3
        f["s3_compress_ms"] = Figure(s3_compress_ms, "ms", "modelled", f"MODELLED ESP32-S3 @ 240 MHz: {how}")
        if target == "host":
            row.notes.append("ESP32-S3 model: compress from the per-value figure of 3-bit codes (the host target "
                             "counts no instructions); run --target qemu for this payload's own count")
    else:
        s3_compress_ms = 0.0
        f["s3_compress_ms"] = na("ms", "nothing is compressed")
    server_mean = _mean(server_ms) if len(server_ms) == n else None
    for v in VARIANTS:
        nn_ms = model_cost.seconds(v) * 1e3 if model_cost is not None else 0.0
        s3_ms = nn_ms + s3_compress_ms
        f[f"s3_{v}_device_ms"] = Figure(s3_ms, "ms", "modelled", f"MODELLED ESP32-S3 device step, {VARIANT_LABELS[v]}: "
                                        f"network {nn_ms:.3f} ms + compress {s3_compress_ms:.3f} ms")
        f[f"s3_{v}_energy_mj"] = Figure(s3_ms * 1e-3 * power_w * 1e3, "mJ", "modelled",
                                        f"MODELLED: the modelled device time x {power_w * 1e3:.1f} mW ({power_detail})")
        for key in links:
            if server_mean is None:
                f[f"s3_{v}_e2e_{link_slug(key)}_ms"] = na("ms", "the server did not answer every image")
                continue
            total = s3_ms + _mean(link_ms[key]) + server_mean
            f[f"s3_{v}_e2e_{link_slug(key)}_ms"] = Figure(total, "ms", "modelled", (
                f"MODELLED ESP32-S3 device ({VARIANT_LABELS[v]}) + link ({key}, modelled) + server (measured here)"))
    if target == "esp32s3" and model_cost is not None and f["device_total_ms"].value:
        measured = f["device_total_ms"].value
        kernels = (run.info or {}).get("kernels")
        if kernels and "portable" in kernels:
            variant, why = "portable", f"the board said '{kernels}'"
        elif kernels:
            variant, why = "esp_nn", f"the board said '{kernels}'"
        else:
            variant, why = "esp_nn", "the board did not say its kernels; the port's default (CONFIG_HIL_USE_ESP_NN=y)"
        errors = {v: 100 * ((f[f"s3_{v}_device_ms"].value or 0.0) - measured) / measured for v in VARIANTS}
        other = next(v for v in VARIANTS if v != variant)
        f["s3_model_error_pct"] = Figure(errors[variant], "%", "modelled", (
            f"(modelled {variant} {f[f's3_{variant}_device_ms'].value:.3f} ms - measured {measured:.3f} ms) / "
            f"measured; {variant} because {why}; against {other}: {errors[other]:+.1f}%"))
    else:
        f["s3_model_error_pct"] = na("%", "no board run (target esp32s3) to compare the model with")
    return row


def failed_row(system: System, reason: str, links: Sequence[str], plan: Plan | None = None) -> Row:
    row = Row(system.name, system.kind, paths.display(system.directory), status="failed", reason=reason,
              paths=dict(plan.paths) if plan else {})
    for name in figure_names(links):
        row.figures[name] = na(_unit_of(name), f"not run: {reason}")
    return row


def _unit_of(name: str) -> str:
    if name.endswith("_ms"):
        return "ms"
    if name.endswith("_mj"):
        return "mJ"
    if name.endswith("_pct"):
        return "%"
    if name.startswith("accuracy"):
        return "fraction"
    if name == "device_equals_host":
        return "images"
    return "B"


def complete_row(row: Row, links: Sequence[str]) -> Row:
    """Every column present (a figure that does not apply is None with its reason)."""
    for name in figure_names(links):
        row.figures.setdefault(name, na(_unit_of(name), "n/a"))
    row.figures = {name: row.figures[name] for name in figure_names(links)}
    return row


def add_ratios(rows: Sequence[Row], reference: Row | None, links: Sequence[str]) -> None:
    """Each row's figures divided by the reference row's (AgileNN's), and the accuracy comparison."""
    for row in rows:
        row.paper = paper_figures.paper_row(row.kind)
        for name in ratio_names(links):
            if reference is None or reference.status != "ok":
                row.ratios[name] = na("x", "no AgileNN row ran: nothing to divide by")
                continue
            mine, ref = row.figures.get(name), reference.figures.get(name)
            if mine is None or ref is None or mine.value is None or ref.value is None or not ref.value:
                row.ratios[name] = na("x", "one of the two figures is missing" if row.status == "ok" else
                                      f"not run: {row.reason}")
                continue
            row.ratios[name] = Figure(mine.value / ref.value, "x", weakest(mine.provenance, ref.provenance),
                                      f"{row.system} / {reference.system}: {mine.value:.4g} / {ref.value:.4g} "
                                      f"{mine.unit}")
        if reference is None or reference.status != "ok" or row.status != "ok":
            continue
        acc, ref_acc = row.value("accuracy"), reference.value("accuracy")
        if acc is None or ref_acc is None:
            continue
        gap = 100 * (acc - ref_acc)
        row.accuracy_gap_points = round(gap, 2)
        row.comparable_accuracy = abs(gap) <= ACCURACY_GAP_POINTS
        if not row.comparable_accuracy:
            row.flags.append(f"accuracy {abs(gap):.1f} points {'below' if gap < 0 else 'above'} {reference.system}'s "
                             f"(more than {ACCURACY_GAP_POINTS:g}): not at comparable accuracy, which the paper's "
                             f"comparison assumes; weigh its latency and energy ratios with that")


# ---------------------------------------------------------------------------------------------------------
# the bench
# ---------------------------------------------------------------------------------------------------------


@dataclass
class BenchReport:
    target: str
    links: list[str]
    images: dict[str, Any]
    rows: list[Row]
    reference: str | None
    server: dict[str, Any]
    analyzer: dict[str, Any]
    cost_model: dict[str, Any]
    notes: list[str]
    wall_s: float

    @property
    def ok(self) -> bool:
        return all(r.status == "ok" and not any("differs from the host" in f for f in r.flags) for r in self.rows)

    def row(self, system: str) -> Row:
        return next(r for r in self.rows if r.system == system)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "target": self.target,
            "target_provenance": PROVENANCE[self.target],
            "provenances": {"measured": "on an ESP32-S3 and/or by a real instrument (here: the server's time on "
                                        "this machine)",
                            "emulated": "by the emulated device: relative, not ESP32-S3 time",
                            "modelled": "computed from a model: link models, the power model, the ESP32-S3 cost "
                                        "model"},
            "images": self.images,
            "links": {k: link_by_key(k).describe() for k in self.links},
            "reference": self.reference,
            "columns": figure_names(self.links),
            "ratio_columns": ratio_names(self.links),
            "rows": [r.to_json() for r in self.rows],
            "server": self.server,
            "analyzer": self.analyzer,
            "cost_model": self.cost_model,
            "paper": paper_figures.paper_section(),  # the paper's figures, NOT ours
            "notes": self.notes,
            "wall_s": round(self.wall_s, 1),
        }

    def write_json(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        return path

    def table(self) -> str:
        return format_tables(self)


def _server_machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import tensorflow as tf

        tf_version = tf.__version__
    except Exception:  # noqa: BLE001  (only for the label)
        tf_version = "?"
    return f"{platform.node()}, {cpu}, TensorFlow {tf_version} on CPU"


def run_offload_bench(
    models_dir: Path | str | None = None,
    *,
    target: str = "qemu",
    images: int = DEFAULT_IMAGES,
    links: Sequence[str] | None = None,
    systems: Sequence[str] | None = None,
    reference: str | None = None,
    port: str | None = None,
    baud: int = 2_000_000,
    firmware: dict[str, Path] | None = None,
    flash: bool = True,
    timeout_s: float = 10.0,
    visa: str | None = None,
    analyzer: str | None = None,
    channel: int = 1,
    energy: bool = True,
    seed: int = 0,
    work_dir: Path | None = None,
    cost_file: Path | None = None,
    recorder: RunRecorder | None = None,
    progress: Callable[[str], None] | None = None,
    quiet: bool = True,
) -> BenchReport:
    """Runs every system under models_dir (default models/) on `target` and returns the report (see the module
    docstring). `firmware`: system name -> prebuilt firmware (an ESP-IDF build directory for esp32s3).
    `recorder`: a run directory to record each system's figures into (one test per system, plus the ratios).
    `energy=False` skips the analyzer (energy columns n/a)."""
    from hil.accuracy.subset import select_images
    from hil.dut import DutOptions
    from hil.progress import ProgressDisplay

    say = progress or (lambda _m: None)
    started = time.perf_counter()
    if target not in TARGETS:
        raise BenchError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    links = list(links or LINKS)
    for key in links:
        link_by_key(key)  # ValueError names the known ones
    models_dir = Path(models_dir or paths.MODELS)
    work_dir = Path(work_dir or paths.BUILD / "bench-offload")
    image_set = select_images(images)
    cost = CostTable.load(cost_file)
    found, notes = discover_systems(models_dir, systems)
    if not found:
        raise BenchError(f"no model directory of kind {', '.join(BENCH_KINDS)} under {models_dir}")
    ref_system = pick_reference(found, reference)
    notes.append("energy is the device's own (network + compression) over its marker windows; the radio's transmit "
                 "energy is not modelled here, so the paper's compute + WiFi energy claim is not directly comparable")

    plans: dict[str, Plan] = {}
    failures: dict[str, str] = {}
    for s in found:
        try:
            plans[s.name] = plan_system(s, work_dir)
        except Exception as exc:  # noqa: BLE001  (any reason it cannot run goes into its row)
            failures[s.name] = f"could not prepare its device part: {type(exc).__name__}: {exc}"

    # One server for every system, in this process, on this machine.
    from hil.server.client import RemoteClient
    from hil.server.remote_model import RemoteModel
    from hil.server.service import RemoteServer, ServerConfig

    served: dict[str, RemoteModel] = {}
    for name, plan in plans.items():
        if plan.server_dir is None:
            continue
        say(f"loading the server part of {name}")
        try:
            model_id = None if plan.system.kind == "agilenn" else plan.model.sha256
            served[name] = RemoteModel.load(plan.server_dir, model_id=model_id)
        except Exception as exc:  # noqa: BLE001
            failures[name] = f"its server part could not be loaded: {type(exc).__name__}: {exc}"
    server_machine = _server_machine()
    rows: dict[str, Row] = {}
    stack = contextlib.ExitStack()
    with stack:
        server = None
        if served:
            server = RemoteServer(list(served.values()), ServerConfig(host="127.0.0.1", port=0)).start()
            stack.callback(server.close)
        handle = None
        analyzer_info: dict[str, Any] = {"used": False}
        power_w, power_detail = _power_model()
        if energy:
            from hil.measure.run import open_power_analyzer

            try:
                handle = stack.enter_context(open_power_analyzer(visa, analyzer, channel=channel, seed=seed,
                                                                 timeout_s=timeout_s))
                analyzer_info = {"used": True, "simulated": handle.is_simulated, "provenance": handle.provenance,
                                 "detail": handle.detail, "idn": str(handle.analyzer.identity)}
                if recorder is not None:
                    recorder.instrument(idn=str(handle.analyzer.identity), driver=handle.analyzer.driver_name,
                                        resource=handle.analyzer.session.resource_name,
                                        simulated=handle.is_simulated, detail=handle.detail)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"power analyzer not available ({type(exc).__name__}: {exc}): energy columns n/a")
        for s in found:
            test = f"hil bench offload: {s.name}"
            if recorder is not None:
                recorder.test_start(test)
            plan = plans.get(s.name)
            if s.name in failures or plan is None:
                rows[s.name] = failed_row(s, failures.get(s.name, "not prepared"), links, plan)
                if recorder is not None:
                    recorder.test_end(test, "error", message=rows[s.name].reason or "")
                continue
            say(f"{s.name} ({s.kind}) on {target}")
            options = DutOptions(target=target, port=port, baud=baud, firmware=(firmware or {}).get(s.name),
                                 flash=flash, log_dir=recorder.logs_dir if recorder is not None else None,
                                 timeout_s=timeout_s)
            client = None
            if plan.server_dir is not None and server is not None:
                client = stack.enter_context(RemoteClient(*server.address, timeout=max(timeout_s, 30.0)))
            t0 = time.perf_counter()
            try:
                with ProgressDisplay(f"bench {s.name}", len(image_set), counter="!= host", quiet=quiet) as shown:
                    run = run_system(plan, options, image_set, client,
                                     served[s.name].spec.sha256 if s.name in served else None, handle, seed=seed,
                                     recorder=recorder, on_step=lambda ok, shown=shown: shown.advance(count=not ok))
                row = build_row(plan, run, target=target, links=links, cost=cost, server_machine=server_machine,
                                power_w=power_w, power_detail=power_detail)
            except Exception as exc:  # noqa: BLE001  (the row says why; the bench goes on with the others)
                log.debug("system %s failed", s.name, exc_info=True)
                reason = f"{type(exc).__name__}: {exc}"
                if target == "esp32s3":
                    reason += (f" (on a board each system needs its own firmware: build device_fw/ports/esp32s3 with "
                               f"the model directory {paths.display(plan.model.c_dir)} and pass --fw "
                               f"{s.name}=BUILD_DIR)")
                rows[s.name] = failed_row(s, reason, links, plan)
                if recorder is not None:
                    recorder.test_end(test, "error", time.perf_counter() - t0, message=reason)
                continue
            rows[s.name] = complete_row(row, links)
            if recorder is not None:
                for name, fig in row.figures.items():
                    m = fig.measurement(name)
                    if m is not None:
                        recorder.measurement(m, test=test)
                bad = [fl for fl in row.flags if "differs from the host" in fl]
                recorder.test_end(test, "failed" if bad else "passed", time.perf_counter() - t0,
                                  message="; ".join(bad))
    ordered = [rows[s.name] for s in found]
    ref_row = rows.get(ref_system.name) if ref_system is not None else None
    if ref_system is None:
        notes.append("no AgileNN model directory: no ratios")
    add_ratios(ordered, ref_row, links)
    if recorder is not None:
        test = "hil bench offload: ratios to AgileNN"
        recorder.test_start(test)
        for row in ordered:
            for name, fig in row.ratios.items():
                m = fig.measurement(f"{row.system}.ratio.{name}")
                if m is not None:
                    recorder.measurement(m, test=test)
        recorder.data("paper_figures", paper_figures.paper_section(), test=test,
                      note="the AgileNN paper's own figures (STM32F746, WiFi module, RTX A6000): NOT this run's")
        recorder.test_end(test, "passed" if ref_row is not None and ref_row.status == "ok" else "error",
                          message="" if ref_row is not None else "no AgileNN row")
    return BenchReport(
        target=target, links=links,
        images={"count": len(image_set), "source": image_set.source, "class_counts": image_set.class_counts()},
        rows=ordered, reference=ref_row.system if ref_row is not None else None,
        server={"machine": server_machine, "in_process": True, "protocol": "hil/server/PROTOCOL.md",
                "models": {k: {"sha256": m.spec.sha256, "kind": m.spec.kind, "file": m.spec.model_file}
                           for k, m in served.items()}},
        analyzer=analyzer_info, cost_model=cost.describe(), notes=notes, wall_s=time.perf_counter() - started,
    )


def _power_model() -> tuple[float, str]:
    from hil.instruments.simulated.power_model import ESP32S3_240MHZ

    return ESP32S3_240MHZ.active_power_w, ESP32S3_240MHZ.describe()


# ---------------------------------------------------------------------------------------------------------
# the printed tables
# ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _pipe(head: list[str], body: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body]
    return out


def _label(row: Row) -> str:
    paper = paper_figures.PAPER_SYSTEM.get(row.kind)
    return f"{row.system} ({paper})" if paper else row.system


def format_tables(report: BenchReport) -> str:
    """Three Markdown tables: this run's figures, the modelled ESP32-S3 column, the ratios beside the paper's."""
    t = report.target
    kind = "emulated" if t in EMULATED_TARGETS else "measured"
    links = report.links
    lines = [f"hil bench offload: {len(report.rows)} systems on {t} ({PROVENANCE[t]}), {report.images['count']} "
             f"images ({report.images['source']})", ""]
    lines.append(f"Ours. Device times and bytes: {kind}; link: modelled; server: measured on this machine; e2e: "
                 f"device + link + server; energy: {report.analyzer.get('provenance', 'n/a')} "
                 f"({'simulated N6705C, ESP32-S3 power model' if report.analyzer.get('simulated') else 'analyzer'}).")
    head = ["system", "top-1 [95% CI]", "device ms: extractor / local / compress = total", "payload B mean / p95",
            "server ms", *[f"e2e ms {k}" for k in links], "energy mJ", "flash / arena B"]
    body = []
    for r in report.rows:
        if r.status != "ok":
            body.append([_label(r), f"FAILED: {r.reason}"[:80], *[""] * (len(head) - 2)])
            continue
        acc = f"{_fmt(r.value('accuracy'), '.3f')} [{_fmt(r.value('accuracy_ci95_low'), '.3f')}, " \
              f"{_fmt(r.value('accuracy_ci95_high'), '.3f')}]"
        stages = " / ".join(_fmt(r.value(f"device_{s}_ms"), ".2f") for s in ("extractor", "local_head", "compress"))
        body.append([
            _label(r), acc, f"{stages} = {_fmt(r.value('device_total_ms'), '.2f')}",
            f"{_fmt(r.value('payload_bytes_mean'))} / {_fmt(r.value('payload_bytes_p95'), '.0f')}",
            _fmt(r.value("server_ms"), ".2f"), *[_fmt(r.value(f"e2e_{link_slug(k)}_ms"), ".1f") for k in links],
            _fmt(r.value("energy_mj"), ".3f"),
            f"{_fmt(r.value('flash_bytes'), ',.0f')} / {_fmt(r.value('arena_bytes'), ',.0f')}",
        ])
    lines += _pipe(head, body)
    lines += ["", "MODELLED ESP32-S3 @ 240 MHz (hil/bench/esp32s3_costs.yaml: ESP-NN's published kernel figures; "
                  "not a measurement): device ms portable C / ESP-NN, end to end with ESP-NN kernels."]
    head = ["system", "device ms portable / ESP-NN", *[f"e2e ms {k} (ESP-NN)" for k in links],
            "energy mJ (ESP-NN)", "model vs board"]
    body = []
    for r in report.rows:
        if r.status != "ok":
            body.append([_label(r), "not run", *[""] * (len(head) - 2)])
            continue
        err = r.value("s3_model_error_pct")
        body.append([
            _label(r),
            f"{_fmt(r.value('s3_portable_device_ms'), '.2f')} / {_fmt(r.value('s3_esp_nn_device_ms'), '.2f')}",
            *[_fmt(r.value(f"s3_esp_nn_e2e_{link_slug(k)}_ms"), ".1f") for k in links],
            _fmt(r.value("s3_esp_nn_energy_mj"), ".3f"), "no board run" if err is None else f"{err:+.1f}%",
        ])
    lines += _pipe(head, body)
    ref = report.reference or "n/a"
    primary = "wifi-6mbps" if "wifi-6mbps" in links else links[0]
    lines += ["", f"Ratios to {ref} (x; >1: more than AgileNN), from the rows above; and, in a column of its own, "
                  f"THE PAPER'S figures (STM32F746, 6 Mbps WiFi, RTX A6000 server, CIFAR-10; not ours)."]
    head = ["system", f"e2e {primary} ({kind}/modelled)", f"e2e {primary} S3 ESP-NN (modelled)", "payload",
            "energy", "accuracy vs AgileNN", "PAPER (not ours): e2e ms", "PAPER: ratio", "PAPER: top-1"]
    body = []
    for r in report.rows:
        p = r.paper or {}
        gap = "n/a" if r.accuracy_gap_points is None else (
            f"{r.accuracy_gap_points:+.1f} pts" + ("" if r.comparable_accuracy else " (NOT comparable)"))
        body.append([
            _label(r), _fmt(r.ratios.get(f"e2e_{link_slug(primary)}_ms", na("x", "")).value, ".2f"),
            _fmt(r.ratios.get(f"s3_esp_nn_e2e_{link_slug(primary)}_ms", na("x", "")).value, ".2f"),
            _fmt(r.ratios.get("payload_bytes_mean", na("x", "")).value, ".2f"),
            _fmt(r.ratios.get("energy_mj", na("x", "")).value, ".2f"), gap,
            _fmt(p.get("e2e_ms"), ".1f"), _fmt(p.get("e2e_ratio_to_agilenn"), ".2f"),
            _fmt(p.get("accuracy"), ".3f"),
        ])
    lines += _pipe(head, body)
    flags = [(r.system, fl) for r in report.rows for fl in r.flags]
    failed = [r for r in report.rows if r.status != "ok"]
    if flags or failed:
        lines.append("")
    for r in failed:
        lines.append(f"FAILED {r.system}: {r.reason}")
    for name, fl in flags:
        lines.append(f"! {name}: {fl}")
    return "\n".join(lines)


def summary_line(report: BenchReport) -> str:
    ok = sum(1 for r in report.rows if r.status == "ok")
    ref = report.row(report.reference) if report.reference else None
    head = f"bench offload: {ok}/{len(report.rows)} systems ran on {report.target} ({len(report.links)} links, " \
           f"{report.images['count']} images)"
    if ref is None:
        return head + "; no AgileNN row"
    link = "wifi-6mbps" if "wifi-6mbps" in report.links else report.links[0]
    e2e = ref.figures[f"e2e_{link_slug(link)}_ms"]
    s3 = ref.value(f"s3_esp_nn_e2e_{link_slug(link)}_ms")
    return (f"{head}; {ref.system}: top-1 {_fmt(ref.value('accuracy'), '.3f')}, e2e {link} {_fmt(e2e.value, '.1f')} "
            f"ms ({e2e.provenance}), modelled ESP32-S3 (ESP-NN) {_fmt(s3, '.1f')} ms")


# ---------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------


def _links_arg(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    for k in keys:
        if k not in LINKS:
            raise argparse.ArgumentTypeError(f"unknown link model {k!r}; choose from {', '.join(LINKS)}")
    return keys


def _fw_arg(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--fw takes SYSTEM=PATH, not {text!r}")
    return name, Path(path)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_offload_subparser(bench_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds `offload` to the subparsers of `hil bench`."""
    from hil.cli_runs import add_report_dir_option

    p = bench_sub.add_parser(
        "offload", help="AgileNN and its four baselines side by side: device time per stage, payload, link, server, "
                        "end to end, accuracy, energy, memory, a modelled ESP32-S3 column, ratios to AgileNN",
        description="Runs every model directory of kind agilenn, encoder, partition, edge_only or full_local on the "
                    "same images through the device, the remote-model server and the link models; prints the "
                    "tables and writes the JSON (docs/BENCH_OFFLOAD.md).")
    p.add_argument("--target", choices=TARGETS, default="qemu", help="device to run on (default qemu)")
    p.add_argument("--images", type=_positive, default=DEFAULT_IMAGES,
                   help=f"the first N images of the committed CIFAR-10 subset (default {DEFAULT_IMAGES}; more than "
                        "500: the first N test images of ../shared/datasets/cifar10)")
    p.add_argument("--link", type=_links_arg, action="append", dest="links", metavar="L[,L...]",
                   help=f"link models (default all: {', '.join(LINKS)})")
    p.add_argument("--models", type=Path, default=None, help="directory of model directories (default models/)")
    p.add_argument("--system", action="append", dest="systems", metavar="NAME",
                   help="only these model directories (repeat; default: every one of the compared kinds)")
    p.add_argument("--reference", metavar="NAME", help="the AgileNN row ratios divide by (default: the first int8 "
                                                       "agilenn model by name)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--port", help="esp32s3: serial port or URL")
    p.add_argument("--baud", type=int, default=2_000_000, help="serial baud rate (esp32s3)")
    p.add_argument("--fw", type=_fw_arg, action="append", default=[], metavar="SYSTEM=PATH",
                   help="prebuilt firmware for one system (esp32s3: its ESP-IDF build directory); repeat")
    p.add_argument("--no-flash", action="store_true", help="esp32s3: do not flash, use what the board runs")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each device reply")
    p.add_argument("--hil-visa", "--visa", dest="visa", metavar="RESOURCE",
                   help="VISA resource of a power analyzer (default: the simulated N6705C)")
    p.add_argument("--hil-analyzer", "--analyzer", dest="analyzer", metavar="DRIVER",
                   help="n6705c, ngm202 or k2280s (default: picked from *IDN?)")
    p.add_argument("--channel", type=int, default=1, help="analyzer channel that powers the DUT")
    p.add_argument("--no-energy", action="store_true", help="no analyzer capture (energy columns n/a)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated analyzer's noise")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_report_dir_option(p)
    p.set_defaults(func=cmd_bench_offload)
    return p


def cmd_bench_offload(args: argparse.Namespace) -> int:
    """The command: a run directory (reports/runs/<time>-<target>-bench-offload/) with one test per system and
    the ratios, the tables on stdout, the JSON in the run directory (and at --json)."""
    from rich.console import Console

    from hil.cli_runs import command_line, reports_of
    from hil.report.recorder import RunRecorder
    from hil.report.rundir import make_run_dir

    console = Console(stderr=True, soft_wrap=True)
    links = [k for group in (args.links or [list(LINKS)]) for k in group]
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
               if k not in ("func",) and isinstance(v, str | int | float | bool | Path | type(None))}
    options["links"] = ",".join(links)
    reports = reports_of(args)
    run_dir = make_run_dir(reports, args.target, "bench-offload")
    recorder = RunRecorder.create(reports, command=command_line(), target=args.target, model=None, options=options,
                                  run_dir=run_dir)
    code = EXIT_FAILED
    try:
        report = run_offload_bench(
            args.models, target=args.target, images=args.images, links=links, systems=args.systems,
            reference=args.reference, port=args.port, baud=args.baud, firmware=dict(args.fw),
            flash=not args.no_flash, timeout_s=args.timeout, visa=args.visa, analyzer=args.analyzer,
            channel=args.channel, energy=not args.no_energy, seed=args.seed, recorder=recorder,
            progress=lambda m: console.print(f"[dim]{m}[/]"), quiet=args.quiet,
        )
    except (BenchError, ValueError) as exc:
        print(f"hil bench offload: {exc}", file=sys.stderr)
        recorder.test_start("hil bench offload")
        recorder.test_end("hil bench offload", "error", message=str(exc))
        recorder.finish(EXIT_USAGE)
        return EXIT_USAGE
    except BaseException as exc:  # the run directory still ends with a verdict; `hil` prints the error
        recorder.test_start("hil bench offload")
        recorder.test_end("hil bench offload", "error", message=f"{type(exc).__name__}: {exc}")
        recorder.finish(EXIT_DEVICE)
        raise
    try:
        path = report.write_json(run_dir / "bench-offload.json")
        recorder.artifact(path, "hil bench offload's report: one row per system, every figure with its provenance")
        if args.json is not None:
            report.write_json(args.json)
        print(report.table())
        code = EXIT_OK if report.ok else EXIT_FAILED
        print(summary_line(report))
    finally:
        recorder.finish(code)
        console.print(f"run {paths.display(run_dir)}")
    return code


__all__ = [
    "BENCH_KINDS",
    "FORMAT",
    "BenchError",
    "BenchReport",
    "Figure",
    "Row",
    "add_offload_subparser",
    "cmd_bench_offload",
    "discover_systems",
    "figure_names",
    "input_copy_tflite",
    "ratio_names",
    "run_offload_bench",
    "shared_output_offload_c",
]
