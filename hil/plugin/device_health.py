"""Unattended runs: a per-test timeout for every test that uses a hil fixture, and a device that dies or stops
answering fails only the test in progress, then is restarted before the next test that uses `dut`.

Registered by `hil.plugin` (its `pytest_plugins`). What it does, per test:

* collection: every test whose fixtures include a hil fixture (`dut`, `power_analyzer`, `remote_model`,
  `hil_*`) and that has no `timeout` marker of its own gets `pytest.mark.timeout(--hil-test-timeout)` (ini
  `hil_test_timeout`, default 300 s; 0: none), unless the user gave pytest-timeout's `--timeout` (or
  PYTEST_TIMEOUT), which then applies as usual;
* after each phase of a test that uses `dut`: the device counts as lost when the phase raised a link, protocol
  or device-fault error (anywhere in the exception's chain), ran past its timeout (a half-finished exchange
  leaves the link unsynchronised), or when the emulator's process has exited. The report then gets the
  target's log excerpt (section "hil device log", a "hil device lost" section in the failure text, the user
  property "hil_device_lost") and the item `DEVICE_LOST_KEY` in its stash;
* a crash in the device's console (an ESP-IDF panic report, abort, stack overflow, an unexpected reset or a
  boot loop; hil.crash) is a device loss with cause "crash", whether a request was waiting (the client raised
  `DeviceCrashed`) or the device crashed between requests (found in `dut.console` after the phase): the phase
  fails even if the test body passed, its failure text and the section "hil device crash" hold the excerpt and
  the decoded backtrace, the user property "hil_device_crash" its one-line summary;
* before the next test that uses `dut`: the session's Dut is restarted in place (`Dut.restart()`; also when
  its emulator was found dead, or its console showed a crash, between tests). That test's item gets
  `DEVICE_RESTART_KEY` and the user property "hil_device_restarted". When the device does not come back, that
  test and every later one that uses `dut` errors at once with the reason (user property
  "hil_device_restart_failed"), instead of each waiting for its own timeouts.

The "hil device log" section is the target's diagnosis and the end of the device's console. The run recorder
takes the console lines of each device test with `take_console(config)` (`dut.console.take()`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from hil.plugin.options import _get

if TYPE_CHECKING:
    from hil.crash import Crash
    from hil.dut import Dut
    from hil.transport.console import ConsoleLine

# --- what the run recorder reads -----------------------------------------------------------------------------
#: item.stash: set on the test during which the device was lost (the first phase that lost it).
DEVICE_LOST_KEY = pytest.StashKey["DeviceLost"]()
#: item.stash: set on the test before whose setup the device was restarted (or failed to restart).
DEVICE_RESTART_KEY = pytest.StashKey["DeviceRestart"]()
#: user property (report.user_properties) of the test that lost the device: DeviceLost.describe().
LOST_PROPERTY = "hil_device_lost"
#: user property of the test before which the device was restarted: DeviceRestart.describe().
RESTART_PROPERTY = "hil_device_restarted"
#: user property of a test that errored because the device could not be restarted: the reason.
RESTART_FAILED_PROPERTY = "hil_device_restart_failed"
#: report section (report.sections) with the target's log excerpt / diagnosis.
LOG_SECTION = "hil device log"
#: section added to the failure text (report.longrepr) of a test that lost the device.
LOST_SECTION = "hil device lost"
#: report section (and failure-text section) of a test during which the device crashed: Crash.describe(), the
#: console excerpt with receive times and the decoded backtrace.
CRASH_SECTION = "hil device crash"
#: user property of that test: Crash.summary(), e.g. "panic: Guru Meditation Error: ... in f <- g".
CRASH_PROPERTY = "hil_device_crash"
#: cause of a DeviceLost that was a crash in the console.
CRASH_CAUSE = "crash"
# How long a phase's end waits for the excerpt of a crash still being printed.
CRASH_SETTLE_WAIT_S = 1.5
# Console lines in the "hil device log" excerpt.
CONSOLE_TAIL_LINES = 40

#: config.stash: the session's Dut, registered by the `dut` fixture while it is open.
DUT_KEY = pytest.StashKey["Dut"]()
_STATE_KEY = pytest.StashKey["_Health"]()

# Fixtures whose tests get the hil timeout: these and every fixture named hil_*.
HIL_FIXTURES = frozenset({"dut", "power_analyzer", "remote_model"})
DEFAULT_TEST_TIMEOUT_S = 300.0
_TIMEOUT_PREFIX = "Timeout (>"  # pytest-timeout's failure message, "Timeout (>%ss) from pytest-timeout."


@dataclass(frozen=True)
class DeviceLost:
    """The device died or stopped answering during one phase of a test."""

    nodeid: str
    when: str  # "setup", "call" or "teardown"
    cause: str  # "timeout", "link timeout", "link", "protocol", "device fault", "target", "exited", "crash"
    error: str  # the exception that showed it, one line ("" when the process was found dead)
    excerpt: str  # the target's diagnosis (exit status, the end of its log) and the end of the device's console
    pid: int | None  # the emulator's process id at the time (None for a board)
    crash: Crash | None = None  # cause "crash": what the console showed, backtrace decoded

    def headline(self) -> str:
        if self.crash is not None:
            return f"the device crashed ({self.crash.summary()}) during {self.when}"
        what = {
            "timeout": "the test ran past its timeout while using the device (a half-finished exchange leaves the "
                       "link unsynchronised)",
            "exited": "the device's process exited",
        }.get(self.cause, f"the device stopped answering ({self.cause} error)")
        return f"{what} during {self.when}"

    def describe(self) -> str:
        error = f": {self.error}" if self.error and self.crash is None else ""
        crash = f"\n{self.crash.describe()}" if self.crash is not None else ""
        return f"{self.headline()}{error}{crash}\n{self.excerpt}"


@dataclass(frozen=True)
class DeviceRestart:
    """A restart of the session's device before a test."""

    nodeid: str  # the test before which it happened
    ok: bool
    seconds: float
    old_pid: int | None
    new_pid: int | None
    after: str | None  # nodeid of the test that lost the device; None when it was found dead between tests
    error: str = ""  # why the restart failed
    found: str = ""  # after is None: what was found between tests ("" is "its process had exited between tests")

    def describe(self) -> str:
        after = f"after {self.after}" if self.after else (self.found or "its process had exited between tests")
        if not self.ok:
            return f"restart failed ({after}): {self.error}"
        pids = f", pid {self.old_pid} -> {self.new_pid}" if self.new_pid is not None else ""
        return f"restarted in {self.seconds:.2f} s ({after}{pids})"


