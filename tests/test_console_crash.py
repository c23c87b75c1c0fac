"""The device's console and crashes: every byte outside protocol frames is kept with its receive time (in
`console.take()`, the `hil.console` log and so the per-test protocol log), crashes in it are detected (ESP-IDF
panic reports, abort, stack smashing, stack overflow, unexpected resets, boot loops) and fail only the test they
happen in, with the excerpt and the backtrace decoded to function names; the device is restarted for the next.

The firmware parts use the crash-test variant of the host and QEMU builds (make HIL_CRASH_TEST=1: a DEBUG request
that prints text or crashes the firmware for real, and an ESP-IDF-style panic handler whose backtrace is walked
from the real call stack). The detector is also run on recorded ESP-IDF output, and a fake board on socket://
prints a panic instead of answering HELLO.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hil import paths
from hil.crash import ESP32S3_ADDR2LINE, Symbolizer, classify, parse_backtrace, symbolizer_for
from hil.dut import DutOptions, open_dut
from hil.firmware import build_firmware, toolchain_status
from hil.model.artifacts import DeviceModel, resolve_model
from hil.plugin import device_health
from hil.report.summary import load_results
from hil.targets import get_target
from hil.targets.base import PtyProcessTarget
from hil.targets.esp32s3 import Esp32s3Target
from hil.transport.client import DeviceClient, DeviceCrashed
from hil.transport.console import Console, ConsoleLine
from hil.transport.frame import FrameType

IDENTITY = paths.DEVICE_FW / "tests" / "models" / "identity"
PORTS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]
DEBUG = FrameType.DEBUG  # HIL_T_DEBUG, device_fw/core/include/hil_crash_test.h
PRINT, FAULT, ABORT, BOOT_LOOP = b"\x01", b"\x02", b"\x03", b"\x04"


@pytest.fixture(scope="module", params=PORTS)
def port(request: pytest.FixtureRequest) -> str:
    status = toolchain_status(request.param)
    if not status.ok:
        pytest.skip(f"cannot build/run the {request.param} firmware: {status}")
    return request.param


@pytest.fixture(scope="module")
def crash_fw(port: str) -> Path:
    return build_firmware(port, IDENTITY, kernels=False, crash_test=True)


@contextlib.contextmanager
def running(port: str, firmware: Path, log_dir: Path) -> Iterator[tuple[PtyProcessTarget, DeviceClient]]:
    with get_target(port, firmware=firmware, log_dir=log_dir) as target:
        assert isinstance(target, PtyProcessTarget)
        client = target.open_client(timeout=3.0)
        try:
            client.hello()
            yield target, client
        finally:
            client.close()


# ---- console text between frames ----------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_text_between_frames_reaches_take_and_the_log(port: str, crash_fw: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hil.console")
    with running(port, crash_fw, tmp_path) as (_target, client):
        assert client.info is not None and client.info.build_id.startswith("dbg-")  # the crash-test variant
        started = time.time()
        for i in range(5):
            reply = client.request(DEBUG, PRINT + f"line {i} from the {port} device".encode())
            assert reply.type == DEBUG | 0x80 and reply.payload == b""
            assert client.echo(bytes([i]) * 50) == bytes([i]) * 50  # frames still decode in between
        time.sleep(0.1)
        lines = client.console.take()
        ended = time.time()
    texts = [line.text for line in lines]
    assert f"I (0) hil: crash-test firmware on the {port} port: DEBUG requests enabled" in texts  # boot text
    printed = [line for line in lines if line.text.startswith("line ")]
    assert [line.text for line in printed] == [f"line {i} from the {port} device" for i in range(5)]
    times = [line.t for line in printed]
    assert times == sorted(times) and started <= times[0] and times[-1] <= ended
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z line \d from .*", line.format())
               for line in printed)
    assert client.console.take() == []  # taken once
    logged = [r.getMessage() for r in caplog.records if r.name == "hil.console"]
    assert all(any(f"line {i} from the {port} device" in m for m in logged) for i in range(5)), logged


def test_the_console_assembles_lines_and_stays_bounded() -> None:
    console = Console("unit", history=5, max_untaken=4, max_line_chars=10, idle_flush_s=0.2)
    console.feed(b"one\r\ntw", t=100.0)
    console.feed(b"o\nthree", t=100.5)
    assert [(line.t, line.text) for line in console.take(now=100.5)] == [(100.0, "one"), (100.0, "two")]
    assert console.take(now=100.6) == []  # "three" is still being written
    assert [(line.t, line.text) for line in console.take(now=100.8)] == [(100.5, "three")]
    console.feed(b"0123456789abc\n\x00\x1b[0m\xff\n", t=101.0)  # a long line is cut; control bytes shown
    assert [line.text for line in console.take(now=101.0)] == ["0123456789", "abc", "\\x00\\x1b[0m\ufffd"]
    console.feed(b"".join(b"%d\n" % i for i in range(10)), t=102.0)
    taken = console.take(now=102.0)
    assert taken[0].text.startswith("[hil: 6 earlier console lines dropped")
    assert [line.text for line in taken[1:]] == ["6", "7", "8", "9"]
    assert [line.text for line in console.tail(100)] == ["5", "6", "7", "8", "9"]  # the history is bounded too


# ---- crashes on purpose: detected, decoded, only their test fails ----------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("op", "function"), [(FAULT, "hil_crash_load_prohibited"), (ABORT, "hil_abort")])
def test_a_crash_on_purpose_is_detected_at_once_and_decoded(port: str, crash_fw: Path, tmp_path: Path, op: bytes,
                                                            function: str) -> None:
    with running(port, crash_fw, tmp_path) as (target, client):
        client.timeout = 10.0  # a crash must not wait for the reply timeout
        started = time.monotonic()
        with pytest.raises(DeviceCrashed) as err:
            client.request(DEBUG, op)
        elapsed = time.monotonic() - started
    crash = err.value.crash
    message = str(err.value)
    assert elapsed < 3.0, f"the crash took {elapsed:.1f} s to report"
    if op == FAULT:
        cause = "LoadProhibited" if port == "host" else "LoadStorePIFAddrError"
        assert crash.kind == "panic" and crash.detail == cause
        assert f"Guru Meditation Error: Core  0 panic'ed ({cause})" in message
    else:
        assert crash.kind == "abort" and "abort() was called at PC 0x" in message
    assert len(crash.backtrace) >= 4 and crash.decoded, crash.decode_note
    names = [frame.function for frame in crash.decoded]
    assert function in names and "crash_in_model_code" in names and "hil_crash_test_request" in names
    assert "main" in names  # walked all the way up the real call stack
    assert any("crash_test.c:" in frame.location for frame in crash.decoded)  # file:line from the debug info
    assert f"{function} at " in message  # the decoded backtrace is in the error itself
    assert "exit status 62" in message  # and the target's account of the exit
    assert target.exit_status == 62


@pytest.mark.timeout(60)
def test_a_boot_loop_is_detected(port: str, crash_fw: Path, tmp_path: Path) -> None:
    with running(port, crash_fw, tmp_path) as (_target, client), pytest.raises(DeviceCrashed) as err:
        client.request(DEBUG, BOOT_LOOP + b"\x04")
    crash = err.value.crash
    assert crash.kind == "boot loop" and "boots within" in crash.detail
    assert crash.excerpt.count("rst:0x3 (SW_RESET)") >= 3


CRASH_SESSION = """
import time

