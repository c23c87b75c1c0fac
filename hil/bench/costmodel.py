"""A MODELLED ESP32-S3 latency from a model's operators: hil/bench/esp32s3_costs.yaml applied to model.json.

The emulated targets' cycle counts are not ESP32-S3 time (qemu counts lx106 instructions, host counts host
nanoseconds). This module gives, per model, what the same operators would cost on an ESP32-S3 at 240 MHz by
Espressif's published ESP-NN kernel figures, for two kernel sets:

- `portable`: ESP-NN's ANSI C reference kernels, the published stand-in for this project's portable C kernels;
- `esp_nn`: ESP-NN's optimized ESP32-S3 kernels.

Every figure it returns is "modelled". `CostTable.load()` reads and checks the cost file; `model_cost(summary)`
walks model.json's `ops` (op name, MACs, output shapes, filter shape) and returns the cycles per operator and the
operators it has no published figure for (the sum is then a lower bound, and says so). No TensorFlow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hil.errors import UsageError

COSTS_PATH = Path(__file__).with_name("esp32s3_costs.yaml")
COSTS_FORMAT = "hil-esp32s3-costs/1"
VARIANTS = ("portable", "esp_nn")
VARIANT_LABELS = {
    "portable": "portable C kernels (ESP-NN ANSI C reference figures)",
    "esp_nn": "ESP-NN optimized ESP32-S3 kernels",
}
UNITS = {"mac+output": ("per_mac", "per_output"), "tap": ("per_tap",), "element": ("per_element",)}
# Ops that cost nothing at run time (the compiler folds them, or they only rename a buffer)
FREE_OPS = frozenset({"SHAPE", "PACK"})
REPRODUCE_TOLERANCE = 1e-4  # derived figures reproduce their published tick counts to 0.01%


class CostModelError(UsageError):
    """The cost file is missing, malformed or inconsistent with its own published figures."""


@dataclass(frozen=True)
class KernelCost:
    name: str
    ops: tuple[str, ...]
    unit: str
    params: dict[str, dict[str, float]]  # variant -> {per_mac, per_output} | {per_tap} | {per_element}
    derived_from: tuple[str, ...]
    derivation: str
    applies: str = ""

    def cycles(self, variant: str, *, macs: int = 0, outputs: int = 0, taps: int = 0, elements: int = 0) -> float:
        p = self.params[variant]
        if self.unit == "mac+output":
            return p["per_mac"] * macs + p["per_output"] * outputs
        if self.unit == "tap":
            return p["per_tap"] * taps
        return p["per_element"] * elements


@dataclass(frozen=True)
class OpCost:
    index: int
    op: str
    kernel: str | None  # the cost table entry used; None: no published figure
    cycles: dict[str, float]  # variant -> cycles (0 when kernel is None)
    proxy: bool = False  # the figure is a stated proxy (elementwise_pass), not the op's own


@dataclass
class ModelCost:
    ops: list[OpCost]
    clock_hz: int
    notes: list[str] = field(default_factory=list)

    @property
    def unknown_ops(self) -> list[str]:
        return [f"{o.index} {o.op}" for o in self.ops if o.kernel is None]

    def cycles(self, variant: str, indices: Iterable[int] | None = None) -> float:
        chosen = None if indices is None else set(indices)
        return float(sum(o.cycles[variant] for o in self.ops if chosen is None or o.index in chosen))

    def seconds(self, variant: str, indices: Iterable[int] | None = None) -> float:
        return self.cycles(variant, indices) / self.clock_hz


@dataclass(frozen=True)
class CostTable:
    path: Path
    clock_hz: int
    sources: dict[str, dict[str, Any]]
    published: dict[str, dict[str, Any]]
    kernels: dict[str, KernelCost]
    assumptions: dict[str, dict[str, Any]]

    @classmethod
    def load(cls, path: Path | str | None = None) -> CostTable:
        path = Path(path or COSTS_PATH)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CostModelError(f"{path}: {exc}") from None
        if not isinstance(raw, dict) or raw.get("format") != COSTS_FORMAT:
            raise CostModelError(f"{path}: not a {COSTS_FORMAT} file")
        try:
            kernels = {}
            for name, k in raw["kernels"].items():
                unit = str(k["unit"])
                if unit not in UNITS:
                    raise CostModelError(f"{path}: kernels.{name}.unit {unit!r} is not one of {', '.join(UNITS)}")
                params = {v: {p: float(k[v][p]) for p in UNITS[unit]} for v in VARIANTS}
                kernels[name] = KernelCost(name, tuple(k["ops"]), unit, params, tuple(k["derived_from"]),
                                           str(k["derivation"]), str(k.get("applies", "")))
            table = cls(path, int(raw["clock_hz"]), dict(raw["sources"]), dict(raw["published"]), kernels,
                        dict(raw.get("assumptions") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CostModelError):
                raise
            raise CostModelError(f"{path}: {type(exc).__name__}: {exc}") from None
        problems = table.problems()
        if problems:
            raise CostModelError(f"{path}: " + "; ".join(problems))
        return table

    # --- checks ---

    def problems(self) -> list[str]:
        """Everything wrong with the table: entries without a known source, derived figures that do not
        reproduce the published tick counts they name. [] for a sound table."""
        out = []
        for name, entry in self.published.items():
            if entry.get("source") not in self.sources:
                out.append(f"published.{name}: source {entry.get('source')!r} is not in sources")
            ticks = entry.get("ticks") or {}
            if set(ticks) != set(VARIANTS):
                out.append(f"published.{name}: ticks must give {', '.join(VARIANTS)}")
        for name, entry in self.assumptions.items():
            if entry.get("source") not in (*self.sources, "assumption"):
                out.append(f"assumptions.{name}: source {entry.get('source')!r} is neither a source nor 'assumption'")
        for k in self.kernels.values():
            missing = [p for p in k.derived_from if p not in self.published]
            if missing or not k.derived_from:
                out.append(f"kernels.{k.name}: derived_from names unknown figures {missing or '(none)'}")
                continue
            for variant in VARIANTS:
                for point in self.reproduced(k, variant):
                    if point["relative_error"] > REPRODUCE_TOLERANCE:
                        out.append(f"kernels.{k.name} ({variant}) gives {point['modelled']:.0f} ticks for "
                                   f"{point['figure']}, published {point['published']}")
        return out

    def reproduced(self, kernel: KernelCost, variant: str) -> list[dict[str, Any]]:
        """The kernel's figures applied to each published shape it was derived from (of its own unit), against
        the published tick count: the check that its numbers are the published ones."""
        rows = []
        for name in kernel.derived_from:
            pub = self.published[name]
            if not _same_family(kernel, pub):
                continue  # a figure only lent a parameter (per_output of the 1x1 fit), checked by its own kernel
            modelled = kernel.cycles(variant, macs=int(pub.get("macs", 0)), outputs=int(pub.get("outputs", 0)),
                                     taps=int(pub.get("taps", 0)), elements=int(pub.get("elements", 0)))
            published = int(pub["ticks"][variant])
            rows.append({"figure": name, "published": published, "modelled": modelled,
                         "relative_error": abs(modelled - published) / published})
        return rows

    def source_of(self, kernel: KernelCost) -> str:
        names = sorted({self.published[p]["source"] for p in kernel.derived_from})
        return "; ".join(f"{self.sources[n]['url']}" for n in names)

    # --- applying it ---

    def kernel_for(self, op: dict[str, Any]) -> KernelCost | None:
        name = str(op.get("op", ""))
        candidates = [k for k in self.kernels.values() if name in k.ops]
        if not candidates:
            return None
        if name == "CONV_2D":
            filt = _filter_shape(op)
            one_by_one = filt is not None and filt[1] == filt[2] == 1
            return self.kernels["conv_1x1" if one_by_one else "conv"]
        if name == "DEPTHWISE_CONV_2D":
            filt = _filter_shape(op)
            ins, outs = op.get("inputs") or [], op.get("outputs") or []
            mult = (outs[0][-1] // ins[0][-1]) if ins and outs and ins[0][-1] else 1
            plain = filt is not None and filt[1] == filt[2] == 3 and mult == 1
            return self.kernels["depthwise_3x3" if plain else "depthwise"]
        return candidates[0]

    def model_cost(self, summary: dict[str, Any]) -> ModelCost:
        """Cycles per operator of model.json's ops, both variants."""
        ops: list[OpCost] = []
        notes: list[str] = []
        int16 = False
        for op in summary.get("ops") or []:
            index, name = int(op.get("index", len(ops))), str(op.get("op", "?"))
            if "16x8" in str(op.get("kernel", "")) or "_i16" in str(op.get("kernel", "")):
                int16 = True
            if name in FREE_OPS:
                ops.append(OpCost(index, name, "free", dict.fromkeys(VARIANTS, 0.0)))
                continue
            kernel = self.kernel_for(op)
            if kernel is None:
                ops.append(OpCost(index, name, None, dict.fromkeys(VARIANTS, 0.0)))
                continue
            out_elems = sum(math.prod(s) for s in (op.get("outputs") or []))
            in_elems = math.prod((op.get("inputs") or [[0]])[0])
            macs = int(op.get("macs") or 0)
            cycles = {v: kernel.cycles(v, macs=macs, outputs=out_elems, taps=in_elems if name == "MEAN" else
                                       _pool_taps(op), elements=out_elems) for v in VARIANTS}
            ops.append(OpCost(index, name, kernel.name, cycles, proxy=kernel.name == "elementwise_pass"))
        unknown = [f"{o.index} {o.op}" for o in ops if o.kernel is None]
        if unknown:
            notes.append(f"no published ESP32-S3 figure for op(s) {', '.join(unknown)}: counted as 0 cycles, so the "
                         f"modelled latency is a lower bound")
        proxies = sorted({o.op for o in ops if o.proxy})
        if proxies:
            notes.append(f"{', '.join(proxies)}: no published figure; costed as one elementwise int8 pass (ESP-NN's "
                         f"relu6 figure), an assumption")
        if int16:
            notes.append("16x8 kernels (int16 activations): no published ESP-NN figure; the s8 figures are used, "
                         "a lower bound")
        return ModelCost(ops, self.clock_hz, notes)

    def assumption(self, name: str) -> float:
        return float(self.assumptions[name]["value"])

    def compress_cycles(self, n_values: int, *, qemu_ticks: float | None = None) -> tuple[float, str]:
        """Modelled ESP32-S3 cycles of the device's quantize + compress of n_values codes, and how they were had:
        from the qemu run's own compress ticks (instructions = ticks x 25) when given, else from the per-value
        instruction figure of 3-bit codes; both times the LX7 CPI assumption."""
        cpi = self.assumption("lx7_cpi")
        if qemu_ticks is not None:
            per_tick = self.assumption("qemu_instructions_per_tick")
            return qemu_ticks * per_tick * cpi, (f"qemu's compress stage: {qemu_ticks:,.0f} ticks x {per_tick:g} "
                                                 f"instructions/tick x CPI {cpi:g} (assumption)")
        per_value = self.assumption("compress_instructions_per_value")
        return n_values * per_value * cpi, (f"{n_values} values x {per_value:g} instructions/value (3-bit codes, "
                                            f"device_fw/OFFLOAD.md) x CPI {cpi:g} (assumption)")

    def describe(self) -> dict[str, Any]:
        """The table as the bench's JSON cites it."""
        return {
            "file": str(self.path),
            "clock_hz": self.clock_hz,
            "variants": VARIANT_LABELS,
            "kernels": {k.name: {"ops": list(k.ops), "unit": k.unit, **{v: k.params[v] for v in VARIANTS},
                                 "derived_from": list(k.derived_from), "derivation": k.derivation,
                                 "source": self.source_of(k)} for k in self.kernels.values()},
            "assumptions": self.assumptions,
            "sources": self.sources,
        }