@dataclass
class _Health:
    pending: DeviceLost | None = None  # lost, not yet restarted
    found_dead: str | None = None  # diagnosis of a process found dead (or crashed) between tests
    found_what: str = ""  # "" (its process had exited) or what else was found between tests (a crash)
    unrecoverable: str | None = None  # why a restart failed; later device tests error at once


def take_console(config: pytest.Config) -> list[ConsoleLine]:
    """The console lines of the session's device received since the last call (`dut.console.take()`; each has
    `.t`, the time.time() it arrived, `.text`, and `.format()` = "<UTC time> <text>"); [] without a device."""
    dut = config.stash.get(DUT_KEY, None)
    return dut.console.take() if dut is not None else []


def register_dut(config: pytest.Config, dut: Dut) -> None:
    """Called by the `dut` fixture once the device is open."""
    config.stash[DUT_KEY] = dut
    config.stash[_STATE_KEY] = _Health()


def unregister_dut(config: pytest.Config, dut: Dut) -> None:
    if config.stash.get(DUT_KEY, None) is dut:
        del config.stash[DUT_KEY]


# ---- the per-test timeout ------------------------------------------------------------------------------------


def hil_test_timeout_s(config: pytest.Config) -> float:
    """--hil-test-timeout / ini hil_test_timeout, in seconds (0: no hil timeout)."""
    raw = _get(config, "hil_test_timeout")
    try:
        value = float(raw) if raw is not None else DEFAULT_TEST_TIMEOUT_S
    except (TypeError, ValueError):
        raise pytest.UsageError(f"--hil-test-timeout: '{raw}' is not a number of seconds") from None
    if value < 0 or value != value:
        raise pytest.UsageError(f"--hil-test-timeout: {raw} must be 0 (no timeout) or a positive number of seconds")
    return value


def _user_timeout(config: pytest.Config) -> bool:
    """Whether the user set pytest-timeout's own timeout for every test (--timeout or PYTEST_TIMEOUT)."""
    return config.getoption("timeout", default=None) is not None or bool(os.environ.get("PYTEST_TIMEOUT"))


def uses_hil_fixture(item: pytest.Item) -> bool:
    return any(name in HIL_FIXTURES or name.startswith("hil_") for name in getattr(item, "fixturenames", ()))


