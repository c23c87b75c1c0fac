"""A device exported over the network, as a remote bench does it (ser2net, esp_rfc2217_server): the same client
works through `socket://host:port` (raw TCP) and `rfc2217://host:port` (telnet serial control), not only a device
path. The device here is the host firmware on its pseudo-terminal; a loopback bridge exports that port.
(esptool's esp_rfc2217_server cannot serve a pseudo-terminal: it sets modem lines, which a pty lacks.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import serial
import serial.rfc2217

from hil import paths
from hil.firmware import build_firmware
from hil.model.artifacts import resolve_model
from hil.model.reference import TflmReference
from hil.targets import get_target
from hil.transport.client import DeviceClient
from hil.transport.link import open_link


def _pump(read, write, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            data = read()
        except (OSError, serial.SerialException):
            return
        if data:
            try:
                write(data)
            except (OSError, serial.SerialException):
                return


class _PtySerial(serial.Serial):
    """A pseudo-terminal has no modem lines: RFC 2217 clients set DTR/RTS and poll CTS/DSR, which would fail."""

    def _update_dtr_state(self) -> None:
        pass

    def _update_rts_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass

    cts = dsr = ri = cd = property(lambda self: False)


class _SocketWriter:
    """PortManager writes its telnet replies with `.write()`."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn

    def write(self, data: bytes) -> None:
        self.conn.sendall(data)


@contextmanager
def exported(port_url: str, protocol: str) -> Iterator[str]:
    """Serves the serial port on a loopback TCP port for one client, as raw bytes (ser2net's raw mode) or with
    RFC 2217 (pyserial's PortManager, the core of esp_rfc2217_server); yields the client's URL."""
    device = _PtySerial(port_url, timeout=0.05)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        conn.settimeout(0.05)
        manager = serial.rfc2217.PortManager(device, _SocketWriter(conn)) if protocol == "rfc2217" else None

        def from_net() -> bytes:
            try:
                data = conn.recv(4096)
            except TimeoutError:
                return b""
            if not data:
                stop.set()
            return b"".join(manager.filter(data)) if manager else data

        def to_net(data: bytes) -> None:
            conn.sendall(b"".join(manager.escape(data)) if manager else data)

        for read, write in ((lambda: device.read(4096), to_net), (from_net, device.write)):
            t = threading.Thread(target=_pump, args=(read, write, stop), daemon=True)
            t.start()
            threads.append(t)
        stop.wait()
        conn.close()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    try:
        yield f"{protocol}://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()
        for t in (acceptor, *threads):
            t.join(timeout=5)
        device.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("protocol", ["socket", "rfc2217"])
def test_client_works_through_a_network_serial_url(protocol, tmp_path):
    model = resolve_model(paths.SYNTHETIC_MODEL)
    firmware = build_firmware("host", model.c_dir)
    reference = TflmReference(model.tflite_bytes)
    with get_target("host", firmware=firmware, log_dir=tmp_path) as target, exported(target.start(), protocol) as url:
        client = DeviceClient(open_link(url, baudrate=2_000_000, timeout=5.0))
        try:
            info = client.hello()
            assert info.model_sha256 == model.sha256
            assert client.echo(b"\xa5\x5a\xff\x00" * 100) == b"\xa5\x5a\xff\x00" * 100  # magic bytes survive
            x = [np.random.default_rng(5).integers(-128, 128, size=t.shape, dtype=np.int8) for t in info.inputs]
            got = client.infer(x).outputs
            for g, w in zip(got, reference.run(x), strict=True):
                assert np.array_equal(np.asarray(g).reshape(w.shape), w)
        finally:
            client.close()