def _same_family(kernel: KernelCost, pub: dict[str, Any]) -> bool:
    family = {"conv_1x1": "conv", "conv": "conv", "depthwise_3x3": "depthwise", "depthwise": "depthwise",
              "fully_connected": "fully_connected", "mean": "avg_pool", "max_pool": "max_pool", "add": "add",
              "mul": "mul", "elementwise_pass": "relu6"}.get(kernel.name)
    if family is None:
        return True
    if pub.get("kernel") != family:
        return False
    if kernel.name == "conv":
        return pub["filter"][1] > 1
    return True


def _filter_shape(op: dict[str, Any]) -> Sequence[int] | None:
    ins = op.get("inputs") or []
    return ins[1] if len(ins) > 1 and len(ins[1]) == 4 else None


def _pool_taps(op: dict[str, Any]) -> int:
    """Window elements of a pool: output elements x filter area (nominal), from the op's summary when given."""
    outs = op.get("outputs") or []
    out_elems = math.prod(outs[0]) if outs else 0
    summary = str(op.get("summary", ""))
    m = re.search(r"(\d+)x(\d+) filter", summary)
    return out_elems * (int(m.group(1)) * int(m.group(2)) if m else 1)


__all__ = ["COSTS_PATH", "VARIANTS", "VARIANT_LABELS", "CostModelError", "CostTable", "ModelCost", "OpCost"]
