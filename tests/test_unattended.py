"""Unattended runs (hil/plugin/device_health.py, Dut.restart, the port lock): a device that dies or hangs fails
only the test in progress and is restarted for the next one; every hil test has a timeout; pytest-xdist workers
each start their own emulator; one board is never opened by two processes.

The sessions under test run in subprocesses (pytester.runpytest_subprocess): they use SIGALRM timeouts and kill
device processes, which must not touch this session."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import serial

from hil import paths
from hil.dut import DutError, DutOptions, PortBusyError, acquire_port_lock, open_dut, port_lock_path
from hil.firmware import build_firmware
from hil.model.artifacts import DeviceModel, resolve_model
from hil.plugin import device_health
from hil.report.summary import load_results
from hil.targets import get_target
from hil.targets.esp32s3 import Esp32s3Target, ManualResetRequired
from hil.transport.client import DeviceErrorReply
from hil.transport.frame import ErrorCode, FrameType
from hil.transport.link import LinkError, LinkTimeout


@pytest.fixture(scope="module")
def model() -> DeviceModel:
    return resolve_model(paths.DEFAULT_MODEL)


@pytest.fixture(scope="module")
def host_fw(model: DeviceModel) -> Path:
    """Built once here, so that no inner session spends its first test's timeout on a build."""
    return build_firmware("host", model.c_dir)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))  # inherited by the inner sessions


def _run(pytester: pytest.Pytester, host_fw: Path, *args: str, timeout: float = 120) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        # option=value: a separate path argument would be taken for a test path while pytest finds its rootdir
        "--hil-target=host", f"--hil-fw={host_fw}", f"--hil-report-dir={pytester.path / 'out'}",
        "-p", "no:cacheprovider", f"--junitxml={pytester.path / 'junit.xml'}", *args, timeout=timeout,
    )  # fmt: skip


def _properties(pytester: pytest.Pytester) -> dict[str, list[tuple[str, str]]]:
    """testcase name -> its user properties, from the JUnit XML the inner session wrote."""
    root = ET.parse(pytester.path / "junit.xml").getroot()
    return {
        case.get("name", ""): [(p.get("name", ""), p.get("value", "")) for p in case.iter("property")]
        for case in root.iter("testcase")
    }


