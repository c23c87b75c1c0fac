"""What every target (host, qemu, esp32s3) offers, and the pseudo-terminal launcher the emulated ones share.

A target is started, gives a URL that pyserial opens (a device path, `socket://`, `rfc2217://`), and is
stopped; as a context manager it does both. `open_client(target)` connects a DeviceClient to any target.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import serial

from hil.crash import Symbolizer, symbolizer_for
from hil.errors import DeviceError
from hil.transport.client import DeviceClient
from hil.transport.console import Console
from hil.transport.link import POLL_S, Link, open_link

# Exit status of a crash-test firmware after its panic report (device_fw/core/include/hil_crash_test.h).
PANIC_EXIT_STATUS = 62


class TargetError(DeviceError, RuntimeError):
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
    """A client on any target's link, starting the target if needed. Its console decodes backtraces with the
    target's symbolizer (hil.crash.symbolizer_for)."""
    url = target.url or target.start()
    baudrate = int(getattr(target, "baud", None) or getattr(target, "baudrate", None) or 115200)
    console = getattr(target, "console", None)
    if not isinstance(console, Console):
        console = Console(target.name, symbolizer=symbolizer_for(target))
    return DeviceClient(open_link(url, baudrate=baudrate, timeout=timeout), retries=retries, console=console)


# ---- child processes that end with their parent ------------------------------------------------------------

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SPAWN_TIMEOUT_S = 30.0


def _libc_function(name: str) -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_function("prctl")
_C_SIGNAL = _libc_function("signal")
if _C_SIGNAL is not None:
    _C_SIGNAL.restype = ctypes.c_void_p
    _C_SIGNAL.argtypes = [ctypes.c_int, ctypes.c_void_p]


def _child_setup(parent_pid: int) -> None:
    """Runs in the child between fork and exec (preexec_fn): only prepared C calls, no imports or locks.

    * PR_SET_PDEATHSIG=SIGKILL: the child is killed when the thread that forked it ends, which for the spawner
      thread (below) is when this process ends, however it ends (SIGKILL included); checked against a parent
      that died before the call;
    * an empty signal mask and every signal at its default action: a parent started with SIGTERM or SIGINT
      ignored (nohup, a background job of a non-interactive shell), or a thread that blocks signals, must not
      pass that on, or the emulator would ignore the SIGTERM of stop()."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(128 + signal.SIGKILL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if _C_SIGNAL is not None:
        for signum in range(1, signal.NSIG):
            if signum not in (signal.SIGKILL, signal.SIGSTOP):
                _C_SIGNAL(signum, None)  # SIG_DFL; an invalid number (glibc's reserved 32, 33) is refused, harmless


class _Spawner:
    """Starts child processes from one thread that lives as long as the process: PR_SET_PDEATHSIG fires when the
    thread that forked the child exits, not the process, so forking from a short-lived thread (a test's worker
    thread, a timeout handler) would kill the child early."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], object], list[object], threading.Event]] | None = None
        self._pid = 0

    def _loop(self, jobs: queue.SimpleQueue[tuple[Callable[[], object], list[object], threading.Event]]) -> None:
        while True:
            fn, box, done = jobs.get()
            try:
                box.append(fn())
            except BaseException as exc:  # handed to the caller
                box.append(exc)
            done.set()

    def run(self, fn: Callable[[], object]) -> object:
        with self._lock:
            if self._jobs is None or self._pid != os.getpid():  # first use, or a forked copy of this process
                self._jobs, self._pid = queue.SimpleQueue(), os.getpid()
                threading.Thread(target=self._loop, args=(self._jobs,), name="hil-spawner", daemon=True).start()
            jobs = self._jobs
        box: list[object] = []
        done = threading.Event()
        jobs.put((fn, box, done))
        if not done.wait(SPAWN_TIMEOUT_S):
            raise TargetError(f"starting a child process took over {SPAWN_TIMEOUT_S:g} s")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


