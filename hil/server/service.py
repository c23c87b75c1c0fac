"""The remote model server: TCP, one thread per connection, one lock per model (hil/server/PROTOCOL.md).

Why socketserver.ThreadingTCPServer and not asyncio: the work per request (decompression in numpy/Python and a
Keras call) is synchronous and CPU-bound, so an asyncio server would hand every request to a worker thread
anyway; clients are few (a device or a harness, a handful of test threads), so a thread per connection is
cheap, and blocking sockets with per-call timeouts make every wait explicit. The bounds are:
- connections: at most `max_connections` handler threads; one more is answered BUSY and closed;
- request size: the header's length is checked against `max_body` before any body byte is read, and the body
  is read into one buffer of exactly that size; the codec's output is limited to the model's n_values;
- time: an idle connection is closed after `idle_timeout_s`; a frame, once its first byte arrived, must be
  complete within `frame_timeout_s` (a slow-loris sender gets TIMEOUT and is closed); every send has
  `send_timeout_s`; waiting for a busy model is limited to `model_wait_s`;
- work in flight: requests on one connection are served in turn, so at most `max_connections` requests are
  decoded or waiting for a model at any time.
Every malformed request gets an error reply. The connection stays usable when the frame's extent was known
(unknown type, bad body, unknown model, bad payload...) and is closed when it was not (bad magic, version,
oversize, timeout, truncation). Nothing a client sends escapes as an exception from a handler thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.errors import UsageError
from hil.server import protocol as p
from hil.server.remote_model import CodeRangeError, ModelBusy, RemoteModel

log = logging.getLogger("hil.server")

SERVER_NAME = "hil-remote/1"
LINGER_S = 1.0  # see _Handler._linger


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless told otherwise: the server has no authentication
    port: int = 0  # 0: any free port (see RemoteServer.address)
    max_body: int = p.DEFAULT_MAX_BODY
    max_connections: int = 16
    idle_timeout_s: float = 60.0
    frame_timeout_s: float = 10.0
    send_timeout_s: float = 10.0
    model_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.max_body <= p.PROTOCOL_MAX_BODY:
            raise UsageError(f"max_body must be 1..{p.PROTOCOL_MAX_BODY}")
        if self.max_connections < 1:
            raise UsageError("max_connections must be at least 1")
        if min(self.idle_timeout_s, self.frame_timeout_s, self.send_timeout_s, self.model_wait_s) <= 0:
            raise UsageError("timeouts must be positive")


@dataclass
class ServerStats:
    connections: int = 0  # accepted and handled
    rejected: int = 0  # refused at the connection limit
    requests: int = 0  # frames answered (errors included)
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)  # status name -> count
    active: int = 0


class _FrameEnd(Exception):
    """The connection ended cleanly between frames (EOF or idle timeout): close without a reply."""


class RemoteServer:
    """Serves `models` (keyed by their model.tflite sha256). `start()` runs it in a background thread (the
    pytest fixture); `serve_forever()` in the calling one (hil serve). `close()` stops both and ends every
    connection."""

    def __init__(self, models: Sequence[RemoteModel], config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.models: dict[bytes, RemoteModel] = {}
        for m in models:
            key = bytes.fromhex(m.spec.sha256)
            if key in self.models:
                raise UsageError(f"{m.spec.directory} and {self.models[key].spec.directory} have the same "
                                 "model.tflite; serve one of them")
            self.models[key] = m
        self._stats = ServerStats()
        self._stats_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.config.max_connections)
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._serving = False
        self._tcp = _TcpServer((self.config.host, self.config.port), self)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._tcp.server_address[:2]
        return str(host), int(port)

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def stats(self) -> ServerStats:
        with self._stats_lock:
            s = self._stats
            return ServerStats(s.connections, s.rejected, s.requests, s.ok, collections.Counter(s.errors), s.active)

    def start(self) -> RemoteServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hil-remote-server", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._tcp.serve_forever(poll_interval=0.1)
        finally:
            self._serving = False

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, join_s: float = 5.0) -> None:
        """Stops accepting, ends every connection (a request being computed finishes first) and joins."""
        if self._closing.is_set():
            return
        self._closing.set()
        # shutdown() waits for serve_forever to leave its loop, so only when one runs (or is about to: start()).
        if self._serving or (self._thread is not None and self._thread.is_alive()):
            self._tcp.shutdown()
        with self._stats_lock:
            conns = list(self._conns.items())
        for sock, _thread in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a handler blocked in recv()
        deadline = time.monotonic() + join_s
        for _sock, thread in conns:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._tcp.server_close()

    def __enter__(self) -> RemoteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests (socket-free: the handler reads frames, this answers them) ---

    def info(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "server": SERVER_NAME, "protocol": p.VERSION, "max_body": self.config.max_body,
            "max_connections": self.config.max_connections, "frame_timeout_s": self.config.frame_timeout_s,
            "idle_timeout_s": self.config.idle_timeout_s,
            "models": [m.describe() for m in self.models.values()],
            "stats": {"connections": s.connections, "rejected": s.rejected, "requests": s.requests, "ok": s.ok,
                      "errors": dict(s.errors)},
        }

    def answer(self, header: p.Header, body: bytes | bytearray, received_ns: int) -> tuple[p.Status, bytes]:
        """(status, reply body) for one complete frame. Never raises."""
        try:
            known = header.type in (p.MsgType.PING, p.MsgType.INFO, p.MsgType.INFER)
            if known and header.field != 0:  # reserved bits must be zero, for every request type (PROTOCOL.md)
                raise p.ProtocolError(p.Status.BAD_REQUEST,
                                      f"flags 0x{header.field:04x}: no flags are defined in version 1")
            if header.type == p.MsgType.PING:
                status, reply = p.Status.OK, b""
            elif header.type == p.MsgType.INFO:
                status, reply = p.Status.OK, p.encode_info(self.info())
            elif header.type == p.MsgType.INFER:
                status, reply = self._infer(header, body, received_ns)
            else:
                status, reply = p.Status.UNKNOWN_TYPE, p.encode_message(f"unknown request type 0x{header.type:02x}")
        except p.ProtocolError as exc:
            status, reply = exc.status, p.encode_message(str(exc))
        except Exception as exc:  # a server bug or a codec bug: answer and keep serving
            log.exception("request type 0x%02x failed", header.type)
            status, reply = p.Status.INTERNAL, p.encode_message(f"{type(exc).__name__}: {exc}")
        self._count(status)
        return status, reply

    def _infer(self, header: p.Header, body: bytes | bytearray, received_ns: int) -> tuple[p.Status, bytes]:
        from hil.offload.codec import PayloadError, decode_payload  # the other half of this issue; lazy

        def error(status: p.Status, message: str) -> tuple[p.Status, bytes]:
            return status, p.encode_message(message)

        req = p.InferRequest.unpack(body)
        model = self.models.get(req.model_sha256)
        if model is None:
            served = ", ".join(f"{m.spec.name} {m.spec.sha256[:16]}" for m in self.models.values()) or "none"
            return error(p.Status.UNKNOWN_MODEL, f"no model with sha256 {req.model_sha256.hex()}; serving {served}")
        spec = model.spec
        if req.bits != spec.bits:
            return error(p.Status.BAD_BITS, f"bits {req.bits}, {spec.name} uses {spec.bits}")
        if req.n_values != spec.n_values:
            return error(p.Status.BAD_SHAPE, f"n_values {req.n_values}, {spec.name} takes {spec.n_values} "
                                             f"({'x'.join(map(str, spec.input_shape))})")
        try:
            # max_output: the decompressed size is known, so a stream that expands beyond it is refused by the
            # codec before it allocates more (the decompression-bomb bound).
            # huffman_lengths: the model's static Huffman code (payload mode 2), None when it has none.
            codes = decode_payload(req.payload, req.n_values, req.bits, max_output=req.n_values,
                                   huffman_lengths=spec.huffman_lengths)
        except PayloadError as exc:
            return error(p.Status.BAD_PAYLOAD, f"payload: {exc}")
        codes = np.asarray(codes)
        if codes.size != req.n_values:
            return error(p.Status.BAD_SHAPE, f"payload decoded to {codes.size} codes, expected {req.n_values}")
        try:
            logits, model_us = model.run(codes)
        except CodeRangeError as exc:
            return error(p.Status.BAD_PAYLOAD, str(exc))
        except ModelBusy as exc:
            return error(p.Status.BUSY, str(exc))
        server_us = (time.perf_counter_ns() - received_ns) // 1000
        return p.Status.OK, p.InferResult(logits, server_us, model_us).pack()

    def _count(self, status: p.Status) -> None:
        with self._stats_lock:
            self._stats.requests += 1
            if status == p.Status.OK:
                self._stats.ok += 1
            else:
                self._stats.errors[status.name] += 1

    # --- connection bookkeeping (called by _TcpServer / _Handler) ---

    def _try_admit(self) -> bool:
        if self.closing or not self._slots.acquire(blocking=False):
            with self._stats_lock:
                self._stats.rejected += 1
            return False
        return True

    def _enter(self, sock: socket.socket) -> None:
        with self._stats_lock:
            self._conns[sock] = threading.current_thread()
            self._stats.connections += 1
            self._stats.active += 1

    def _leave(self, sock: socket.socket) -> None:
        with self._stats_lock:
            self._conns.pop(sock, None)
            self._stats.active -= 1
        self._slots.release()


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # a restarted `hil serve` can take its port back at once
    daemon_threads = True  # RemoteServer.close() joins them with a deadline instead of waiting forever
    request_queue_size = 32

    def __init__(self, address: tuple[str, int], owner: RemoteServer) -> None:
        self.owner = owner
        if ":" in address[0]:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.owner.closing:  # accepted while shutting down: close it; BUSY would claim a full server
            self.shutdown_request(request)
            return
        if not self.owner._try_admit():
            # Answered from the accept thread: the reply is 16 + ~30 bytes, which fit the fresh socket's send
            # buffer, and the timeout keeps even a pathological peer from stalling accept().
            try:
                request.settimeout(1.0)
                request.sendall(p.encode_reply(p.NO_TYPE, p.Status.BUSY, 0, p.encode_message(
                    f"too many connections (max {self.owner.config.max_connections})")))
            except OSError:
                pass
            self.owner._count(p.Status.BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:  # thread could not start: give the slot back
            self.owner._slots.release()
            self.shutdown_request(request)
            log.exception("could not start a connection thread")

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Bookkeeping here rather than in the handler's setup()/finish(): it runs even when the handler fails,
        # and the slot is free only once the socket is closed (shutdown_request, inside).
        self.owner._enter(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._leave(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver's default prints a traceback to stderr; the handler catches everything it expects, so
        # whatever lands here is a bug worth a log line, never a reason to stop serving.
        log.exception("connection %s failed", client_address)


class _Handler(socketserver.BaseRequestHandler):
    server: _TcpServer
    request: socket.socket

    def setup(self) -> None:
        self.owner = self.server.owner
        self.cfg = self.owner.config
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small replies, no Nagle delay

    def handle(self) -> None:
        try:
            while not self.owner.closing:
                try:
                    header, body, received_ns = self._read_frame()
                except _FrameEnd:
                    return
                except p.ProtocolError as exc:  # framing lost: say why, then close
                    self.owner._count(exc.status)
                    log.debug("%s: %s: %s", self.client_address, exc.status.name, exc)
                    reply = p.encode_reply(exc.request_type, exc.status, exc.request_id, p.encode_message(str(exc)))
                    if self._send(reply):
                        self._linger()
                    return
                status, reply = self.owner.answer(header, body, received_ns)
                if not self._send(p.encode_reply(header.type, status, header.request_id, reply)):
                    return
        except Exception:  # the last line of defence: a bug here must cost one connection, not the server
            log.exception("connection %s: unexpected error", self.client_address)

    def _read_frame(self) -> tuple[p.Header, bytearray, int]:
        head = bytearray(p.HEADER_SIZE)
        deadline = self._read_into(memoryview(head), None, first=True)
        header = p.parse_header(head, self.cfg.max_body)
        body = bytearray(header.length)  # length <= max_body: checked before allocating
        if header.length:
            try:
                self._read_into(memoryview(body), deadline, first=False)
            except p.ProtocolError as exc:  # TIMEOUT or TRUNCATED in the body: the reply can name the request
                raise p.ProtocolError(exc.status, str(exc), header.type, header.request_id) from None
        return header, body, time.perf_counter_ns()

    def _read_into(self, view: memoryview, deadline: float | None, first: bool) -> float:
        """Fills `view`; returns the frame's deadline (set when its first byte arrives)."""
        got = 0
        total = len(view)
        while got < total:
            if deadline is None:
                timeout = self.cfg.idle_timeout_s
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    raise p.ProtocolError(p.Status.TIMEOUT, f"frame incomplete after {self.cfg.frame_timeout_s:g} s "
                                                            f"({got} of {total} bytes of this part)")
            self.request.settimeout(timeout)
            try:
                n = self.request.recv_into(view[got:])
            except TimeoutError:
                if deadline is None:
                    raise _FrameEnd from None  # idle between frames: close quietly
                continue  # the deadline check above turns this into TIMEOUT
            except OSError:
                raise _FrameEnd from None  # reset by the peer, or close() shut the socket down
            if n == 0:
                if first and got == 0:
                    raise _FrameEnd  # clean end between frames
                raise p.ProtocolError(p.Status.TRUNCATED, f"stream ended {got} bytes into a {total}-byte part")
            if deadline is None:
                deadline = time.monotonic() + self.cfg.frame_timeout_s
            got += n
            if first:
                p.check_magic_prefix(view[:got])
        assert deadline is not None
        return deadline

    def _linger(self) -> None:
        """Half-closes, then reads and drops what the peer still sends, for at most LINGER_S and max_body bytes.
        Closing a socket with unread input makes the kernel send a reset, which can destroy the error reply
        before the peer reads it (e.g. TOO_LARGE while the oversize body is still arriving)."""
        deadline = time.monotonic() + LINGER_S
        budget = self.cfg.max_body
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            while budget > 0 and (timeout := deadline - time.monotonic()) > 0:
                self.request.settimeout(timeout)
                chunk = self.request.recv(min(budget, 65536))
                if not chunk:
                    return
                budget -= len(chunk)

    def _send(self, data: bytes) -> bool:
        try:
            self.request.settimeout(self.cfg.send_timeout_s)
            self.request.sendall(data)
            return True
        except OSError as exc:  # the peer went away or stopped reading: drop the connection
            log.debug("%s: reply not sent: %s", self.client_address, exc)
            return False


def serve_models(model_dirs: Sequence[str | Path], config: ServerConfig | None = None) -> RemoteServer:
    """Loads every model directory and returns the (not yet started) server."""
    return RemoteServer([RemoteModel.load(d, (config or ServerConfig()).model_wait_s) for d in model_dirs], config)
