"""Flashing a build with esptool: one function for a board and for the emulated ROM loader.

`flash_build(plan, port, settings)` runs `esptool --chip esp32s3 --port PORT --baud B --before .. --after ..
write-flash --skip-flashed <flash settings> <offset file>...` (hil.targets.esp32s3's command line, in a
subprocess with a timeout) and reports per region whether it was written or skipped because the chip's MD5 of
that region already matched. `flash_emulated` does the same into a flash image file through an emulated ROM
loader (hil.rom_loader) started for the occasion. `merge_build` writes the merged image (`esptool merge-bin`).
`Flasher` ties them to a target, as `hil flash` and the plugin's `flasher` fixture use them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from hil.errors import UsageError
from hil.targets.base import TargetError

if TYPE_CHECKING:
    from hil.rom_loader import LoaderStats
    from hil.targets.esp32s3 import FlashPlan

DEFAULT_FLASH_BAUD = 921_600
FLASH_TIMEOUT_S = 180.0
MERGE_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 120.0
BEFORE_CHOICES = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER_CHOICES = ("hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset")
MERGED_NAME = "merged.bin"

RunEsptool = Callable[[list[str], float, str], str]


class FlashError(TargetError):
    """Flashing could not be done; the message says why and what to do."""


def reset_mode(value: str | None, choices: tuple[str, ...], what: str) -> str | None:
    """esptool 5's spelling of a --before/--after value (underscores accepted), or ValueError."""
    if value is None:
        return None
    spelled = value.strip().replace("_", "-")
    if spelled not in choices:
        raise UsageError(f"{what} {value!r}: expected one of {', '.join(choices)}")
    return spelled


@dataclass(frozen=True)
class FlashSettings:
    """How to flash. None: what the build's flasher_args.json says (before/after/stub) or esptool's default
    (compress)."""

    baud: int = DEFAULT_FLASH_BAUD
    before: str | None = None
    after: str | None = None
    reflash: bool = False  # write every region, even one whose MD5 already matches
    erase_all: bool = False
    stub: bool | None = None
    compress: bool | None = None
    timeout_s: float = FLASH_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "before", reset_mode(self.before, BEFORE_CHOICES, "--before"))
        object.__setattr__(self, "after", reset_mode(self.after, AFTER_CHOICES, "--after"))
        if self.baud <= 0:
            raise UsageError(f"flash baud rate {self.baud}: must be positive")


@dataclass(frozen=True)
class RegionResult:
    offset: int
    file: Path
    size: int
    skipped: bool  # its MD5 already matched: nothing sent
    sent_bytes: int | None = None  # on the wire (compressed), when esptool said

    def describe(self) -> str:
        what = "skipped (already in flash, MD5 matched)" if self.skipped else "written"
        sent = f", {self.sent_bytes:,} sent compressed" if self.sent_bytes is not None and not self.skipped else ""
        return f"{self.offset:#07x} {self.file.name} ({self.size:,} bytes): {what}{sent}"


@dataclass(frozen=True)
class FlashResult:
    port: str
    build_dir: Path
    seconds: float
    regions: tuple[RegionResult, ...]
    command: tuple[str, ...]
    output: str  # esptool's
    flash_image: Path | None = None  # emulated: the image file written
    loader_stats: LoaderStats | None = None  # emulated: what the ROM loader saw
    merged_image: Path | None = None
    merged_sha256: str | None = None

    @property
    def skipped(self) -> tuple[RegionResult, ...]:
        return tuple(r for r in self.regions if r.skipped)

    @property
    def written(self) -> tuple[RegionResult, ...]:
        return tuple(r for r in self.regions if not r.skipped)

    @property
    def all_skipped(self) -> bool:
        return bool(self.regions) and not self.written

    def summary(self) -> str:
        if self.all_skipped:
            what = f"nothing written: all {len(self.regions)} regions already in flash (MD5 matched), skipped"
        else:
            what = f"wrote {len(self.written)} region(s) ({sum(r.size for r in self.written):,} bytes)"
            if self.skipped:
                what += f", skipped {len(self.skipped)} already in flash (MD5 matched): " + ", ".join(
                    f"{r.offset:#x} {r.file.name}" for r in self.skipped)
        return f"flashed in {self.seconds:.2f} s: {what}"


def _regions(plan: FlashPlan, output: str) -> tuple[RegionResult, ...]:
    out = []
    for offset, path in plan.files:
        skipped = re.search(rf"at {offset:#010x} already in flash", output) is not None
        wrote = re.search(rf"Wrote \d+ bytes \((\d+) compressed\) at {offset:#010x}", output)
        size = path.stat().st_size if path.is_file() else 0
        out.append(RegionResult(offset, path, size, skipped, int(wrote.group(1)) if wrote else None))
    return tuple(out)


def flash_build(plan: FlashPlan, port: str, settings: FlashSettings | None = None, *,
                run: RunEsptool | None = None) -> FlashResult:
    """Flashes `plan` (a build's flasher_args.json) through esptool on `port` (a board, or an emulated ROM loader's
    URL). Regions whose MD5 already matches are skipped unless settings.reflash. Raises EsptoolError."""
    from hil.targets import esp32s3

    settings = settings or FlashSettings()
    cmd = esp32s3.write_flash_command(plan, port, settings.baud, settings.erase_all,
                                      skip_flashed=not settings.reflash, before=settings.before,
                                      after=settings.after, stub=settings.stub, compress=settings.compress)
    started = time.monotonic()
    output = (run or esp32s3._run_esptool)(cmd, settings.timeout_s, "write-flash")
    seconds = time.monotonic() - started
    return FlashResult(port, plan.build_dir, seconds, _regions(plan, output), tuple(cmd), output)