def _uses_dut(item: pytest.Item) -> bool:
    return "dut" in getattr(item, "fixturenames", ())


def pytest_configure(config: pytest.Config) -> None:
    hil_test_timeout_s(config)  # a malformed value is a usage error at start
    if not config.pluginmanager.hasplugin("timeout"):
        warnings.warn(
            pytest.PytestConfigWarning(
                "hil: pytest-timeout is not active (-p no:timeout?), so --hil-test-timeout is not enforced and a "
                "device test that hangs hangs the run; enable pytest-timeout (a dependency of hil)"
            ),
            stacklevel=1,
        )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seconds = hil_test_timeout_s(config)
    if not seconds or _user_timeout(config) or not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None and uses_hil_fixture(item):
            item.add_marker(pytest.mark.timeout(seconds))


def pytest_report_header(config: pytest.Config) -> str | None:
    seconds = hil_test_timeout_s(config)
    if not config.pluginmanager.hasplugin("timeout"):
        return "hil: no per-test timeout (pytest-timeout is not active)"
    if _user_timeout(config):
        return "hil: per-test timeout from --timeout / PYTEST_TIMEOUT (pytest-timeout)"
    if not seconds:
        return "hil: no per-test timeout for device tests (--hil-test-timeout 0)"
    return f"hil: per-test timeout {seconds:g} s for tests that use hil fixtures (--hil-test-timeout)"


# ---- device loss and restart ---------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 20:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _cause(exc: BaseException) -> str | None:
    """Why `exc` means the device is lost, or None when it does not (an assertion on the outputs, a request
    the device refused correctly, a bug in the test)."""
    import serial

    from hil.targets.base import TargetError
    from hil.transport.client import DeviceCrashed, DeviceErrorReply
    from hil.transport.frame import ErrorCode, ProtocolError
    from hil.transport.link import LinkError, LinkTimeout

    if isinstance(exc, pytest.fail.Exception) and str(exc).startswith(_TIMEOUT_PREFIX):
        return "timeout"
    for e in _chain(exc):
        if isinstance(e, DeviceCrashed):
            return CRASH_CAUSE
        if isinstance(e, DeviceErrorReply):
            # An ERROR reply means the device is alive and in sync, unless the model run itself failed there.
            if e.code == ErrorCode.INFER_FAILED or e.code not in set(ErrorCode):
                return "device fault"
            return None
        if isinstance(e, LinkTimeout):
            return "link timeout"
        if isinstance(e, LinkError | serial.SerialException):
            return "link"
        if isinstance(e, ProtocolError):
            return "protocol"
        if isinstance(e, TargetError):
            return "target"
    return None


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not _uses_dut(item):
        return
    dut = item.config.stash.get(DUT_KEY, None)
    state = item.config.stash.get(_STATE_KEY, None)
    if dut is None or state is None or dut.closed:
        return
    cause, error, crash = None, "", None
    if report.failed and call.excinfo is not None:
        cause = _cause(call.excinfo.value)
        error = _one_line(call.excinfo.value)
        if cause == CRASH_CAUSE:
            crash = _crash_in(call.excinfo.value)
    if crash is None:
        # A crash between requests (nobody waited for a reply): it fails this phase all the same.
        crash = dut.console.take_crash(wait_s=CRASH_SETTLE_WAIT_S if dut.console.collecting() else 0.0)
        if crash is not None:
            cause = CRASH_CAUSE
    if cause is None and not dut.is_alive():
        cause = "exited"
    if cause is None:
        return
    lost = DeviceLost(item.nodeid, call.when, cause, error, _excerpt(dut), dut.pid, crash)
    if state.pending is None:
        state.pending = lost
    if DEVICE_LOST_KEY not in item.stash:
        item.stash[DEVICE_LOST_KEY] = lost
        item.user_properties.append((LOST_PROPERTY, lost.describe()))
        report.user_properties.append((LOST_PROPERTY, lost.describe()))
    if crash is not None:
        item.user_properties.append((CRASH_PROPERTY, crash.summary()))
        report.user_properties.append((CRASH_PROPERTY, crash.summary()))
        report.sections.append((CRASH_SECTION, crash.describe()))
        if not report.failed:  # the test body passed, but the device crashed under it
            report.outcome = "failed"
            report.longrepr = f"hil: {lost.headline()}.\n\n{crash.describe()}"
    report.sections.append((LOG_SECTION, lost.excerpt))
    if report.failed:
        _add_to_failure(report, _lost_text(item, lost))


