"""The two ways a client reaches the loader: a TCP socket (socket://host:port) and a pseudo-terminal.

A port hands out one link per client. A link reads with a timeout and raises LinkClosed when the client is
gone: the TCP peer closed, or, for the pseudo-terminal, the last process holding the slave side (/dev/pts/N)
closed it, which the master side sees as EIO. Neither carries modem lines: pyserial ignores DTR/RTS on
socket://, and a Linux pty answers the modem-line ioctls with ENOTTY.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import termios
import time
import tty
from typing import Protocol

WRITE_TIMEOUT_S = 10.0  # esptool's own serial write timeout (DEFAULT_SERIAL_WRITE_TIMEOUT)
NO_CLIENT_POLL_S = 0.02  # how often an idle pty is checked for a client


class LinkClosed(Exception):
    """The client went away (or the loader is stopping)."""


class Link(Protocol):
    description: str

    def read(self, timeout: float) -> bytes:
        """Whatever arrived within `timeout` seconds (b"" if nothing); raises LinkClosed."""
        ...

    def write(self, data: bytes, timeout: float = WRITE_TIMEOUT_S) -> None: ...

    def close(self) -> None: ...


class Port(Protocol):
    url: str

    def accept(self, timeout: float) -> Link | None:
        """The next client's link, or None when none arrived within `timeout` seconds."""
        ...

    def pending(self) -> bool:
        """Another client is waiting to connect."""
        ...

    def close(self) -> None: ...


class SocketLink:
    def __init__(self, sock: socket.socket, peer: str) -> None:
        self._sock = sock
        self.description = f"tcp client {peer}"
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return b""
            data = self._sock.recv(0x10000)
        except (OSError, ValueError) as e:  # ValueError: closed by close() from another thread
            raise LinkClosed(str(e)) from None
        if not data:
            raise LinkClosed("the client closed the connection")
        return data

    def write(self, data: bytes, timeout: float = WRITE_TIMEOUT_S) -> None:
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(data)
        except (OSError, ValueError) as e:
            raise LinkClosed(str(e) or type(e).__name__) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class SocketPort:
    """Listens on host:port (port 0: a free one) for one client at a time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
            self._sock.listen(4)
        except OSError:
            self._sock.close()
            raise
        bound_host, bound_port = self._sock.getsockname()[:2]
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self.host, self.port = bound_host, bound_port
        self.url = f"socket://{shown}:{bound_port}"

    def accept(self, timeout: float) -> SocketLink | None:
        try:
            ready, _, _ = select.select([self._sock], [], [], timeout)
            if not ready:
                return None
            sock, peer = self._sock.accept()
        except (OSError, ValueError):
            return None
        return SocketLink(sock, f"{peer[0]}:{peer[1]}")

    def pending(self) -> bool:
        try:
            return bool(select.select([self._sock], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        self._sock.close()


class PtyLink:
    def __init__(self, port: PtyPort, first: bytes) -> None:
        self._port = port
        self._pending = first
        self.description = f"pty client on {port.url}"

    def read(self, timeout: float) -> bytes:
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        return self._port.read(timeout)

    def write(self, data: bytes, timeout: float = WRITE_TIMEOUT_S) -> None:
        self._port.write(data, timeout)

    def close(self) -> None:
        # Whatever the client left unread must not greet the next one.
        self._port.flush()


class PtyPort:
    """A pseudo-terminal: clients open its slave side (`url`, /dev/pts/N) like a serial port.

    The loader keeps only the master side open, so it sees when the last client closes the slave (EIO)
    and, from the next byte that arrives, that a new client opened it.
    """

    def __init__(self) -> None:
        master, slave = os.openpty()
        try:
            self.url = os.ttyname(slave)
            tty.setraw(slave)  # no echo or line editing before the client configures the port itself
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._fd = master

    def accept(self, timeout: float) -> PtyLink | None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                data = self.read(max(0.0, deadline - time.monotonic()))
            except LinkClosed:  # nobody has the slave side open
                data = b""
                time.sleep(min(NO_CLIENT_POLL_S, max(0.0, deadline - time.monotonic())))
            if data:
                return PtyLink(self, data)
            if time.monotonic() >= deadline:
                return None

    def pending(self) -> bool:
        return False  # one device: a second client would share it, as on a real tty

    def read(self, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return b""
            return os.read(self._fd, 0x10000)
        except BlockingIOError:
            return b""
        except (OSError, ValueError) as e:  # EIO: no client; EBADF/ValueError: closed by stop()
            raise LinkClosed(f"pty: {e}") from None

    def write(self, data: bytes, timeout: float = WRITE_TIMEOUT_S) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LinkClosed("pty: the client stopped reading")
            try:
                _, ready, _ = select.select([], [self._fd], [], min(remaining, 0.1))
                if ready:
                    view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                continue
            except (OSError, ValueError) as e:
                raise LinkClosed(f"pty: {e}") from None

    def flush(self) -> None:
        with contextlib.suppress(OSError, termios.error):
            termios.tcflush(self._fd, termios.TCIOFLUSH)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
