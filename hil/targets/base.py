"""What every target (host, qemu, esp32s3) offers, and the pseudo-terminal launcher the emulated ones share.

A target is started, gives a URL that pyserial opens (a device path, `socket://`, `rfc2217://`), and is
stopped; as a context manager it does both. `open_client(target)` connects a DeviceClient to any target.
"""

from __future__ import annotations

import abc
import contextlib
import os
import subprocess
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import serial

from hil.transport.client import DeviceClient
from hil.transport.link import POLL_S, Link, open_link


class TargetError(RuntimeError):
    """The target could not be started, or it died."""


@runtime_checkable
class Target(Protocol):
    """A device the protocol client can talk to (host, qemu, esp32s3). Structural: a target need not
    subclass this, only provide these members."""

    name: str

    @property
    def url(self) -> str | None:
        """The URL start() returned; None while stopped."""
        ...

    def start(self) -> str:
        """Starts (or resets) the device; returns the URL of its serial link for pyserial."""
        ...

    def stop(self) -> None:
        """Stops the device and releases its resources. Safe to call twice or before start()."""
        ...

    def __enter__(self) -> Target: ...

    def __exit__(self, *exc: object) -> None: ...


def open_client(target: Target, *, timeout: float = 5.0, retries: int = 3) -> DeviceClient:
    """A client on any target's link, starting the target if needed."""
    url = target.url or target.start()
    baudrate = int(getattr(target, "baud", None) or getattr(target, "baudrate", None) or 115200)
    return DeviceClient(open_link(url, baudrate=baudrate, timeout=timeout), retries=retries)


