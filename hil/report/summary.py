"""results.json: the summary of a run, computed from its journal alone (so `hil report` can rebuild it for a run
that was killed).

Verdict:
* "pass": the run ended, every test passed or was skipped, and every measurement with limits is within them;
* "fail": some test failed or errored, or a measurement is out of its limits;
* "incomplete": the journal has no run_end (the process was killed, or is still running): `incomplete` names
  the test that had started and not ended;
* "empty": the run ended without running a single test.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hil.report.journal import JournalContents, read_journal

RUN_SCHEMA = "hil-run/1"
FAILING_OUTCOMES = ("failed", "error")


@dataclass
class TestRecord:
    id: str
    outcome: str = "running"  # passed | failed | error | skipped | xfailed | xpassed | running (never ended)
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    message: str = ""
    worker: str | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "started": self.started, "ended": self.ended,
                "duration_s": self.duration_s, "message": self.message, "worker": self.worker,
                "logs": self.logs}


def metric_key(test: str | None, name: str) -> str:
    """A metric's key across runs: `<test function>::<name>` for a pytest test (the function, not the path, which
    depends on the rootdir; the same key whichever tests ran, so -k subsets and killed runs compare cleanly), and
    the bare name for a `hil` command's run (one test, "hil check")."""
    if not test or test.startswith("hil "):
        return name
    return f"{test.split('::')[-1]}::{name}"


def summarize(journal: JournalContents) -> dict[str, Any]:
    start = journal.first("run_start") or {}
    end = journal.last("run_end")
    tests: dict[str, TestRecord] = {}
    for r in journal.records:
        kind, test = r.get("kind"), r.get("test")
        if kind == "test_start":
            tests[test] = TestRecord(test, started=r["t"], worker=r.get("worker"))
        elif kind == "test_end":
            rec = tests.setdefault(test, TestRecord(test, worker=r.get("worker")))
            rec.outcome, rec.ended = r.get("outcome", "failed"), r["t"]
            rec.duration_s, rec.message = r.get("duration_s"), r.get("message", "")
        elif kind == "log" and test in tests:
            tests[test].logs.append({"source": r.get("source"), "text": r.get("text", "")})

    metrics = [{"key": metric_key(r.get("test"), r["measurement"]["name"]), "test": r.get("test"), **r["measurement"]}
               for r in journal.of_kind("measurement")]

    running = [t.id for t in tests.values() if t.outcome == "running"]
    counts = Counter(t.outcome for t in tests.values())
    out_of_limits = [m["key"] for m in metrics if m.get("passed") is False]
    if end is None:
        verdict = "incomplete"
    elif any(counts[o] for o in FAILING_OUTCOMES) or out_of_limits or end.get("exit_status") not in (0, None):
        verdict = "fail"
    elif not tests and not metrics:
        verdict = "empty"
    else:
        verdict = "pass"
    devices = list(journal.of_kind("device"))
    data: dict[str, list[dict[str, Any]]] = {}
    for r in journal.of_kind("data"):
        data.setdefault(r["name"], []).append({"test": r.get("test"), "value": r.get("value"),
                                               "meta": r.get("meta", {})})
    env = start.get("environment", {})
    return {
        "schema": RUN_SCHEMA,
        "run_id": start.get("run_id"),
        "command": start.get("command"),
        "started": start.get("t"),
        "ended": end.get("t") if end else None,
        "complete": end is not None,
        "incomplete": None if end is not None else {
            "reason": "the journal has no run_end record: the run was killed or is still running",
            "running_tests": running,
            "last_record": journal.records[-1].get("t"),
            "torn_lines": journal.torn_lines,
            # hil check / hil accuracy journal their images in batches: how far a killed command got
            "completed_images": sum(len(d["value"] or []) for d in data.get("images", [])),
        },
        "verdict": verdict,
        "exit_status": end.get("exit_status") if end else None,
        "git": env.get("git", {}),
        "hil_git": env.get("hil_git"),
        "target": {"name": start.get("target"), "provenance": start.get("target_provenance")},
        "model": start.get("model", {}),
        "firmware": devices[-1] if devices else None,
        "devices": devices,
        "instruments": [{k: v for k, v in r.items() if k not in ("kind",)} for r in journal.of_kind("instrument")],
        "tools": {"packages": env.get("packages", {}), "tools": env.get("tools", {})},
        "host": env.get("host", {}),
        "options": start.get("options", {}),
        "counts": dict(counts),
        "tests": [t.to_json() for t in tests.values()],
        "metrics": metrics,
        "out_of_limits": out_of_limits,
        "artifacts": [{"path": r.get("path"), "what": r.get("what")} for r in journal.of_kind("artifact")],
        "data": data,
    }


def load_results(run_dir: Path) -> dict[str, Any]:
    """A run's summary, from its journal (always current), so a run without results.json reads the same."""
    return summarize(read_journal(run_dir))
