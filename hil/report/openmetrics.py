"""metrics.txt: the run's figures in the OpenMetrics text format (prometheus-client's exposition), so a
Prometheus Pushgateway or a node-exporter textfile collector can take a nightly run as it is.

Every figure is the gauge `hil_<name>` with its unit as the OpenMetrics unit, labelled with the run, target,
model and provenance (so a dashboard can never mix an emulated latency with a measured one); test outcomes are
`hil_test_passed{test=...}` (1 or 0) and the verdict is `hil_run_passed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest

_UNITS = {"ms": "milliseconds", "s": "seconds", "us": "microseconds", "mJ": "millijoules", "J": "joules",
          "mW": "milliwatts", "W": "watts", "mA": "milliamperes", "A": "amperes", "V": "volts", "B": "bytes",
          "%": "percent"}


def _name(text: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", text)
    return name if re.match(r"[a-zA-Z_]", name) else f"_{name}"


def _unit(unit: str) -> str:
    return _name(_UNITS.get(unit, unit)).lower().strip("_") if unit else ""


class _RunCollector:
    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def collect(self) -> Iterator[Metric]:
        r = self.results
        base = {"run": r.get("run_id") or "", "target": (r.get("target") or {}).get("name") or "",
                "model": (r.get("model") or {}).get("name") or ""}
        families: dict[tuple[str, str], GaugeMetricFamily] = {}
        for m in r.get("metrics", []):
            if m.get("value") is None:
                continue
            unit = _unit(m.get("unit", ""))
            name = f"hil_{_name(m['name'])}"
            if unit and not name.endswith(f"_{unit}"):
                name = f"{name}_{unit}"
            family = families.get((name, unit))
            if family is None:
                family = GaugeMetricFamily(name, f"{m['name']} ({m.get('unit', '')})", unit=unit,
                                           labels=[*base, "provenance", "test"])
                families[(name, unit)] = family
            family.add_metric([*base.values(), m.get("provenance") or "", m.get("test") or ""], float(m["value"]))
        yield from families.values()
        tests = GaugeMetricFamily("hil_test_passed", "1 when the test passed or was skipped, else 0",
                                  labels=[*base, "test", "outcome"])
        for t in r.get("tests", []):
            tests.add_metric([*base.values(), t["id"], t.get("outcome", "")],
                             1.0 if t.get("outcome") in ("passed", "skipped", "xfailed") else 0.0)
        yield tests
        verdict = GaugeMetricFamily("hil_run_passed", "1 when the run's verdict is pass",
                                    labels=[*base, "verdict"])
        verdict.add_metric([*base.values(), r.get("verdict") or ""], 1.0 if r.get("verdict") == "pass" else 0.0)
        yield verdict


def openmetrics_text(results: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RunCollector(results))
    return generate_latest(registry)


def write_openmetrics(results: dict[str, Any], path: Path) -> Path:
    path.write_bytes(openmetrics_text(results))
    return path