class PtyProcessTarget(abc.ABC):
    """Runs a program whose stdin/stdout are the master side of a pseudo-terminal; the client opens the slave
    side like a serial port. Recipe and pitfalls: /work/shared/docs/xtensa-emulation.md.

    Options: `firmware` (the built binary) or `model_dir` (build it now); the program's stderr goes to
    `log_path`, else to `log_dir`/targets/<name>-<time>-<pid>-<id>.log, else to a temporary file (see
    `log_path` after start()). `port`, `baud` and `flash` are the esp32s3 target's and are ignored.
    """

    name = "pty"

    # A program that dies this fast (bad binary, QEMU refusing its arguments) is reported by start().
    startup_check_s = 0.05
    stop_timeout_s = 1.0
    # After the program exits, the master is closed (so clients fail at once instead of timing out) once
    # this grace period has let them read its last output.
    exit_grace_s = 0.2

    def __init__(
        self,
        firmware: Path | str | None = None,
        *,
        model_dir: Path | str | None = None,
        log_dir: Path | str | None = None,
        log_path: Path | str | None = None,
        port: str | None = None,
        baud: int | None = None,
        flash: bool | None = None,
    ) -> None:
        # port/baud/flash belong to the esp32s3 target; accepted so one set of options fits every target.
        del port, baud, flash
        if firmware is None:
            if model_dir is None:
                raise TargetError(f"the {self.name} target needs firmware= (a built binary) or model_dir=")
            from hil.firmware import build_firmware

            firmware = build_firmware(self.name, Path(model_dir))
        self.firmware = Path(firmware)
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._requested_log_path = Path(log_path) if log_path is not None else None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._fd_lock = threading.Lock()  # the exit watcher and stop() both close the master
        self._run: object | None = None  # identifies the current start(); fd numbers are reused
        self._slave: int | None = None
        self._serial: serial.Serial | None = None
        self._log: IO[bytes] | None = None
        self._url: str | None = None
        self.exit_status: int | None = None  # the program's exit status after stop(); negative: signal
        self._starts = 0  # each start() after the first writes its own log (a restart keeps the dead one's)

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The program and its arguments."""

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def pid(self) -> int | None:
        """The process id of the running program (None before start() and after stop()); a test may kill it
        to check how a session survives a device that dies."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The program's exit status once it has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def _open_log(self) -> IO[bytes]:
        if self._requested_log_path is not None:
            path = self._requested_log_path
        elif self._log_dir is not None:
            # A subdirectory: log_dir itself holds the plugin's one log per test.
            stamp = time.strftime("%Y%m%d-%H%M%S")
            again = f"-restart{self._starts - 1}" if self._starts > 1 else ""
            path = self._log_dir / "targets" / f"{self.name}-{stamp}-{os.getpid()}-{id(self):x}{again}.log"
        else:
            fd, name = tempfile.mkstemp(prefix=f"hil-{self.name}-", suffix=".log")
            os.close(fd)
            path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = path
        return open(path, "wb")  # noqa: SIM115 - kept open for the program's lifetime, closed in stop()

    def start(self) -> str:
        if self._proc is not None and self._proc.poll() is None:
            return self._url or ""
        self.stop()
        if not self.firmware.is_file():
            raise TargetError(f"{self.name}: firmware '{self.firmware}' does not exist")
        cmd = self.command()
        master, slave = os.openpty()
        self._master, self._slave = master, slave
        try:
            tty.setraw(slave)
            slave_path = os.ttyname(slave)
            # Open the client's end before the program runs: opening a tty flushes its pending input.
            # The raw slave fd stays open as well, so the program never sees a hangup (EIO) while clients
            # close and reopen the port.
            self._serial = serial.Serial(slave_path, timeout=POLL_S)
            self._starts += 1
            self._log = self._open_log()
            self._log.write(f"# {' '.join(cmd)}\n".encode())
            self._log.flush()
            self._proc = subprocess.Popen(
                cmd, stdin=master, stdout=master, stderr=self._log, close_fds=True, start_new_session=True
            )
        except (OSError, serial.SerialException) as exc:
            self.stop()
            raise TargetError(f"{self.name}: cannot start {cmd[0]}: {exc}") from exc
        self._url = slave_path
        self._run = run = object()
        threading.Thread(target=self._watch_exit, args=(self._proc, run), daemon=True).start()
        try:
            code = self._proc.wait(timeout=self.startup_check_s)
        except subprocess.TimeoutExpired:
            return slave_path
        self.stop()
        raise TargetError(f"{self.name}: {cmd[0]} stopped at once ({self.describe_exit(code)}); {self.log_tail()}")

    def _watch_exit(self, proc: subprocess.Popen[bytes], run: object) -> None:
        """Closes the master once the program has exited (crashed, or QEMU stopped on a guest exception):
        the slave then reports a hangup and every client's next read fails at once."""
        proc.wait()
        time.sleep(self.exit_grace_s)
        with self._fd_lock:
            if self._run is run and self._master is not None:
                os.close(self._master)
                self._master = None

    def diagnose(self) -> str | None:
        """Why the link may have failed: the program's exit and its log, or None while it runs."""
        proc = self._proc
        code = None if proc is None else proc.poll()
        if code is None:
            return None
        return f"{self.name} program {self.describe_exit(code)}; {self.log_tail()}"

    def open_client(self, *, timeout: float = 5.0, retries: int = 3) -> DeviceClient:
        """A client on the port opened before the program started (a fresh one if that is taken). Its link
        errors say why when the program has died."""
        if self._url is None:
            self.start()
        if self._serial is not None:
            port, self._serial = self._serial, None
            link = Link(port, name=self._url, timeout=timeout, diagnose=self.diagnose)
        else:
            link = open_link(self._url or "", timeout=timeout)
            link.diagnose = self.diagnose
        return DeviceClient(link, retries=retries)

    def __enter__(self) -> PtyProcessTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe_exit(self, code: int) -> str:
        return f"exit status {code}" if code >= 0 else f"killed by signal {-code}"

    def check_alive(self) -> None:
        """Raises TargetError with the end of the log if the program has exited."""
        code = self.returncode
        if self._proc is not None and code is not None:
            raise TargetError(f"{self.name}: program {self.describe_exit(code)}; {self.log_tail()}")

    def log_tail(self, max_chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "no log"
        text = self.log_path.read_bytes()[-max_chars:].decode(errors="replace").strip()
        return f"log {self.log_path}:\n{text}" if text else f"log {self.log_path} is empty"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        # Closing every slave-side fd makes the program's next read fail (EIO), which the firmware treats
        # as end of input: it exits by itself. Signals are the fallback for a program that does not.
        if self._serial is not None:
            self._serial.close()
            self._serial = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None
        if proc is not None:
            try:
                proc.wait(timeout=self.stop_timeout_s / 2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if proc is not None:
            self.exit_status = proc.returncode
        # The master stays open until the program has exited, or its last output would be lost.
        with self._fd_lock:
            self._run = None
            if self._master is not None:
                os.close(self._master)
                self._master = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                if proc is not None:
                    self._log.write(f"# {self.describe_exit(proc.returncode)}\n".encode())
                self._log.close()
            self._log = None
        self._url = None
