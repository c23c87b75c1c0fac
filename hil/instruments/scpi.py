"""A thin SCPI session over a pyvisa message-based resource.

Why a wrapper at all: every command gets a timeout, every configuration write is followed by SYST:ERR? (SCPI
instruments report a bad command only in their error queue, never in the reply stream), and every pyvisa failure
becomes an `InstrumentError` that names the instrument and the command. Binary data uses IEEE 488.2 definite
length blocks (`#<n><length><bytes>`), parsed by pyvisa's `query_binary_values`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pyvisa
from pyvisa import constants

from hil.instruments.base import Identity, InstrumentError, InstrumentTimeout

log = logging.getLogger("hil.instruments")

T = TypeVar("T")

# SYST:ERR? is read until it says "0,..." or this many entries: a queue that never empties (a broken instrument or
# a simulation that always answers the same error) must not hang the run.
MAX_ERRORS_PER_CHECK = 32


def parse_error(reply: str) -> tuple[int, str]:
    """`-113,"Undefined header"` -> (-113, 'Undefined header'). A reply that is not <int>,<text> is an error."""
    code_text, _, message = reply.strip().partition(",")
    try:
        code = int(code_text.strip())
    except ValueError:
        return -1, f"unparseable SYST:ERR? reply {reply.strip()!r}"
    return code, message.strip().strip('"')


def split_response(reply: str) -> list[str]:
    """A response message -> its units: splits on `;` outside double-quoted strings (488.2 8.7.8 doubles a quote
    inside a string, which this handles too)."""
    units, current, quoted = [], [], False
    for c in reply.strip():
        if c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            units.append("".join(current).strip())
            current = []
            continue
        current.append(c)
    units.append("".join(current).strip())
    return units


class ScpiSession:
    """SCPI over one open pyvisa resource. `name` is what errors call the instrument (drivers set it to
    "N6705C MY123 at TCPIP0::..." once they know the identity)."""

    def __init__(
        self,
        resource: Any,
        *,
        name: str | None = None,
        timeout_s: float = 5.0,
        check_errors: bool = True,
        history: int = 512,
    ) -> None:
        self.resource = resource
        self.resource_name: str = getattr(resource, "resource_name", "?")
        self.name = name or self.resource_name
        self.timeout_s = timeout_s
        self.check_errors = check_errors
        # The last commands sent, for tests (dialogue checks) and for post-mortem logs.
        self.history: deque[str] = deque(maxlen=history)
        resource.timeout = timeout_s * 1000.0  # pyvisa counts milliseconds

    # ---- plain I/O ----

    def write(self, command: str, *, check: bool = True) -> None:
        """Sends a command; then, unless `check` is False, reads the error queue and raises on any error."""
        self._io(command, lambda: self.resource.write(command), None)
        if check and self.check_errors:
            self.check_error(command)

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        return self._io(command, lambda: self.resource.query(command), timeout_s).strip()

    def query_compound(self, queries: list[str], *, timeout_s: float | None = None) -> list[str]:
        """Several queries in one program message, one absolute path each (`;:` between them), and their answers
        from the one response message IEEE 488.2 sends back (`;`-separated, one terminator). ASCII answers only:
        a binary block may contain `;`."""
        command = queries[0] + "".join((";" if q.startswith("*") else ";:") + q.lstrip(":") for q in queries[1:])
        answers = split_response(self.query(command, timeout_s=timeout_s))
        if len(answers) != len(queries):  # a query the instrument rejected has no answer
            raise InstrumentError(self.name, command, f"expected {len(queries)} answers, got {len(answers)}: "
                                                      f"{';'.join(answers)[:80]!r}{self._pending_errors_hint(command)}")
        return answers

    def query_float(self, command: str, *, timeout_s: float | None = None) -> float:
        reply = self.query(command, timeout_s=timeout_s)
        try:
            return float(reply)
        except ValueError:
            raise InstrumentError(self.name, command, f"expected a number, got {reply[:80]!r}") from None

    def query_int(self, command: str, *, timeout_s: float | None = None) -> int:
        return int(round(self.query_float(command, timeout_s=timeout_s)))

    def query_ascii_floats(self, command: str, *, timeout_s: float | None = None) -> np.ndarray:
        reply = self.query(command, timeout_s=timeout_s)
        if not reply:
            return np.zeros(0)
        try:
            return np.array([float(x) for x in reply.split(",")], dtype=np.float64)
        except ValueError:
            raise InstrumentError(self.name, command, f"expected comma-separated numbers, got {reply[:80]!r}") from None

    def query_binary_floats(
        self, command: str, *, big_endian: bool, timeout_s: float | None = None, datatype: str = "f"
    ) -> np.ndarray:
        """An IEEE 488.2 definite-length block of float32 (or `datatype`) values."""

        def read() -> np.ndarray:
            return self.resource.query_binary_values(
                command, datatype=datatype, is_big_endian=big_endian, container=np.array, header_fmt="ieee",
                expect_termination=True,
            )

        return np.asarray(self._io(command, read, timeout_s), dtype=np.float64)

    # ---- the error queue ----

    def errors(self) -> list[str]:
        """Drains SYST:ERR? and returns every entry that is not "0,No error"."""
        found: list[str] = []
        for _ in range(MAX_ERRORS_PER_CHECK):
            reply = self._io("SYST:ERR?", lambda: self.resource.query("SYST:ERR?"), None)
            code, message = parse_error(reply)
            if code == 0:
                return found
            found.append(f"{code},\"{message}\"")
        found.append(f"(error queue not empty after {MAX_ERRORS_PER_CHECK} reads)")
        return found

    def check_error(self, command: str) -> None:
        errors = self.errors()
        if errors:
            raise InstrumentError(self.name, command, "; ".join(errors))

    def identify(self) -> Identity:
        return Identity.from_idn(self.query("*IDN?"))

    def clear_status(self) -> None:
        """*CLS: empties the error queue so that old errors are not blamed on our commands."""
        self.write("*CLS", check=False)

    # ---- machinery ----

    @contextmanager
    def timeout(self, timeout_s: float) -> Iterator[None]:
        previous = self.resource.timeout
        self.resource.timeout = timeout_s * 1000.0
        try:
            yield
        finally:
            self.resource.timeout = previous

    def _io(self, command: str, call: Callable[[], T], timeout_s: float | None) -> T:
        self.history.append(command)
        t = self.timeout_s if timeout_s is None else timeout_s
        start = time.monotonic()
        try:
            with self.timeout(t):
                result = call()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == constants.StatusCode.error_timeout:
                raise InstrumentTimeout(
                    self.name, command, f"no reply within {t:g} s{self._pending_errors_hint(command)}"
                ) from None
            raise InstrumentError(self.name, command, f"VISA I/O error: {exc.description}") from None
        except (OSError, ValueError, pyvisa.errors.InvalidSession) as exc:
            # ValueError: pyvisa could not parse a binary block header; OSError: the connection went away.
            raise InstrumentError(self.name, command, f"{type(exc).__name__}: {exc}") from None
        log.debug("%s: %s (%.1f ms)", self.name, command, (time.monotonic() - start) * 1e3)
        return result

    def _pending_errors_hint(self, command: str) -> str:
        """After a timeout, what the instrument says is wrong (a query it rejected has no reply at all)."""
        if command == "SYST:ERR?":
            return ""
        try:
            with self.timeout(min(self.timeout_s, 1.0)):
                code, message = parse_error(self.resource.query("SYST:ERR?"))
        except Exception:  # the instrument is gone or hung: the timeout itself is the news
            return ""
        return f" (instrument reports {code},\"{message}\")" if code != 0 else ""

    def close(self) -> None:
        try:
            self.resource.close()
        except Exception as exc:  # closing a dead session must not hide the error that killed it
            log.debug("%s: close failed: %s", self.name, exc)
