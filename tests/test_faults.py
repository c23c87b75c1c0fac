"""The fault injector beneath the link (hil/transport/faults.py): the spec and its errors, determinism by seed,
each kind of fault happening at its rate and being counted, in both directions, through a real pyserial port."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import serial

from hil.errors import UsageError
from hil.transport.faults import FaultCounts, Faults, FaultSpec, FaultSpecError, FaultyPort
from hil.transport.link import Link

STREAM = np.random.default_rng(99).integers(0, 256, size=100_000, dtype=np.uint8).tobytes()


# ---- the spec ----


def test_the_issues_example_parses_and_prints_back():
    spec = FaultSpec.parse("flip=0.01,drop=0.001,garbage=0.001,stall=0.0005,reset=0.0001")
    assert (spec.flip, spec.drop, spec.garbage, spec.stall, spec.reset, spec.seed) == (
        0.01, 0.001, 0.001, 0.0005, 0.0001, 0)
    assert spec.byte_rate == pytest.approx(0.012)
    assert FaultSpec.parse(str(spec)) == spec
    assert FaultSpec.parse(" flip = 1e-3 , seed=7, stall=0.5, stall_s=0.25 ,") == FaultSpec(
        flip=0.001, stall=0.5, stall_s=0.25, seed=7)


@pytest.mark.parametrize("text", ["", "none", "None", None, "flip=0,drop=0"])
def test_no_faults(text):
    assert not FaultSpec.parse(text).active


@pytest.mark.parametrize(("text", "says"), [
    ("flp=0.01", ["unknown key 'flp'", "allowed keys: flip, drop, garbage"]),
    ("flip=2", ["flip=2", "probability per byte", "from 0 to 1"]),
    ("drop=-0.1", ["drop=-0.1", "from 0 to 1"]),
    ("garbage=lots", ["garbage=lots", "probability per byte"]),
    ("stall=1.5", ["stall=1.5", "probability per request written"]),
    ("reset=nan", ["reset=nan", "from 0 to 1"]),
    ("flip", ["'flip' is not key=value"]),
    ("flip=", ["'flip=' is not key=value"]),
    ("flip=0.1,flip=0.2", ["'flip' is given twice"]),
    ("flip=0.6,drop=0.3,garbage=0.2", ["flip + drop + garbage is 1.1, above 1"]),
    ("seed=-1", ["seed=-1", "whole number >= 0"]),
    ("seed=1.5", ["seed=1.5", "whole number"]),
    ("stall_s=0", ["stall_s=0", "above 0"]),
    ("stall_s=600", ["stall_s=600", "at most 60"]),
])
def test_a_bad_spec_says_which_key_or_value_and_what_is_allowed(text, says):
    with pytest.raises(FaultSpecError) as caught:
        FaultSpec.parse(text)
    assert isinstance(caught.value, UsageError)  # `hil` exits 2 for it
    for part in says:
        assert part in str(caught.value)


# ---- per-byte faults on a byte stream ----


def _stream_through(faults: Faults, data: bytes, pieces: int, seed: int = 0) -> bytes:
    """`data` sent through the injector's outgoing side in `pieces` random-sized writes."""
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(data)), pieces - 1, replace=False)) \
        if pieces > 1 else []
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        out += faults.outgoing(data[start:end])[0]
    return out


def test_the_same_seed_injects_the_same_faults_however_the_stream_is_split():
    spec = "flip=0.01,drop=0.002,garbage=0.002,seed=5"
    whole, split = Faults(spec), Faults(spec)
    assert _stream_through(whole, STREAM, 1) == _stream_through(split, STREAM, 500, seed=3)
    assert whole.sent == split.sent and whole.sent.total > 0
    other = Faults("flip=0.01,drop=0.002,garbage=0.002,seed=6")
    assert _stream_through(other, STREAM, 1) != _stream_through(Faults(spec), STREAM, 1)


def test_flips_invert_one_bit_of_a_byte_and_are_counted():
    faults = Faults("flip=0.01,seed=1")
    out = _stream_through(faults, STREAM, 64)
    assert len(out) == len(STREAM)
    a, b = np.frombuffer(STREAM, np.uint8), np.frombuffer(out, np.uint8)
    changed = np.flatnonzero(a != b)
    assert len(changed) == faults.sent.flip
    assert all(bin(int(x)).count("1") == 1 for x in a[changed] ^ b[changed])
    _near(faults.sent.flip, 0.01 * len(STREAM))
    assert faults.sent.as_dict() == {"flip": faults.sent.flip, "drop": 0, "garbage": 0, "stall": 0, "reset": 0}


def test_drops_remove_bytes_and_are_counted():
    faults = Faults("drop=0.005,seed=2")
    out = _stream_through(faults, STREAM, 64)
    assert len(STREAM) - len(out) == faults.sent.drop
    assert _is_subsequence(out, STREAM)
    _near(faults.sent.drop, 0.005 * len(STREAM))


def test_garbage_inserts_bytes_and_is_counted():
    faults = Faults("garbage=0.005,seed=3")
    out = _stream_through(faults, STREAM, 64)
    assert len(out) - len(STREAM) == faults.sent.garbage
    assert _is_subsequence(STREAM, out)
    _near(faults.sent.garbage, 0.005 * len(STREAM))


def test_the_three_byte_kinds_share_one_rate():
    faults = Faults("flip=0.004,drop=0.002,garbage=0.002,seed=4")
    _stream_through(faults, STREAM, 16)
    for kind, rate in (("flip", 0.004), ("drop", 0.002), ("garbage", 0.002)):
        _near(getattr(faults.sent, kind), rate * len(STREAM))


