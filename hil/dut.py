"""The device under test: a started target plus a protocol client that has said hello.

Shared by the pytest plugin's session-scoped `dut` fixture and the `hil` command, so a bench run and a CI run
go through the same code: model -> firmware -> target -> link -> client.

A `Dut` can be restarted in place (`restart()`: the emulator started again, or the board reset, then HELLO and
the model check again), so a session outlives a device that crashed or stopped answering. A board's serial port
is locked while a `Dut` has it open (`acquire_port_lock`): two processes (two pytest-xdist workers, two
sessions) never drive one board at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hil.errors import DeviceError
from hil.model.artifacts import DeviceModel
from hil.targets.registry import EMULATED_TARGETS, PROVENANCE, TARGETS

if TYPE_CHECKING:
    from hil.firmware.flashimage.flasher import FlashResult, FlashSettings
    from hil.targets.base import Target
    from hil.transport.client import DeviceClient
    from hil.transport.console import Console
    from hil.transport.faults import Faults
    from hil.transport.frame import DeviceInfo, InferResult, OffloadResult

log = logging.getLogger("hil.dut")

# TARGETS, EMULATED_TARGETS and PROVENANCE (what a figure from each target is, so that no emulated number is ever
# mistaken for a hardware one) come from the one list of targets, hil/targets/registry.py.
__all__ = ["EMULATED_TARGETS", "PROVENANCE", "TARGETS", "Dut", "DutError", "DutOptions", "open_dut"]

# Port locks live here (one file per port); HIL_LOCK_DIR overrides it, e.g. for sessions with different TMPDIRs.
LOCK_DIR_ENV = "HIL_LOCK_DIR"


class DutError(DeviceError, RuntimeError):
    """The device under test could not be started or does not run the expected model."""


class PortBusyError(DutError):
    """Another process (a pytest-xdist worker, another session) has the board's serial port open."""

    def __init__(self, port: str, holder_pid: int | None, holder: str, lock_path: Path) -> None:
        self.port = port
        self.holder_pid = holder_pid
        self.lock_path = lock_path
        who = f"pid {holder_pid}" if holder_pid is not None else "a process whose pid is unknown"
        details = f" ({holder})" if holder else ""
        here = os.environ.get("PYTEST_XDIST_WORKER")
        me = f"this process (pid {os.getpid()}{', pytest-xdist worker ' + here if here else ''})"
        super().__init__(
            f"serial port {port} is in use by {who}{details}, so {me} cannot open it: one board can be driven "
            f"by one process at a time (lock file {lock_path}). With pytest -n (xdist), give each worker its own "
            f"board and port (one bench file per worker) or run without -n; otherwise wait for {who} to finish, "
            f"or stop it, and run again"
        )


@dataclass
class PortLock:
    """An exclusive flock on the lock file of one serial port, held until `release()`."""

    port: str
    path: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> PortLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _port_key(port: str) -> str:
    """One spelling per port: a device path through its symlinks (/dev/serial/by-id/... == /dev/ttyUSB0), a URL
    without its options (socket://host:4000?logging=debug == socket://host:4000)."""
    if "://" in port:
        scheme, _, rest = port.partition("://")
        return f"{scheme.lower()}://{rest.split('?', 1)[0].rstrip('/').lower()}"
    return os.path.realpath(port)


def port_lock_path(port: str, lock_dir: Path | str | None = None) -> Path:
    """The lock file of `port`: <temp dir>/hil-port-locks/<port>-<hash>.lock (or under $HIL_LOCK_DIR)."""
    directory = Path(lock_dir or os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "hil-port-locks")
    key = _port_key(port)
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")[:80]
    return directory / f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


