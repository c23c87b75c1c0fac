"""Request/response client of the HIL protocol (device_fw/PROTOCOL.md) over a `Link`.

Every request waits for the reply with its own `seq`; anything else that arrives (a late reply to an
earlier request, an error about a frame the host no longer cares about) is discarded. A request whose
reply times out, comes back with a bad CRC, or is answered by ERROR BAD_CRC is resent with the same `seq`,
up to `retries` times: every request is idempotent on the device, so a repeat is harmless.

A request can also be sent now and awaited later (`start_infer_digest()`, `start_infer()`: `.wait()`), so the host
works, e.g. runs the reference, while the device computes; LOAD_INPUT chunks are pipelined, two on the wire at a
time (PROTOCOL.md "Pipelining"). `link.tx_bytes` / `link.rx_bytes` count the traffic.

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
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np

from hil.crash import Crash
from hil.errors import DeviceError, UsageError
from hil.transport.console import Console
from hil.transport.frame import (
    LOAD_HEADER_SIZE,
    MAX_READ_CHUNK,
    CorruptFrame,
    DeviceInfo,
    DigestResult,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    InferResult,
    OffloadResult,
    ProtocolError,
    encode_frame,
    error_name,
    parse_digest_reply,
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
# LOAD_INPUT frames on the wire before the first reply (PROTOCOL.md "Pipelining"): one being answered (a copy into
# the arena), the next arriving meanwhile.
PIPELINE_DEPTH = 2

T = TypeVar("T")


class _Outstanding:
    """A request on the wire: its frame (resent as it is), the reply deadline of the last attempt."""

    __slots__ = ("type", "seq", "raw", "limit", "payload_bytes", "attempts", "deadline")

    def __init__(self, type_: int, seq: int, raw: bytes, limit: float, payload_bytes: int) -> None:
        self.type = type_
        self.seq = seq
        self.raw = raw
        self.limit = limit
        self.payload_bytes = payload_bytes
        self.attempts = 0
        self.deadline = 0.0

    @property
    def what(self) -> str:
        return f"{type_name(self.type)} seq={self.seq}"


class PendingReply(Generic[T]):
    """A request that was sent and whose reply is not awaited yet: `wait()` waits (resending as `request()` does)
    and returns the parsed result, once."""

    def __init__(self, finish: Callable[[], T]) -> None:
        self._finish: Callable[[], T] | None = finish

    def wait(self) -> T:
        if self._finish is None:
            raise RuntimeError("wait() was already called for this request")
        finish, self._finish = self._finish, None
        return finish()


# The firmware's answer (BAD_REQUEST) to INFER, INFER_OFFLOAD or a payload-less INFER_DIGEST after an inference
# that overwrote its input tensors (model.json input_preserved false; device_fw/core/src/app.c): the client then
# loads the inputs it was last given again and repeats the request once.
INPUT_CONSUMED_MESSAGE = "input overwritten"


class DigestUnsupported(ProtocolError):
    """The device's firmware predates INFER_DIGEST (its INFO lacks the digest flag)."""


class DeviceCrashed(LinkError):
    """The device's console showed a crash (panic, abort, reset, boot loop) while a reply was awaited. `crash`
    holds the excerpt and the decoded backtrace (hil.crash.Crash)."""

    def __init__(self, message: str, crash: Crash) -> None:
        super().__init__(message)
        self.crash = crash


class DeviceErrorReply(DeviceError, RuntimeError):
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