_SPAWNER = _Spawner()


def spawn(cmd: list[str], **popen_options: object) -> subprocess.Popen[bytes]:
    """subprocess.Popen(cmd, **popen_options) for an emulator or firmware: the child ends with this process,
    whatever kills it (Linux: PR_SET_PDEATHSIG=SIGKILL), and starts with default signal handling."""
    parent = os.getpid()
    proc = _SPAWNER.run(lambda: subprocess.Popen(cmd, preexec_fn=lambda: _child_setup(parent), **popen_options))
    assert isinstance(proc, subprocess.Popen)
    return proc


class PtyProcessTarget(abc.ABC):
    """Runs a program whose stdin/stdout are the master side of a pseudo-terminal; the client opens the slave
    side like a serial port. Recipe and pitfalls: /work/shared/docs/xtensa-emulation.md.

    Options: `firmware` (the built binary) or `model_dir` (build it now); the program's stderr goes to
    `log_path`, else to `log_dir`/targets/<name>-<time>-<pid>-<id>.log, else to a temporary file (see
    `log_path` after start()). `port`, `baud` and `flash` are the esp32s3 target's and are ignored.
    """

    name = "pty"
    # Decodes the firmware's backtraces (symbolizer()); the hint says how to install it.
    addr2line = "addr2line"
    addr2line_hint = "install GNU binutils (Debian: sudo apt-get install binutils)"

    # A program that dies this fast (bad binary, QEMU refusing its arguments) is reported by start().
    startup_check_s = 0.05
    # stop(): the program gets this long to end by itself once its input is closed, then SIGTERM and
    # stop_timeout_s to honour it, then SIGKILL.
    stop_grace_s = 0.2
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
        # The device's console text (outside frames), kept across restarts; clients from open_client() feed it.
        self.console = Console(self.name, symbolizer=self.symbolizer())

    def symbolizer(self) -> Symbolizer:
        """addr2line for this target's firmware ELF (the crash-test build has debug info and absolute
        addresses)."""
        return Symbolizer(self.firmware, self.addr2line, self.addr2line_hint)

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
            self._proc = spawn(
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

    def open_client(self, *, timeout: float = 5.0, retries: int = 3, console: Console | None = None) -> DeviceClient:
        """A client on the port opened before the program started (a fresh one if that is taken), feeding the
        target's console (or `console`). Its link errors say why when the program has died."""
        if self._url is None:
            self.start()
        if self._serial is not None:
            port, self._serial = self._serial, None
            link = Link(port, name=self._url, timeout=timeout, diagnose=self.diagnose)
        else:
            link = open_link(self._url or "", timeout=timeout)
            link.diagnose = self.diagnose
        return DeviceClient(link, retries=retries, console=console if console is not None else self.console)

    def __enter__(self) -> PtyProcessTarget:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe_exit(self, code: int) -> str:
        if code == PANIC_EXIT_STATUS:
            return (f"exit status {code}: the crash-test firmware stopped after its panic report (see the "
                    f"device's console)")
        if code < 0:
            try:
                name = f" ({signal.Signals(-code).name})"
            except ValueError:
                name = ""
            return f"killed by signal {-code}{name}"
        return f"exit status {code}"

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
                proc.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):  # only a process stuck in the kernel
                        proc.wait(timeout=5.0)
        if proc is not None:
            self.exit_status = proc.returncode  # None only for a process that even SIGKILL did not end in 5 s
        # The master stays open until the program has exited, or its last output would be lost.
        with self._fd_lock:
            self._run = None
            if self._master is not None:
                os.close(self._master)
                self._master = None
        if self._log is not None:
            with contextlib.suppress(OSError):
                if proc is not None and proc.returncode is not None:
                    self._log.write(f"# {self.describe_exit(proc.returncode)}\n".encode())
                self._log.close()
            self._log = None
        self._url = None
