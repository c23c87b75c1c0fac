"""The run record of a pytest session (hil.report): every session that runs HIL tests (tests that use a hil
fixture) leaves reports/runs/<UTC time>-<target>-<model>/ with journal.jsonl, results.json, junit.xml,
metrics.txt, index.html and logs/, and reports/latest points at it. Unit tests that use no hil fixture are not
part of the run.

The run directory is named when the session is configured and made when the first HIL test starts, so a
session without HIL tests leaves nothing. Under pytest-xdist the controller names it and hands the name to the
workers (pytest_configure_node); each worker appends to the one journal (records are flock'ed lines); the
controller writes run_end and the report files when every worker is done.

Options: --hil-run-dir DIR (exactly this directory), --hil-against REF (compare with a reference run at the end:
a run directory, `latest`, `reference` or a run id; a regression fails the session), --hil-tolerances FILE.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hil.measure.measurement import Measurement
from hil.model.artifacts import resolve_model
from hil.plugin.device_health import CRASH_PROPERTY, CRASH_SECTION, LOST_PROPERTY, take_console
from hil.plugin.options import _get, report_dir
from hil.report.build import COMPARISON_NAME, write_json
from hil.report.compare import ToleranceError, ToleranceTable, compare_results, comparison_lines, summary_line
from hil.report.journal import JOURNAL_NAME, read_journal
from hil.report.recorder import RunRecorder
from hil.report.rundir import RunDirError, base_of, make_run_dir, new_run_path, resolve_run
from hil.report.summary import load_results

# A test is part of the run when it uses one of these (directly or through its fixtures).
HIL_FIXTURES = frozenset({"dut", "hil_results", "hil_run_dir", "power_analyzer", "remote_model", "hil_reference",
                          "hil_model",
                          "hil_dataset", "hil_images", "hil_options", "hil_bench", "hil_progress"})
HEARTBEAT_S = 10.0  # plain progress lines at least this often when the output is not a terminal
MESSAGE_CHARS = 6000


@dataclass
class RunState:
    path: Path
    command: str
    session: str  # a token in run_start: a worker attaches only to its own session's journal
    explicit: bool = False  # --hil-run-dir: exactly this directory, never another name
    worker: str | None = None
    recorder: RunRecorder | None = None
    progress: str = ""  # what the running HIL test last said about its progress (hil_results.progress)
    running: dict[str, float] = field(default_factory=dict)  # node id -> start (controller side, for the heartbeat)
    done: int = 0
    total: int = 0
    against: Path | None = None  # the reference run, resolved when the session starts
    tolerances: Path | None = None
    comparison: dict | None = None
    reports: list[pytest.TestReport] = field(default_factory=list)


_STATE = pytest.StashKey[RunState]()
_IS_HIL = pytest.StashKey[bool]()


@pytest.hookimpl(specname="pytest_addoption")
def pytest_addoption_runs(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop")
    group.addoption("--hil-run-dir", dest="hil_run_dir", default=None, metavar="DIR",
                    help="the run directory to make (default: <report dir>/runs/<UTC time>-<target>-<model>)")
    group.addoption("--hil-against", dest="hil_against", default=None, metavar="REF",
                    help="compare the run with a reference run at the end (run directory, 'latest', 'reference' "
                         "or a run id); a regression fails the session")
    group.addoption("--hil-tolerances", dest="hil_tolerances", default=None, metavar="FILE",
                    help="tolerance file for --hil-against (default: the package's hil/report/tolerances.yaml)")


def _model_name(config: pytest.Config) -> str:
    raw = _get(config, "hil_model")
    try:
        return resolve_model(Path(raw) if raw else None).name
    except Exception:  # the hil_model fixture reports a bad model properly; here it only names the directory
        return Path(raw).stem if raw else "model"


@pytest.hookimpl(specname="pytest_configure", trylast=True)
def pytest_configure_runs(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:  # an xdist worker: the controller named the run
        config.stash[_STATE] = RunState(Path(workerinput["hil_run_dir"]), workerinput["hil_run_command"],
                                        workerinput["hil_run_session"], explicit=True,
                                        worker=workerinput.get("workerid"))
        return
    raw = config.getoption("hil_run_dir")
    path = Path(raw) if raw else new_run_path(report_dir(config), _get(config, "hil_target"), _model_name(config))
    if raw and (path / JOURNAL_NAME).exists():
        raise pytest.UsageError(f"--hil-run-dir {path} already holds a run; a run directory is never written over")
    tolerances = config.getoption("hil_tolerances")
    if tolerances:
        try:
            ToleranceTable.load(Path(tolerances))
        except ToleranceError as exc:
            raise pytest.UsageError(f"--hil-tolerances: {exc}") from None
    against = None
    if config.getoption("hil_against"):
        try:  # now, before this run moves `latest`: --hil-against latest means the run before this one
            against = resolve_run(config.getoption("hil_against"), report_dir(config))
        except RunDirError as exc:
            raise pytest.UsageError(f"--hil-against: {exc}") from None
    command = " ".join(["pytest", *config.invocation_params.args])
    config.stash[_STATE] = RunState(path.resolve(), command, secrets.token_hex(8), explicit=bool(raw),
                                    against=against, tolerances=Path(tolerances) if tolerances else None)
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(config.stash[_STATE]), "hil-runs-xdist")


class _XdistHooks:
    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_configure_node(self, node) -> None:  # noqa: ANN001 (xdist's WorkerController)
        node.workerinput["hil_run_dir"] = str(self.state.path)
        node.workerinput["hil_run_command"] = self.state.command
        node.workerinput["hil_run_session"] = self.state.session


def run_state(config: pytest.Config) -> RunState | None:
    return config.stash.get(_STATE, None)


def recorder(config: pytest.Config) -> RunRecorder:
    """The session's run, made on first use (under xdist by whichever worker gets there first; the others attach).
    A directory that already holds another session's run is never appended to: without --hil-run-dir the run
    takes the next free name, with it (or in a worker) the session stops with an error."""
    state = config.stash[_STATE]
    if state.recorder is not None:
        return state.recorder
    state.path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = state.path.parent / f".{state.path.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        journal = state.path / JOURNAL_NAME
        if journal.exists() and journal.stat().st_size:
            owner = read_journal(journal).records[0].get("session")
            if owner == state.session:
                state.recorder = RunRecorder.attach(state.path, worker=state.worker)
            elif state.explicit:
                raise RunDirError(f"{state.path} already holds another run (session {owner}); a run directory is "
                                  "never written over: name a new --hil-run-dir")
            else:
                state.path = make_run_dir(base_of(state.path), _get(config, "hil_target"), _model_name(config))
        if state.recorder is None:
            state.recorder = _create(config, state)
    with contextlib.suppress(FileNotFoundError):
        lock_path.unlink()
    return state.recorder


def _create(config: pytest.Config, state: RunState) -> RunRecorder:
    model = None
    try:
        raw = _get(config, "hil_model")
        model = resolve_model(Path(raw) if raw else None)
    except Exception:  # recorded without a model; the hil_model fixture fails the tests with the reason
        pass
    options = {flag: _get(config, ini) for flag, ini in (
        ("--hil-target", "hil_target"), ("--hil-port", "hil_port"), ("--hil-baud", "hil_baud"),
        ("--hil-fw", "hil_fw"), ("--hil-bench", "hil_bench"), ("--hil-images", "hil_images"),
        ("--hil-timeout", "hil_timeout"), ("--hil-visa", "hil_visa"))}
    rec = RunRecorder.create(base_of(state.path), command=state.command, target=_get(config, "hil_target"),
                             model=model, options=options, code_dir=Path(config.rootpath), run_dir=state.path,
                             session=state.session)
    rec.journal.worker = state.worker
    return rec


def run_logs_dir(config: pytest.Config) -> Path:
    return recorder(config).logs_dir


@pytest.fixture(scope="session")
def hil_run_dir(pytestconfig: pytest.Config) -> Path:
    """The session's run directory (reports/runs/<UTC time>-<target>-<model>/); logs/ holds the device logs."""
    return recorder(pytestconfig).run_dir


