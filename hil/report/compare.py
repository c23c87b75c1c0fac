"""Regression detection: a run's metrics and test outcomes against a reference run's, under the committed
tolerance file (hil/report/tolerances.yaml).

Per metric key, a row with reference, now, delta, tolerance and a verdict:
  ok           within tolerance
  improved     beyond tolerance in the better direction
  regressed    beyond tolerance in the worse direction                        (fails the comparison)
  changed      beyond tolerance for a metric with no better direction (flagged, does not fail)
  new          recorded now, not in the reference                             (flagged, does not fail)
  missing      in the reference, not recorded now: a measurement never made is a failure (OpenHTF)
  incomparable the provenance differs (e.g. measured on hardware vs emulated): never compared, flagged
A test that passed in the reference and fails now is a `regressed` row too (key `test:<node id>`).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hil.dut import EMULATED_TARGETS
from hil.errors import UsageError

FAILING = ("regressed", "missing")
CLASSES = ("deterministic", "noisy", "wallclock")


class ToleranceError(UsageError):
    """The tolerance file is malformed."""


@dataclass(frozen=True)
class Tolerance:
    better: str = "none"  # lower | higher | none
    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, reference: float) -> float:
        return max(self.abs, self.rel * abs(reference))

    def describe(self, cls: str) -> str:
        parts = []
        if self.rel:
            parts.append(f"±{self.rel * 100:g}%")
        if self.abs or not parts:
            parts.append(f"±{self.abs:g}")
        return f"{' or '.join(parts)} ({cls})"


@dataclass(frozen=True)
class ToleranceTable:
    entries: tuple[tuple[str, dict[str, Any]], ...]
    defaults: dict[str, Any]

    @classmethod
    def load(cls, extra: Path | None = None) -> ToleranceTable:
        text = resources.files("hil.report").joinpath("tolerances.yaml").read_text()
        base = _parse(text, "hil/report/tolerances.yaml")
        if extra is None:
            return base
        try:
            user = _parse(Path(extra).read_text(), str(extra))
        except OSError as exc:
            raise ToleranceError(f"--tolerances {extra}: {exc.strerror}") from None
        return ToleranceTable(user.entries + base.entries, {**base.defaults, **user.defaults})

    def spec(self, key: str) -> dict[str, Any]:
        name = key.split("::")[-1]
        return next((s for pattern, s in self.entries if fnmatch.fnmatchcase(name, pattern)), {})

    def lookup(self, key: str, cls: str) -> Tolerance:
        spec = self.spec(key)
        limits = {**self.defaults.get(cls, {}), **spec.get(cls, {})}
        return Tolerance(spec.get("better", self.defaults.get("better", "none")), float(limits.get("abs", 0.0)),
                         float(limits.get("rel", 0.0)))


def _parse(text: str, where: str) -> ToleranceTable:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ToleranceError(f"{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics", {}), dict):
        raise ToleranceError(f"{where}: expected a mapping with 'defaults' and 'metrics'")
    for pattern, spec in data.get("metrics", {}).items():
        _check_spec(f"{where}: {pattern}", spec)
    _check_spec(f"{where}: defaults", data.get("defaults", {}))
    return ToleranceTable(tuple(data.get("metrics", {}).items()), data.get("defaults", {}))


def _check_spec(where: str, spec: Any) -> None:
    if not isinstance(spec, dict):
        raise ToleranceError(f"{where}: expected a mapping such as {{better: lower, noisy: {{rel: 0.1}}}}")
    unknown = set(spec) - {"better", "clock", *CLASSES}
    if unknown:
        raise ToleranceError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                             "use better, clock, deterministic, noisy, wallclock")
    if spec.get("clock") not in (None, "device", "host"):
        raise ToleranceError(f"{where}: clock must be device or host, not {spec['clock']!r}")
    if spec.get("better", "none") not in ("lower", "higher", "none"):
        raise ToleranceError(f"{where}: better must be lower, higher or none, not {spec['better']!r}")
    for cls in CLASSES:
        limits = spec.get(cls, {})
        if not isinstance(limits, dict) or set(limits) - {"abs", "rel"}:
            raise ToleranceError(f"{where}: {cls} must be a mapping of abs and/or rel")
        for k, v in limits.items():
            if not isinstance(v, int | float) or v < 0:
                raise ToleranceError(f"{where}: {cls}.{k} must be a number >= 0, not {v!r}")


@dataclass
class Row:
    key: str
    unit: str
    reference: float | None
    now: float | None
    delta: float | None
    delta_rel: float | None
    tolerance: str
    better: str
    verdict: str
    provenance: str


def noise_class(provenance: str | None, deterministic_cycles: bool, clock: str | None, emulated: bool) -> str:
    """Hardware and real instruments are noisy, and so is anything modelled from a board's timing. Emulated
    figures repeat exactly (QEMU's icount, accuracy on a fixed image set, the models computed from them), except
    those timed by the host's clock on an emulated target: "wallclock" (the host target's counter is the host's
    clock; round trips are the host's on every target)."""
    if provenance == "measured" or not emulated:
        return "noisy"
    if clock == "host" or (clock == "device" and not deterministic_cycles):
        return "wallclock"
    return "deterministic"


def deterministic_cycles(results: dict[str, Any]) -> bool:
    firmware = results.get("firmware") or {}
    return bool(firmware.get("cycles_deterministic"))


def _metrics(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["key"]: m for m in results.get("metrics", [])}


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def compare_results(now: dict[str, Any], reference: dict[str, Any], table: ToleranceTable) -> dict[str, Any]:
    rows: list[Row] = []
    ref_metrics, now_metrics = _metrics(reference), _metrics(now)
    det_now = deterministic_cycles(now) and deterministic_cycles(reference)
    emulated = all((r.get("target") or {}).get("name") in EMULATED_TARGETS for r in (now, reference))
    for key in [*ref_metrics, *(k for k in now_metrics if k not in ref_metrics)]:
        r, n = ref_metrics.get(key), now_metrics.get(key)
        m = n or r
        provenance = (n or {}).get("provenance") or (r or {}).get("provenance") or ""
        cls = noise_class(provenance, det_now, table.spec(key).get("clock"), emulated)
        tol = table.lookup(key, cls)
        ref_v, now_v = _num(r.get("value")) if r else None, _num(n.get("value")) if n else None
        delta = None if ref_v is None or now_v is None else now_v - ref_v
        delta_rel = None if delta is None or ref_v == 0 else delta / abs(ref_v)
        if r is None:
            verdict = "new"
        elif n is None:
            verdict = "missing"
        elif r.get("provenance") != n.get("provenance"):
            verdict, provenance = "incomparable", f"{r.get('provenance')} -> {n.get('provenance')}"
        elif delta is None:
            verdict = "ok" if ref_v is None and now_v is None else "changed" if ref_v is None else "missing"
        elif abs(delta) <= tol.allowed(ref_v) + 1e-12:
            verdict = "ok"
        elif tol.better == "none":
            verdict = "changed"
        else:
            worse = delta > 0 if tol.better == "lower" else delta < 0
            verdict = "regressed" if worse else "improved"
        rows.append(Row(key, m.get("unit", ""), ref_v, now_v, delta, delta_rel, tol.describe(cls), tol.better,
                        verdict, provenance))
    ref_tests = {t["id"]: t.get("outcome") for t in reference.get("tests", [])}
    for t in now.get("tests", []):
        before, after = ref_tests.get(t["id"]), t.get("outcome")
        if before in ("passed", "skipped") and after in ("failed", "error", "running"):
            rows.append(Row(f"test:{t['id']}", "", None, None, None, None, f"was {before}", "none", "regressed",
                            "test outcome"))
    now_ids = {t["id"] for t in now.get("tests", [])}
    for test_id, before in ref_tests.items():
        if test_id not in now_ids and before == "passed":
            rows.append(Row(f"test:{test_id}", "", None, None, None, None, "was passed", "none", "missing",
                            "test outcome"))
    notes = []
    for what in ("target", "model"):
        a, b = (reference.get(what) or {}).get("name"), (now.get(what) or {}).get("name")
        if a != b:
            notes.append(f"{what} differs: reference {a}, now {b}")
    if (reference.get("model") or {}).get("sha256") != (now.get("model") or {}).get("sha256"):
        notes.append("model sha256 differs from the reference's")
    counts = {v: sum(1 for r in rows if r.verdict == v) for v in
              ("ok", "improved", "regressed", "changed", "new", "missing", "incomparable")}
    failing = counts["regressed"] + counts["missing"]
    return {
        "reference": _identity(reference),
        "now": _identity(now),
        "rows": [asdict(r) for r in rows],
        "counts": counts,
        "regressions": failing,
        "verdict": "fail" if failing else "pass",
        "notes": notes,
    }


def _identity(results: dict[str, Any]) -> dict[str, Any]:
    return {"run_id": results.get("run_id"), "started": results.get("started"),
            "target": (results.get("target") or {}).get("name"), "model": (results.get("model") or {}).get("name"),
            "verdict": results.get("verdict"), "git": (results.get("git") or {}).get("revision")}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def comparison_lines(comparison: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table as rows of text: metric, reference, now, delta, tolerance, verdict."""
    out = []
    for r in comparison["rows"]:
        delta = "-" if r["delta"] is None else f"{r['delta']:+.4g}"
        if r["delta_rel"] is not None:
            delta += f" ({r['delta_rel'] * 100:+.2f}%)"
        out.append((r["key"], f"{_fmt(r['reference'])} {r['unit']}".strip(), f"{_fmt(r['now'])} {r['unit']}".strip(),
                    delta, r["tolerance"], r["verdict"]))
    return out


def summary_line(comparison: dict[str, Any]) -> str:
    c = comparison["counts"]
    ref = comparison["reference"]["run_id"]
    head = "no regression" if comparison["verdict"] == "pass" else f"{comparison['regressions']} regression(s)"
    return (f"{head} against {ref}: {c['ok']} ok, {c['improved']} improved, {c['regressed']} regressed, "
            f"{c['missing']} missing, {c['new']} new, {c['changed']} changed, {c['incomparable']} incomparable")