def acquire_port_lock(port: str, lock_dir: Path | str | None = None) -> PortLock:
    """Takes the exclusive, non-blocking lock of `port`, or raises PortBusyError naming the process holding it.

    The lock is an flock on a file named after the port, so it covers every process on this machine (xdist
    workers, separate sessions, the `hil` command) and goes away with its holder, even one that was killed.
    """
    path = port_lock_path(port, lock_dir)
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):  # shared by every user of the machine, like /tmp itself
                os.chmod(path.parent, 0o1777)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            writable = True
        except PermissionError:  # another user's lock file: flock needs only a readable descriptor
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            writable = False
    except OSError as exc:
        raise DutError(
            f"cannot create the lock file {path} for serial port {port}: {exc}; set {LOCK_DIR_ENV} to a writable "
            f"directory"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        pid_text = holder.get("pid", "")
        described = ", ".join(f"{k} {v}" for k, v in holder.items() if k in ("worker", "host", "since", "command"))
        raise PortBusyError(port, int(pid_text) if pid_text.isdigit() else None, described, path) from None
    except OSError as exc:
        os.close(fd)
        raise DutError(f"cannot lock {path} for serial port {port}: {exc}") from exc
    if writable:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        lines = [
            f"pid={os.getpid()}",
            f"host={socket.gethostname()}",
            *([f"worker=pytest-xdist {worker}"] if worker else []),
            f"since={time.strftime('%Y-%m-%d %H:%M:%S')}",
            f"command={' '.join(sys.argv)[:200]}",
            f"port={port}",
        ]
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, ("\n".join(lines) + "\n").encode(), 0)
    return PortLock(port, path, fd)


def _read_holder(fd: int, wait_s: float = 1.0) -> dict[str, str]:
    """What the holder wrote into the lock file. A holder that has just taken the lock writes it a moment later,
    so an empty file is read again for up to `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            text = os.pread(fd, 4096, 0).decode(errors="replace")
        except OSError:
            return {}
        holder = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        if "pid" in holder or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)


@dataclass
class DutOptions:
    target: str = "qemu"
    port: str | None = None  # esp32s3: serial device or URL (socket://, rfc2217://)
    baud: int = 2_000_000
    firmware: Path | None = None  # prebuilt firmware (host/qemu binary, or an ESP-IDF build dir)
    flash: bool = True  # esp32s3 only
    log_dir: Path | None = None
    timeout_s: float = 10.0
    # host/qemu: flash the build through the emulated ROM loader into this image file and boot from it (also
    # when firmware is a build directory; firmware may also be a flash image, booted as it is)
    flash_image: Path | None = None
    flash_settings: FlashSettings | None = None  # esptool's baud, --reflash, --erase-all, --before/--after
    # Link faults injected once the device has said HELLO (hil.transport.faults; hil soak, --hil-faults). One
    # Faults object: its random streams and counts carry on across restarts.
    faults: Faults | None = None


@dataclass
class Dut:
    """A running device with the model loaded. Use as a context manager or call close().

    `restart()` replaces `client` and `info` in place (same object), so session-scoped users keep working.
    """

    target: Target
    client: DeviceClient
    info: DeviceInfo
    model: DeviceModel
    options: DutOptions
    port_lock: PortLock | None = None  # a board's serial port, held until close()
    restarts: int = 0  # how often restart() brought the device back
    flash_result: FlashResult | None = None  # host/qemu: what open_dut flashed into the image it booted from
    _closed: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return self.options.target

    @property
    def provenance(self) -> str:
        return PROVENANCE[self.options.target]

    @property
    def pid(self) -> int | None:
        """The emulator's process id (host, qemu), None for a board or a stopped target."""
        pid = getattr(self.target, "pid", None)
        return pid if isinstance(pid, int) else None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def console(self) -> Console:
        """The device's console text (hil.transport.console.Console), kept across restarts: `take()` returns the
        lines received since its last call, each with its receive time."""
        return self.client.console

    def infer(self, inputs: list[np.ndarray]) -> InferResult:
        return self.client.infer(inputs)

    def infer_offload(self, inputs: list[np.ndarray] | None = None) -> OffloadResult:
        """The AgileNN device step (INFER_OFFLOAD): local logits, compressed codes, cycles per stage."""
        return self.client.infer_offload(inputs)

    def check_alive(self) -> None:
        """Raises TargetError (with the end of the emulator's log) when the emulator's process has exited.
        A board cannot be checked this way: only a request shows whether it still answers."""
        check = getattr(self.target, "check_alive", None)
        if callable(check):
            check()

    def is_alive(self) -> bool:
        from hil.targets.base import TargetError

        try:
            self.check_alive()
        except TargetError:
            return False
        return True

    def diagnosis(self, max_chars: int = 2000) -> str:
        """What the target can tell about a device that died or stopped answering: the emulator's exit status
        and the end of its log, or what is known about a board. Never raises."""
        try:
            diagnose = getattr(self.target, "diagnose", None)
            text = diagnose() if callable(diagnose) else None
            if text:
                return text
            log_tail = getattr(self.target, "log_tail", None)
            if callable(log_tail):
                pid = self.pid
                state = (f"{self.name} program still running (pid {pid})" if pid is not None
                         else f"{self.name} program is not running")
                return f"{state}; {log_tail(max_chars)}"
            lines = [f"the {self.name} board on {self.options.port} stopped answering; its console text (UART0, "
                     f"between frames) is in the test's protocol log"]
            esptool_log = getattr(self.target, "log_path", None)
            if esptool_log:
                lines.append(f"esptool log of the last flash: {esptool_log}")
            return "; ".join(lines)
        except Exception as exc:  # a diagnosis must never hide the failure it explains
            return f"no diagnosis from the {self.name} target ({type(exc).__name__}: {exc})"

    def restart(self) -> None:
        """Brings the device back after it died or stopped answering, in place: the link is closed, the
        emulator started again (a board is reset through RTS, as esptool does; see Esp32s3Target.reset), the
        link reopened, HELLO answered and the model's sha256 checked again. Raises DutError (or the target's
        error) when the device does not come back; the Dut can be restarted again or closed."""
        from hil.targets.esp32s3 import ManualResetRequired

        if self._closed:
            raise DutError(f"the {self.name} device was closed; open a new one with open_dut()")
        started = time.monotonic()
        old_pid = self.pid
        console = self.client.console
        console.disarm()  # the boot text of the restart is expected
        console.settle_crashes()  # the restart answers for every crash seen so far
        with contextlib.suppress(Exception):  # the old link may already be broken; that is why we restart
            self.client.close()
        manual_reset: ManualResetRequired | None = None
        reset = getattr(self.target, "reset", None)
        if callable(reset):  # a board: reset it, nothing to stop on the host side
            try:
                url = reset()
            except ManualResetRequired as exc:  # reconnecting may still help when only the link was confused
                manual_reset = exc
                url = self.target.url or self.options.port or ""
        else:
            self.target.stop()
            url = self.target.start()
        try:
            client, info = _connect(self.target, url, self.options, console)
        except Exception as exc:
            if manual_reset is not None:
                raise DutError(f"{manual_reset}. Reconnecting without a reset did not help: {exc}") from exc
            raise
        self.client, self.info = client, info
        try:
            _check_flashed(self.target, info, self.options)
            _check_model(info, self.model, self.options)
        except DutError:
            with contextlib.suppress(Exception):
                client.close()
            raise
        self.restarts += 1
        new_pid = self.pid
        pids = f", pid {old_pid} -> {new_pid}" if new_pid is not None else ""
        log.warning("restarted the %s device (restart %d%s) in %.2f s", self.name, self.restarts, pids,
                    time.monotonic() - started)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            try:
                self.target.stop()
            finally:
                if self.port_lock is not None:
                    self.port_lock.release()

    def __enter__(self) -> Dut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def firmware_for(model: DeviceModel, options: DutOptions) -> Path | None:
    """The firmware to start: the one given, or a build of the model for an emulated port."""
    if options.firmware is not None:
        if not Path(options.firmware).exists():
            raise DutError(f"firmware '{options.firmware}' does not exist (--hil-fw)")
        return Path(options.firmware)
    if options.target in EMULATED_TARGETS:
        from hil.firmware import build_firmware

        return build_firmware(options.target, model.c_dir)
    return None  # esp32s3 without --hil-fw: the board already runs the firmware; checked by sha256 below


