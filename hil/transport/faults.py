"""Fault injection beneath the link: a pyserial port stand-in that corrupts, drops, inserts and holds back bytes,
and resets the device, at seeded random rates (`--faults SPEC` of `hil soak`, `--hil-faults SPEC` of the plugin).

It sits under `hil.transport.link.Link`, so the framing, CRCs, resynchronization and resends of
`hil.transport.client` are what copes with it, exactly as they would with a noisy UART. The spec:

    flip=0.01,drop=0.001,garbage=0.001,stall=0.0005,reset=0.0001,stall_s=0.3,seed=7

    flip     probability per byte, either direction: one random bit of the byte is inverted
    drop     probability per byte, either direction: the byte is lost
    garbage  probability per byte, either direction: a random byte is inserted before it
             (a byte suffers at most one of the three, so flip + drop + garbage <= 1)
    stall    probability per request written: the frame is cut at a random point and its rest follows stall_s
             later (the device drops the first part after its 100 ms gap, PROTOCOL.md receive rule 5); and per
             read that brought bytes: they are held back for stall_s
    reset    probability per request written: part of the frame goes out, then the device is reset in the
             middle of it (emulated targets: the firmware's process killed; a board: EN pulsed through RTS)
    stall_s  seconds a stall lasts (default 0.3)
    seed     the random streams' seed (default 0): the same spec on the same byte stream injects the same faults

"Per request written" is per write() call: the client writes each frame, first attempt or resend, in one call.
Probabilities per byte are drawn as gaps between faults (geometric), so a clean stretch costs nothing per byte,
and where the faults land in each direction's byte stream does not depend on how the stream is split into reads.

Faults start once the device has answered HELLO (hil.dut._connect): the bring-up and its model check are not
what is being soaked, and a 300-byte INFO reply would seldom pass a link that garbles 1% of its bytes. One
`Faults` keeps its random streams and counts across reconnections and device restarts.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from hil.errors import UsageError
from hil.transport.link import Link

BYTE_KINDS = ("flip", "drop", "garbage")  # probability per byte, both directions
CALL_KINDS = ("stall", "reset")  # probability per request written (stall: also per read that brought bytes)
KINDS = (*BYTE_KINDS, *CALL_KINDS)
DEFAULT_STALL_S = 0.3  # longer than the device's 100 ms receive gap, so a stalled request is dropped there
MAX_STALL_S = 60.0
RESET_PULSE_S = 0.1  # EN held low through RTS, as hil.targets.esp32s3.reset_board does

ALLOWED = ("allowed keys: flip, drop, garbage (probability per byte, 0 to 1, together at most 1), stall, reset "
           f"(probability per request written, 0 to 1), stall_s (seconds a stall lasts, above 0, at most "
           f"{MAX_STALL_S:g}; default {DEFAULT_STALL_S:g}), seed (whole number >= 0; default 0); "
           "e.g. flip=0.01,drop=0.001,seed=7; 'none' or '' for no faults")

# Independent random streams, so that the faults of one direction do not depend on the traffic of the other.
_TX_BYTES, _RX_BYTES, _TX_CALLS, _RX_CALLS = range(4)


class FaultSpecError(UsageError):
    """A --faults / --hil-faults spec that cannot be used: which key or value is wrong, and what is allowed."""


@dataclass(frozen=True)
class FaultSpec:
    """What to inject and how often (module docstring). All zero: nothing."""

    flip: float = 0.0
    drop: float = 0.0
    garbage: float = 0.0
    stall: float = 0.0
    reset: float = 0.0
    stall_s: float = DEFAULT_STALL_S
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> FaultSpec:
        """`key=value,key=value` (module docstring); raises FaultSpecError naming the wrong key or value."""
        text = (text or "").strip()
        if text.lower() in ("", "none"):
            return cls()
        values: dict[str, Any] = {}
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            key, sep, raw = (s.strip() for s in item.partition("="))
            if not sep or not key or not raw:
                raise FaultSpecError(f"fault spec {text!r}: '{item}' is not key=value; {ALLOWED}")
            if key not in (*KINDS, "stall_s", "seed"):
                raise FaultSpecError(f"fault spec {text!r}: unknown key '{key}'; {ALLOWED}")
            if key in values:
                raise FaultSpecError(f"fault spec {text!r}: '{key}' is given twice")
            values[key] = _value(text, key, raw)
        byte_rate = sum(values.get(k, 0.0) for k in BYTE_KINDS)
        if byte_rate > 1.0:
            raise FaultSpecError(f"fault spec {text!r}: flip + drop + garbage is {byte_rate:g}, above 1: a byte "
                                 f"suffers at most one of them; {ALLOWED}")
        return cls(**values)

    @property
    def byte_rate(self) -> float:
        """Probability that a byte is flipped, dropped or preceded by garbage."""
        return self.flip + self.drop + self.garbage

    @property
    def active(self) -> bool:
        return any(getattr(self, k) > 0 for k in KINDS)

    def __str__(self) -> str:
        """The canonical spec (parse(str(spec)) == spec): the kinds that are on, stall_s when stalls are, the seed."""
        if not self.active:
            return "none"
        items = [f"{k}={getattr(self, k):g}" for k in KINDS if getattr(self, k) > 0]
        if self.stall > 0:
            items.append(f"stall_s={self.stall_s:g}")
        return ",".join([*items, f"seed={self.seed}"])


def _value(text: str, key: str, raw: str) -> float | int:
    if key == "seed":
        try:
            seed = int(raw)
        except ValueError:
            seed = -1
        if seed < 0:
            raise FaultSpecError(f"fault spec {text!r}: seed={raw}: the seed is a whole number >= 0")
        return seed
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if key == "stall_s":
        if not 0.0 < value <= MAX_STALL_S:
            raise FaultSpecError(f"fault spec {text!r}: stall_s={raw}: seconds a stall lasts, above 0 and at most "
                                 f"{MAX_STALL_S:g}")
        return value
    if not 0.0 <= value <= 1.0:
        per = "byte" if key in BYTE_KINDS else "request written"
        raise FaultSpecError(f"fault spec {text!r}: {key}={raw}: {key} is a probability per {per}, a number from 0 "
                             f"to 1 (e.g. {key}=0.001)")
    return value


@dataclass
class FaultCounts:
    """Faults injected so far, by kind (one direction, or both added up)."""

    flip: int = 0
    drop: int = 0
    garbage: int = 0
    stall: int = 0
    reset: int = 0

    @property
    def total(self) -> int:
        return sum(getattr(self, k) for k in KINDS)

    def __add__(self, other: FaultCounts) -> FaultCounts:
        return FaultCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in KINDS}


class _ByteFaults:
    """The per-byte faults of one direction: the gap to the next faulty byte is drawn when the last one is passed."""

    def __init__(self, spec: FaultSpec, rng: np.random.Generator, counts: FaultCounts) -> None:
        self.spec, self.rng, self.counts = spec, rng, counts
        self.rate = spec.byte_rate
        self.gap = self._draw_gap()  # clean bytes before the next faulty one

    def _draw_gap(self) -> int:
        # numpy's geometric counts trials up to and including the first success.
        return int(self.rng.geometric(self.rate)) - 1 if self.rate > 0 else -1

    def apply(self, data: bytes) -> bytes:
        if self.gap < 0 or self.gap >= len(data):
            if self.gap >= 0:
                self.gap -= len(data)
            return data
        out = bytearray()
        pos = 0
        spec, rng, counts = self.spec, self.rng, self.counts
        while 0 <= self.gap < len(data) - pos:
            at = pos + self.gap
            out += data[pos:at]
            byte = data[at]
            pick = rng.random() * self.rate
            if pick < spec.flip:
                out.append(byte ^ (1 << int(rng.integers(8))))
                counts.flip += 1
            elif pick < spec.flip + spec.drop:
                counts.drop += 1
            else:
                out.append(int(rng.integers(256)))
                out.append(byte)
                counts.garbage += 1
            pos = at + 1
            self.gap = self._draw_gap()
        if self.gap >= 0:
            self.gap -= len(data) - pos
        out += data[pos:]
        return bytes(out)


class Faults:
    """The fault injector: the spec, its random streams and the counts per direction (`sent`: host to device,
    `received`: device to host). `attach(link, target)` puts it beneath a link; `paused()` lets bytes through
    untouched (a clean reference run on the same device)."""

    def __init__(self, spec: FaultSpec | str) -> None:
        self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)
        seeds = np.random.SeedSequence(self.spec.seed).spawn(4)
        rngs = [np.random.default_rng(s) for s in seeds]
        self.sent = FaultCounts()
        self.received = FaultCounts()
        self._tx = _ByteFaults(self.spec, rngs[_TX_BYTES], self.sent)
        self._rx = _ByteFaults(self.spec, rngs[_RX_BYTES], self.received)
        self._tx_calls, self._rx_calls = rngs[_TX_CALLS], rngs[_RX_CALLS]
        self._paused = 0
        self._lock = threading.Lock()
        self.reset_action: Callable[[FaultyPort], None] | None = None

    @property
    def counts(self) -> FaultCounts:
        """Both directions added up."""
        return self.sent + self.received

    @property
    def enabled(self) -> bool:
        return self.spec.active and not self._paused

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Bytes pass untouched inside the block (nested blocks are fine)."""
        with self._lock:
            self._paused += 1
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1

    def describe(self) -> str:
        """'flip 12 (sent 8, received 4), drop 0 (...), ...': what was injected so far."""
        return ", ".join(f"{k} {getattr(self.counts, k)} (sent {getattr(self.sent, k)}, received "
                         f"{getattr(self.received, k)})" for k in KINDS)

    def attach(self, link: Link, target: object | None = None) -> None:
        """Puts the injector beneath `link` (its port wrapped in a FaultyPort). `target` is what a reset fault
        resets; FaultSpecError when the spec has resets and the target cannot be reset from the host."""
        port = link.port
        if isinstance(port, FaultyPort):
            port = port.inner
        if self.spec.reset > 0:
            self.reset_action = _reset_action(target, port)
        # Link has no setter for its port: it sets the port's timeouts when it takes it. The wrapper forwards
        # those settings to the port beneath, so swapping it in keeps them; the link's receiver thread reads
        # through it from its next poll on.
        link._port = FaultyPort(port, self)  # noqa: SLF001 - the wrapper is the link's port from now on

    # ---- the two directions (FaultyPort calls these) ----

    def outgoing(self, data: bytes) -> tuple[bytes, str | None, int]:
        """The bytes of one write as they go out, and the call fault that hits it ('stall', 'reset' or None)
        with where in the bytes it happens."""
        with self._lock:
            mangled = self._tx.apply(data)
            rng, spec = self._tx_calls, self.spec
            event = None
            reset, stall = rng.random() < spec.reset, rng.random() < spec.stall
            if reset and self.reset_action is not None:
                event = "reset"
                self.sent.reset += 1
            elif stall:
                event = "stall"
                self.sent.stall += 1
            cut = int(rng.integers(len(mangled) + 1)) if event else len(mangled)
            return mangled, event, cut

    def incoming(self, data: bytes) -> tuple[bytes, bool]:
        """The bytes of one read as they arrive, and whether to hold them back for stall_s."""
        with self._lock:
            mangled = self._rx.apply(data)
            stall = bool(self._rx_calls.random() < self.spec.stall)
            if stall:
                self.received.stall += 1
            return mangled, stall