import numpy as np

from hil.transport.frame import encode_frame


def _zeros(dut):
    return [np.zeros(t.shape, t.dtype) for t in dut.info.inputs]


def test_1_passes(dut):
    dut.client.request(0x70, b"\\x01hello from test 1")
    assert dut.infer(_zeros(dut)).cycles > 0


def test_2_crashes_during_a_request(dut):
    dut.client.request(0x70, b"\\x02")


def test_3_passes_after_the_restart(dut, hil_reference):
    x = [np.full(t.shape, 3, t.dtype) for t in dut.info.inputs]
    for got, want in zip(dut.infer(x).outputs, hil_reference.run(x), strict=True):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)


def test_4_crashes_while_no_request_waits(dut):
    dut.client.link.write(encode_frame(0x70, 200, b"\\x02"))  # nobody waits for a reply
    time.sleep(1.0)  # the body passes; the crash in the console fails it all the same


def test_5_passes_after_the_restart(dut):
    assert dut.infer(_zeros(dut)).cycles > 0
"""


def _properties(junit: Path) -> dict[str, dict[str, str]]:
    root = ET.parse(junit).getroot()
    return {case.get("name", ""): {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
            for case in root.iter("testcase")}


@pytest.fixture(scope="module")
def model() -> DeviceModel:
    return resolve_model(paths.DEFAULT_MODEL)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_crash_fails_only_its_test_and_the_device_is_restarted(pytester: pytest.Pytester, port: str,
                                                                 model: DeviceModel,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_LOCK_DIR", str(pytester.path / "locks"))
    firmware = build_firmware(port, model.c_dir, crash_test=True)
    pytester.makepyfile(test_inner=CRASH_SESSION)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        f"--hil-target={port}", f"--hil-fw={firmware}", f"--hil-report-dir={pytester.path / 'out'}",
        "-p", "no:cacheprovider", f"--junitxml={pytester.path / 'junit.xml'}", "--hil-timeout=5", timeout=200,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    for name in ("test_2_crashes_during_a_request", "test_4_crashes_while_no_request_waits"):
        failure = out[out.index(f"{name} ___"):]
        failure = failure[: failure.find("___", failure.index("\n"))]
        cause = "LoadProhibited" if port == "host" else "LoadStorePIFAddrError"
        assert f"Guru Meditation Error: Core  0 panic'ed ({cause})" in failure, failure
        assert "hil_crash_load_prohibited at " in failure and "crash_in_model_code" in failure
        assert device_health.CRASH_SECTION in failure
    assert "DeviceCrashed" in out[out.index("test_2_crashes_during_a_request ___"):]
    props = _properties(pytester.path / "junit.xml")
    for name in ("test_2_crashes_during_a_request", "test_4_crashes_while_no_request_waits"):
        assert "hil_crash_load_prohibited" in props[name][device_health.CRASH_PROPERTY]
        assert props[name][device_health.LOST_PROPERTY].startswith("the device crashed (panic: Guru Meditation")
    for name, after in (("test_3_passes_after_the_restart", "test_2"), ("test_5_passes_after_the_restart", "test_4")):
        assert after in props[name][device_health.RESTART_PROPERTY]
    assert not any(n.startswith("hil_device") for n in props["test_1_passes"])
    # The run record: the failed tests keep the device log excerpt (with the console) in the journal, and the
    # per-test protocol log holds the console lines.
    run = pytester.path / "out" / "latest"
    results = load_results(run)
    assert results["counts"] == {"passed": 3, "failed": 2}
    logs = {t["id"].split("::")[-1]: t["logs"] for t in results["tests"]}
    assert any(log["source"] == "device" and "Guru Meditation Error" in log["text"]
               for log in logs["test_2_crashes_during_a_request"])
    # every console line, time-stamped, and the crash with its decoded backtrace, as journal records of their own
    assert any(log["source"] == "console" and re.search(r"\d{4}-\d\d-\d\dT\S+Z hello from test 1", log["text"])
               for log in logs["test_1_passes"])
    assert any(log["source"] == "crash" and "hil_crash_load_prohibited" in log["text"]
               for log in logs["test_2_crashes_during_a_request"])
    protocol_logs = {p.name: p.read_text() for p in (run / "logs").glob("*.log")}
    first = next(text for name, text in protocol_logs.items() if "test_1_passes" in name)
    assert re.search(r"hil\.console INFO \S+: hello from test 1", first), first
    second = next(text for name, text in protocol_logs.items() if "test_2_crashes" in name)
    assert "hil.console INFO" in second and "Guru Meditation Error" in second
    print(f"five tests, two crashes and restarts on {port}: {elapsed:.1f} s")


# ---- the detector on recorded ESP-IDF output ------------------------------------------------------------------

ROM_BOOT = """\
ESP-ROM:esp32s3-20210327
Build:Mar 27 2021
rst:0xc (RTC_SW_CPU_RST),boot:0x8 (SPI_FAST_FLASH_BOOT)
Saved PC:0x4037af6e
SPIWP:0xee
mode:DIO, clock div:1
load:0x3fce3810,len:0x178c
load:0x403c9700,len:0x4
load:0x403c9704,len:0xcbc
load:0x403cc700,len:0x2d9c
entry 0x403c9914
I (27) boot: ESP-IDF v5.1.2 2nd stage bootloader
I (27) boot: compile time Dec  7 2026 14:02:11
"""

LOAD_PROHIBITED = """\
I (318) hil: ready: protocol on UART0 at 2000000 baud, console text between frames
Guru Meditation Error: Core  1 panic'ed (LoadProhibited). Exception was unhandled.