@contextlib.contextmanager
def image_lock(flash_image: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive use of a flash image file among processes (pytest-xdist workers flashing one image), waiting up to
    `timeout_s`: an flock on <image>.lock."""
    lock_path = flash_image.with_name(flash_image.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise FlashError(f"flash image {flash_image} is in use by another process (pid {holder}) for over "
                                     f"{timeout_s:.0f} s; wait for it, or use another image (--flash-image, "
                                     f"--hil-flash-image)") from None
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def flash_emulated(plan: FlashPlan, flash_image: Path, settings: FlashSettings | None = None, *,
                   transport: str = "socket", lock_timeout_s: float = LOCK_TIMEOUT_S) -> FlashResult:
    """Flashes `plan` into the flash image file through an emulated ESP32-S3 ROM loader started on it (created
    erased when missing; its size is the build's flash size)."""
    from hil.rom_loader import DEFAULT_FLASH_SIZE, FLASH_SIZES, FlashImageError, RomLoader

    flash_image = Path(flash_image).resolve()
    size = FLASH_SIZES.get(plan.flash_size, DEFAULT_FLASH_SIZE)
    with image_lock(flash_image, lock_timeout_s):
        loader = RomLoader(flash_image, size, transport=transport, pace_uart=True)
        try:
            url = loader.start()
        except (FlashImageError, OSError) as exc:
            raise FlashError(f"cannot start the emulated ROM loader on {flash_image}: {exc} (a `hil rom-loader` "
                             f"serving it? then flash through its URL: --port)") from exc
        try:
            result = flash_build(plan, url, settings)
        finally:
            stats = loader.stats()
            loader.stop()
    return replace(result, flash_image=flash_image, loader_stats=stats)


def merge_build(plan: FlashPlan, out: Path, timeout_s: float = MERGE_TIMEOUT_S) -> tuple[Path, str]:
    """`esptool --chip esp32s3 merge-bin -o OUT <flash settings> <offset file>...`: the one file holding what
    flashing `plan` writes, placed at offset 0; returns it and its sha256."""
    from hil.targets.esp32s3 import merge_image

    out = Path(out).resolve()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        merge_image(plan.build_dir, tmp, timeout_s)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, hashlib.sha256(out.read_bytes()).hexdigest()


def default_flash_image(target: str) -> Path:
    """The persistent flash image of an emulated target: <build cache>/flash/<target>-flash.bin."""
    from hil import paths

    return paths.BUILD / "flash" / f"{target}-flash.bin"


def build_dir_of(path: Path) -> Path:
    """The build directory named by `path`: the directory, its flasher_args.json, or a binary inside it."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.name == "flasher_args.json" or (path.is_file() and (path.parent / "flasher_args.json").is_file()):
        return path.parent
    raise FlashError(f"{path} is not a build directory with flasher_args.json (nor a file in one): build the emulated "
                     f"firmware with hil build, or pass an ESP-IDF build directory")


@dataclass
class Flasher:
    """Flashes builds to one target: a board on `port` (esp32s3), or an emulated target's flash image file through
    an emulated ROM loader (host, qemu; through the loader already serving at `port` when given)."""

    target: str
    settings: FlashSettings = field(default_factory=FlashSettings)
    port: str | None = None
    flash_image: Path | None = None  # emulated: default default_flash_image(target)
    model_dir: Path | None = None  # emulated: what to build when no build is given
    build: Path | None = None  # a build directory (or its flasher_args.json, or the emulated binary in it)
    merged: Path | None = None  # where the merged image goes (default <build dir>/merged.bin)

    @property
    def emulated(self) -> bool:
        from hil.targets.registry import EMULATED_TARGETS

        return self.target in EMULATED_TARGETS

    @property
    def image(self) -> Path:
        """The emulated target's flash image file."""
        return Path(self.flash_image or default_flash_image(self.target)).resolve()

    def build_dir(self, build: Path | None = None) -> Path:
        build = build or self.build
        if build is not None:
            return build_dir_of(build)
        if self.emulated:
            from hil import paths
            from hil.firmware import build_firmware

            return build_firmware(self.target, Path(self.model_dir or paths.DEFAULT_MODEL)).parent
        raise FlashError(f"the {self.target} target needs a build to flash: pass its ESP-IDF build directory "
                         f"(--fw, --hil-fw)")

    def flash(self, build: Path | None = None, *, reflash: bool | None = None, erase_all: bool | None = None,
              merge: bool = True) -> FlashResult:
        """Flashes the build (default: the configured one, else the emulated build of the model) and, with `merge`,
        writes its merged image. Returns what was written, what was skipped and how long it took."""
        from hil.targets.esp32s3 import load_flasher_args

        plan = load_flasher_args(self.build_dir(build))
        settings = replace(self.settings, **{k: v for k, v in (("reflash", reflash), ("erase_all", erase_all))
                                             if v is not None})
        if self.emulated and self.port is None:
            result = flash_emulated(plan, self.image, settings)
        elif self.port is not None:
            if not self.emulated:
                from hil.targets.esp32s3 import check_port

                check_port(self.port)  # a missing port or a permission problem, said plainly
            image = self.image if self.emulated and self.flash_image is not None else None
            result = replace(flash_build(plan, self.port, settings), flash_image=image)
        else:
            raise FlashError(f"the {self.target} target needs a serial port to flash (--port, --hil-port)")
        if merge:
            merged, sha = merge_build(plan, self.merged or plan.build_dir / MERGED_NAME)
            result = replace(result, merged_image=merged, merged_sha256=sha)
        return result
