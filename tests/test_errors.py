"""One error base class per kind (hil.errors), each with its documented exit code (README "Exit codes"), and
named errors for a remote server that cannot be reached, drops the connection or times out."""

from __future__ import annotations

import ast
import importlib
import socket
import threading
from pathlib import Path

import pytest

from hil import errors
from hil.cli import main
from hil.errors import (
    EXIT_DEVICE,
    EXIT_INSTRUMENT,
    EXIT_INTERNAL,
    EXIT_MODEL,
    EXIT_SERVER,
    EXIT_USAGE,
    DeviceError,
    HilError,
    InstrumentError,
    ModelError,
    ServerError,
    UsageError,
)
from hil.server.client import RemoteClient, ServerDropped, ServerTimeout, ServerUnreachable

HIL = Path(__file__).resolve().parents[1] / "hil"
# Exceptions that never leave their module: the simulated analyzer's SCPI error (turned into its error queue),
# and two control-flow signals (a client that went away from the emulated ROM loader or the remote server).
INTERNAL_ONLY = {"hil.instruments.simulated.scpi_server.ScpiError", "hil.rom_loader.transport.LinkClosed",
                 "hil.server.service._FrameEnd"}
# Modules that need TensorFlow: their classes are read from the source instead of imported.
TF_PACKAGES = ("hil.train", "hil.export", "hil.agilenn", "hil.accuracy", "hil.server.remote_model")


