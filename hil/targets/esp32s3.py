"""The ESP32-S3 bench target: flashes an ESP-IDF build with esptool, resets the board and hands out its UART.

The firmware is built by ESP-IDF (device_fw/ports/esp32s3, see its README), not by `hil`: this module only
reads the build's `flasher_args.json`, the file `idf.py flash` itself uses, so offsets, flash mode and chip
always match the build.

Flashing is skipped when the board already holds the build: esptool's `write-flash --skip-flashed` has the
chip compute the MD5 of each region (bootloader, partition table, app) and writes only the regions that
differ. That compares the actual bytes of every region, not just the app's embedded ELF sha256, and takes one
esptool call.

esptool runs as a subprocess (`python -m esptool`) with a timeout: its Python API has no overall timeout, and
a stuck USB bridge must not hang a test session.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import serial
import serial.tools.list_ports

from hil.targets.base import TargetError

if TYPE_CHECKING:
    from hil.firmware.flashimage.app import ExpectedApp
    from hil.firmware.flashimage.flasher import FlashResult, FlashSettings

log = logging.getLogger("hil.targets.esp32s3")

DEFAULT_BAUD = 2_000_000  # CONFIG_HIL_UART_BAUD in device_fw/ports/esp32s3/main/Kconfig.projbuild
ESPTOOL_BAUD = 921_600
CHIP = "esp32s3"

# Time from releasing EN to the firmware reading UART0: ROM, second-stage bootloader (which checks the app
# image) and app start take a few hundred milliseconds. Generous, because a request sent before the UART
# driver is up is lost and only recovered by the host's resend timeout.
BOOT_WAIT_S = 1.0
# Writing a 4 MB flash at 921600 baud (compressed) takes well under a minute; --erase-all adds ~20 s.
FLASH_TIMEOUT_S = 180.0
MERGE_TIMEOUT_S = 60.0
RESET_PULSE_S = 0.1  # EN held low; esptool's HardReset uses the same 100 ms


class Esp32s3Error(TargetError):
    """Something about the ESP32-S3 bench is wrong; the message says what and how to fix it."""


class PortNotFoundError(Esp32s3Error):
    pass


class PortPermissionError(Esp32s3Error):
    pass


class FlasherArgsError(Esp32s3Error):
    """The ESP-IDF build directory is missing, incomplete or for another chip."""


class EsptoolError(Esp32s3Error):
    """esptool failed or timed out."""


class ManualResetRequired(Esp32s3Error):
    """The board cannot be reset from the host (a raw TCP bridge carries no DTR/RTS lines)."""


@dataclass(frozen=True)
class FlashPlan:
    """What `idf.py flash` would write, read from build/flasher_args.json."""

    build_dir: Path
    chip: str
    files: tuple[tuple[int, Path], ...]  # (flash offset, absolute path), sorted by offset
    flash_mode: str
    flash_freq: str
    flash_size: str
    before: str  # esptool 5 spelling: default-reset
    after: str  # hard-reset
    stub: bool

    def flash_options(self, *, for_merge: bool = False) -> list[str]:
        # merge-bin cannot detect the flash size (no chip attached): "keep" leaves the bootloader as built.
        size = "keep" if for_merge and self.flash_size == "detect" else self.flash_size
        return ["--flash-mode", self.flash_mode, "--flash-freq", self.flash_freq, "--flash-size", size]

    def addr_file_args(self) -> list[str]:
        args: list[str] = []
        for offset, path in self.files:
            args += [f"{offset:#x}", str(path)]
        return args


def _esptool_spelling(value: str) -> str:
    # ESP-IDF v5 writes esptool 4 spellings ("hard_reset", "--flash_mode"); esptool 5 wants dashes and warns
    # about the old ones.
    return value.replace("_", "-")


def load_flasher_args(build_dir: Path | str, *, require_files: bool = True) -> FlashPlan:
    """Parses `<build_dir>/flasher_args.json` as written by ESP-IDF v5 (`idf.py build`)."""
    build_dir = Path(build_dir).resolve()
    path = build_dir / "flasher_args.json"
    if not path.is_file():
        raise FlasherArgsError(
            f"{path} not found: build the firmware first (cd device_fw/ports/esp32s3 && idf.py set-target "
            f"esp32s3 && idf.py -DHIL_MODEL_DIR=<model dir> build) and pass its build directory with "
            f"--hil-fw (pytest) or --fw (hil)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FlasherArgsError(f"{path}: not readable JSON ({e}); rerun idf.py build") from e
    if not isinstance(data, dict):
        raise FlasherArgsError(f"{path}: expected a JSON object")

    flash_files = data.get("flash_files")
    if not isinstance(flash_files, dict) or not flash_files:
        raise FlasherArgsError(f"{path}: 'flash_files' is missing or empty; rerun idf.py build")
    files: list[tuple[int, Path]] = []
    for offset_text, rel in flash_files.items():
        try:
            offset = int(str(offset_text), 0)
        except ValueError:
            raise FlasherArgsError(f"{path}: flash_files offset {offset_text!r} is not a number") from None
        if not isinstance(rel, str) or not rel:
            raise FlasherArgsError(f"{path}: flash_files[{offset_text!r}] is not a file name")
        file = (build_dir / rel).resolve()
        if require_files and not file.is_file():
            raise FlasherArgsError(
                f"{path} names {rel} at {offset:#x}, but {file} is missing: the build is incomplete, "
                f"rerun idf.py build"
            )
        files.append((offset, file))
    files.sort()

    settings = data.get("flash_settings")
    if not isinstance(settings, dict):
        settings = _settings_from_write_flash_args(data.get("write_flash_args"))
    extra = data.get("extra_esptool_args")
    if not isinstance(extra, dict):
        extra = {}
    chip = str(extra.get("chip", CHIP))
    if chip != CHIP:
        raise FlasherArgsError(
            f"{path}: the build is for {chip}, not {CHIP}; run idf.py set-target {CHIP} and build again"
        )
    return FlashPlan(
        build_dir=build_dir,
        chip=chip,
        files=tuple(files),
        flash_mode=str(settings.get("flash_mode", "keep")),
        flash_freq=str(settings.get("flash_freq", "keep")),
        flash_size=str(settings.get("flash_size", "keep")),
        before=_esptool_spelling(str(extra.get("before", "default_reset"))),
        after=_esptool_spelling(str(extra.get("after", "hard_reset"))),
        stub=bool(extra.get("stub", True)),
    )


def _settings_from_write_flash_args(args: object) -> dict[str, str]:
    # Older files carry only ["--flash_mode", "dio", "--flash_size", "4MB", ...].
    out: dict[str, str] = {}
    if isinstance(args, list):
        for key, value in zip(args[::2], args[1::2], strict=False):
            out[str(key).lstrip("-").replace("-", "_")] = str(value)
    return out


def esptool_base(port: str | None = None, baud: int = ESPTOOL_BAUD, chip: str = CHIP) -> list[str]:
    cmd = [sys.executable, "-m", "esptool", "--chip", chip]
    if port is not None:
        cmd += ["-p", port, "-b", str(baud)]
    return cmd


def write_flash_command(
    plan: FlashPlan,
    port: str,
    baud: int = ESPTOOL_BAUD,
    erase_all: bool = False,
    *,
    skip_flashed: bool = True,
    before: str | None = None,
    after: str | None = None,
    stub: bool | None = None,
    compress: bool | None = None,
) -> list[str]:
    """The esptool command line that flashes `plan` (and skips regions already on the chip unless
    skip_flashed=False). before/after/stub default to the build's; compress to esptool's (compressed)."""
    cmd = esptool_base(port, baud, plan.chip) + ["--before", before or plan.before, "--after", after or plan.after]
    if not (plan.stub if stub is None else stub):
        cmd.append("--no-stub")
    cmd.append("write-flash")
    # --skip-flashed and --erase-all exclude each other (an erased chip holds nothing to compare against).
    if erase_all:
        cmd.append("--erase-all")
    elif skip_flashed:
        cmd.append("--skip-flashed")
    if compress is not None:
        cmd.append("--compress" if compress else "--no-compress")
    return cmd + plan.flash_options() + plan.addr_file_args()


def merge_image(build_dir: Path | str, out_file: Path | str, timeout_s: float = MERGE_TIMEOUT_S) -> Path:
    """Merges the build's images into one file that is flashed at offset 0, to archive with a run's results.

    `esptool merge-bin` places each file at its offset and fills the gaps with 0xFF; it needs no board.
    """
    plan = load_flasher_args(build_dir)
    out = Path(out_file).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = esptool_base(chip=plan.chip) + ["merge-bin", "-o", str(out)]
    cmd += plan.flash_options(for_merge=True) + plan.addr_file_args()
    _run_esptool(cmd, timeout_s, "merge-bin")
    return out


def _run_esptool(cmd: list[str], timeout_s: float, what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        tail = _tail(e.stdout or b"")  # bytes here even with text=True
        raise EsptoolError(f"esptool {what} did not finish within {timeout_s:.0f} s\n{tail}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        hint = ""
        if "Failed to connect" in output or "No serial data received" in output:
            hint = (
                "\nhint: the chip did not enter its bootloader. Check that the port is the UART bridge "
                "(not the native USB port), or hold BOOT while pressing RESET and try again."
            )
        raise EsptoolError(f"esptool {what} failed (exit {proc.returncode}):\n{_tail(output)}{hint}")
    return output


def _tail(text: str | bytes, lines: int = 20) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(text.strip().splitlines()[-lines:])


def _is_url(port: str) -> bool:
    return "://" in port  # rfc2217://, socket://: remote ports that cannot be checked locally


def available_ports() -> list[str]:
    return [f"{p.device} ({p.description})" for p in serial.tools.list_ports.comports()]


def check_port(port: str) -> None:
    """Raises a clear error when a local serial port is missing or not accessible."""
    if _is_url(port):
        return
    listed = {p.device for p in serial.tools.list_ports.comports()}
    if not os.path.exists(port) and port not in listed:
        ports = available_ports()
        found = "\n  ".join(ports) if ports else "(none: is the board plugged in?)"
        raise PortNotFoundError(f"serial port {port} does not exist. Available ports:\n  {found}")
    if os.path.exists(port) and not os.access(port, os.R_OK | os.W_OK):
        raise PortPermissionError(
            f"no permission to open {port}: add yourself to the group that owns it "
            f"(Debian/Ubuntu: sudo usermod -aG dialout $USER; Arch: uucp), then log in again"
        )


def reset_board(port: str, pulse_s: float = RESET_PULSE_S) -> None:
    """Hard reset through the USB bridge's RTS line, as esptool's HardReset does.

    On Espressif dev boards RTS drives EN and DTR drives GPIO0 through two transistors; RTS asserted with DTR
    released pulls EN low, and releasing RTS boots the app normally (GPIO0 stays high).
    """
    ser = serial.serial_for_url(port, do_not_open=True)
    # Both lines released before opening, so opening the port neither resets nor selects download mode.
    ser.dtr = False
    ser.rts = False
    try:
        ser.open()
    except serial.SerialException as e:
        if e.errno == errno.EACCES:
            raise PortPermissionError(
                f"no permission to open {port}: sudo usermod -aG dialout $USER, then log in again"
            ) from e
        raise Esp32s3Error(f"cannot open {port}: {e}") from e
    try:
        ser.rts = True  # EN low
        ser.dtr = ser.dtr  # Windows' usbser.sys applies RTS only together with DTR (esptool does the same)
        time.sleep(pulse_s)
        ser.rts = False
        ser.dtr = ser.dtr
    finally:
        ser.close()


class Esp32s3Target:
    """A real ESP32-S3 on a serial port. `start()` flashes (when a build is given), resets the board and
    returns the port URL; the client then opens it at `baudrate`.

    Without a build directory nothing is flashed: the board runs whatever it holds, and the caller checks the
    model sha256 that HELLO reports. `firmware=` is the same thing as `build_dir=` under the name the other
    targets use (hil.targets.get_target passes --hil-fw as firmware=).
    """

    name = "esp32s3"

    def __init__(
        self,
        port: str,
        baud: int = DEFAULT_BAUD,
        build_dir: Path | str | None = None,
        flash: bool = True,
        esptool_baud: int = ESPTOOL_BAUD,
        erase_all: bool = False,
        *,
        firmware: Path | str | None = None,
        log_dir: Path | str | None = None,
        model_dir: Path | str | None = None,
        boot_wait_s: float = BOOT_WAIT_S,
        flash_timeout_s: float = FLASH_TIMEOUT_S,
        flash_settings: FlashSettings | None = None,
    ) -> None:
        del model_dir  # the model is compiled into the ESP-IDF build; accepted so one set of options fits all
        if not port:
            raise Esp32s3Error(
                "the esp32s3 target needs a serial port (e.g. /dev/ttyUSB0 or rfc2217://host:4000)"
            )
        if build_dir is not None and firmware is not None and Path(build_dir) != Path(firmware):
            raise Esp32s3Error(f"build_dir={build_dir} and firmware={firmware} disagree; pass one of them")
        fw = build_dir if build_dir is not None else firmware
        self.build_dir = _build_dir_of(Path(fw)) if fw is not None else None
        self.port = port
        self.baud = baud
        self.flash = flash
        self.esptool_baud = esptool_baud
        self.erase_all = erase_all
        self.boot_wait_s = boot_wait_s
        self.flash_timeout_s = flash_timeout_s
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.log_path: Path | None = None  # esptool's output of the last flash, when log_dir is given
        self.esptool_log = ""
        self._url: str | None = None
        # How to flash (--hil-flash-baud, --hil-reflash, --hil-erase-all, --hil-before/--hil-after); esptool_baud,
        # erase_all and flash_timeout_s say the same when no settings are given.
        from hil.firmware.flashimage.flasher import FlashSettings

        self.flash_settings = flash_settings or FlashSettings(baud=esptool_baud, erase_all=erase_all,
                                                              timeout_s=flash_timeout_s)
        self.esptool_baud, self.erase_all = self.flash_settings.baud, self.flash_settings.erase_all
        self.flash_result: FlashResult | None = None  # what the last start() wrote and skipped
        self._merged: Path | None = None

    @property
    def url(self) -> str | None:
        return self._url

    @property
    def baudrate(self) -> int:
        return self.baud

    @property
    def will_flash(self) -> bool:
        return self.flash and self.build_dir is not None

    def start(self) -> str:
        check_port(self.port)
        if self.will_flash:
            assert self.build_dir is not None
            from hil.firmware.flashimage.flasher import flash_build

            plan = load_flasher_args(self.build_dir)
            # esptool resets into the ROM bootloader, writes the regions that differ and hard-resets into the
            # app, so the board starts fresh whether or not anything was written.
            self.flash_result = flash_build(plan, self.port, self.flash_settings, run=_run_esptool)
            self.esptool_log = self.flash_result.output
            self._merged = None
            self._save_log(list(self.flash_result.command))
            if (self.flash_settings.after or plan.after) != "hard-reset":
                reset_board(self.port)
        else:
            reset_board(self.port)
        # The ROM's boot text follows at 115200 baud; the client reads it as noise and skips it while
        # searching for the frame magic, so only the time to boot matters here.
        time.sleep(self.boot_wait_s)
        self._url = self.port
        return self._url

    @property
    def expected_app(self) -> ExpectedApp | None:
        """What HELLO must report after start() flashed the build (from its app image's descriptor), or None."""
        if self.flash_result is None or self.build_dir is None:
            return None
        from hil.firmware.flashimage.app import expected_app_of_build

        return expected_app_of_build(self.build_dir)

    @property
    def merged_image(self) -> Path | None:
        """The merged image of the build start() flashed (esptool merge-bin, made on first use, in log_dir or the
        build directory), for the run's record; None when nothing was flashed or merging failed."""
        if self.flash_result is None or self.build_dir is None:
            return None
        if self._merged is None:
            from hil.firmware.flashimage.flasher import MERGED_NAME, merge_build

            try:
                self._merged, _sha = merge_build(load_flasher_args(self.build_dir),
                                                 (self.log_dir or self.build_dir) / MERGED_NAME)
            except (Esp32s3Error, OSError) as exc:
                log.warning("no merged image of %s: %s", self.build_dir, exc)
                return None
        return self._merged

    def reset(self) -> str:
        """Hard-resets the board (EN pulsed through RTS, as esptool does) without flashing, waits for it to
        boot and returns the port URL: what a session does after the board stopped answering.

        Raises ManualResetRequired for a `socket://` port: a raw TCP bridge carries no modem lines, so only
        a person (or an rfc2217:// bridge) can reset the board.
        """
        if self.port.lower().startswith("socket://"):
            raise ManualResetRequired(
                f"cannot reset the ESP32-S3 behind {self.port} from the host: a raw TCP serial bridge "
                f"(socket://) carries no DTR/RTS lines. Press the board's RESET button (or power-cycle it), or "
                f"export the port over RFC 2217 (rfc2217://host:port, e.g. ser2net with telnet serial control) "
                f"so that hil can reset it"
            )
        check_port(self.port)
        self._url = None
        reset_board(self.port)
        time.sleep(self.boot_wait_s)
        self._url = self.port
        return self._url

    def stop(self) -> None:
        # Nothing runs on the host side; the board keeps running until the next reset.
        self._url = None

    def __enter__(self) -> Esp32s3Target:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _save_log(self, cmd: list[str]) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / f"esptool-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        self.log_path.write_text(f"# {' '.join(cmd)}\n{self.esptool_log}")


def _build_dir_of(path: Path) -> Path:
    # --hil-fw may name the build directory or its flasher_args.json.
    return path.parent if path.name == "flasher_args.json" else path