@contextlib.contextmanager
def _device_log(item: pytest.Item) -> Iterator[None]:
    """The test's own log file in the run's logs/: the protocol traffic and the device's console text (`hil`
    loggers) from its setup to its teardown."""
    if "dut" not in getattr(item, "fixturenames", ()):
        yield
        return
    path = run_logs_dir(item.config) / (re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".log")
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("hil")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    item.user_properties.append(("hil_log", str(path)))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        handler.close()


def is_hil_item(item: pytest.Item) -> bool:
    return item.stash.get(_IS_HIL, False)


@pytest.hookimpl(specname="pytest_collection_modifyitems", trylast=True)
def pytest_collection_modifyitems_runs(config: pytest.Config, items: list[pytest.Item]) -> None:
    hil_items = 0
    for item in items:
        item.stash[_IS_HIL] = bool(HIL_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        hil_items += item.stash[_IS_HIL]
    state = config.stash.get(_STATE, None)
    if state is not None:
        state.total = hil_items


@pytest.hookimpl(specname="pytest_runtest_protocol", hookwrapper=True)
def pytest_runtest_protocol_runs(item: pytest.Item) -> Iterator[None]:
    state = run_state(item.config)
    if state is None or not is_hil_item(item):
        yield
        return
    rec = recorder(item.config)
    rec.test_start(item.nodeid)
    state.progress, state.reports = "", []
    try:
        with _device_log(item):
            yield
    finally:
        outcome, duration, message = _outcome(state.reports)
        _journal_device_logs(rec, item, outcome, state.reports)
        rec.test_end(item.nodeid, outcome, duration, message)


@pytest.hookimpl(specname="pytest_runtest_makereport", hookwrapper=True)
def pytest_runtest_makereport_runs(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    result = yield
    state = run_state(item.config)
    if state is not None and is_hil_item(item):
        state.reports.append(result.get_result())


def _outcome(reports: list[pytest.TestReport]) -> tuple[str, float, str]:
    """passed | failed | error | skipped | xfailed | xpassed, as pytest reports it, except that a test during which
    the device was lost without crashing (killed, exited, stopped answering, the link broke: device_health's
    LOST_PROPERTY without CRASH_PROPERTY) is an error, not a failure: it never got to its verdict on the device,
    as when its setup fails. A crash (a panic report on the console) is the device failing: a failure."""
    duration = sum(r.duration for r in reports)
    # Passed only with a passing call: a test stopped by Ctrl-C or a crash of the session has no call report.
    outcome, message = "error", "interrupted: the test never finished (Ctrl-C, or the session stopped)"
    for r in reports:
        if r.when == "call" and r.passed:
            outcome, message = "passed", ""
    for r in reports:
        if r.failed:
            names = {name for name, _value in r.user_properties}
            lost = LOST_PROPERTY in names and CRASH_PROPERTY not in names
            outcome = "failed" if r.when == "call" and not lost else "error"
            message = r.longreprtext[-MESSAGE_CHARS:]
            break
        if r.skipped:
            xfail = hasattr(r, "wasxfail")
            outcome = "xfailed" if xfail else "skipped"
            message = r.wasxfail if xfail else (r.longrepr[2] if isinstance(r.longrepr, tuple) else str(r.longrepr))
            break
        if r.when == "call" and hasattr(r, "wasxfail"):
            outcome = "xpassed"
    return outcome, duration, message


def _journal_device_logs(rec: RunRecorder, item: pytest.Item, outcome: str,
                         reports: list[pytest.TestReport]) -> None:
    """What the device said and what became of it: every console line it printed outside protocol frames (with
    its arrival time), a crash with its decoded backtrace, a device restart; for a failed test also the end of its
    protocol log and the device log excerpt (hil.plugin.device_health's sections)."""
    lines = take_console(item.config)
    if lines:
        rec.log("console", "\n".join(line.format() for line in lines), test=item.nodeid)
    for report in reports:
        for title, text in report.sections:
            if title == CRASH_SECTION and text:
                rec.log("crash", text, test=item.nodeid)
    for name, value in item.user_properties:
        if name in ("hil_device_restarted", "hil_device_restart_failed"):
            rec.log("restart", f"{name.removeprefix('hil_device_').replace('_', ' ')}: {value}", test=item.nodeid)
    if outcome not in ("failed", "error"):
        return
    for name, value in item.user_properties:
        if name == "hil_log":
            try:
                text = Path(value).read_text(errors="replace")
            except OSError:
                continue
            if text:
                rec.log("protocol", text, test=item.nodeid)
    for report in reports:
        for title, text in report.sections:
            if title == "hil device log" and text:
                rec.log("device", text, test=item.nodeid)


# --- measurements and plot data: the hil_results fixture ---


class HilResults:
    """What one test measured. `record()` journals a Measurement at once (a test killed later keeps it) and
    fails the test when it has limits and is outside them (OpenHTF's validators); `data()` leaves plot data for
    the page; `progress()` says how far a long test is (the heartbeat shows it)."""

    def __init__(self, key: str, state: RunState, rec: RunRecorder) -> None:
        self.key = key
        self.measurements: list[Measurement] = []
        self.meta: dict = {}
        self._state = state
        self._rec = rec

    def record(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        self._rec.measurement(measurement, test=self.key)
        if measurement.passed is False:
            raise AssertionError(f"measurement out of limits: {measurement.describe()}")
        return measurement

    def extend(self, measurements: Iterable[Measurement]) -> None:
        for m in measurements:
            self.record(m)

    def data(self, name: str, value: object, **meta: object) -> None:
        self._rec.data(name, value, test=self.key, **meta)

    def progress(self, done: int, total: int, what: str = "") -> None:
        self._state.progress = f"{what} {done}/{total}".strip()


@pytest.fixture
def hil_results(request: pytest.FixtureRequest) -> Iterator[HilResults]:
    """Records this test's Measurements into the run's journal (and so results.json, junit.xml, metrics.txt and
    the page) as each is made."""
    state = request.config.stash[_STATE]
    results = HilResults(request.node.nodeid, state, recorder(request.config))
    yield results
    for m in results.measurements:
        request.node.user_properties.append((f"hil_{m.name}", f"{m.value:.6g} {m.unit} ({m.provenance})"))


@pytest.fixture
def hil_progress(hil_results: HilResults):  # noqa: ANN201 (a bound method)
    """`hil_progress(done, total, what)`: a long test says how far it is; plain progress lines show it."""
    return hil_results.progress


# --- the device and the instruments the run used ---


@pytest.hookimpl(specname="pytest_fixture_setup", hookwrapper=True)
def pytest_fixture_setup_runs(fixturedef: pytest.FixtureDef, request: pytest.FixtureRequest) -> Iterator[None]:
    result = yield
    if fixturedef.argname not in ("dut", "power_analyzer") or run_state(request.config) is None:
        return
    try:
        value = result.get_result()
    except BaseException:
        return
    rec = recorder(request.config)
    if fixturedef.argname == "dut":
        firmware = getattr(value.target, "firmware", None)
        merged = getattr(value.target, "merged_image", None)  # what was flashed, as one image (hil flash)
        rec.device(value.info, target=value.options.target, firmware=firmware if isinstance(firmware, Path) else None,
                   flash_image=merged if isinstance(merged, Path) else None)
    else:
        analyzer = value.analyzer
        rec.instrument(idn=str(analyzer.identity), driver=analyzer.driver_name,
                       resource=analyzer.session.resource_name, simulated=value.is_simulated, detail=value.detail)


# --- progress when the output is not a terminal ---

_STDOUT_FD = pytest.StashKey[int]()
_HEARTBEAT = pytest.StashKey["_Heartbeat"]()


@pytest.hookimpl(specname="pytest_load_initial_conftests", tryfirst=True, hookwrapper=True)
def pytest_load_initial_conftests_runs(early_config: pytest.Config) -> Iterator[None]:
    """Keeps a copy of the real stdout before pytest's output capture takes file descriptor 1 over: the
    heartbeat writes there, so its lines reach a pipe while a test runs (and its output is captured)."""
    with contextlib.suppress(OSError, ValueError):
        early_config.stash[_STDOUT_FD] = os.dup(sys.stdout.fileno())
    yield


class _Heartbeat(threading.Thread):
    def __init__(self, state: RunState, fd: int) -> None:
        super().__init__(name="hil-heartbeat", daemon=True)
        self.state, self.fd, self.stop = state, fd, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(HEARTBEAT_S):
            s = self.state
            running = dict(s.running)
            if not running:
                continue
            now = time.monotonic()
            oldest, since = min(running.items(), key=lambda kv: kv[1])
            also = f" (and {len(running) - 1} more)" if len(running) > 1 else ""
            extra = f", {s.progress}" if s.progress and len(running) == 1 else ""
            total = f"/{s.total}" if s.total else ""
            line = (f"[hil] {s.done}{total} tests done; running {oldest} for {now - since:.0f} s{also}{extra}\n")
            with contextlib.suppress(OSError):
                os.write(self.fd, line.encode())


class _ProgressHooks:
    """Registered on the controller (the process that prints): which tests run now, wherever they run (xdist
    reports every worker's test starts and ends here too)."""

    def __init__(self, state: RunState) -> None:
        self.state = state

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.state.running[nodeid] = time.monotonic()

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        if self.state.running.pop(nodeid, None) is not None:
            self.state.done += 1


@pytest.hookimpl(specname="pytest_collection_finish")
def pytest_collection_finish_runs(session: pytest.Session) -> None:
    state = run_state(session.config)
    if state is not None and state.worker is None:
        state.total = len(session.items)


@pytest.hookimpl(specname="pytest_sessionstart")
def pytest_sessionstart_runs(session: pytest.Session) -> None:
    state = run_state(session.config)
    if state is None or state.worker is not None:
        return
    session.config.pluginmanager.register(_ProgressHooks(state), "hil-runs-progress")
    fd = session.config.stash.get(_STDOUT_FD, None)
    if fd is None or os.isatty(fd):
        return  # a terminal has pytest's own live progress
    beat = _Heartbeat(state, fd)
    session.config.stash[_HEARTBEAT] = beat
    beat.start()


@pytest.hookimpl(specname="pytest_sessionfinish", trylast=True)
def pytest_sessionfinish_runs(session: pytest.Session, exitstatus: int) -> None:
    beat = session.config.stash.get(_HEARTBEAT, None)
    if beat is not None:
        beat.stop.set()
    state = run_state(session.config)
    if state is None or state.worker is not None:
        return
    if not (state.path / JOURNAL_NAME).exists():
        return  # no HIL test ran: no run
    rec = state.recorder or RunRecorder.attach(state.path)
    status = int(exitstatus)
    if state.against is not None:  # compared before run_end, so the verdict in every report file includes it
        comparison = compare_results(load_results(state.path), load_results(state.against),
                                     ToleranceTable.load(state.tolerances))
        write_json(state.path / COMPARISON_NAME, comparison)
        state.comparison = comparison
        if comparison["verdict"] == "fail" and status == 0:
            status = session.exitstatus = pytest.ExitCode.TESTS_FAILED
    rec.finish(status)


@pytest.hookimpl(specname="pytest_terminal_summary")
def pytest_terminal_summary_runs(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001
    state = run_state(config)
    if state is None or state.worker is not None or not (state.path / JOURNAL_NAME).exists():
        return
    if state.comparison is not None:
        terminalreporter.section("hil: comparison with the reference run")
        for row in comparison_lines(state.comparison):
            if row[-1] != "ok":
                terminalreporter.write_line("  ".join(row))
        terminalreporter.write_line(summary_line(state.comparison))
    terminalreporter.write_line(f"hil run: {os.path.relpath(state.path)} (index.html, results.json, junit.xml, "
                                "metrics.txt, journal.jsonl)")
