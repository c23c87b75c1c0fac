"""Builds the firmware for the emulated ports (host, qemu) with device_fw/Makefile, cached by content.

The output directory is named after a hash of everything that goes into the binary (sources, headers,
Makefile, model C, port, compiler, firmware version), so an up-to-date build is found without running make, and
a build directory is never rewritten under a process that is running its binary (other test sessions may be).

The sources are device_fw/ of a checkout or the copy an installed wheel carries (hil.paths); make only reads
them, and writes under the build root (hil.paths.BUILD, a user cache directory when installed).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hil import paths
from hil.errors import DeviceError, UsageError

PORTS = ("host", "qemu")
ARTIFACTS = {"host": "hil_fw", "qemu": "hil_fw.elf"}
COMPILERS = {"host": "cc", "qemu": "xtensa-lx106-elf-gcc"}
QEMU_BINARY = "qemu-system-xtensa"
PICOLIBC_SPECS = Path("/usr/lib/xtensa-lx106-elf/picolibc.specs")
APT_INSTALL_QEMU = (
    "sudo apt-get install -y --no-install-recommends "
    "qemu-system-misc gcc-xtensa-lx106 binutils-xtensa-lx106 picolibc-xtensa-lx106-elf make"
)
APT_INSTALL_HOST = "sudo apt-get install -y --no-install-recommends gcc make libc6-dev"
BUILD_TIMEOUT_S = 300


class FirmwareBuildError(DeviceError, RuntimeError):
    """make failed, or the tools to run it are missing; the message carries the compiler's output."""


@dataclass(frozen=True)
class ToolchainStatus:
    port: str
    missing: list[str] = field(default_factory=list)
    install_hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.missing

    def __str__(self) -> str:
        if self.ok:
            return f"{self.port}: toolchain complete"
        return f"{self.port}: missing {', '.join(self.missing)}; install with: {self.install_hint}"


def toolchain_status(port: str = "qemu") -> ToolchainStatus:
    """What is missing to build and run `port` (host: cc, make; qemu: also the lx106 gcc, picolibc, QEMU)."""
    _check_port(port)
    missing = [tool for tool in ("make", COMPILERS[port]) if shutil.which(tool) is None]
    if port == "qemu":
        if not PICOLIBC_SPECS.is_file():
            missing.append(f"picolibc for xtensa-lx106-elf ({PICOLIBC_SPECS})")
        if shutil.which(QEMU_BINARY) is None:
            missing.append(QEMU_BINARY)
    return ToolchainStatus(port, missing, APT_INSTALL_QEMU if port == "qemu" else APT_INSTALL_HOST)


def _check_port(port: str) -> None:
    if port not in PORTS:
        raise UsageError(f"no make build for port '{port}': choose {' or '.join(PORTS)} (esp32s3 uses ESP-IDF)")


def _fw_version(device_fw: Path) -> str | None:
    """The firmware version to pass to make: None in a checkout, where the Makefile reads it from
    ../pyproject.toml; elsewhere (an installed wheel) the installed hil's version."""
    if (device_fw.parent / "pyproject.toml").is_file():
        return None
    try:
        return importlib.metadata.version("hil")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # what the Makefile says without pyproject.toml


def _source_files(device_fw: Path, port: str, model_dir: Path, kernels: bool, crash_test: bool = False) -> list[Path]:
    core = device_fw / "core"
    groups: Iterable[Iterable[Path]] = (
        [device_fw / "Makefile", device_fw.parent / "pyproject.toml"],  # the Makefile reads the version there
        (core / "include").glob("*.h"),
        (core / "src").glob("*.c"),
        (core / "kernels").glob("*.[ch]") if kernels else (core / "kernels").glob("*.h"),
        (core / "crash").glob("*.c") if crash_test else (),
        (device_fw / "ports" / port).glob("*"),
        model_dir.glob("*.[ch]"),
    )
    return sorted({p for group in groups for p in group if p.is_file()})