KILLED_DEVICE_TESTS = """
import os
import re
import signal
from pathlib import Path

import numpy as np

from hil.measure.measurement import Measurement

PIDS = Path(__file__).with_name("pids.txt")


def _zeros(dut):
    return [np.zeros(t.shape, t.dtype) for t in dut.info.inputs]


def test_1_passes(dut, hil_results):
    PIDS.write_text(f"{dut.pid}\\n")
    hil_results.record(Measurement("cycles_before_kill", dut.infer(_zeros(dut)).cycles, "cycles", "emulated"))


def test_2_device_dies_mid_test(dut, hil_results):
    hil_results.record(Measurement("cycles_until_kill", dut.infer(_zeros(dut)).cycles, "cycles", "emulated"))
    os.kill(dut.pid, signal.SIGKILL)
    dut.infer(_zeros(dut))


def test_3_bit_exact_after_the_restart(dut, hil_reference):
    with PIDS.open("a") as f:
        f.write(f"{dut.pid}\\n")
    rng = np.random.default_rng(3)
    x = [rng.integers(np.iinfo(t.dtype).min, np.iinfo(t.dtype).max, size=t.shape, endpoint=True).astype(t.dtype)
         for t in dut.info.inputs]
    for got, want in zip(dut.infer(x).outputs, hil_reference.run(x), strict=True):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)


def test_4_device_dies_but_the_test_does_not_notice(dut):
    os.kill(dut.pid, signal.SIGKILL)


def test_5_found_dead_and_restarted(dut, hil_results):
    with PIDS.open("a") as f:
        f.write(f"{dut.pid}\\n")
    hil_results.record(Measurement("cycles_after_restart", dut.infer(_zeros(dut)).cycles, "cycles", "emulated"))


def test_6_device_stops_answering(dut):
    os.kill(dut.pid, signal.SIGSTOP)  # alive, but silent: every request times out (--hil-timeout 0.5)
    dut.infer(_zeros(dut))


def test_7_answers_again_after_the_restart(dut):
    with PIDS.open("a") as f:
        f.write(f"{dut.pid}\\n")
    assert dut.infer(_zeros(dut)).cycles > 0
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_killed_device_fails_only_its_test_and_is_restarted(pytester: pytest.Pytester, host_fw: Path) -> None:
    pytester.makepyfile(test_inner=KILLED_DEVICE_TESTS)
    started = time.monotonic()
    result = _run(pytester, host_fw, "--hil-timeout=0.5")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=5, failed=2)
    out = result.stdout.str()
    # the failure names the test and carries the target's diagnosis and log excerpt
    result.stdout.fnmatch_lines(["*FAILED test_inner.py::test_2_device_dies_mid_test*"])
    failure = out[out.index("test_2_device_dies_mid_test ___"):]
    assert "host program killed by signal 9" in failure
    assert f"# {host_fw}" in failure  # the first line of the firmware's log: the excerpt itself
    assert device_health.LOG_SECTION in failure and device_health.LOST_SECTION in failure
    # a new process runs the third test
    first_pid, third_pid, fifth_pid, seventh_pid = (int(n) for n in (pytester.path / "pids.txt").read_text().split())
    assert len({first_pid, third_pid, fifth_pid, seventh_pid}) == 4
    # what the run recorder reads
    props = _properties(pytester)
    assert props["test_1_passes"] == [] or all(not n.startswith("hil_device") for n, _ in props["test_1_passes"])
    lost = dict(props["test_2_device_dies_mid_test"])[device_health.LOST_PROPERTY]
    assert "the device stopped answering (link error) during call" in lost and "killed by signal 9" in lost
    dead_log = Path(re.search(r"log (\S+\.log):", lost).group(1))  # kept: the restarted program logs elsewhere
    assert dead_log.read_text().startswith(f"# {host_fw}") and "killed by signal 9" in dead_log.read_text()
    restarted = dict(props["test_3_bit_exact_after_the_restart"])[device_health.RESTART_PROPERTY]
    assert f"pid {first_pid} -> {third_pid}" in restarted and "test_2_device_dies_mid_test" in restarted
    # a device killed by a test that passes anyway is restarted before the next one as well
    restarted = dict(props["test_5_found_dead_and_restarted"])[device_health.RESTART_PROPERTY]
    assert f"-> {fifth_pid}" in restarted
    # a device that is alive but silent: the test fails on the link timeout, the excerpt says it still ran
    silent = out[out.index("test_6_device_stops_answering ___"):]
    assert f"host program still running (pid {fifth_pid}); log " in silent
    assert "LinkTimeout" in silent
    restarted = dict(props["test_7_answers_again_after_the_restart"])[device_health.RESTART_PROPERTY]
    assert f"pid {fifth_pid} -> {seventh_pid}" in restarted
    # the run record: the run goes on to its end, and keeps the excerpts and the restarts in its journal
    results = load_results(pytester.path / "out" / "latest")
    assert results["verdict"] == "fail" and results["complete"]
    # a test whose device was lost is an error in the run record (it never reached its verdict on the device)
    assert results["counts"] == {"passed": 5, "error": 2}
    outcomes = {t["id"].split("::")[-1]: t["outcome"] for t in results["tests"]}
    assert outcomes["test_2_device_dies_mid_test"] == outcomes["test_6_device_stops_answering"] == "error"
    # every measurement completed before and after the kill is in the record, the killed test's own included
    recorded = {m["name"]: m for m in results["metrics"]}
    assert {"cycles_before_kill", "cycles_until_kill", "cycles_after_restart"} <= set(recorded)
    assert all(recorded[n]["value"] > 0 for n in ("cycles_before_kill", "cycles_until_kill", "cycles_after_restart"))
    logs = {t["id"].split("::")[-1]: t["logs"] for t in results["tests"]}
    assert any(log["source"] == "device" and "killed by signal 9" in log["text"]
               for log in logs["test_2_device_dies_mid_test"])
    assert any(log["source"] == "restart" and f"pid {first_pid} -> {third_pid}" in log["text"]
               for log in logs["test_3_bit_exact_after_the_restart"])
    print(f"seven tests, three lost devices and restarts: {elapsed:.1f} s")


HANGING_TESTS = """
import time

import numpy as np


def test_1_hangs(dut):
    time.sleep(60)