Core  1 register dump:
PC      : 0x42009a4e  PS      : 0x00060430  A0      : 0x82009b39  A1      : 0x3fc9e0d0  
A2      : 0x00000000  A3      : 0x3fc9e10c  A4      : 0x00000010  A5      : 0x3fc95c38  
A6      : 0x00000001  A7      : 0x00000000  A8      : 0x82009a40  A9      : 0x3fc9e0a0  
A10     : 0x00000000  A11     : 0x3fc9e10c  A12     : 0x3fc9e10c  A13     : 0x00000000  
A14     : 0x00000000  A15     : 0x00000000  SAR     : 0x00000004  EXCCAUSE: 0x0000001c  
EXCVADDR: 0x00000000  LBEG    : 0x40056f5c  LEND    : 0x40056f72  LCOUNT  : 0xffffffff  


Backtrace: 0x42009a4b:0x3fc9e0d0 0x42009b36:0x3fc9e110 0x4037b0b9:0x3fc9e140




ELF file SHA256: 5d2f8c6ef35a4a9b

Rebooting...
""" + ROM_BOOT  # noqa: W291 (ESP-IDF's register dump ends its lines with spaces)

ABORT_TEXT = """\

abort() was called at PC 0x42008d13 on core 1


Backtrace: 0x40375a8e:0x3fc9e030 0x4037ca61:0x3fc9e050 0x40382a6a:0x3fc9e070 0x42008d13:0x3fc9e0e0 \
0x42008d4e:0x3fc9e100 0x4037b0b9:0x3fc9e140