def _reset_action(target: object | None, port: Any) -> Callable[[FaultyPort], None]:
    """How a reset fault resets the device: an emulated target's program is killed (its restart is the caller's:
    hil soak, or the plugin's device health check before the next test); a board gets EN pulsed through RTS
    on the link's own port."""
    if target is not None and hasattr(target, "pid") and hasattr(target, "returncode"):
        return lambda _port: _kill(target)
    if target is not None and callable(getattr(target, "reset", None)):
        if type(port).__module__.endswith("protocol_socket"):
            raise FaultSpecError(f"reset faults: the board behind {getattr(port, 'port', 'the port')} cannot be "
                                 f"reset from the host: a raw TCP bridge (socket://) carries no RTS line; use an "
                                 f"rfc2217:// bridge, or leave reset out of the spec")
        return lambda faulty: _pulse_rts(faulty.inner)
    name = getattr(target, "name", None) or "this"
    raise FaultSpecError(f"reset faults need a device that can be reset from the host (host, qemu, or a board on "
                         f"a serial port); the {name} target cannot be: leave reset out of the spec")


def _kill(target: Any) -> None:
    pid = target.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _pulse_rts(port: Any) -> None:
    port.rts = True  # EN low (hil.targets.esp32s3.reset_board: RTS drives EN on Espressif boards)
    port.dtr = port.dtr  # Windows' usbser.sys applies RTS only together with DTR, as esptool does
    time.sleep(RESET_PULSE_S)
    port.rts = False
    port.dtr = port.dtr