def test_2_next_device_test_passes(dut, hil_reference):
    x = [np.full(t.shape, 7, t.dtype) for t in dut.info.inputs]
    for got, want in zip(dut.infer(x).outputs, hil_reference.run(x), strict=True):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_hanging_test_times_out_and_the_next_device_test_passes(pytester: pytest.Pytester, host_fw: Path) -> None:
    pytester.makepyfile(test_inner=HANGING_TESTS)
    started = time.monotonic()
    result = _run(pytester, host_fw, "--hil-test-timeout", "3")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*hil: per-test timeout 3 s*", "*Timeout (>3.0s) from pytest-timeout*",
                                 "*FAILED test_inner.py::test_1_hangs*"])
    assert "--hil-test-timeout" in result.stdout.str()
    assert elapsed < 60, f"the hanging test was not stopped by its 3 s timeout ({elapsed:.0f} s)"
    props = _properties(pytester)
    assert "ran past its timeout" in dict(props["test_1_hangs"])[device_health.LOST_PROPERTY]
    assert "test_1_hangs" in dict(props["test_2_next_device_test_passes"])[device_health.RESTART_PROPERTY]


XDIST_TESTS = """
import os
import re
from pathlib import Path

import numpy as np
import pytest

SEEN = Path(__file__).with_name("seen.txt")


@pytest.mark.parametrize("n", range(6))
def test_device(dut, hil_reference, n):
    with SEEN.open("a") as f:
        f.write(f"{os.environ.get('PYTEST_XDIST_WORKER')} {dut.pid}\\n")
    x = [np.full(t.shape, n, t.dtype) for t in dut.info.inputs]
    for got, want in zip(dut.infer(x).outputs, hil_reference.run(x), strict=True):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_xdist_workers_each_start_their_own_emulator(pytester: pytest.Pytester, host_fw: Path) -> None:
    pytester.makepyfile(test_inner=XDIST_TESTS)
    result = _run(pytester, host_fw, "-n", "2")
    result.assert_outcomes(passed=6)
    seen = [line.split() for line in (pytester.path / "seen.txt").read_text().splitlines()]
    pids_of: dict[str, set[str]] = {}
    for worker, pid in seen:
        pids_of.setdefault(worker, set()).add(pid)
    assert set(pids_of) == {"gw0", "gw1"}, seen
    assert all(len(p) == 1 for p in pids_of.values()), f"one emulator per worker for its whole session: {seen}"
    assert pids_of["gw0"] != pids_of["gw1"], seen


# ---- the per-test timeout marker ------------------------------------------------------------------------------

MARKER_TESTS = """
import pytest

def test_with_dut(dut):
    pass

def test_with_hil_options(hil_options):
    pass

@pytest.mark.timeout(42)
def test_with_its_own_marker(dut):
    pass

def test_without_hil_fixtures(tmp_path):
    pass
