"""Client of the remote model server (hil/server/PROTOCOL.md): the harness forwarding a device's payload, or
any tool. One TCP connection, opened on first use and reopened after anything that leaves the stream in an
unknown state (a timeout, a reply the server closes after, a broken reply). Every socket operation has a
timeout, and a whole reply must arrive within `timeout` seconds.

Not meant to be shared between threads mid-request; a lock makes concurrent use safe (requests then take turns).
For parallel requests, use one client per thread.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from hil.errors import ServerError, UsageError
from hil.server import protocol as p
from hil.server.protocol import InferResult as RemoteResult  # logits, server_us, model_us

__all__ = ["ModelInfo", "RemoteClient", "RemoteError", "RemoteResult", "ServerDropped", "ServerInfo", "ServerTimeout",
           "ServerUnreachable", "parse_address"]


class RemoteError(ServerError, RuntimeError):
    """The server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{p.status_name(status)}: {message}")


class ServerUnreachable(ServerError, ConnectionError):
    """No connection to the server could be made (refused, no route, unknown host)."""


class ServerDropped(ServerError, ConnectionError):
    """The server closed or reset the connection in the middle of a request."""


class ServerTimeout(ServerError, TimeoutError):
    """No complete reply within the client's timeout."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str
    n_values: int
    bits: int
    input_shape: tuple[int, ...]
    classes: int
    centroids: tuple[float, ...]
    alpha: float | None


@dataclass(frozen=True)
class ServerInfo:
    server: str
    protocol: int
    max_body: int
    models: tuple[ModelInfo, ...]
    raw: dict[str, Any]

    def model(self, sha256: str) -> ModelInfo | None:
        return next((m for m in self.models if m.sha256 == sha256.lower()), None)


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' or '[v6 address]:port' -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"'{text}' is not host:port")
    return host.strip("[]"), int(port)


class RemoteClient:
    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._next_id = 1
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ---

    def ping(self) -> float:
        """Round-trip seconds of an empty request."""
        start = time.perf_counter()
        self._call(p.MsgType.PING)
        return time.perf_counter() - start

    def info(self) -> ServerInfo:
        raw = p.decode_info(self._call(p.MsgType.INFO))
        try:
            models = tuple(
                ModelInfo(str(m["name"]), str(m["sha256"]), int(m["n_values"]), int(m["bits"]),
                          tuple(int(d) for d in m["input_shape"]), int(m["classes"]),
                          tuple(float(c) for c in m["centroids"]), None if m["alpha"] is None else float(m["alpha"]))
                for m in raw["models"]
            )
            return ServerInfo(str(raw["server"]), int(raw["protocol"]), int(raw["max_body"]), models, raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise p.ProtocolError(p.Status.BAD_REQUEST, f"INFO reply lacks or mistypes {exc}") from None

    def infer(self, model_sha256: str | bytes, payload: bytes, n_values: int, bits: int = 3) -> RemoteResult:
        """Remote logits for one compressed payload; raises RemoteError on an error reply."""
        body = p.InferRequest(p.sha256_bytes(model_sha256), n_values, bits, bytes(payload)).pack()
        return RemoteResult.unpack(self._call(p.MsgType.INFER, body))

    def request(self, type_: int, body: bytes = b"", flags: int = 0) -> tuple[int, bytes]:
        """One raw request: (status, reply body). For tools and tests; raises only on I/O and framing errors."""
        with self._lock:
            return self._exchange(type_, body, flags)

    def _call(self, type_: int, body: bytes = b"") -> bytes:
        status, reply = self.request(type_, body)
        if status != p.Status.OK:
            raise RemoteError(status, p.decode_message(reply))
        return reply

    def _exchange(self, type_: int, body: bytes, flags: int) -> tuple[int, bytes]:
        reused = self._sock is not None
        try:
            return self._exchange_once(type_, body, flags)
        except ServerDropped:
            # A kept-alive connection the server has since closed (its idle timeout, a restart) fails on first
            # use: try once more on a new one. Every request is a pure function of its body, so a repeat is safe.
            if not reused:
                raise
        return self._exchange_once(type_, body, flags)

    def _exchange_once(self, type_: int, body: bytes, flags: int) -> tuple[int, bytes]:
        request_id = self._next_id
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
        frame = p.encode_request(type_, request_id, body, flags)
        deadline = time.monotonic() + self.timeout
        what = f"remote server {self.address}"
        sock = self._connect()
        try:
            sock.settimeout(self.timeout)
            sock.sendall(frame)
            header = p.parse_header(self._recv(sock, p.HEADER_SIZE, deadline))
            reply = self._recv(sock, header.length, deadline)
        except BaseException as exc:  # timeout, reset, bad reply, Ctrl-C: the stream position is unknown
            self.close()
            request = p.type_name(type_)
            if isinstance(exc, TimeoutError):
                raise ServerTimeout(f"{what}: no complete reply to {request} within {self.timeout:g} s: {exc}") from exc
            if isinstance(exc, OSError):
                raise ServerDropped(f"{what} dropped the connection during {request}: {exc}") from exc
            raise
        status = header.field
        if header.type == p.NO_TYPE or status in (s.value for s in p.Status if s.closes):
            self.close()  # the server closes after these; so do we, and the next request reconnects
        if header.type != p.NO_TYPE and (header.request_id != request_id or header.type != type_ | p.REPLY_BIT):
            self.close()
            raise p.ProtocolError(p.Status.BAD_REQUEST, f"reply type 0x{header.type:02x} id {header.request_id} "
                                                        f"to request type 0x{type_:02x} id {request_id}")
        return status, reply

    def _connect(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
                raise ServerUnreachable(f"remote server {self.address}: cannot connect ({reason}); start one with "
                                        f"`hil serve` or give the address of a running one") from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    @staticmethod
    def _recv(sock: socket.socket, n: int, deadline: float) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"reply incomplete ({got} of {n} bytes) at the timeout")
            sock.settimeout(remaining)
            k = sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionError(f"server closed the connection after {got} of {n} bytes")
            got += k
        return bytes(buf)