class FaultyPort:
    """A pyserial port seen through `Faults`: read() and write() inject, everything else is the port's own.
    Bytes a read brought beyond the size asked for (inserted garbage) wait for the next read."""

    __slots__ = ("inner", "faults", "_pending")

    def __init__(self, port: Any, faults: Faults) -> None:
        object.__setattr__(self, "inner", port)
        object.__setattr__(self, "faults", faults)
        object.__setattr__(self, "_pending", b"")

    def __getattr__(self, name: str) -> Any:  # only for names not found on the wrapper itself
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in FaultyPort.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self.inner, name, value)  # timeout, write_timeout, rts, ...: the real port's settings

    @property
    def in_waiting(self) -> int:
        return self.inner.in_waiting + len(self._pending)

    def read(self, size: int = 1) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        data = self.inner.read(size)
        if not data or not self.faults.enabled:
            return data
        data, stall = self.faults.incoming(bytes(data))
        if stall:
            time.sleep(self.faults.spec.stall_s)
        if len(data) > size:
            data, self._pending = data[:size], data[size:]
        return data

    def write(self, data: bytes) -> int | None:
        if not self.faults.enabled:
            return self.inner.write(data)
        data = bytes(data)
        mangled, event, cut = self.faults.outgoing(data)
        if event == "reset":
            self.inner.write(mangled[:cut])
            self.inner.flush()
            action = self.faults.reset_action
            if action is not None:
                action(self)
            return len(data)  # the rest of the frame is lost with the device
        if event == "stall":
            self.inner.write(mangled[:cut])
            self.inner.flush()
            time.sleep(self.faults.spec.stall_s)
            mangled = mangled[cut:]
        self.inner.write(mangled)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()

    def __repr__(self) -> str:
        return f"FaultyPort({self.inner!r}, {self.faults.spec})"
