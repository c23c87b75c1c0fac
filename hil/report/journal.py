"""The run journal: one JSON object a line, appended, flushed and fsynced as each record is made.

It is the run's source of truth. Every other file of a run directory (results.json, junit.xml, metrics.txt,
index.html) is rebuilt from it by `hil report`, so a run killed half way (SIGKILL, power cut, OOM) keeps every
record it had finished: at most the line being written is lost, and the reader skips a torn last line.

Several processes may append to one journal (pytest-xdist workers): each record is one `write()` of one line
on a file opened with O_APPEND, under an exclusive flock, so lines never interleave.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.errors import UsageError

JOURNAL_NAME = "journal.jsonl"
JOURNAL_SCHEMA = "hil-journal/1"

# The record kinds a journal holds, in the order a run makes them.
KINDS = (
    "run_start",   # run id, command, target and its provenance, model, environment, git, tools, options
    "device",      # what the device said it runs (HELLO): build id, firmware, model sha256, image sha256s
    "instrument",  # an instrument's identity (*IDN?), driver, resource, simulated or not
    "test_start",  # a test began
    "measurement",  # a named figure with unit, limits and provenance (hil.measure.measurement.Measurement)
    "data",        # plot data a test left for the page (power trace, confusion matrix, ...)
    "log",         # an excerpt of the device's or the target's own output
    "artifact",    # a file in the run directory and what it is
    "test_end",    # a test's outcome, duration and failure message
    "run_end",     # the verdict and exit status
)


class JournalError(UsageError):
    """The journal is missing, empty, or not a hil journal."""


def utc_now() -> str:
    """UTC time with milliseconds, ISO 8601 with a Z: the time stamp of every record."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def _jsonable(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that could not be computed is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays
        return _jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return value


class Journal:
    """Appends records to <run dir>/journal.jsonl. Opened per record, so a forked or spawned worker (xdist) and
    the controller can share it with no handle passed between them."""

    def __init__(self, path: Path | str, *, worker: str | None = None) -> None:
        self.path = Path(path)
        self.worker = worker

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        if kind not in KINDS:
            raise ValueError(f"unknown journal record kind {kind!r}; one of {', '.join(KINDS)}")
        record: dict[str, Any] = {"t": utc_now(), "kind": kind}
        if self.worker:
            record["worker"] = self.worker
        record.update(_jsonable(fields))
        line = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size == 0:
                _fsync_dir(self.path.parent)  # a new journal: its directory entry must survive a power cut too
            elif os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer was killed mid-line: end that torn line, never glue onto it
            view = memoryview(line)
            while view:  # a regular file takes the whole line at once; loop for the letter of the API
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return record


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class JournalContents:
    records: list[dict[str, Any]]
    torn_lines: int  # lines that were not whole JSON objects (the one being written when the run was killed)

    def of_kind(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r.get("kind") == kind)

    def first(self, kind: str) -> dict[str, Any] | None:
        return next(self.of_kind(kind), None)

    def last(self, kind: str) -> dict[str, Any] | None:
        found = None
        for r in self.of_kind(kind):
            found = r
        return found


def read_journal(path: Path | str) -> JournalContents:
    """All whole records of a journal (a run directory or the file itself), skipping a torn line."""
    path = Path(path)
    if path.is_dir():
        path = path / JOURNAL_NAME
    if not path.is_file():
        raise JournalError(f"no journal at {path}: not a run directory (hil runs lists them)")
    records: list[dict[str, Any]] = []
    torn = 0
    with path.open("rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                torn += 1
                continue
            if isinstance(record, dict) and "kind" in record:
                records.append(record)
            else:
                torn += 1
    if not records:
        raise JournalError(f"{path} holds no records")
    if records[0].get("kind") != "run_start":
        raise JournalError(f"{path} does not begin with a run_start record: not a hil run journal")
    return JournalContents(records, torn)