class InputMismatch(UsageError):
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
        self.requests = 0  # requests sent so far (first attempts; resends are counted in `resends`)
        self._loaded: dict[int, np.ndarray] = {}  # the inputs last loaded, for a model that overwrites them
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
        """Sends one request and returns its reply frame (type | 0x80). Raises DeviceErrorReply on ERROR,
        LinkTimeout when no reply came after all retries."""
        return self._finish(self._start(type, payload, timeout))

    def _start(self, type_: int, payload: bytes, timeout: float | None) -> _Outstanding:
        """Sends a request (first attempt) without waiting for its reply; `_finish()` waits and resends."""
        limit = self.timeout if timeout is None else timeout
        seq = self.next_seq()
        out = _Outstanding(type_, seq, encode_frame(type_, seq, payload), limit, len(payload))
        self.requests += 1
        self._send(out)
        return out

    def _send(self, out: _Outstanding) -> None:
        if out.attempts:
            self.resends += 1
        out.attempts += 1
        out.deadline = time.monotonic() + out.limit  # the reply wait counts from the write, not from the wait
        self.link.write(out.raw)
        log.debug("%s: sent %s, %d payload bytes (attempt %d)", self.link.name, out.what, out.payload_bytes,
                  out.attempts)

    def _finish(self, out: _Outstanding, stash: dict[int, Frame | CorruptFrame | None] | None = None) -> Frame:
        """Waits for the reply of `out`, resending up to `retries` times. `stash` (pipelining) has a key for every
        request still outstanding: an event for one of them is kept there instead of discarded, and found there
        by its own wait."""
        while True:
            outcome = self._await_reply(out.type, out.seq, out.deadline, out.limit, stash)
            if isinstance(outcome, Frame):
                return outcome
            reason, timed_out = outcome
            last = out.attempts > self.retries
            log.info("%s: %s: %s; %s", self.link.name, out.what, reason, "giving up" if last else "resending")
            if last:
                error = LinkTimeout if timed_out else LinkError
                raise error(
                    self.link.explain(
                        f"{self.link.name}: {out.what}: {reason} (after {out.attempts} attempts, {out.limit:g} s "
                        f"each)"
                    )
                )
            self._send(out)

    def _await_reply(
        self,
        type_: int,
        seq: int,
        deadline: float,
        limit: float,
        stash: dict[int, Frame | CorruptFrame | None] | None = None,
    ) -> Frame | tuple[str, bool]:
        """The reply frame, or why to resend and whether that was a timeout."""
        expecting = f"the {type_name(type_)} reply seq={seq}"
        while True:
            stashed = stash.get(seq) if stash is not None else None
            if stashed is not None:
                event, stash[seq] = stashed, None
            else:
                try:
                    event = self.read_event(max(deadline - time.monotonic(), 0.0), expecting)
                except DeviceCrashed:
                    raise
                except LinkTimeout as exc:
                    said = str(exc).partition("; meanwhile the device printed")[1:]
                    return f"no reply within {limit:g} s" + "".join(said), True
                if event.seq != seq:
                    if stash is not None and event.seq in stash:
                        if not isinstance(stash[event.seq], Frame):  # a good frame is never replaced
                            stash[event.seq] = event  # another outstanding request's: its wait takes it
                    else:
                        log.debug("%s: discarded stale %s seq=%d", self.link.name, event, event.seq)
                    continue
            if isinstance(event, CorruptFrame):
                return f"reply was corrupt ({event.reason})", False
            if event.type == FrameType.ERROR:
                err = parse_error(event.payload)
                if err.code == ErrorCode.BAD_CRC:
                    return "the device received it with a bad CRC", False
                raise DeviceErrorReply(err.code, err.request_type, err.message, self.link.name)
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

    def load_input(
        self, index: int, array: np.ndarray, *, max_chunk: int | None = None, window: int = PIPELINE_DEPTH
    ) -> None:
        """Writes input tensor `index` in as few LOAD_INPUT frames as the device's rx_max allows (`max_chunk`: at
        most that many data bytes per frame), with up to `window` of them on the wire before the first reply
        (PROTOCOL.md "Pipelining"; 1: stop-and-wait). Returns once the device acknowledged every chunk."""
        info = self._require_info()
        if not 0 <= index < len(info.inputs):
            raise InputMismatch(f"input index {index} out of range: the model has {len(info.inputs)} inputs")
        data = self._check_input(index, array).tobytes()
        chunk = info.rx_max - LOAD_HEADER_SIZE
        if max_chunk is not None:
            chunk = max(1, min(chunk, max_chunk))
        parts = [(offset, data[offset : offset + chunk]) for offset in range(0, len(data), chunk)]
        replies = self._pipeline(
            FrameType.LOAD_INPUT, [struct.pack("<BI", index, offset) + part for offset, part in parts], window
        )
        for (offset, part), reply in zip(parts, replies, strict=True):
            got_index, got_offset, written = struct.unpack("<BII", reply.payload)
            if (got_index, got_offset, written) != (index, offset, len(part)):
                raise ProtocolError(
                    f"{self.link.name}: LOAD_INPUT reply ({got_index}, {got_offset}, {written}) "
                    f"does not match the request ({index}, {offset}, {len(part)})"
                )
        self._loaded[index] = np.array(array, copy=True)

    def _finish_inference(self, out: _Outstanding) -> Frame:
        """The reply of an inference request; when the device refuses it because the previous inference overwrote
        the inputs (INPUT_CONSUMED_MESSAGE), loads the inputs last loaded again and repeats the request once."""
        try:
            return self._finish(out)
        except DeviceErrorReply as exc:
            info = self._require_info()
            if not (exc.code == ErrorCode.BAD_REQUEST and exc.message.startswith(INPUT_CONSUMED_MESSAGE)
                    and len(self._loaded) == len(info.inputs)):
                raise
        log.info("%s: %s: the model overwrote its inputs; loading them again", self.link.name, out.what)
        for i, array in sorted(self._loaded.items()):
            self.load_input(i, array)
        return self.request(out.type, b"", timeout=self.infer_timeout)

    def _pipeline(self, type_: int, payloads: list[bytes], window: int) -> list[Frame]:
        """Sends the requests with up to `window` outstanding and returns their replies in order. Only for
        requests that may be reordered against each other (a resend repeats one after later ones): LOAD_INPUT
        chunks, which write disjoint absolute ranges."""
        window = max(1, min(window, 128))  # seqs of outstanding requests must stay distinct (8-bit seq)
        outstanding: collections.deque[_Outstanding] = collections.deque()
        stash: dict[int, Frame | CorruptFrame | None] = {}
        replies: list[Frame] = []
        pending = iter(payloads)
        while True:
            while len(outstanding) < window:
                payload = next(pending, None)
                if payload is None:
                    break
                out = self._start(type_, payload, None)
                outstanding.append(out)
                stash[out.seq] = None
            if not outstanding:
                return replies
            out = outstanding.popleft()
            replies.append(self._finish(out, stash))
            del stash[out.seq]

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

    def read_outputs(self, indices: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """Output tensors of the last INFER / INFER_DIGEST (None: all of them), fetched with READ_OUTPUT."""
        info = self._require_info()
        wanted = range(len(info.outputs)) if indices is None else indices
        outputs = {}
        for i in wanted:
            spec = info.outputs[i]
            raw = b"".join(
                self.read_output(i, off, min(MAX_READ_CHUNK, spec.size - off))
                for off in range(0, spec.size, MAX_READ_CHUNK)
            )
            outputs[i] = tensor_from_bytes(raw, spec)
        return outputs

    def infer(self, inputs: Sequence[np.ndarray] | None = None) -> InferResult:
        """Loads `inputs` (None: use what is loaded), runs the model and returns its outputs."""
        return self.start_infer(inputs).wait()

    def start_infer(self, inputs: Sequence[np.ndarray] | None = None, **load: int | None) -> PendingReply[InferResult]:
        """Loads `inputs` (waiting for the device's acknowledgements) and sends INFER without waiting for its
        reply: the host may work (e.g. run the reference) while the device computes. `.wait()` returns the
        InferResult, its outputs fetched with READ_OUTPUT when they were not inline. `load`: load_input's
        max_chunk and window."""
        info = self._require_info()
        if inputs is not None:
            self._load_inputs(inputs, **load)
        out = self._start(FrameType.INFER, b"", self.infer_timeout)
        return PendingReply(lambda: self._infer_result(info, self._finish_inference(out)))

    def _infer_result(self, info: DeviceInfo, frame: Frame) -> InferResult:
        reply = parse_infer_reply(frame.payload)
        if len(reply.sizes) != len(info.outputs):
            raise ProtocolError(
                f"{self.link.name}: INFER reported {len(reply.sizes)} outputs, INFO {len(info.outputs)}"
            )
        if reply.inline:
            outputs = [tensor_from_bytes(raw, spec) for raw, spec in zip(reply.data, info.outputs, strict=True)]
        else:
            fetched = self.read_outputs()
            outputs = [fetched[i] for i in range(len(info.outputs))]
        return InferResult(outputs, reply.cycles, reply.time_us, info.clock_hz, reply.inline)

    def infer_digest(self, inputs: Sequence[np.ndarray] | None = None) -> DigestResult:
        """Loads `inputs` (None: use what is loaded), runs the model and returns one CRC-32 per output
        (INFER_DIGEST) instead of the outputs; `read_outputs()` fetches them afterwards if needed."""
        return self.start_infer_digest(inputs).wait()

    def start_infer_digest(
        self, inputs: Sequence[np.ndarray] | None = None, **load: int | None
    ) -> PendingReply[DigestResult]:
        """Sends INFER_DIGEST without waiting for its reply (`.wait()` returns the DigestResult). The inputs travel
        in the request itself when together they fit rx_max (one frame, one round trip per inference); otherwise
        they are loaded with LOAD_INPUT first. Raises DigestUnsupported, before sending anything, for firmware
        whose INFO lacks the digest flag."""
        info = self._require_info()
        if not info.supports_digest:
            raise DigestUnsupported(
                f"{self.link.name}: the firmware ({info.firmware_version}, build {info.build_id}, protocol "
                f"v{info.protocol_version}, INFO flags 0x{info.flags:04x}) does not answer INFER_DIGEST (INFO flag "
                f"bit 1 clear): build or flash the current firmware, or check full outputs (INFER)"
            )
        payload = b""
        if inputs is not None:
            checked = self._checked_inputs(inputs)
            if info.input_bytes <= info.rx_max and not load:
                payload = b"".join(a.tobytes() for a in checked)
            else:
                for i, array in enumerate(checked):
                    self.load_input(i, array, **load)
        out = self._start(FrameType.INFER_DIGEST, payload, self.infer_timeout)
        return PendingReply(lambda: self._digest_result(info, self._finish_inference(out)))

    def _digest_result(self, info: DeviceInfo, frame: Frame) -> DigestResult:
        reply = parse_digest_reply(frame.payload)
        if len(reply.digests) != len(info.outputs):
            raise ProtocolError(
                f"{self.link.name}: INFER_DIGEST reported {len(reply.digests)} outputs, INFO {len(info.outputs)}"
            )
        return DigestResult(reply.digests, reply.cycles, reply.time_us, info.clock_hz)

    def _checked_inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        info = self._require_info()
        if len(inputs) != len(info.inputs):
            raise InputMismatch(f"got {len(inputs)} inputs, the device's model has {len(info.inputs)}")
        return [self._check_input(i, a) for i, a in enumerate(inputs)]

    def _load_inputs(self, inputs: Sequence[np.ndarray], **load: int | None) -> None:
        for i, array in enumerate(self._checked_inputs(inputs)):
            self.load_input(i, array, **load)

    def infer_offload(self, inputs: Sequence[np.ndarray] | None = None) -> OffloadResult:
        """Loads `inputs` (None: use what is loaded) and runs the AgileNN device step (INFER_OFFLOAD): the model,
        then quantize + compress of the remote features. Raises DeviceErrorReply UNSUPPORTED when the firmware's
        model has no offload config. An overflowing payload is reported (`overflow`), not raised."""
        info = self._require_info()
        if inputs is not None:
            self._load_inputs(inputs)
        out = self._start(FrameType.INFER_OFFLOAD, b"", self.infer_timeout)
        reply = parse_offload_reply(self._finish_inference(out).payload)
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