"""


def _timeouts(pytester: pytest.Pytester, *args: str) -> dict[str, float | None]:
    pytester.makepyfile(test_inner=MARKER_TESTS)
    items, _ = pytester.inline_genitems("-p", "no:cacheprovider", *args)
    out: dict[str, float | None] = {}
    for item in items:
        marker = item.get_closest_marker("timeout")
        out[item.name] = marker.args[0] if marker is not None else None
    return out


def test_hil_tests_get_the_hil_timeout_unless_they_have_their_own(pytester: pytest.Pytester) -> None:
    assert _timeouts(pytester) == {"test_with_dut": 300.0, "test_with_hil_options": 300.0,
                                   "test_with_its_own_marker": 42, "test_without_hil_fixtures": None}
    assert _timeouts(pytester, "--hil-test-timeout", "7.5")["test_with_dut"] == 7.5


def test_hil_timeout_from_the_ini_file_and_zero_disables_it(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nhil_test_timeout = 12\n")
    assert _timeouts(pytester)["test_with_hil_options"] == 12.0
    assert _timeouts(pytester, "--hil-test-timeout", "0")["test_with_dut"] is None


def test_an_explicit_pytest_timeout_wins(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _timeouts(pytester, "--timeout", "9")["test_with_dut"] is None  # pytest-timeout's own 9 s applies
    monkeypatch.setenv("PYTEST_TIMEOUT", "9")
    assert _timeouts(pytester)["test_with_dut"] is None


def test_a_malformed_hil_timeout_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-test-timeout", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-test-timeout: 'soon' is not a number of seconds*"])


# ---- what counts as a lost device -----------------------------------------------------------------------------


@pytest.mark.parametrize(("exc", "cause"), [
    (LinkError("/dev/pts/3: read failed"), "link"),
    (LinkTimeout("/dev/pts/3: no reply"), "link timeout"),
    (DeviceErrorReply(ErrorCode.INFER_FAILED, FrameType.INFER, "arena", "pty"), "device fault"),
    (DeviceErrorReply(ErrorCode.UNSUPPORTED, FrameType.INFER_OFFLOAD, "no offload", "pty"), None),  # alive, in sync
    (serial.SerialException("device reports readiness to read but returned no data"), "link"),
    (AssertionError("outputs differ"), None),
    (pytest.fail.Exception("Timeout (>3.0s) from pytest-timeout."), "timeout"),
])  # fmt: skip
def test_which_failures_mean_the_device_is_lost(exc: BaseException, cause: str | None) -> None:
    assert device_health._cause(exc) == cause


def test_a_device_error_raised_from_a_link_error_counts(pytester: pytest.Pytester) -> None:
    try:
        try:
            raise LinkTimeout("no reply")
        except LinkTimeout as inner:
            raise RuntimeError("the test's own wrapper") from inner
    except RuntimeError as outer:
        assert device_health._cause(outer) == "link timeout"


# ---- the serial port lock -------------------------------------------------------------------------------------


def test_one_port_cannot_be_locked_twice(tmp_path: Path) -> None:
    url = "socket://127.0.0.1:40001"
    with acquire_port_lock(url) as first:
        assert first.held and first.path.parent == tmp_path / "locks"
        with pytest.raises(PortBusyError) as err:
            acquire_port_lock(url + "?logging=debug")  # the same port, spelled with pyserial's options
        message = str(err.value)
        assert url in message and f"pid {os.getpid()}" in message
        assert "give each worker its own board and port" in message and "without -n" in message
        assert err.value.holder_pid == os.getpid()
        acquire_port_lock("socket://127.0.0.1:40002").release()  # another port is free
    with acquire_port_lock(url):  # released: free again
        pass


def test_the_lock_names_another_process_holding_it(tmp_path: Path) -> None:
    url = "socket://127.0.0.1:40003"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom hil.dut import acquire_port_lock\n"
         f"lock = acquire_port_lock({url!r})\nprint('locked', flush=True)\ntime.sleep(30)\n"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 20)
        assert ready and holder.stdout.readline().strip() == "locked"
        with pytest.raises(PortBusyError) as err:
            acquire_port_lock(url)
        assert err.value.holder_pid == holder.pid and f"pid {holder.pid}" in str(err.value)
        assert str(port_lock_path(url)) in str(err.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with acquire_port_lock(url):  # the lock went away with its holder
        pass


def test_a_socket_board_cannot_be_reset_from_the_host() -> None:
    with pytest.raises(ManualResetRequired, match=r"socket://127\.0\.0\.1:1.*Press the board's RESET button"):
        Esp32s3Target(port="socket://127.0.0.1:1").reset()


def test_a_board_on_a_local_port_is_reset_through_rts_without_flashing(monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.targets import esp32s3

    calls: list[str] = []
    monkeypatch.setattr(esp32s3, "check_port", lambda port: calls.append(f"check {port}"))
    monkeypatch.setattr(esp32s3, "reset_board", lambda port: calls.append(f"reset {port}"))
    monkeypatch.setattr(esp32s3, "_run_esptool", lambda *a: pytest.fail("a restart must not flash"))
    target = Esp32s3Target(port="/dev/ttyUSB7", build_dir="unused", boot_wait_s=0)
    assert target.reset() == "/dev/ttyUSB7" and target.url == "/dev/ttyUSB7"
    assert calls == ["check /dev/ttyUSB7", "reset /dev/ttyUSB7"]


class _TcpBridge:
    """Exports a pseudo-terminal on 127.0.0.1 as ser2net does (one client at a time): a board behind socket://."""

    def __init__(self, pty_path: str) -> None:
        self._pty = serial.Serial(pty_path, timeout=0)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._server], [], [], 0.1)
            if not ready:
                continue
            conn, _ = self._server.accept()
            with conn:
                self._pump(conn)

    def _pump(self, conn: socket.socket) -> None:
        fd = self._pty.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([conn, fd], [], [], 0.1)
            try:
                if conn in ready:
                    data = conn.recv(65536)
                    if not data:
                        return
                    self._pty.write(data)
                if fd in ready:
                    conn.sendall(os.read(fd, 65536))
            except OSError:  # the device died (EIO on the pty) or the client went away
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()
        self._pty.close()