def _crash_in(exc: BaseException) -> Crash | None:
    from hil.transport.client import DeviceCrashed

    for e in _chain(exc):
        if isinstance(e, DeviceCrashed):
            return e.crash
    return None


def _excerpt(dut: Dut) -> str:
    """The target's diagnosis, then the end of the device's console."""
    text = dut.diagnosis()
    console = dut.console.tail_text(CONSOLE_TAIL_LINES)
    if console:
        text += f"\ndevice console (last {CONSOLE_TAIL_LINES} lines, UTC receive times):\n{console}"
    return text


def _lost_text(item: pytest.Item, lost: DeviceLost) -> str:
    lines = [f"hil: {lost.headline()}."]
    if lost.cause == "timeout":
        marker = item.get_closest_marker("timeout")
        limit = f"{marker.args[0]:g} s " if marker is not None and marker.args else ""
        lines.append(f"The test's timeout {limit}comes from --hil-test-timeout (ini hil_test_timeout), --timeout or "
                     f"its timeout marker; raise it if the test needs longer.")
    first = lost.excerpt.splitlines()[0] if lost.excerpt else "no diagnosis"
    lines.append(f"Device: {first}")
    if lost.crash is not None:
        lines.append(f"The console excerpt and the decoded backtrace are in the section '{CRASH_SECTION}'.")
    lines.append(f"The full excerpt is in the section '{LOG_SECTION}'. The device is restarted before the next test "
                 f"that uses `dut`.")
    return "\n".join(lines)


def _add_to_failure(report: pytest.TestReport, text: str) -> None:
    longrepr = report.longrepr
    if hasattr(longrepr, "addsection"):  # ExceptionChainRepr, ReprExceptionInfo: shown as a "--- name ---" section
        longrepr.addsection(LOST_SECTION, text)
    elif isinstance(longrepr, str):
        report.longrepr = f"{longrepr}\n\n{text}"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _uses_dut(item):
        return
    dut = item.config.stash.get(DUT_KEY, None)
    state = item.config.stash.get(_STATE_KEY, None)
    if dut is None or state is None or dut.closed:
        return  # not opened yet: the fixture opens it
    if state.unrecoverable is not None:
        pytest.fail(f"hil: the {dut.name} device is lost: {state.unrecoverable}", pytrace=False)
    if state.pending is None and not dut.is_alive():
        state.found_dead = dut.diagnosis()
    if state.pending is None and state.found_dead is None:
        crash = dut.console.take_crash()
        if crash is not None:  # crashed after the last test ended (or outside any test)
            state.found_dead = f"{crash.describe()}\n{_excerpt(dut)}"
            state.found_what = f"its console showed a crash between tests: {crash.summary()}"
            item.user_properties.append((CRASH_PROPERTY, crash.summary()))
    if state.pending is None and state.found_dead is None:
        return
    _restart(item, dut, state)


def _restart(item: pytest.Item, dut: Dut, state: _Health) -> None:
    after = state.pending.nodeid if state.pending is not None else None
    old_pid = state.pending.pid if state.pending is not None else dut.pid
    started = time.monotonic()
    try:
        dut.restart()
    except Exception as exc:
        seconds = time.monotonic() - started
        found = state.found_what or "its process had exited between tests"
        cause = f"after {after}" if after else f"{found} ({state.found_dead})"
        reason = (f"restarting it ({cause}) failed after {seconds:.1f} s: {_one_line(exc, 2000)}. Every later test "
                  f"that uses `dut` in this session errors with this message; fix the device (see its log) and run "
                  f"again")
        state.unrecoverable = reason
        record = DeviceRestart(item.nodeid, False, seconds, old_pid, None, after, _one_line(exc, 2000),
                               state.found_what)
        item.stash[DEVICE_RESTART_KEY] = record
        item.user_properties.append((RESTART_FAILED_PROPERTY, reason))
        pytest.fail(f"hil: the {dut.name} device is lost: {reason}", pytrace=False)
    record = DeviceRestart(item.nodeid, True, time.monotonic() - started, old_pid, dut.pid, after,
                           found=state.found_what)
    state.pending = None
    state.found_dead = None
    state.found_what = ""
    item.stash[DEVICE_RESTART_KEY] = record
    item.user_properties.append((RESTART_PROPERTY, record.describe()))
