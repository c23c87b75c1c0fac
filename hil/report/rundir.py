"""Run directories: reports/runs/<UTC time>-<target>-<model>/, `reports/latest` (the newest) and
`reports/reference` (the run that regressions are judged against), both symbolic links into runs/.

A run directory is never written over: a new run gets a new name, and two runs started in the same second get
`-2`, `-3`, ... suffixes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hil.errors import UsageError
from hil.report.journal import JOURNAL_NAME

RUNS = "runs"
LATEST = "latest"
REFERENCE = "reference"
RESULTS_NAME = "results.json"


class RunDirError(UsageError):
    """A run named on the command line does not exist, or a run directory cannot be made."""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


def run_name(target: str, model: str, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if when is None else when))
    return f"{stamp}-{_slug(target)}-{_slug(model)}"


def new_run_path(base: Path, target: str, model: str, when: float | None = None) -> Path:
    """A fresh path under <base>/runs/ (not created): the next free name for this time, target and model."""
    runs = Path(base) / RUNS
    name = run_name(target, model, when)
    path, n = runs / name, 1
    while path.exists():
        n += 1
        path = runs / f"{name}-{n}"
    return path


def make_run_dir(base: Path, target: str, model: str) -> Path:
    """Creates and returns a new, empty run directory (exclusively: a race between two runs gets two names)."""
    runs = Path(base) / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    for _attempt in range(100):
        path = new_run_path(base, target, model)
        try:
            path.mkdir()
        except FileExistsError:
            continue
        fd = os.open(runs, os.O_RDONLY)  # the new entry of runs/ survives a power cut
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return path
    raise RunDirError(f"could not make a new run directory under {runs}")


def _relink(link: Path, target: Path) -> None:
    """Points `link` at `target` atomically (a relative link, so a copied reports/ folder still works)."""
    rel = os.path.relpath(target, link.parent)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(rel, target_is_directory=True)
    os.replace(tmp, link)


def base_of(run_dir: Path) -> Path:
    """The reports folder that holds runs/<run>."""
    run_dir = Path(run_dir).resolve()
    return run_dir.parent.parent if run_dir.parent.name == RUNS else run_dir.parent


def mark_latest(run_dir: Path) -> None:
    """Points reports/latest at `run_dir` unless it already points at a newer run (names sort by start time: a
    long run that ends after a later, short one does not take `latest` back)."""
    run_dir = Path(run_dir).resolve()
    if run_dir.parent.name != RUNS:
        return
    link = base_of(run_dir) / LATEST
    current = link.resolve() if link.is_symlink() else None
    if current is not None and current.is_dir() and current.parent == run_dir.parent and current.name > run_dir.name:
        return
    _relink(link, run_dir)


def mark_reference(run_dir: Path) -> Path:
    run_dir = Path(run_dir).resolve()
    if not (run_dir / JOURNAL_NAME).is_file():
        raise RunDirError(f"{run_dir} is not a run directory (no {JOURNAL_NAME})")
    link = base_of(run_dir) / REFERENCE
    _relink(link, run_dir)
    return link


def reference_of(base: Path) -> Path | None:
    link = Path(base) / REFERENCE
    return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None


@dataclass(frozen=True)
class RunInfo:
    path: Path
    run_id: str
    started: str | None
    target: str | None
    model: str | None
    verdict: str | None  # None: no results.json yet (a run in progress, or killed before `hil report`)
    metrics: int
    command: str | None


def run_dirs(base: Path) -> list[Path]:
    """Every run directory under <base>/runs, oldest first (names start with their UTC time)."""
    runs = Path(base) / RUNS
    if not runs.is_dir():
        return []
    return sorted(p for p in runs.iterdir() if p.is_dir() and (p / JOURNAL_NAME).is_file())


def run_info(path: Path) -> RunInfo:
    results = path / RESULTS_NAME
    if results.is_file():
        try:
            data = json.loads(results.read_text())
            return RunInfo(path, data.get("run_id", path.name), data.get("started"),
                           (data.get("target") or {}).get("name"), (data.get("model") or {}).get("name"),
                           data.get("verdict"), len(data.get("metrics", [])), data.get("command"))
        except (OSError, ValueError):
            pass
    start = _first_record(path / JOURNAL_NAME)
    return RunInfo(path, start.get("run_id", path.name), start.get("t"), start.get("target"),
                   (start.get("model") or {}).get("name"), None, 0, start.get("command"))


def _first_record(journal: Path) -> dict:
    try:
        with journal.open("rb") as f:
            return json.loads(f.readline() or b"{}")
    except (OSError, ValueError):
        return {}


def resolve_run(ref: str | Path, base: Path) -> Path:
    """A run named as a path, `latest`, `reference`, or a run id (or a unique prefix of one) under <base>/runs."""
    text = str(ref)
    if text in (LATEST, REFERENCE):
        link = Path(base) / text
        if not link.exists():
            hint = ("mark one with: hil runs --mark-reference RUN" if text == REFERENCE
                    else "no run has finished yet")
            raise RunDirError(f"there is no {text} run under {base} ({hint})")
        return link.resolve()
    path = Path(text)
    if path.is_dir():
        if not (path / JOURNAL_NAME).is_file():
            raise RunDirError(f"{path} is not a run directory (no {JOURNAL_NAME})")
        return path.resolve()
    matches = [p for p in run_dirs(base) if p.name == text] or [p for p in run_dirs(base) if p.name.startswith(text)]
    if len(matches) == 1:
        return matches[0].resolve()
    if not matches:
        raise RunDirError(f"no run '{text}' (a run directory, 'latest', 'reference', or a run id under "
                          f"{Path(base) / RUNS}; hil runs lists them)")
    raise RunDirError(f"'{text}' names {len(matches)} runs: {', '.join(p.name for p in matches[:5])}; be more exact")


def prune_runs(base: Path, keep: int) -> list[Path]:
    """Removes all but the newest `keep` runs; never the reference run or the latest one. Returns what went."""
    if keep < 1:
        raise RunDirError("--keep must be at least 1")
    protected = {p.resolve() for p in (Path(base) / REFERENCE, Path(base) / LATEST) if p.exists()}
    dirs = run_dirs(base)
    removed = []
    for path in dirs[:-keep] if len(dirs) > keep else []:
        if path.resolve() in protected:
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed
