"""Named figures with units, provenance and optional limits (OpenHTF's measurements, in a dataclass), and the
JSON results file they are written to.

Provenance says where a number comes from, so that no emulated or modelled figure is ever mistaken for one
measured on hardware:

* "measured": on an ESP32-S3 and/or by a real instrument;
* "emulated": by the emulated device (QEMU instruction counts, host wall-clock): relative, not S3 hardware;
* "modelled": computed from a model (the ESP32-S3 datasheet power model behind the simulated analyzer, a link
  model for offload time).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, get_args

from hil.errors import UsageError

Provenance = Literal["measured", "emulated", "modelled"]
PROVENANCES: tuple[str, ...] = get_args(Provenance)
RESULTS_SCHEMA = "hil-results/1"


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    provenance: Provenance
    detail: str = ""  # what exactly: device, instrument, model, method
    low: float | None = None  # limits: passed is low <= value <= high (either may be None)
    high: float | None = None
    values: tuple[float, ...] = ()  # the per-inference values a median or mean was taken from

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"{self.name}: provenance must be one of {', '.join(PROVENANCES)}, "
                             f"not {self.provenance!r}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    def with_limits(self, low: float | None = None, high: float | None = None) -> Measurement:
        """OpenHTF's in_range(low, high)."""
        return replace(self, low=low, high=high)

    @property
    def has_limits(self) -> bool:
        return self.low is not None or self.high is not None

    @property
    def passed(self) -> bool | None:
        """None without limits; False for NaN or a value outside them."""
        if not self.has_limits:
            return None
        if math.isnan(self.value):
            return False
        return (self.low is None or self.value >= self.low) and (self.high is None or self.value <= self.high)

    def validate(self) -> bool:
        return self.passed is not False

    def describe(self) -> str:
        limits = ""
        if self.has_limits:
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            limits = f" [{low}, {high}]"
            limits += " PASS" if self.passed else " FAIL"
        return f"{self.name} = {self.value:.6g} {self.unit} ({self.provenance}: {self.detail}){limits}"

    def to_json(self) -> dict:
        data = asdict(self)
        data["values"] = list(self.values)
        data["passed"] = self.passed
        # JSON has no NaN: a missing figure is null.
        for key in ("value", "low", "high"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = None
        return data

    @classmethod
    def from_json(cls, data: dict) -> Measurement:
        value = data["value"]
        return cls(
            name=data["name"], value=float("nan") if value is None else value, unit=data["unit"],
            provenance=data["provenance"], detail=data.get("detail", ""), low=data.get("low"),
            high=data.get("high"), values=tuple(data.get("values", ())),
        )


@dataclass
class ResultRecord:
    key: str  # e.g. a pytest node id, or "hil measure"
    measurements: list[Measurement] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"key": self.key, "meta": self.meta, "measurements": [m.to_json() for m in self.measurements]}


class ResultsWriter:
    """Collects records and (re)writes one JSON file atomically after each `add`, so a crash keeps what was
    already measured."""

    def __init__(self, path: Path | str, *, meta: dict | None = None) -> None:
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.records: list[ResultRecord] = []

    def add(self, key: str, measurements: list[Measurement], **meta: object) -> ResultRecord:
        record = ResultRecord(key, list(measurements), dict(meta))
        self.records.append(record)
        self.write()
        return record

    def to_json(self) -> dict:
        return {
            "schema": RESULTS_SCHEMA,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "meta": self.meta,
            "records": [r.to_json() for r in self.records],
        }

    def write(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_json(), f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, self.path)
        return self.path


def read_results(path: Path | str) -> list[ResultRecord]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != RESULTS_SCHEMA:
        raise UsageError(f"{path}: not a {RESULTS_SCHEMA} file")
    return [ResultRecord(r["key"], [Measurement.from_json(m) for m in r["measurements"]], r.get("meta", {}))
            for r in data["records"]]
