"""The device's console: every byte it sends outside protocol frames, kept as text lines with their receive time.

On the ESP32-S3, UART0 carries both the protocol and the ESP-IDF console (ROM boot text, log lines, panic
reports); the emulated ports put their console text on the same channel. The client's receiver hands the bytes
that are not part of a frame (hil.transport.frame.FrameDecoder's sink) to `Console.feed()`, which

* assembles lines (\\n ends a line, \\r is dropped, a line idle for `idle_flush_s` or longer than
  `max_line_chars` is cut), each stamped with the time.time() at which its first byte arrived;
* logs each line at INFO on the `hil.console` logger (so the per-test protocol log of the pytest plugin holds it);
* keeps the last `history` lines for excerpts (`tail()`) and the lines not yet taken for the run record
  (`take()`), both bounded: a session never holds more than a few thousand lines;
* runs a `hil.crash.CrashDetector` over the lines: a crash collects the lines around it until the device has been
  quiet for `settle_s` (or the link ended), then `crash()` / `take_crash()` return it with its backtrace decoded.

Thread-safe: the client's reader thread feeds it while tests read it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from hil.crash import (
    BOOT_START_PATTERNS,
    CONTEXT_BEFORE,
    MAX_CONTEXT_BEFORE,
    MAX_EXCERPT_LINES,
    Crash,
    CrashDetector,
    Symbolizer,
    format_time,
)

log = logging.getLogger("hil.console")

SETTLE_S = 0.5  # a crash's excerpt ends after this much quiet (ESP-IDF's panic report comes in one burst)
MAX_COLLECT_S = 5.0  # ... or this long after its trigger (a device that keeps printing)


@dataclass(frozen=True)
class ConsoleLine:
    """One line of console text and the time (time.time(), seconds) its first byte arrived at the host."""

    t: float
    text: str

    def format(self) -> str:
        """`2026-12-07T14:16:09.123Z text` (UTC)."""
        return f"{format_time(self.t)} {self.text}"


def _printable(raw: bytes) -> str:
    """UTF-8 text with control characters (other than tab) shown as \\xNN: the console is text, but bytes at the
    wrong baud rate (the ROM's boot text) or the remains of a corrupt frame arrive too."""
    text = raw.decode("utf-8", errors="replace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else f"\\x{ord(c):02x}" for c in text)


class Console:
    """Console text of one device (see the module docstring). `name` prefixes its log lines."""

    def __init__(
        self,
        name: str = "device",
        *,
        history: int = 2000,
        max_untaken: int = 10000,
        max_line_chars: int = 1000,
        idle_flush_s: float = 0.5,
        settle_s: float = SETTLE_S,
        symbolizer: Symbolizer | None = None,
        detector: CrashDetector | None = None,
    ) -> None:
        self.name = name
        self.max_line_chars = max_line_chars
        self.idle_flush_s = idle_flush_s
        self.settle_s = settle_s
        self.symbolizer = symbolizer
        self.detector = detector or CrashDetector()
        self._lock = threading.RLock()
        self._partial = bytearray()
        self._partial_t = 0.0  # arrival of the partial line's first byte
        self._last_rx = 0.0  # arrival of the last byte
        self._history: deque[ConsoleLine] = deque(maxlen=history)
        self._untaken: deque[ConsoleLine] = deque(maxlen=max_untaken)
        self._dropped = 0  # lines that left _untaken unread because it was full
        self._crashes: deque[Crash] = deque(maxlen=20)
        self._collecting: Crash | None = None
        self.lines_seen = 0
        self.bytes_seen = 0
        self._floor = 0  # lines_seen when the last crash ended or the device was restarted: no context before it

    # ---- input (the client's reader thread) ----

    def feed(self, data: bytes, t: float | None = None) -> None:
        """Bytes received outside frames at time `t` (time.time(); now when None)."""
        if not data:
            return
        now = time.time() if t is None else t
        with self._lock:
            self.bytes_seen += len(data)
            self._last_rx = now
            *whole, rest = bytes(data).split(b"\n")
            for part in whole:
                self._append_partial(part, now)
                self._end_line(now)
            self._append_partial(rest, now)

    def _append_partial(self, chunk: bytes, now: float) -> None:
        while chunk:
            if not self._partial:
                self._partial_t = now
            room = self.max_line_chars - len(self._partial)
            self._partial += chunk[:room]
            chunk = chunk[room:]
            if len(self._partial) >= self.max_line_chars:
                self._end_line(now)

    def _end_line(self, now: float) -> None:
        raw = bytes(self._partial).rstrip(b"\r")
        t = self._partial_t if self._partial else now
        self._partial.clear()
        line = ConsoleLine(t, _printable(raw))
        self.lines_seen += 1
        self._history.append(line)
        if len(self._untaken) == self._untaken.maxlen:
            self._dropped += 1
        self._untaken.append(line)
        log.info("%s: %s", self.name, line.text)
        self._detect(line)

    def tick(self, now: float | None = None) -> None:
        """Time passes without input: cuts a partial line idle for `idle_flush_s`, ends a crash's excerpt after
        `settle_s` of quiet."""
        now = time.time() if now is None else now
        with self._lock:
            if self._partial and now - self._last_rx >= self.idle_flush_s:
                self._end_line(now)
            crash = self._collecting
            if crash is not None and (now - self._last_rx >= self.settle_s or now - crash.t >= MAX_COLLECT_S):
                self._finish(crash)

    def end(self, now: float | None = None) -> None:
        """The link ended (the device's process exited, the port closed): nothing more will arrive."""
        with self._lock:
            if self._partial:
                self._end_line(time.time() if now is None else now)
            if self._collecting is not None:
                self._finish(self._collecting)

    # ---- crash detection ----

    def arm(self) -> None:
        """The device answered HELLO: from now on a reset is unexpected (a crash)."""
        with self._lock:
            self.detector.armed = True

    def disarm(self) -> None:
        """The host is about to reset or restart the device (or lost it): its boot text is expected."""
        with self._lock:
            self.detector.armed = False

    def _detect(self, line: ConsoleLine) -> None:
        found = self.detector.check(line)
        crash = self._collecting
        if crash is not None:
            crash.lines.append(line)
            if found is not None and found[0] == "boot loop" and crash.kind == "reset":
                crash.kind, crash.detail = found  # a reset that keeps happening
            if len(crash.lines) >= MAX_EXCERPT_LINES:
                self._finish(crash)
            return
        if found is None:
            return
        kind, detail = found
        before = self._context_before()
        crash = Crash(kind=kind, headline=line.text, detail=detail, t=line.t, lines=[*before, line],
                      trigger_index=len(before))
        self._collecting = crash
        self._crashes.append(crash)
        self.detector.armed = False  # the device is down: its reboot is part of this crash, not another one
        log.warning("%s: device crash detected (%s): %s", self.name, kind, line.text.strip())

    def _context_before(self) -> list[ConsoleLine]:
        """The lines before the one just appended: back to the start of the device's last boot (its ROM text)
        when that is within MAX_CONTEXT_BEFORE lines, else the last CONTEXT_BEFORE."""
        since_floor = max(self.lines_seen - 1 - self._floor, 0)  # not back into an earlier crash or restart
        recent = list(self._history)[-min(MAX_CONTEXT_BEFORE, since_floor) - 1 : -1] if since_floor else []
        for pattern in BOOT_START_PATTERNS:  # the ROM's banner, else its reset line
            for i in range(len(recent) - 1, -1, -1):
                if pattern.search(recent[i].text):
                    return recent[i:]
        return recent[-CONTEXT_BEFORE:]

    def _finish(self, crash: Crash) -> None:
        crash.complete = True
        self._floor = self.lines_seen
        if self._collecting is crash:
            self._collecting = None

    def crash(self, *, wait_s: float = 0.0, unreported_only: bool = True, now: float | None = None) -> Crash | None:
        """The oldest crash not yet reported (any crash when `unreported_only` is False), complete or not (see
        `Crash.complete`); waits up to `wait_s` for the excerpt of one being collected to complete. Decoded on the
        way out. None when there is none. `now` (time.time()) is for replaying recorded text."""
        deadline = time.monotonic() + wait_s
        while True:
            self.tick(now)
            with self._lock:
                pending = [c for c in self._crashes if not (unreported_only and c.reported)]
                if not pending:
                    return None
                crash = pending[0]
                if crash.complete:
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        crash.decode(self.symbolizer)
        return crash

    def collecting(self) -> Crash | None:
        """The crash whose excerpt is still being collected, if any."""
        with self._lock:
            return self._collecting

    def take_crash(self, *, wait_s: float = 0.0, now: float | None = None) -> Crash | None:
        """Like crash(), and marks it reported (a test failure carries it now)."""
        crash = self.crash(wait_s=wait_s, now=now)
        if crash is not None:
            with self._lock:
                crash.reported = True
        return crash

    def settle_crashes(self) -> None:
        """Marks every crash seen so far as reported: the device is being restarted, which answers for them."""
        with self._lock:
            for crash in self._crashes:
                crash.reported = True
                crash.complete = True
            self._collecting = None
            self._floor = self.lines_seen

    def crashes(self) -> list[Crash]:
        """Every crash seen (the last 20), reported or not."""
        with self._lock:
            return list(self._crashes)

    # ---- output ----

    def take(self, now: float | None = None) -> list[ConsoleLine]:
        """The lines received since the last take() (a partial line only once it has been idle for
        `idle_flush_s`). When more than `max_untaken` lines piled up, the oldest are gone and a first line says
        how many. `now` (time.time()) is for replaying recorded text."""
        self.tick(now)
        with self._lock:
            lines = list(self._untaken)
            self._untaken.clear()
            dropped, self._dropped = self._dropped, 0
        if dropped:
            first_t = lines[0].t if lines else time.time()
            lines.insert(0, ConsoleLine(first_t, f"[hil: {dropped} earlier console lines dropped: take() was not "
                                                 f"called for {self._untaken.maxlen} lines]"))
        return lines

    def tail(self, n: int = 40, *, since: float | None = None) -> list[ConsoleLine]:
        """The last `n` lines (received at or after `since`, when given), a partial line included."""
        with self._lock:
            lines = [line for line in self._history if since is None or line.t >= since]
            if self._partial and (since is None or self._partial_t >= since):
                lines.append(ConsoleLine(self._partial_t, _printable(bytes(self._partial).rstrip(b"\r"))))
        return lines[-n:] if n else lines

    def tail_text(self, n: int = 40, *, since: float | None = None) -> str:
        """tail() as text, one `time text` line each; "" when the console is empty."""
        return "\n".join(line.format() for line in self.tail(n, since=since))

    def __repr__(self) -> str:
        return f"Console({self.name!r}, {self.lines_seen} lines)"