def _digest(device_fw: Path, port: str, model_dir: Path, kernels: bool, crash_test: bool = False) -> str:
    h = hashlib.sha256()
    h.update(f"port={port} kernels={kernels}\n".encode())
    if crash_test:  # only then, so the default builds keep their cache entries
        h.update(b"crash_test=1\n")
    version = _fw_version(device_fw)
    if version is not None:  # otherwise pyproject.toml, which holds it, is one of the hashed files
        h.update(f"fw_version={version}\n".encode())
    compiler = shutil.which(COMPILERS[port])
    if compiler:  # a compiler upgrade must not reuse old objects; its size and mtime are a cheap proxy
        st = os.stat(compiler)
        h.update(f"cc={os.path.realpath(compiler)} {st.st_size} {st.st_mtime_ns}\n".encode())
    for path in _source_files(device_fw, port, model_dir, kernels, crash_test):
        # Model files by name only, so the same model in another directory hits the same cache entry.
        name = path.name if path.is_relative_to(model_dir) else str(path.relative_to(device_fw.parent))
        h.update(f"{name}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def build_firmware(
    port: str,
    model_dir: Path,
    build_root: Path | None = None,
    *,
    kernels: bool = True,
    device_fw: Path | None = None,
    crash_test: bool = False,
) -> Path:
    """Builds device_fw for `port` with the model in `model_dir` (its hil_model.c); returns the binary.

    A no-op (no make run) when a build of identical inputs exists. `kernels=False` leaves out
    core/kernels/*.c, for hand-written models that do not use them. `crash_test=True` builds the crash-test
    variant (make HIL_CRASH_TEST=1: a DEBUG request that prints console text or crashes the firmware on purpose,
    ESP-IDF-style panic output; core/include/hil_crash_test.h), cached apart from the default build
    (`<port>-<model>-crashtest-<hash>`); it is for testing crash detection, never for measurements.
    """
    _check_port(port)
    model_dir = Path(model_dir).resolve()
    device_fw = Path(device_fw or paths.DEVICE_FW).resolve()
    build_root = Path(build_root or paths.BUILD / "firmware").resolve()
    if not (model_dir / "hil_model.c").is_file():
        raise FirmwareBuildError(f"model directory '{model_dir}' has no hil_model.c")
    status = toolchain_status(port)
    if not status.ok:
        raise FirmwareBuildError(f"cannot build the {port} firmware: {status}")

    digest = _digest(device_fw, port, model_dir, kernels, crash_test)
    variant = "-crashtest" if crash_test else ""
    out_dir = build_root / f"{port}-{model_dir.name}{variant}-{digest[:16]}"
    artifact = out_dir / ARTIFACTS[port]
    if artifact.is_file():
        return _with_flash_files(artifact, port, model_dir)

    build_root.mkdir(parents=True, exist_ok=True)
    # Several test sessions may build the same thing at once; one builds, the others wait and reuse it.
    with open(build_root / f".{out_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if artifact.is_file():
            return _with_flash_files(artifact, port, model_dir)
        # Build next to the final directory and rename it into place: a reader that finds the artifact
        # without taking the lock never sees a half-linked binary.
        tmp_dir = build_root / f".{out_dir.name}.tmp{os.getpid()}"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        cmd = [
            "make", "-C", str(device_fw), f"-j{os.cpu_count() or 1}",
            f"PORT={port}", f"MODEL_DIR={model_dir}", f"BUILD_DIR={tmp_dir}",
        ]  # fmt: skip
        if not kernels:
            cmd.append("KERNELS=")
        if crash_test:
            cmd.append("HIL_CRASH_TEST=1")
        version = _fw_version(device_fw)
        if version is not None:
            cmd.append(f"FW_VERSION={version}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise FirmwareBuildError(f"building the {port} firmware took over {BUILD_TIMEOUT_S} s: {cmd}") from exc
        if proc.returncode != 0 or not (tmp_dir / ARTIFACTS[port]).is_file():
            shutil.rmtree(tmp_dir, ignore_errors=True)
            output = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
            raise FirmwareBuildError(
                f"building the {port} firmware for '{model_dir}' failed (make exit {proc.returncode}):\n" + output
            )
        os.rename(tmp_dir, out_dir)
    return _with_flash_files(artifact, port, model_dir)


def _with_flash_files(artifact: Path, port: str, model_dir: Path) -> Path:
    """Writes what an ESP-IDF build leaves for flashing (flasher_args.json, bootloader, partition table, app image
    carrying `artifact`) next to it, unless they are there already (hil/firmware/flashimage/buildfiles.py); a
    failure is logged, never fatal: the binary itself runs without them."""
    from hil.firmware.flashimage.buildfiles import FlashFilesError, write_flash_files

    try:
        write_flash_files(artifact, port, model_dir)
    except FlashFilesError as exc:
        logging.getLogger("hil.firmware").warning("%s", exc)
    return artifact
