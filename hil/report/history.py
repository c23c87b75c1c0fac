"""Each metric over the last runs (`hil history`, and the history plots of the page)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hil.report.journal import JournalError
from hil.report.rundir import run_dirs
from hil.report.summary import load_results


def collect_history(base: Path, *, last: int = 20, target: str | None = None, model: str | None = None,
                    metric: str | None = None, until: Path | None = None) -> dict[str, Any]:
    """{"runs": [{"run_id", "started", "verdict", "path"}] oldest first, "metrics": {key: {"unit", "values"}}}
    over the last `last` runs under `base` (of one target and model when given; up to and including `until`)."""
    chosen: list[dict[str, Any]] = []
    for path in run_dirs(base):
        try:
            results = load_results(path)
        except JournalError:
            continue
        if target and (results.get("target") or {}).get("name") != target:
            continue
        if model and (results.get("model") or {}).get("name") != model:
            continue
        chosen.append(results | {"_path": path})
        if until is not None and path.resolve() == Path(until).resolve():
            break
    chosen = chosen[-last:] if last > 0 else chosen
    metrics: dict[str, dict[str, Any]] = {}
    for i, results in enumerate(chosen):
        for m in results.get("metrics", []):
            if metric and m["key"] != metric and m["name"] != metric:
                continue
            entry = metrics.setdefault(m["key"], {"unit": m.get("unit", ""), "provenance": m.get("provenance"),
                                                  "values": [None] * len(chosen)})
            entry["values"][i] = m.get("value")
    runs = [{"run_id": r.get("run_id"), "started": r.get("started"), "verdict": r.get("verdict"),
             "path": str(r["_path"])} for r in chosen]
    return {"runs": runs, "metrics": metrics}
