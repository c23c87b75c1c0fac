"""Two defects of the protocol's edges, on the real firmware (host and QEMU builds):

* a frame cut short (a host that died during an upload) must not block the device: after HIL_RX_GAP_US (100 ms)
  of silence the device drops the partial frame, so the next session's HELLO is answered on its first attempt,
  while a frame whose bytes come with shorter gaps is still received whole (PROTOCOL.md "Receiving and
  resynchronizing"); the host's decoder drops a partial reply after its own, longer gap;
* emulator and firmware processes end with the process that started them, whatever kills it (SIGKILL included:
  PR_SET_PDEATHSIG), start with default signal handling whatever the parent ignores or blocks, and stop() ends
  them within 1.5 s (QEMU used to ignore SIGTERM while its guest waited for input in a semihosting read).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from hil import paths
from hil.firmware import build_firmware, toolchain_status
from hil.targets import get_target
from hil.targets.base import PtyProcessTarget
from hil.transport.client import DeviceClient
from hil.transport.frame import CorruptFrame, Frame, FrameDecoder, FrameType, crc8_smbus, encode_frame

pytestmark = pytest.mark.timeout(60)

IDENTITY = paths.DEVICE_FW / "tests" / "models" / "identity"
PORTS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]
DEVICE_GAP_S = 0.1  # HIL_RX_GAP_US in device_fw/core/include/hil_protocol.h


def header(type_: int, seq: int, length: int) -> bytes:
    """A valid frame header (magic, type, seq, length, header check) promising `length` payload bytes."""
    head = bytes([type_, seq, length & 0xFF, length >> 8])
    return b"\xa5\x5a" + head + bytes([crc8_smbus(head)])


@pytest.fixture(scope="module", params=PORTS)
def port(request: pytest.FixtureRequest) -> str:
    status = toolchain_status(request.param)
    if not status.ok:
        pytest.skip(f"cannot build/run the {request.param} firmware: {status}")
    return request.param


@pytest.fixture(scope="module")
def firmware(port: str) -> Path:
    return build_firmware(port, IDENTITY, kernels=False)


@pytest.fixture
def target(port: str, firmware: Path, tmp_path: Path) -> Iterator[PtyProcessTarget]:
    with get_target(port, firmware=firmware, log_dir=tmp_path) as running:
        assert isinstance(running, PtyProcessTarget)
        yield running


def test_a_dead_hosts_partial_frame_does_not_block_the_next_sessions_hello(target: PtyProcessTarget):
    """Session 1 sends a header promising 4000 bytes and 10 of them, then dies (its port closes). Session 2,
    past the gap, says HELLO: answered on the first attempt, at once."""
    first = target.open_client(timeout=2.0)
    first.hello()
    first.link.write(header(FrameType.ECHO, 0x42, 4000) + bytes(range(10)))
    first.close()
    time.sleep(3 * DEVICE_GAP_S)
    second = target.open_client(timeout=2.0, retries=3)
    try:
        started = time.monotonic()
        assert second.hello().model_name == "identity"
        elapsed = time.monotonic() - started
        assert second.resends == 0, "HELLO needed a resend: the device was still waiting for the dead frame"
        assert elapsed < 0.5, f"HELLO took {elapsed:.2f} s"
        assert second.echo(b"still in sync") == b"still in sync"
    finally:
        second.close()


def test_a_request_right_after_the_cut_is_answered_once_the_gap_has_passed(target: PtyProcessTarget):
    """A HELLO sent within the gap joins the dead frame's candidate; when the silence comes the device drops
    the candidate and finds the HELLO inside it: first attempt, about one gap later."""
    client = target.open_client(timeout=2.0, retries=3)
    try:
        client.hello()
        client.link.write(header(FrameType.ECHO, 0x43, 4000) + b"half a frame")
        started = time.monotonic()
        client.hello()
        elapsed = time.monotonic() - started
        assert client.resends == 0  # answered within the 2 s reply timeout: no resend
        assert DEVICE_GAP_S * 0.9 <= elapsed < 1.5, f"{elapsed:.3f} s"
    finally:
        client.close()


@pytest.mark.parametrize("pause_s", [0.0, 0.02, 0.045])
def test_a_frame_with_gaps_below_the_limit_is_received_whole(target: PtyProcessTarget, pause_s: float):
    """An ECHO of 300 bytes written 16 bytes at a time with `pause_s` between the pieces (under the 100 ms
    gap, with room for a sleep that oversleeps on a busy machine): one reply with every byte, no resend, no
    error."""
    client = target.open_client(timeout=3.0, retries=0)
    try:
        client.hello()
        payload = bytes((7 * i) & 0xFF for i in range(300))
        seq = client.next_seq()
        frame = encode_frame(FrameType.ECHO, seq, payload)
        for offset in range(0, len(frame), 16):
            client.link.write(frame[offset : offset + 16])
            time.sleep(pause_s)
        reply = client.read_event(3.0)
        assert isinstance(reply, Frame), reply
        assert (reply.type, reply.seq, reply.payload) == (FrameType.ECHO | 0x80, seq, payload)
        assert client.echo(b"next") == b"next"
    finally:
        client.close()


def test_a_gap_above_the_limit_drops_the_frame(target: PtyProcessTarget):
    """The same frame with one pause of 3 gaps in the middle: the first half is dropped and the second half
    is garbage (no reply, no error for it); the next request works."""
    client = target.open_client(timeout=0.8, retries=0)
    try:
        client.hello()
        seq = client.next_seq()
        frame = encode_frame(FrameType.ECHO, seq, bytes(200))
        client.link.write(frame[:100])
        time.sleep(3 * DEVICE_GAP_S)
        client.link.write(frame[100:])
        with pytest.raises(TimeoutError):
            client.read_event(4 * DEVICE_GAP_S)
        assert client.echo(b"after the drop") == b"after the drop"
    finally:
        client.close()


# ---- the host's decoder: the same rule with its own gap -----------------------------------------------------


def test_the_host_decoder_releases_text_and_frames_behind_a_partial_frame() -> None:
    got: list[bytes] = []
    decoder = FrameDecoder(sink=got.append)
    good = encode_frame(FrameType.ECHO | 0x80, 9, b"behind the cut")
    events = decoder.feed(header(FrameType.INFER | 0x80, 8, 3000) + b"\x01\x02" + b"Guru Meditation\r\n" + good)
    assert events == [] and decoder.pending > 0  # all of it waits inside the 3000-byte candidate
    events = decoder.expire()
    assert events == [Frame(FrameType.ECHO | 0x80, 9, b"behind the cut")]
    assert decoder.pending == 0
    text = b"".join(got)
    assert b"Guru Meditation\r\n" in text and text.startswith(b"\xa5")  # the dropped candidate's bytes, in order


def test_expire_repeats_for_a_second_partial_frame_behind_the_first() -> None:
    decoder = FrameDecoder()
    stream = header(FrameType.ECHO, 1, 500) + b"x" + header(FrameType.ECHO, 2, 600) + b"y"
    assert decoder.feed(stream) == []
    assert decoder.expire() == [] and decoder.pending == 0


def test_expire_with_nothing_pending_does_nothing() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(FrameType.ECHO, 3, b"ok")
    assert decoder.feed(frame) == [Frame(FrameType.ECHO, 3, b"ok")]
    assert decoder.expire() == []
    bad = bytearray(encode_frame(FrameType.ECHO, 4, b"bad"))
    bad[-1] ^= 1
    assert decoder.feed(bytes(bad)) == [CorruptFrame(FrameType.ECHO, 4, 3, "bad_crc")]


def test_the_client_drops_a_cut_reply_after_its_gap(target: PtyProcessTarget) -> None:
    """Bytes of a reply cut short arrive at the client (written into the device's side of the link by hand):
    after the client's gap the text behind them reaches the console."""
    client = target.open_client(timeout=2.0)
    try:
        client.gap_s = 0.2
        client.hello()
        assert target._master is not None
        os.write(target._master, header(FrameType.INFER | 0x80, 0x77, 5000) + b"abc" + b"hello after the cut\r\n")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if any("hello after the cut" in line.text for line in client.console.tail()):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"the text never reached the console: {client.console.tail()}")
        assert client.echo(b"in sync") == b"in sync"
    finally:
        client.close()