def _connect(target: Target, url: str, options: DutOptions,
             console: Console | None = None) -> tuple[DeviceClient, DeviceInfo]:
    """Opens the link to a started target and says HELLO. Every read and write has options.timeout_s. The
    console (the target's own, else a new one) keeps the device's text across restarts."""
    from hil.crash import symbolizer_for
    from hil.targets.base import PtyProcessTarget
    from hil.transport.client import DeviceClient
    from hil.transport.console import Console
    from hil.transport.link import open_link

    if console is None:
        own = getattr(target, "console", None)
        console = own if isinstance(own, Console) else Console(options.target, symbolizer=symbolizer_for(target))
    if isinstance(target, PtyProcessTarget):
        # The port it opened before the program started: nothing the program printed at once (its boot text) is
        # lost. Its link's errors carry the target's diagnosis.
        client = target.open_client(timeout=options.timeout_s, console=console)
    else:
        link = open_link(url, baudrate=options.baud, timeout=options.timeout_s)
        # A dead emulator fails the next read at once, with the target's own account of why it exited.
        link.diagnose = getattr(target, "diagnose", None)
        client = DeviceClient(link, console=console)
    try:
        info = client.hello()
        if options.faults is not None:  # beneath the link, after a clean bring-up; resets reset `target`
            options.faults.attach(client.link, target)
    except BaseException:
        client.close()
        raise
    return client, info