@pytest.fixture
def board_on_socket(host_fw: Path, tmp_path: Path) -> Iterator[tuple[str, object]]:
    """The host firmware exported on a TCP port: what the esp32s3 target sees through socket://."""
    target = get_target("host", firmware=host_fw, log_dir=tmp_path)
    target.start()
    bridge = _TcpBridge(target.url)
    try:
        yield bridge.url, target
    finally:
        bridge.close()
        target.stop()


@pytest.mark.timeout(120)
def test_a_board_is_locked_while_open_and_restarts_without_a_reset_line(
    board_on_socket: tuple[str, object], model: DeviceModel
) -> None:
    url, device = board_on_socket
    options = DutOptions(target="esp32s3", port=url, flash=False, timeout_s=0.5)
    with open_dut(model, options) as dut:
        assert dut.port_lock is not None and dut.port_lock.held
        with pytest.raises(PortBusyError, match=f"serial port {url} is in use by pid {os.getpid()}"):
            open_dut(model, options)  # refused before touching the port
        x = [np.zeros(t.shape, t.dtype) for t in dut.info.inputs]
        before = dut.infer(x).outputs
        dut.restart()  # no DTR/RTS over socket://: reconnect and HELLO again
        assert dut.restarts == 1
        assert all(np.array_equal(a, b) for a, b in zip(before, dut.infer(x).outputs, strict=True))
        device.stop()  # the board is gone for good: the restart says that a person must reset it
        with pytest.raises(DutError, match=r"Press the board's RESET button.*Reconnecting without a reset did not"):
            dut.restart()
    assert dut.port_lock is not None and not dut.port_lock.held
    acquire_port_lock(url).release()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_xdist_workers_never_share_a_board(pytester: pytest.Pytester, board_on_socket: tuple[str, object]) -> None:
    url, _device = board_on_socket
    pytester.makepyfile(test_inner="import pytest\n\n@pytest.mark.parametrize('n', range(4))\n"
                                   "def test_board(dut, n):\n    assert dut.info.model_sha256\n")
    result = pytester.runpytest_subprocess(
        "--hil-target=esp32s3", f"--hil-port={url}", "--hil-no-flash", f"--hil-report-dir={pytester.path / 'out'}",
        "-p", "no:cacheprovider", "-n", "2", timeout=150,
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1 and outcomes.get("errors", outcomes.get("error", 0)) >= 1, outcomes
    result.stdout.fnmatch_lines([f"*serial port {url} is in use by pid *give each worker its own board and port*"])


DROPPED_SERVER_TESTS = """
def test_1_server_answers(remote_model):
    assert remote_model.client.ping() < 5


def test_2_server_goes_away(remote_model):
    remote_model.server.close()  # the in-process server stops; its clients' connections are shut


def test_3_needs_the_server(remote_model):
    remote_model.client.ping()


def test_4_needs_only_the_device(dut):
    assert dut.info.inputs
"""


@pytest.mark.tf
@pytest.mark.timeout(240)
def test_a_server_that_goes_away_fails_only_the_tests_that_use_it(pytester: pytest.Pytester) -> None:
    """The committed AgileNN model (it has a Remote NN): its server stops mid-suite; the test that needs it next
    fails naming the server and saying what to do, and a device-only test after it passes."""
    model = resolve_model(paths.MODELS / "agilenn-cifar10")
    fw = build_firmware("host", model.c_dir)
    pytester.makepyfile(test_inner=DROPPED_SERVER_TESTS)
    result = pytester.runpytest_subprocess(
        "--hil-target=host", f"--hil-fw={fw}", f"--hil-model={model.tflite_path.parent}",
        f"--hil-report-dir={pytester.path / 'out'}", "-p", "no:cacheprovider", "--hil-timeout=5", timeout=200)
    result.assert_outcomes(passed=3, failed=1)
    out = result.stdout.str()
    failure = out[out.index("test_3_needs_the_server ___"):]
    assert re.search(r"ServerUnreachable: remote server 127\.0\.0\.1:\d+: cannot connect \(Connection refused\); "
                     r"start one with `hil serve`", failure), failure[:2000]
    result.stdout.fnmatch_lines(["*FAILED test_inner.py::test_3_needs_the_server*"])