# ---- child processes end with their parent -------------------------------------------------------------------

PARENT_SCRIPT = r"""
import os, signal, sys, threading, time
from pathlib import Path
from hil.targets import get_target

port, firmware = sys.argv[1], sys.argv[2]
# What a careless parent passes on: SIGTERM and SIGINT ignored, SIGTERM and SIGUSR1 blocked.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGUSR1])
box = {}

def start():  # from a thread that ends right away: PR_SET_PDEATHSIG must not fire with it
    target = get_target(port, firmware=firmware)
    target.start()
    box["target"] = target

worker = threading.Thread(target=start)
worker.start()
worker.join()
client = box["target"].open_client(timeout=5.0)
client.hello()
print(box["target"].pid, box["target"].url, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """The process has ended (a zombie not yet reaped by its new parent counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _signal_masks(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return {name: int(fields[name].strip(), 16) for name in ("SigBlk", "SigIgn")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_emulator_ends_with_a_sigkilled_parent(port: str, firmware: Path, tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, port, str(firmware)], stdout=subprocess.PIPE,
                              text=True, cwd=paths.PROJECT_ROOT)
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 30)
        assert ready, "the parent never started its target"
        pid_text, url = parent.stdout.readline().split()
        pid = int(pid_text)
        # Hold the link open from here, as another process that shares the port would: the firmware then never
        # sees its input end, and only its parent's death can stop it.
        holder = serial.Serial(url, timeout=0)
        time.sleep(0.3)
        assert not _gone(pid), "the emulator died with the thread that started it"
        # Started with default signal handling, whatever its parent ignored or blocked.
        assert _signal_masks(pid)["SigBlk"] & (1 << (signal.SIGTERM - 1)) == 0
        ignored = _signal_masks(pid)["SigIgn"]
        assert ignored & ((1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))) == 0, f"SigIgn {ignored:x}"
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 2.0
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the {port} emulator (pid {pid}) outlived its SIGKILLed parent by 2 s")
        holder.close()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)


