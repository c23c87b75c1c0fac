"""(Re)builds a run directory's report files from its journal: results.json, junit.xml, metrics.txt and
index.html (`hil report RUN_DIR`, and at the end of every run). A killed run is rebuilt too: its results say
`incomplete` and name the test that was running."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.report.history import collect_history
from hil.report.junit import write_junit
from hil.report.openmetrics import write_openmetrics
from hil.report.page import write_page
from hil.report.rundir import RESULTS_NAME, base_of
from hil.report.summary import load_results

COMPARISON_NAME = "comparison.json"


@dataclass(frozen=True)
class ReportFiles:
    run_dir: Path
    results: dict[str, Any]
    files: tuple[Path, ...]

    @property
    def verdict(self) -> str:
        return self.results["verdict"]


def write_json(path: Path, data: Any) -> Path:
    """Atomically: a reader (or a crash) never sees half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, allow_nan=False)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for everyone who can read the folder
    os.replace(tmp, path)
    return path


def build_report(run_dir: Path, *, history_runs: int = 20) -> ReportFiles:
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    comparison_file = run_dir / COMPARISON_NAME
    comparison = json.loads(comparison_file.read_text()) if comparison_file.is_file() else None
    if comparison is not None:
        # A regression against the reference fails the run in every file, not only in the exit status.
        results["comparison"] = {"reference": comparison["reference"]["run_id"], "verdict": comparison["verdict"],
                                 "regressions": comparison["regressions"], "counts": comparison["counts"]}
        if comparison["verdict"] == "fail" and results["verdict"] == "pass":
            results["verdict"] = "fail"
    files = [
        write_json(run_dir / RESULTS_NAME, results),
        write_junit(results, run_dir / "junit.xml"),
        write_openmetrics(results, run_dir / "metrics.txt"),
    ]
    target, model = (results.get("target") or {}).get("name"), (results.get("model") or {}).get("name")
    history = collect_history(base_of(run_dir), last=history_runs, target=target, model=model, until=run_dir)
    files.append(write_page(run_dir, results, comparison, history if len(history["runs"]) > 1 else None))
    return ReportFiles(run_dir, results, tuple(files))
