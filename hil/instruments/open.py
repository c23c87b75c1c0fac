"""Opening a VISA resource: NI-VISA (or another IVI VISA library) when one is installed, pyvisa-py otherwise.

    open_resource("TCPIP0::192.0.2.10::inst0::INSTR")                 # LAN, VXI-11
    open_resource("TCPIP0::127.0.0.1::5025::SOCKET")                  # raw SCPI socket (the simulated analyzer)
    open_resource("USB0::0x2A8D::0x0F02::MY123::INSTR")               # USBTMC
    open_resource("TCPIP0::1.2.3.4::inst0::INSTR", backend="fixtures/instruments/n6705c.yaml@sim")

`backend` (or the environment variable HIL_VISA_BACKEND) overrides the choice: "@py", "@ivi", a library path, or
pyvisa-sim's "file.yaml@sim".
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import pyvisa
from pyvisa import constants

from hil.instruments.base import InstrumentError

log = logging.getLogger("hil.instruments")

BACKEND_ENV = "HIL_VISA_BACKEND"


def default_backend() -> str:
    """'@ivi' when an IVI VISA library (NI-VISA, Keysight IO Libraries, R&S VISA) is installed, else '@py'."""
    env = os.environ.get(BACKEND_ENV)
    if env:
        return env
    try:
        from pyvisa.ctwrapper.highlevel import IVIVisaLibrary

        if IVIVisaLibrary.get_library_paths():
            return "@ivi"
    except Exception as exc:  # a broken VISA install must not stop the pure-Python backend from working
        log.debug("no IVI VISA library: %s", exc)
    return "@py"


def resource_manager(backend: str | None = None) -> pyvisa.ResourceManager:
    chosen = backend or default_backend()
    try:
        return pyvisa.ResourceManager(chosen)
    except (OSError, ValueError) as exc:
        raise InstrumentError(f"VISA backend {chosen!r}", "ResourceManager()", str(exc)) from None


def open_resource(resource_name: str, *, backend: str | None = None, timeout_s: float = 5.0) -> Any:
    """Opens a message-based resource with line-terminated SCPI and a timeout on every operation."""
    rm = resource_manager(backend)
    try:
        resource = rm.open_resource(resource_name, open_timeout=int(timeout_s * 1000))
    except pyvisa.errors.VisaIOError as exc:
        raise InstrumentError(resource_name, "open", f"cannot open: {exc.description}") from None
    except (OSError, ValueError) as exc:  # unparseable resource string, refused connection
        raise InstrumentError(resource_name, "open", f"cannot open: {exc}") from None
    # Raw sockets and serial ports have no END indicator: SCPI messages end with a newline. VXI-11/USBTMC ignore
    # the read termination when END arrives first, so setting it everywhere is harmless.
    resource.read_termination = "\n"
    resource.write_termination = "\n"
    resource.timeout = timeout_s * 1000.0
    if resource_name.upper().endswith("::SOCKET"):
        _disable_nagle(resource)
    return resource


def _disable_nagle(resource: Any) -> None:
    """A write followed by a query is two small TCP segments: with Nagle's algorithm the second waits for the
    ACK of the first, which the instrument delays (40-200 ms on Linux) because it has nothing to send back. Every
    configuration write + SYST:ERR? pair would stall. NI-VISA exposes VI_ATTR_TCPIP_NODELAY; pyvisa-py 0.8
    refuses it for SOCKET sessions, so fall back to its session's socket."""
    try:
        resource.set_visa_attribute(constants.VI_ATTR_TCPIP_NODELAY, constants.VI_TRUE)
        return
    except Exception as exc:  # UnknownAttribute (pyvisa-py) or a VISA library without the attribute
        log.debug("VI_ATTR_TCPIP_NODELAY refused: %s", exc)
    try:
        sock = getattr(resource.visalib.sessions[resource.session], "interface", None)
    except Exception:  # not pyvisa-py: nothing more to try
        return
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