def test_stop_ends_a_running_emulator_within_1_5_s(target: PtyProcessTarget) -> None:
    """A client still holds the link open, so the firmware sees no end of input: stop() has to signal it."""
    client = target.open_client(timeout=2.0)
    client.hello()
    pid = target.pid
    assert pid is not None
    started = time.monotonic()
    target.stop()
    elapsed = time.monotonic() - started
    client.close()
    assert elapsed < 1.5, f"stop() took {elapsed:.2f} s"
    assert _gone(pid)


def test_the_emulator_honours_sigterm_while_it_waits_for_input(target: PtyProcessTarget) -> None:
    """QEMU used to ignore SIGTERM while its guest was blocked in a semihosting read; the firmware now waits in
    short slices."""
    client = target.open_client(timeout=2.0)
    try:
        client.hello()
        time.sleep(0.2)  # idle: waiting for the next request
        pid = target.pid
        assert pid is not None
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 1.0
        while target.returncode is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert target.returncode is not None, f"the {target.name} emulator ignored SIGTERM for 1 s"
    finally:
        client.close()


def test_clients_close_their_receiver(target: PtyProcessTarget) -> None:
    client: DeviceClient = target.open_client(timeout=2.0)
    client.hello()
    client.close()
    assert not client._reader.is_alive()
