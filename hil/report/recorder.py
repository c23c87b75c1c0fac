"""RunRecorder: what the plugin and the `hil` commands call to keep a run's record.

    recorder = RunRecorder.create(reports, command="hil check --target qemu", target="qemu", model=model)
    recorder.device(dut.info, firmware=path)          # what the device says it runs
    recorder.test_start("hil check"); recorder.measurement(m, test="hil check"); recorder.test_end(...)
    recorder.finish(exit_status)                      # run_end, report files, reports/latest

Each call is one journal record, on disk before the call returns (hil.report.journal).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hil.dut import PROVENANCE
from hil.measure.measurement import Measurement
from hil.model.artifacts import DeviceModel
from hil.report.build import ReportFiles, build_report
from hil.report.environment import environment
from hil.report.journal import JOURNAL_NAME, Journal
from hil.report.rundir import make_run_dir, mark_latest
from hil.transport.frame import DeviceInfo

LOG_EXCERPT_CHARS = 4000


def file_sha256(path: Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_record(model: DeviceModel | None) -> dict[str, Any]:
    if model is None:
        return {}
    return {"name": model.name, "sha256": model.sha256, "path": str(model.tflite_path.parent),
            "arena_bytes": model.summary.get("arena_bytes"), "weights_bytes": model.summary.get("weights_bytes")}


@dataclass
class RunRecorder:
    run_dir: Path
    journal: Journal

    @classmethod
    def create(cls, reports: Path, *, command: str, target: str, model: DeviceModel | None,
               options: dict[str, Any] | None = None, code_dir: Path | None = None,
               run_dir: Path | None = None, session: str | None = None) -> RunRecorder:
        """A new run directory under <reports>/runs/ (or exactly `run_dir`) and its run_start record."""
        name = model.name if model is not None else "no-model"
        if run_dir is None:
            run_dir = make_run_dir(Path(reports), target, name)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            if (run_dir / JOURNAL_NAME).exists() and (run_dir / JOURNAL_NAME).stat().st_size:
                raise FileExistsError(f"{run_dir} already holds a run; a run directory is never written over")
        recorder = cls(run_dir, Journal(run_dir / JOURNAL_NAME))
        recorder.journal.append(
            "run_start", run_id=run_dir.name, command=command, target=target,
            target_provenance=PROVENANCE.get(target, target), model=model_record(model), options=options or {},
            environment=environment(code_dir or Path.cwd()), session=session,
        )
        return recorder

    @classmethod
    def attach(cls, run_dir: Path, *, worker: str | None = None) -> RunRecorder:
        """Appends to a run another process created (a pytest-xdist worker)."""
        return cls(Path(run_dir), Journal(Path(run_dir) / JOURNAL_NAME, worker=worker))

    @property
    def logs_dir(self) -> Path:
        path = self.run_dir / "logs"
        path.mkdir(exist_ok=True)
        return path

    # --- records ---
    def device(self, info: DeviceInfo, *, target: str, firmware: Path | None = None,
               flash_image: Path | None = None) -> None:
        self.journal.append(
            "device", target=target, build_id=info.build_id, firmware_version=info.firmware_version,
            protocol_version=info.protocol_version, port=info.port, model_name=info.model_name,
            model_sha256=info.model_sha256, arena_bytes=info.arena_bytes, clock_hz=info.clock_hz,
            cycles_deterministic=info.cycles_deterministic, kernels=info.kernels,
            firmware_path=str(firmware) if firmware else None,
            firmware_sha256=file_sha256(firmware) if firmware and Path(firmware).is_file() else None,
            flash_image_sha256=file_sha256(flash_image) if flash_image else None,
        )

    def instrument(self, *, idn: str, driver: str, resource: str, simulated: bool, detail: str = "") -> None:
        self.journal.append("instrument", idn=idn, driver=driver, resource=resource, simulated=simulated,
                            detail=detail)

    def test_start(self, test: str) -> None:
        self.journal.append("test_start", test=test)

    def test_end(self, test: str, outcome: str, duration_s: float | None = None, message: str = "") -> None:
        self.journal.append("test_end", test=test, outcome=outcome, duration_s=duration_s, message=message)

    def measurement(self, measurement: Measurement, *, test: str | None = None) -> None:
        self.journal.append("measurement", test=test, measurement=measurement.to_json())

    def data(self, name: str, value: Any, *, test: str | None = None, **meta: Any) -> None:
        self.journal.append("data", test=test, name=name, value=value, meta=meta)

    def log(self, source: str, text: str, *, test: str | None = None) -> None:
        if len(text) > LOG_EXCERPT_CHARS:
            text = f"[... {len(text) - LOG_EXCERPT_CHARS} earlier characters in the log file]\n" + \
                text[-LOG_EXCERPT_CHARS:]
        self.journal.append("log", test=test, source=source, text=text)

    def artifact(self, path: Path, what: str) -> None:
        path = Path(path)
        try:
            rel = path.resolve().relative_to(self.run_dir.resolve()).as_posix()
        except ValueError:
            rel = str(path)
        self.journal.append("artifact", path=rel, what=what)

    def finish(self, exit_status: int) -> ReportFiles:
        """The run_end record, then results.json, junit.xml, metrics.txt and index.html; reports/latest."""
        self.journal.append("run_end", exit_status=exit_status)
        report = build_report(self.run_dir)
        mark_latest(self.run_dir)
        return report