def _near(count: int, expected: float) -> None:
    """Within 5 standard deviations of a Poisson count."""
    assert abs(count - expected) <= 5 * expected ** 0.5, f"{count} faults where {expected:.0f} were expected"


def _is_subsequence(small: bytes, big: bytes) -> bool:
    it = iter(big)
    return all(any(b == s for b in it) for s in small)


# ---- through a real pyserial port (loop://: what is written comes back) ----


@pytest.fixture
def loop():
    port = serial.serial_for_url("loop://", timeout=0.05, baudrate=10_000_000)  # write_timeout: 10 bits a byte
    yield port
    port.close()


def _read_all(port, want: int, limit_s: float = 5.0) -> bytes:
    """Up to `want` bytes: reads until they are in, the line has been idle after some came, or `limit_s`."""
    out = b""
    deadline = time.monotonic() + limit_s
    while len(out) < want and time.monotonic() < deadline:
        data = port.read(4096)
        if not data and out:
            break
        out += data
    return out


def test_both_directions_are_faulted_and_counted_apart(loop):
    faults = Faults("flip=0.01,drop=0.002,garbage=0.002,seed=8")
    port = FaultyPort(loop, faults)
    arrived = b""
    for i in range(0, 20_000, 1000):  # loop:// holds at most 4096 bytes: read each block back before the next
        port.write(STREAM[i : i + 1000])
        arrived += _read_all(port, 2000)
    sent, received = faults.sent, faults.received
    assert sent.flip and sent.drop and sent.garbage and received.flip and received.drop and received.garbage
    assert len(arrived) == 20_000 - sent.drop + sent.garbage - received.drop + received.garbage
    assert faults.counts == sent + received


def test_a_read_brings_no_more_than_asked_for_and_keeps_the_rest(loop):
    faults = Faults("garbage=1,seed=1")  # every byte arrives behind a garbage byte: 4 bytes become 8
    port = FaultyPort(loop, faults)
    with faults.paused():
        port.write(b"wxyz")
    first = port.read(4)
    assert len(first) == 4 and port.in_waiting == 4
    rest = port.read(8)
    assert len(rest) == 4 and port.in_waiting == 0
    assert (first + rest)[1::2] == b"wxyz" and faults.received.garbage == 4


def test_paused_faults_let_bytes_through(loop):
    faults = Faults("flip=1,seed=1")
    port = FaultyPort(loop, faults)
    with faults.paused():
        port.write(b"clean bytes")
        assert _read_all(port, 11) == b"clean bytes"
    assert faults.counts.total == 0
    port.write(b"x")
    assert faults.sent.flip == 1


def test_a_write_stall_cuts_the_frame_and_holds_its_rest(loop):
    faults = Faults("stall=1,stall_s=0.2,seed=1")
    port = FaultyPort(loop, faults)
    started = time.monotonic()
    port.write(b"0123456789")
    assert time.monotonic() - started >= 0.2
    assert faults.sent.stall == 1
    loop.timeout = 0.05
    started = time.monotonic()
    assert _read_all(port, 10) == b"0123456789"  # every byte, held back once more on the way in
    assert faults.received.stall >= 1 and time.monotonic() - started >= 0.2


def test_a_read_that_brings_nothing_is_never_stalled(loop):
    faults = Faults("stall=1,stall_s=30,seed=1")  # one stall would show in the time taken
    port = FaultyPort(loop, faults)
    started = time.monotonic()
    for _ in range(3):
        assert port.read(10) == b""
    assert time.monotonic() - started < 30 and faults.received.stall == 0


class _Process:
    """What a reset needs of an emulated target: the program's pid (hil.targets.base.PtyProcessTarget)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()


def test_a_reset_kills_the_emulated_device_in_the_middle_of_a_request(loop):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        faults = Faults("reset=1,seed=2")
        link = Link(loop, name="loop", timeout=1.0)
        faults.attach(link, _Process(proc))
        assert isinstance(link.port, FaultyPort)
        frame = bytes(range(100))
        link.write(frame)
        assert proc.wait(timeout=5) < 0  # killed by a signal
        assert faults.sent.reset == 1
        arrived = _read_all(loop, 100, limit_s=0.3)
        assert frame.startswith(arrived) and len(arrived) <= 100  # the frame's beginning, never more
    finally:
        proc.kill()
        proc.wait()


def test_reset_faults_need_a_device_that_can_be_reset(loop):
    link = Link(loop, name="loop", timeout=1.0)
    with pytest.raises(FaultSpecError, match="reset faults need a device that can be reset"):
        Faults("reset=0.01").attach(link, object())
    Faults("flip=0.01").attach(link, object())  # no reset in the spec: any target will do


def test_attached_to_a_link_the_faults_sit_beneath_it(loop):
    faults = Faults("flip=0.05,seed=3")
    link = Link(loop, name="loop", timeout=1.0)
    faults.attach(link, None)
    faults.attach(link, None)  # attaching again does not stack a second wrapper
    assert isinstance(link.port, FaultyPort) and not isinstance(link.port.inner, FaultyPort)
    link.write(STREAM[:3000])  # loop:// holds at most 4096 bytes
    got = b""
    while len(got) < 3000:
        got += link.read_some(3000 - len(got), timeout=2.0)
    assert link.tx_bytes == 3000  # the link counts what it wrote; the faults are the wire's
    assert got != STREAM[:3000] and faults.sent.flip > 0 and faults.received.flip > 0
    assert link.port.timeout == loop.timeout  # the port's settings are the real port's


def test_counts_add_up():
    assert FaultCounts(flip=1, reset=2) + FaultCounts(flip=3, drop=1) == FaultCounts(flip=4, drop=1, reset=2)
    assert FaultCounts(flip=4, drop=1, reset=2).total == 7
