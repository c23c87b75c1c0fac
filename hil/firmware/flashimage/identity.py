"""What an emulated firmware build will report in HELLO, known at build time without running it.

- The build id: device_fw/Makefile passes BUILD_ID="<kind>-<12 hex of the sources' hashes> gcc-<compiler
  version>" (kind: src, or dbg for the crash-test variant) to core/src/app.c, which sends it in HELLO (32
  bytes). It sits in the binary as a NUL-terminated string, so it is read from the binary itself: exactly what
  that binary will report.
- The model name and sha256: hil_model_info in the model directory's hil_model.c (the compiler's designated
  initializer, or the positional one of the hand-written test models; `{0}` is 32 zero bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hil.errors import DeviceError

BUILD_ID_RE = re.compile(rb"((?<![0-9A-Za-z])[a-z]{2,8}-[0-9a-f]{12} gcc-[0-9A-Za-z.+~_-]{1,20})\0")
_INFO_RE = re.compile(r"hil_model_info_t\s+hil_model_info\s*=\s*\{")
_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')
_BRACES_RE = re.compile(r"\{([^{}]*)\}")
_NUMBER_RE = re.compile(r"0[xX][0-9a-fA-F]+|\d+")
HELLO_FIELD = 32  # HELLO carries the build id and the model name in 32-byte fields


class IdentityError(DeviceError, ValueError):
    """The build id or the model cannot be read from the build."""


@dataclass(frozen=True)
class FirmwareIdentity:
    """What the firmware will say about itself in HELLO."""

    port: str
    build_id: str
    model_name: str
    model_sha256: str  # hex

    @property
    def model_sha256_bytes(self) -> bytes:
        return bytes.fromhex(self.model_sha256)


def build_id_of(binary: bytes, where: str = "the firmware") -> str:
    """The build id compiled into a firmware binary (device_fw/Makefile's BUILD_ID)."""
    found = sorted({m.group(1).decode("ascii") for m in BUILD_ID_RE.finditer(binary)})
    if len(found) != 1:
        what = "no build id" if not found else f"{len(found)} build ids ({', '.join(found)})"
        raise IdentityError(f"{where} holds {what} of the form '<kind>-<12 hex> gcc-<version>' (device_fw/Makefile's "
                            f"BUILD_ID); rebuild it with hil build, or pass build_id= explicitly")
    return found[0][:HELLO_FIELD]


def model_of(model_dir: Path) -> tuple[str, str]:
    """(name, sha256 hex) that the firmware built from `model_dir` reports: hil_model_info in its hil_model.c."""
    c_file = Path(model_dir) / "hil_model.c"
    try:
        text = c_file.read_text(errors="replace")
    except OSError as exc:
        raise IdentityError(f"cannot read {c_file}: {exc.strerror or exc}") from exc
    start = _INFO_RE.search(text)
    if start is None:
        raise IdentityError(f"{c_file} defines no 'const hil_model_info_t hil_model_info = {{...}}'")
    body = text[start.end() : start.end() + 4000]
    name_match = _STRING_RE.search(body)
    bytes_match = _BRACES_RE.search(body)
    if name_match is None or bytes_match is None:
        raise IdentityError(f"{c_file}: hil_model_info has no name string or no sha256 initializer")
    values = [int(v, 0) for v in _NUMBER_RE.findall(bytes_match.group(1))]
    if len(values) > 32 or any(v > 0xFF for v in values):
        raise IdentityError(f"{c_file}: hil_model_info's sha256 initializer is not 32 bytes: {bytes_match.group(0)}")
    sha = bytes(values).ljust(32, b"\0")  # C: the remaining elements are zero
    return name_match.group(1)[:HELLO_FIELD], sha.hex()


def identity_of(binary: bytes, port: str, model_dir: Path, *, build_id: str | None = None,
                where: str = "the firmware") -> FirmwareIdentity:
    name, sha = model_of(model_dir)
    return FirmwareIdentity(port, build_id if build_id is not None else build_id_of(binary, where), name, sha)
