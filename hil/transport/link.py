"""A byte link to a device: a serial port, a pseudo-terminal, `socket://host:port` or `rfc2217://host:port`.

Anything pyserial's `serial_for_url` opens works. Every read and write has a deadline; running out of time
raises `LinkTimeout`, any other failure `LinkError`, both naming the port and what was being waited for.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable

import serial

from hil.errors import DeviceError

# pyserial's own read timeout: reads wait at most this long, so a Link deadline is honoured to within it
# without reconfiguring the port (a tcsetattr) on every read.
POLL_S = 0.05


class LinkError(DeviceError):
    """The link failed: the port could not be opened, was closed, or an I/O error happened."""


class LinkTimeout(LinkError, TimeoutError):
    """Nothing (or not enough) arrived before the deadline."""


class Link:
    """Owns an open pyserial port. `timeout` is the default deadline of each read and of each write."""

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        name: str | None = None,
        timeout: float = 2.0,
        diagnose: Callable[[], str | None] | None = None,
    ) -> None:
        self._port = port
        self.name = name or str(port.port or "<serial>")
        self.timeout = timeout
        # Supplied by a target: explains a failure from its side (e.g. "qemu exited with status 64").
        self.diagnose = diagnose
        # Every byte written and read, frames (headers, CRCs) and console text alike: the traffic on the wire.
        self.tx_bytes = 0
        self.rx_bytes = 0
        # pyserial's socket:// backend reports in_waiting as 0/1 ("readable"), not a byte count, and its
        # read(n) waits for all n bytes: read it non-blocking after a select() instead, or a 4 KB reply
        # arrives one byte per call.
        self._socket_like = type(port).__module__.endswith("protocol_socket")
        port.timeout = 0 if self._socket_like else POLL_S
        # pyserial's rfc2217 client refuses write_timeout (NotImplementedError); its writes go to a TCP socket,
        # which does not block on a device that stopped reading the way a full UART buffer would.
        if not type(port).__module__.endswith("rfc2217"):
            port.write_timeout = max(timeout, POLL_S)

    @property
    def port(self) -> serial.SerialBase:
        return self._port

    def explain(self, message: str) -> str:
        """`message`, plus the target's diagnosis when it has one."""
        reason = self.diagnose() if self.diagnose is not None else None
        return f"{message}; {reason}" if reason else message

    @property
    def is_open(self) -> bool:
        return bool(self._port.is_open)

    def write(self, data: bytes) -> None:
        try:
            self._port.write(data)
            self._port.flush()
            self.tx_bytes += len(data)
        except serial.SerialTimeoutException:
            raise LinkTimeout(
                self.explain(
                    f"{self.name}: writing {len(data)} bytes did not finish within "
                    f"{self._port.write_timeout} s (is the device reading?)"
                )
            ) from None
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # pyserial raises TypeError/AttributeError when the port was closed underneath it.
            raise LinkError(self.explain(f"{self.name}: write failed: {exc}")) from exc

    def poll(self, max_bytes: int = 1 << 16, timeout: float = POLL_S, expecting: str = "data") -> bytes:
        """What arrives within `timeout` (at most about POLL_S longer), up to `max_bytes`; b"" when nothing did.
        Raises LinkError when the port fails (never LinkTimeout)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._socket_like:
                    wait = max(0.0, min(POLL_S, deadline - time.monotonic()))
                    ready, _, _ = select.select([self._port.fileno()], [], [], wait)
                    data = self._port.read(max_bytes) if ready else b""
                else:
                    # Blocks up to POLL_S for the first byte, then takes what else has arrived.
                    waiting = self._port.in_waiting
                    data = self._port.read(max(1, min(waiting, max_bytes)))
                    if data and len(data) < max_bytes:
                        more = self._port.in_waiting
                        if more:
                            data += self._port.read(min(more, max_bytes - len(data)))
            except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as exc:
                raise LinkError(self.explain(f"{self.name}: read failed while waiting for {expecting}: {exc}")) from exc
            if data:
                self.rx_bytes += len(data)
                return data
            if time.monotonic() >= deadline:
                return data

    def read_some(self, max_bytes: int = 1 << 16, timeout: float | None = None, expecting: str = "data") -> bytes:
        """Returns between 1 and `max_bytes` bytes, as soon as any arrive; LinkTimeout after `timeout`."""
        limit = self.timeout if timeout is None else timeout
        data = self.poll(max_bytes, limit, expecting)
        if not data:
            raise LinkTimeout(self.explain(f"{self.name}: no {expecting} within {limit:g} s"))
        return data

    def read_exact(self, n: int, timeout: float | None = None, expecting: str = "data") -> bytes:
        """Exactly `n` bytes within `timeout` (all of them, not each)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        out = bytearray()
        while len(out) < n:
            remaining = deadline - time.monotonic()
            try:
                out += self.read_some(n - len(out), max(remaining, 0.0), expecting)
            except LinkTimeout:
                raise LinkTimeout(
                    self.explain(f"{self.name}: got {len(out)} of {n} bytes of {expecting} within {limit:g} s")
                ) from None
        return bytes(out)

    @property
    def wire_bytes(self) -> int:
        """Bytes written plus bytes read since the link was opened (both directions, everything on the line)."""
        return self.tx_bytes + self.rx_bytes

    def discard_input(self) -> None:
        """Drops whatever has arrived and not been read."""
        try:
            self._port.reset_input_buffer()
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"{self.name}: {exc}") from exc

    def close(self) -> None:
        # Closing a port whose device vanished must not mask the original problem.
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Link({self.name!r}, timeout={self.timeout:g})"


def open_link(url: str, *, baudrate: int = 115200, timeout: float = 2.0) -> Link:
    """Opens a device path, `socket://` or `rfc2217://` (any pyserial URL). Ptys/sockets ignore baudrate."""
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=POLL_S)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open {url}: {exc}") from exc
    return Link(port, name=url, timeout=timeout)