ELF file SHA256: 5d2f8c6ef35a4a9b

Rebooting...
"""

STACK_SMASHING = """\
Stack smashing protect failure!


abort() was called at PC 0x42010e3f on core 1


Backtrace: 0x40375a8e:0x3fc9dd70 0x4037ca61:0x3fc9dd90 0x40382a6a:0x3fc9ddb0 0x42010e3f:0x3fc9de20 \
0x42009c21:0x3fc9de40 0x4037b0b9:0x3fc9dea0

"""

STACK_OVERFLOW = """\
***ERROR*** A stack overflow in task hil has been detected.


Backtrace: 0x40375a8e:0x3fc95f20 0x4037cb35:0x3fc95f40 0x4037df66:0x3fc95f60 0x4037f3f0:0x3fc95fe0 \
0x4037cc1c:0x3fc96000 0x4037cc12:0x00000000 |<-CORRUPTED

"""

PLAIN = """\
ESP-ROM:esp32s3-20210327
I (312) cpu_start: Starting scheduler on PRO CPU.
I (0) cpu_start: Starting scheduler on APP CPU.
I (318) hil: ready: protocol on UART0 at 2000000 baud, console text between frames
W (1234) hil: Backtrace: none requested
I (2000) hil: abort() is never called here
I (2100) hil: guru meditation is a figure of speech
E (3000) uart: uart_read_bytes(1234): uart driver error
"""


def feed_lines(console: Console, text: str, t0: float, step: float = 0.001) -> float:
    """Feeds `text` line by line, `step` seconds apart; returns the time after the last line."""
    t = t0
    for line in text.splitlines(keepends=True):
        console.feed(line.encode(), t)
        t += step
    return t


@pytest.mark.parametrize(("text", "kind", "detail", "frames"), [
    (LOAD_PROHIBITED, "panic", "LoadProhibited", 3),
    (ABORT_TEXT, "abort", "0x42008d13", 6),
    (STACK_SMASHING, "stack smashing", "", 6),
    (STACK_OVERFLOW, "stack overflow", "hil", 6),
])  # fmt: skip
def test_the_detector_finds_recorded_esp_idf_panics(text: str, kind: str, detail: str, frames: int) -> None:
    console = Console("recorded")
    console.arm()
    t = feed_lines(console, PLAIN, 1000.0)
    end = feed_lines(console, text, t + 1.0)
    pending = console.crash(now=end)
    assert pending is not None and not pending.complete  # still being printed
    crash = console.take_crash(now=end + console.settle_s)
    assert crash is not None and crash.complete and (crash.kind, crash.detail) == (kind, detail)
    assert len(crash.backtrace) == frames
    assert crash.backtrace[0][0] == int(re.search(r"Backtrace: 0x([0-9a-f]+)", text).group(1), 16)
    assert crash.decode_note == "no symbolizer for this target: backtrace not decoded"
    assert "Backtrace:" in crash.excerpt and crash.lines[0].t >= 1000.0
    assert console.take_crash(now=end + 1) is None  # reported once
    if kind == "panic":  # the reboot that follows is part of the same crash, not a second one
        assert "rst:0xc (RTC_SW_CPU_RST)" in crash.excerpt
        assert len(console.crashes()) == 1


def test_plain_log_lines_and_an_expected_boot_do_not_trigger() -> None:
    console = Console("recorded")
    feed_lines(console, ROM_BOOT + PLAIN, 2000.0)  # disarmed: the boot hil caused itself
    assert console.crash(now=2010.0) is None and console.crashes() == []
    assert all(classify(line) is None for line in PLAIN.splitlines())


def test_an_unexpected_reset_and_a_boot_loop() -> None:
    console = Console("recorded")
    console.arm()  # the device answered HELLO: a reset now is a crash
    end = feed_lines(console, PLAIN + ROM_BOOT, 3000.0)
    crash = console.take_crash(now=end + 1.0)
    assert crash is not None and crash.kind == "reset" and crash.detail == "rst:0xc (RTC_SW_CPU_RST)"
    # Not armed any more; three boots 0.4 s apart are a boot loop all the same.
    t = end + 2.0
    for _ in range(3):
        t = feed_lines(console, ROM_BOOT.replace("0xc (RTC_SW_CPU_RST)", "0x7 (TG0WDT_SYS_RST)"), t) + 0.4
    loop = console.take_crash(now=t + 1.0)
    assert loop is not None and loop.kind == "boot loop" and "3 boots within" in loop.detail
    assert "TG0WDT_SYS_RST" in loop.summary()


def test_backtrace_parsing() -> None:
    assert parse_backtrace(["Backtrace: 0x4200:0x3fc0 0x4201:0x3fc4 |<-CORRUPTED 0xdead:0xbeef"]) == [
        (0x4200, 0x3FC0), (0x4201, 0x3FC4)]
    assert parse_backtrace(["no backtrace here 0x1:0x2"]) == []


def test_a_missing_esp32s3_toolchain_is_named_and_the_raw_excerpt_stays(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "flasher_args.json").write_text((paths.FIXTURES / "esp32s3" / "flasher_args.json").read_text())
    (build / "hil_fw.elf").write_bytes(b"\x7fELF not really")
    symbolizer = symbolizer_for(Esp32s3Target(port="socket://127.0.0.1:1", build_dir=build))
    assert symbolizer is not None and symbolizer.elf == build / "hil_fw.elf" and symbolizer.tool == ESP32S3_ADDR2LINE
    frames, note = Symbolizer(build / "hil_fw.elf", "hil-no-such-addr2line", symbolizer.install_hint).decode([1])
    assert frames == [] and "hil-no-such-addr2line not found on PATH" in note and "install.sh esp32s3" in note
    no_build = symbolizer_for(Esp32s3Target(port="socket://127.0.0.1:1"))
    assert no_build is not None and "no --hil-fw" in no_build.decode([0x42009A4B])[1]


# ---- a fake board that panics instead of answering HELLO ------------------------------------------------------


class PanickingBoard:
    """A board behind socket:// (as ser2net exports one) that boots, panics and reboots, and never answers
    HELLO: every connection gets the ROM's boot text, then ESP-IDF's panic report."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        text = (ROM_BOOT.replace("0xc (RTC_SW_CPU_RST)", "0x1 (POWERON)") + LOAD_PROHIBITED).replace("\n", "\r\n")
        with contextlib.suppress(OSError):
            time.sleep(0.05)
            conn.sendall(text.encode())
            deadline = time.monotonic() + 15
            while not self._stop.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    if not conn.recv(4096):  # HELLO arrives and is never answered
                        break
        conn.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()