def _error_classes() -> list[tuple[str, str, int]]:
    """(module, class name, line) of every class in hil whose name ends in Error or that derives from one."""
    found = []
    for path in sorted(HIL.rglob("*.py")):
        parts = list(path.relative_to(HIL.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        module = ".".join(parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.split(".")[-1].endswith(("Error", "Exception", "Timeout", "Crashed", "Mismatch"))
                       or b in ("Exception", "ValueError", "RuntimeError", "OSError") for b in bases):
                    found.append((module, node.name, node.lineno))
    return found


def test_every_project_error_has_exactly_one_kind():
    """Every exception class hil defines derives from exactly one of the five kinds, so `hil` can give each
    error its documented exit code (the classes of modules that need TensorFlow are imported too)."""
    pytest.importorskip("tensorflow")
    classes = _error_classes()
    assert len(classes) > 40  # the walk found the project's errors, not nothing
    wrong = []
    for module, name, line in classes:
        if f"{module}.{name}" in INTERNAL_ONLY or module == "hil.errors":
            continue
        cls = getattr(importlib.import_module(module), name)
        if not issubclass(cls, BaseException):
            continue
        kinds = [k.kind for k in errors.KINDS if issubclass(cls, k)]
        if len(kinds) != 1:
            wrong.append(f"{module}:{line} {name}: kinds {kinds}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(("kind", "code"), [(UsageError, EXIT_USAGE), (DeviceError, EXIT_DEVICE),
                                            (InstrumentError, EXIT_INSTRUMENT), (ServerError, EXIT_SERVER),
                                            (ModelError, EXIT_MODEL)])
def test_each_kind_has_its_exit_code(kind: type[HilError], code: int):
    exc = kind("what went wrong")
    assert errors.exit_code_for(exc) == code
    assert errors.error_line(exc) == f"{kind.kind} error: what went wrong"


def test_an_error_of_no_kind_is_an_internal_error_not_a_usage_error():
    # before the kinds, every ValueError exited as if the user had mistyped an option
    exc = ValueError("index out of range")
    assert errors.exit_code_for(exc) == EXIT_INTERNAL
    assert "internal error: ValueError: index out of range" in errors.error_line(exc)
    assert errors.exit_code_for(KeyboardInterrupt()) == 130


def test_the_kinds_exit_codes_are_distinct_and_documented():
    codes = [k.exit_code for k in errors.KINDS]
    assert len(set(codes)) == len(codes)
    readme = (HIL.parent / "README.md").read_text()
    section = readme[readme.index("## Exit codes"):]
    section = section[: section.index("\n## ", 3)]
    for k in errors.KINDS:
        assert f"| {k.exit_code} | {k.kind} |" in section, k


def test_a_malformed_device_reply_is_a_device_error_not_a_usage_error():
    from hil.transport.frame import FrameType, ProtocolError, parse_info

    with pytest.raises(ProtocolError) as caught:
        parse_info(b"\x00" * 3)
    assert errors.exit_code_for(caught.value) == EXIT_DEVICE and isinstance(caught.value, ValueError)
    assert FrameType.HELLO  # the module under test is the device protocol's


def test_a_bad_offload_payload_is_a_device_error():
    from hil.offload.codec import PayloadError, decode_payload

    with pytest.raises(PayloadError) as caught:
        decode_payload(b"\xff\xff\xff", 100, 3)
    assert errors.exit_code_for(caught.value) == EXIT_DEVICE


# --- CLI: one command per kind ------------------------------------------------------------------------------


def test_cli_usage_error_exit_2(capsys):
    with pytest.raises(SystemExit) as caught:  # argparse: a negative timeout never reaches a socket
        main(["check", "--target", "host", "--timeout", "-1"])
    assert caught.value.code == EXIT_USAGE
    assert "--timeout: -1 must be a positive number" in capsys.readouterr().err


def test_cli_device_error_exit_3(capsys, tmp_path):
    rc = main(["check", "--target", "esp32s3", "--port", str(tmp_path / "ttyNOPE"), "--images", "1",
               "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == EXIT_DEVICE, err
    assert "device error: serial port" in err and "ttyNOPE does not exist" in err


def test_cli_model_error_exit_6(capsys, tmp_path):
    rc = main(["check", "--target", "host", "--model", str(tmp_path / "nope")])
    assert rc == EXIT_MODEL
    assert "model error: model" in capsys.readouterr().err


# --- the remote server: unreachable, dropped, timed out ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_named():
    port = _free_port()
    with RemoteClient("127.0.0.1", port, timeout=2) as client, pytest.raises(ServerUnreachable) as caught:
        client.ping()
    message = str(caught.value)
    assert f"remote server 127.0.0.1:{port}: cannot connect (Connection refused)" in message and "hil serve" in message
    assert errors.exit_code_for(caught.value) == EXIT_SERVER
    assert isinstance(caught.value, ConnectionError)  # callers that caught OSError still do


def _one_shot_server(behaviour: str) -> tuple[socket.socket, threading.Thread]:
    """A listening socket whose one connection reads the request, then closes it (dropped) or stays silent."""
    listener = socket.create_server(("127.0.0.1", 0))
    release = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(64)
            if behaviour == "silent":
                release.wait(10)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.release = release  # type: ignore[attr-defined]
    return listener, thread


@pytest.mark.parametrize(("behaviour", "error", "words"), [
    ("drop", ServerDropped, "dropped the connection during INFO"),
    ("silent", ServerTimeout, "no complete reply to INFO within 0.5 s"),
])
def test_a_server_that_drops_or_stalls_is_named(behaviour: str, error: type[ServerError], words: str):
    listener, thread = _one_shot_server(behaviour)
    host, port = listener.getsockname()
    try:
        with RemoteClient(host, port, timeout=0.5) as client, pytest.raises(error) as caught:
            client.info()
        assert f"remote server {host}:{port}" in str(caught.value) and words in str(caught.value)
        assert errors.exit_code_for(caught.value) == EXIT_SERVER
    finally:
        thread.release.set()  # type: ignore[attr-defined]
        listener.close()
        thread.join(5)


def test_a_kept_alive_connection_the_server_closed_is_reopened_once():
    """The server closes idle connections (idle_timeout_s); the next request of a client that kept one open goes
    out on a new connection instead of failing as dropped."""
    import time

    from hil.server.service import RemoteServer, ServerConfig

    server = RemoteServer([], ServerConfig(idle_timeout_s=0.3)).start()
    try:
        with RemoteClient(*server.address, timeout=5) as client:
            client.ping()
            time.sleep(0.8)  # the server has closed the idle connection by now
            client.ping()
        assert server.stats().connections == 2 and server.stats().ok == 2
    finally:
        server.close()
