"""Request/response client of the HIL protocol (device_fw/PROTOCOL.md) over a `Link`.

Every request waits for the reply with its own `seq`; anything else that arrives (a late reply to an
earlier request, an error about a frame the host no longer cares about) is discarded. A request whose
reply times out, comes back with a bad CRC, or is answered by ERROR BAD_CRC is resent with the same `seq`,
up to `retries` times: every request is idempotent on the device, so a repeat is harmless.

A receiver thread reads the link all the time, also between requests: frames go to the requests, every other
byte to the device's console (`client.console`, hil.transport.console), stamped with its arrival time. A crash in
the console (an ESP-IDF panic report, an unexpected reset, a boot loop) ends the request waiting for a reply at
once with `DeviceCrashed`, which quotes the excerpt and the decoded backtrace, instead of a timeout.
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
import time
from collections.abc import Sequence

import numpy as np

from hil.crash import Crash
from hil.transport.console import Console
from hil.transport.frame import (
    LOAD_HEADER_SIZE,
    MAX_READ_CHUNK,
    CorruptFrame,
    DeviceInfo,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    InferResult,
    OffloadResult,
    ProtocolError,
    encode_frame,
    error_name,
    parse_error,
    parse_infer_reply,
    parse_info,
    parse_offload_reply,
    tensor_from_bytes,
    type_name,
)
from hil.transport.link import POLL_S, Link, LinkError, LinkTimeout

log = logging.getLogger("hil.transport")

# The host drops a reply cut short after this much silence (PROTOCOL.md "Receiving and resynchronizing"). Longer
# than the device's 100 ms: the host only needs it to release the console text that follows a reply a crash cut
# short, and must never cut a good reply whose sender (an emulator on a busy machine) was descheduled.
HOST_RX_GAP_S = 1.0
MAX_QUEUED_EVENTS = 4096  # frames nobody waits for (stale replies); the oldest go first


class DeviceCrashed(LinkError):
    """The device's console showed a crash (panic, abort, reset, boot loop) while a reply was awaited. `crash`
    holds the excerpt and the decoded backtrace (hil.crash.Crash)."""

    def __init__(self, message: str, crash: Crash) -> None:
        super().__init__(message)
        self.crash = crash


class DeviceError(RuntimeError):
    """The device answered a request with ERROR."""

    def __init__(self, code: int, request_type: int, message: str, port: str) -> None:
        self.code = code
        self.request_type = request_type
        self.message = message
        self.port = port
        super().__init__(f"{port}: {type_name(request_type)} failed: {error_name(code)}: {message}")

    @property
    def name(self) -> str:
        return error_name(self.code)


class InputMismatch(ValueError):
    """Inputs given to `infer()`/`load_input()` do not match the tensors the device reported."""


class DeviceClient:
    """Talks to one device. `timeout` bounds each reply wait (INFER uses `infer_timeout`), `retries` is the
    number of resends after the first attempt."""

    def __init__(
        self,
        link: Link,
        *,
        retries: int = 3,
        timeout: float | None = None,
        infer_timeout: float = 60.0,
        console: Console | None = None,
        gap_s: float = HOST_RX_GAP_S,
    ) -> None:
        self.link = link
        self.retries = retries
        self.timeout = link.timeout if timeout is None else timeout
        self.infer_timeout = infer_timeout
        self.info: DeviceInfo | None = None
        self.resends = 0  # total resends so far, for tests and logs
        self.console = console if console is not None else Console(link.name)
        self.gap_s = gap_s
        self._rx_time = 0.0  # time.time() of the read being decoded: the console's timestamps
        self._decoder = FrameDecoder(sink=self._to_console)
        self._events: collections.deque[Frame | CorruptFrame] = collections.deque(maxlen=MAX_QUEUED_EVENTS)
        self._error: LinkError | None = None  # the link failed; raised to every later read
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._seq = 0
        self._reader = threading.Thread(target=self._receive, name=f"hil-rx {link.name}", daemon=True)
        self._reader.start()

    # ---- receiving (the reader thread) ----

    def _to_console(self, data: bytes) -> None:
        self.console.feed(data, self._rx_time)

    def _receive(self) -> None:
        last_rx = time.monotonic()
        while not self._stop.is_set():
            try:
                data = self.link.poll(timeout=POLL_S * 2, expecting="a reply frame")
            except LinkError as exc:
                if not self._stop.is_set():
                    with self._cond:
                        self._error = exc
                        self._cond.notify_all()
                self.console.end()
                return
            now = time.monotonic()
            with self._cond:
                events: list[Frame | CorruptFrame] = []
                if data:
                    last_rx = now
                    self._rx_time = time.time()
                    events = self._decoder.feed(data)
                elif self._decoder.pending and now - last_rx >= self.gap_s:
                    self._rx_time = time.time()
                    log.info("%s: %d bytes of an incomplete frame dropped after %.1f s of silence", self.link.name,
                             self._decoder.pending, now - last_rx)
                    events = self._decoder.expire()
                self.console.tick()
                if events:
                    self._events.extend(events)
                self._cond.notify_all()

    # ---- framing ----

    def next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def read_event(self, timeout: float | None = None, expecting: str = "a reply frame") -> Frame | CorruptFrame:
        """The next frame or corrupt-frame report from the device, whatever its seq. Raises DeviceCrashed when
        the console shows a crash (once its excerpt is complete, or when the wait ends), LinkError when the link
        failed, LinkTimeout after `timeout`."""
        limit = self.timeout if timeout is None else timeout
        start = time.time()
        deadline = time.monotonic() + limit
        while True:
            with self._cond:
                if self._events:
                    return self._events.popleft()
                error = self._error
                if error is None and time.monotonic() < deadline and self._no_crash_pending():
                    self._cond.wait(min(deadline - time.monotonic(), 0.05))
                    continue
            # A crash, a failed link or the deadline: a crash explains the others, so it comes first.
            collecting = self.console.collecting()
            crash = self.console.crash(wait_s=self.console.settle_s if collecting is not None else 0.0)
            if crash is not None and (crash.complete or error is not None or time.monotonic() >= deadline):
                raise self._crashed(crash, expecting)
            if crash is not None:
                continue  # still collecting its excerpt
            if error is not None:
                cause = error.__cause__ if error.__cause__ is not None else error
                raise LinkError(self.link.explain(f"{self.link.name}: read failed while waiting for {expecting}: "
                                                  f"{cause}")) from error
            if time.monotonic() >= deadline:
                printed = self.console.tail_text(12, since=start - 1.0)
                said = f"; meanwhile the device printed (console):\n{printed}" if printed else ""
                raise LinkTimeout(self.link.explain(f"{self.link.name}: no frame within {limit:g} s") + said)

    def _no_crash_pending(self) -> bool:
        return self.console.collecting() is None and not any(
            not c.reported for c in self.console.crashes())

    def _crashed(self, crash: Crash, expecting: str) -> DeviceCrashed:
        crash.reported = True
        self.console.disarm()
        message = (f"{self.link.name}: the device crashed while the host waited for {expecting}: "
                   f"{crash.summary()}\n{crash.describe()}")
        diagnosis = self.link.diagnose() if self.link.diagnose is not None else None
        if diagnosis:
            message += f"\n{diagnosis}"
        return DeviceCrashed(message, crash)

    def request(self, type: int, payload: bytes = b"", *, timeout: float | None = None) -> Frame:
        """Sends one request and returns its reply frame (type | 0x80). Raises DeviceError on ERROR,
        LinkTimeout when no reply came after all retries."""
        limit = self.timeout if timeout is None else timeout
        seq = self.next_seq()
        raw = encode_frame(type, seq, payload)
        what = f"{type_name(type)} seq={seq}"
        reason, timed_out = "", False
        for attempt in range(self.retries + 1):
            if attempt:
                self.resends += 1
            self.link.write(raw)
            log.debug("%s: sent %s, %d payload bytes (attempt %d)", self.link.name, what, len(payload), attempt + 1)
            outcome = self._await_reply(type, seq, limit)
            if isinstance(outcome, Frame):
                return outcome
            reason, timed_out = outcome
            log.info(
                "%s: %s: %s; %s",
                self.link.name,
                what,
                reason,
                "resending" if attempt < self.retries else "giving up",
            )
        error = LinkTimeout if timed_out else LinkError
        raise error(
            self.link.explain(
                f"{self.link.name}: {what}: {reason} (after {self.retries + 1} attempts, {limit:g} s each)"
            )
        )

    def _await_reply(self, type_: int, seq: int, limit: float) -> Frame | tuple[str, bool]:
        """The reply frame, or why to resend and whether that was a timeout."""
        deadline = time.monotonic() + limit
        expecting = f"the {type_name(type_)} reply seq={seq}"
        while True:
            try:
                event = self.read_event(max(deadline - time.monotonic(), 0.0), expecting)
            except DeviceCrashed:
                raise
            except LinkTimeout as exc:
                said = str(exc).partition("; meanwhile the device printed")[1:]
                return f"no reply within {limit:g} s" + "".join(said), True
            if event.seq != seq:
                log.debug("%s: discarded stale %s seq=%d", self.link.name, event, event.seq)
                continue
            if isinstance(event, CorruptFrame):
                return f"reply was corrupt ({event.reason})", False
            if event.type == FrameType.ERROR:
                err = parse_error(event.payload)
                if err.code == ErrorCode.BAD_CRC:
                    return "the device received it with a bad CRC", False
                raise DeviceError(err.code, err.request_type, err.message, self.link.name)
            if event.type != type_ | 0x80:
                log.debug("%s: discarded %s with matching seq=%d", self.link.name, type_name(event.type), seq)
                continue
            return event

    # ---- requests ----

    def hello(self) -> DeviceInfo:
        reply = self.request(FrameType.HELLO)
        self.info = parse_info(reply.payload)
        self.console.arm()  # up and answering: a reset from now on is a crash
        return self.info

    def echo(self, data: bytes) -> bytes:
        reply = self.request(FrameType.ECHO, bytes(data))
        return reply.payload

    def _require_info(self) -> DeviceInfo:
        return self.info if self.info is not None else self.hello()

    def load_input(self, index: int, array: np.ndarray) -> None:
        """Writes input tensor `index` in chunks that fit the device's rx_max."""
        info = self._require_info()
        if not 0 <= index < len(info.inputs):
            raise InputMismatch(f"input index {index} out of range: the model has {len(info.inputs)} inputs")
        data = self._check_input(index, array).tobytes()
        chunk = info.rx_max - LOAD_HEADER_SIZE
        for offset in range(0, len(data), chunk):
            part = data[offset : offset + chunk]
            reply = self.request(FrameType.LOAD_INPUT, struct.pack("<BI", index, offset) + part)
            got_index, got_offset, written = struct.unpack("<BII", reply.payload)
            if (got_index, got_offset, written) != (index, offset, len(part)):
                raise ProtocolError(
                    f"{self.link.name}: LOAD_INPUT reply ({got_index}, {got_offset}, {written}) "
                    f"does not match the request ({index}, {offset}, {len(part)})"
                )

    def _check_input(self, index: int, array: np.ndarray) -> np.ndarray:
        spec = self._require_info().inputs[index]
        array = np.asarray(array)
        if array.dtype != spec.dtype:
            raise InputMismatch(f"input {index} is {array.dtype}, the device expects {spec.dtype}")
        if tuple(array.shape) != spec.shape:
            raise InputMismatch(f"input {index} has shape {tuple(array.shape)}, the device expects {spec.shape}")
        return np.ascontiguousarray(array)

    def read_output(self, index: int, offset: int, length: int) -> bytes:
        reply = self.request(FrameType.READ_OUTPUT, struct.pack("<BIH", index, offset, length))
        got_index, got_offset = struct.unpack_from("<BI", reply.payload)
        data = reply.payload[5:]
        if (got_index, got_offset, len(data)) != (index, offset, length):
            raise ProtocolError(
                f"{self.link.name}: READ_OUTPUT reply ({got_index}, {got_offset}, {len(data)} bytes)"
                f" does not match the request ({index}, {offset}, {length})"
            )
        return data

    def infer(self, inputs: Sequence[np.ndarray] | None = None) -> InferResult:
        """Loads `inputs` (None: use what is loaded), runs the model and returns its outputs."""
        info = self._require_info()
        if inputs is not None:
            self._load_inputs(inputs)
        reply = parse_infer_reply(self.request(FrameType.INFER, timeout=self.infer_timeout).payload)
        if len(reply.sizes) != len(info.outputs):
            raise ProtocolError(
                f"{self.link.name}: INFER reported {len(reply.sizes)} outputs, INFO {len(info.outputs)}"
            )
        outputs = []
        for i, spec in enumerate(info.outputs):
            if reply.inline:
                raw = reply.data[i]
            else:
                raw = b"".join(
                    self.read_output(i, off, min(MAX_READ_CHUNK, spec.size - off))
                    for off in range(0, spec.size, MAX_READ_CHUNK)
                )
            outputs.append(tensor_from_bytes(raw, spec))
        return InferResult(outputs, reply.cycles, reply.time_us, info.clock_hz, reply.inline)

    def _load_inputs(self, inputs: Sequence[np.ndarray]) -> None:
        info = self._require_info()
        if len(inputs) != len(info.inputs):
            raise InputMismatch(f"got {len(inputs)} inputs, the device's model has {len(info.inputs)}")
        checked = [self._check_input(i, a) for i, a in enumerate(inputs)]
        for i, array in enumerate(checked):
            self.load_input(i, array)

    def infer_offload(self, inputs: Sequence[np.ndarray] | None = None) -> OffloadResult:
        """Loads `inputs` (None: use what is loaded) and runs the AgileNN device step (INFER_OFFLOAD): the model,
        then quantize + compress of the remote features. Raises DeviceError UNSUPPORTED when the firmware's
        model has no offload config. An overflowing payload is reported (`overflow`), not raised."""
        info = self._require_info()
        if inputs is not None:
            self._load_inputs(inputs)
        reply = parse_offload_reply(self.request(FrameType.INFER_OFFLOAD, timeout=self.infer_timeout).payload)
        if reply.local_output >= len(info.outputs):
            raise ProtocolError(
                f"{self.link.name}: INFER_OFFLOAD names output {reply.local_output}, INFO has {len(info.outputs)}"
            )
        logits = tensor_from_bytes(reply.local_logits, info.outputs[reply.local_output])
        return OffloadResult(
            local_logits=logits,
            payload=reply.payload,
            n_values=reply.n_values,
            bits=reply.bits,
            cycles=reply.cycles,
            clock_hz=info.clock_hz,
            overflow=reply.overflow,
            payload_capacity=reply.payload_capacity,
            local_output=reply.local_output,
        )

    def close(self) -> None:
        """Stops the receiver (within about 0.1 s) and closes the link."""
        self._stop.set()
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        self.link.close()

    def __enter__(self) -> DeviceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