@pytest.mark.timeout(60)
def test_a_board_that_panics_instead_of_answering_hello(model: DeviceModel, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIL_LOCK_DIR", str(tmp_path / "locks"))
    board = PanickingBoard()
    try:
        started = time.monotonic()
        with pytest.raises(DeviceCrashed) as err:
            open_dut(model, DutOptions(target="esp32s3", port=board.url, flash=False, timeout_s=5.0,
                                       log_dir=tmp_path))
        elapsed = time.monotonic() - started
    finally:
        board.close()
    message = str(err.value)
    assert "the device crashed while the host waited for the HELLO reply" in message
    assert "Guru Meditation Error: Core  1 panic'ed (LoadProhibited)" in message
    assert "ESP-ROM:esp32s3-20210327" in message and "rst:0x1 (POWERON)" in message  # the boot text before it
    assert "Backtrace: 0x42009a4b:0x3fc9e0d0" in message
    assert "the board's firmware ELF is unknown" in message  # no --hil-fw: says why it is not decoded
    assert "LinkTimeout" not in message and elapsed < 5.0 + 1.0 + 3.0  # boot wait, no reply timeouts


def test_console_lines_format_in_utc() -> None:
    assert ConsoleLine(0.5, "x").format() == "1970-01-01T00:00:00.500Z x"