def _check_model(info: DeviceInfo, model: DeviceModel, options: DutOptions) -> None:
    if info.model_sha256 != model.sha256:
        raise DutError(
            f"the {options.target} device runs model {info.model_name!r} (sha256 {info.model_sha256[:16]}...), "
            f"not {model.name!r} (sha256 {model.sha256[:16]}...); rebuild/flash the firmware for this model "
            f"or pass the matching --hil-model"
        )


def _check_flashed(target: Target, info: DeviceInfo, options: DutOptions) -> None:
    """HELLO against what was flashed: the build id and model sha256 in the flashed app's descriptor."""
    expected = getattr(target, "expected_app", None)
    problem = expected.mismatch(info, options.target) if expected is not None else None
    if problem:
        raise DutError(problem)


def _flash_step(options: DutOptions,
                firmware: Path | None) -> tuple[Path | None, dict[str, object], FlashResult | None]:
    """What to start: (firmware, extra target options, what was flashed). host/qemu boot from a flash image when
    firmware is one, or a build directory, or when options.flash_image is set (after flashing the build into it
    through the emulated ROM loader, unless options.flash is False); a board gets the flash settings."""
    if options.target not in EMULATED_TARGETS:
        settings = options.flash_settings
        return firmware, ({"flash_settings": settings} if settings is not None and options.target == "esp32s3"
                          else {}), None
    from hil.targets.flash_boot import is_flash_image

    if firmware is not None and is_flash_image(firmware):
        return None, {"flash_image": firmware}, None  # boot what it holds
    is_build = firmware is not None and (firmware.is_dir() or firmware.name == "flasher_args.json")
    if not is_build and options.flash_image is None:
        return firmware, {}, None  # the firmware binary, run as it is
    from hil.firmware.flashimage.flasher import Flasher, FlashSettings, default_flash_image

    image = Path(options.flash_image or default_flash_image(options.target))
    result = None
    if options.flash:
        flasher = Flasher(options.target, options.flash_settings or FlashSettings(), flash_image=image, build=firmware)
        result = flasher.flash(merge=False)
        log.info("%s: %s", image, result.summary())
    return None, {"flash_image": image}, result


def _check_flashed_model(target: Target, model: DeviceModel, options: DutOptions) -> None:
    """Before booting: the flashed app must hold the session's model."""
    expected = getattr(target, "expected_app", None)
    if expected is not None and expected.model_sha256 is not None and expected.model_sha256 != model.sha256:
        raise DutError(
            f"{expected.source} holds model {expected.model_name!r} (sha256 {expected.model_sha256}), but the session "
            f"expects model {model.name!r} (sha256 {model.sha256}): flash the {options.target} build of this model "
            f"(hil flash --target {options.target} --model ...; in pytest: --hil-flash-image without --hil-no-flash), "
            f"or pass the matching --hil-model"
        )


def open_dut(model: DeviceModel, options: DutOptions) -> Dut:
    """Builds (if needed) and starts the target, connects and checks that the device runs `model`.

    A board's serial port is locked first (PortBusyError when another process has it) and stays locked until
    the Dut is closed."""
    from hil.targets import get_target

    if options.target not in TARGETS:
        raise DutError(f"unknown target '{options.target}'; choose one of {', '.join(TARGETS)}")
    lock = acquire_port_lock(options.port) if options.target not in EMULATED_TARGETS and options.port else None
    try:
        firmware, boot_options, flashed = _flash_step(options, firmware_for(model, options))
        target = get_target(
            options.target, firmware=firmware, port=options.port, baud=options.baud,
            flash=options.flash, log_dir=options.log_dir, **boot_options,
        )
        _check_flashed_model(target, model, options)
        url = target.start()
        try:
            client, info = _connect(target, url, options)
        except BaseException:
            target.stop()
            raise
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    dut = Dut(target, client, info, model, options, port_lock=lock, flash_result=flashed)
    try:
        _check_flashed(target, info, options)
        _check_model(info, model, options)
    except DutError:
        dut.close()
        raise
    log.info("connected to %s: %s", options.target, info)
    return dut
