"""Crashes in the device's console text: ESP-IDF panic output, resets and boot loops, and backtraces decoded to
function names.

What the detector recognises (`CrashDetector`, fed one console line at a time):

* ESP-IDF's panic handler: `Guru Meditation Error: Core  0 panic'ed (<cause>)`, `abort() was called at PC ...`,
  `Stack smashing protect failure!`, `***ERROR*** A stack overflow in task <name> has been detected`,
  `assert failed: ...`, a `Backtrace:` line with addresses, the task and interrupt watchdogs, the brownout
  detector: each is a crash at once;
* the ROM's reset line `rst:0x<n> (<REASON>),boot:0x<n> (<MODE>)` (or, where that was unreadable, the
  second-stage bootloader's banner) is a boot: a crash ("reset") when the device was up and answering
  (`armed`), and a boot loop ("boot loop") when `BOOT_LOOP_COUNT` boots fall within `BOOT_LOOP_WINDOW_S`,
  whether armed or not. A boot while disarmed (the reset `hil` itself caused, before HELLO) is expected.

A `Crash` collects the lines around its trigger until the device has been quiet for a moment (the rest of the
panic report, the reboot), then its backtrace (`Backtrace: 0xPC:0xSP ...`) is decoded with the toolchain's
addr2line against the firmware's ELF (`Symbolizer`; `symbolizer_for(target)` picks tool and ELF per target).
A missing tool or ELF leaves the raw excerpt and says what to install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# A boot loop: this many boots (ROM reset lines) within this many seconds.
BOOT_LOOP_COUNT = 3
BOOT_LOOP_WINDOW_S = 10.0
# Lines kept before the trigger: back to the start of the device's last boot when that is at most
# MAX_CONTEXT_BEFORE lines back, else CONTEXT_BEFORE. And the most kept after it.
CONTEXT_BEFORE = 8
MAX_CONTEXT_BEFORE = 80
MAX_EXCERPT_LINES = 150
ADDR2LINE_TIMEOUT_S = 20.0

# ESP-IDF's Xtensa toolchain for the ESP32-S3 (ESP-IDF v5: the xtensa-esp-elf package; its binaries keep the
# per-chip names). Not installable from the package registries `hil` uses.
ESP32S3_ADDR2LINE = "xtensa-esp32s3-elf-addr2line"
ESP32S3_TOOL_HINT = (
    "install ESP-IDF's Xtensa toolchain and put it on PATH: `$IDF_PATH/install.sh esp32s3` then "
    "`. $IDF_PATH/export.sh` (or `python $IDF_PATH/tools/idf_tools.py install xtensa-esp-elf`)"
)


class LineLike(Protocol):
    t: float
    text: str


# (kind, pattern); the first match of a line decides. Patterns are searched, so a line with a log prefix matches.
PANIC_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("panic", re.compile(r"Guru Meditation Error: Core\s+\d+ panic'ed \((?P<detail>[^)]*)\)")),
    ("abort", re.compile(r"abort\(\) was called at PC (?P<detail>0x[0-9a-fA-F]+)")),
    ("stack smashing", re.compile(r"Stack smashing protect failure!")),
    ("stack overflow", re.compile(r"\*\*\*ERROR\*\*\* A stack overflow in task (?P<detail>\S+) has been detected")),
    ("assert", re.compile(r"\bassert failed: (?P<detail>.+)")),
    ("watchdog", re.compile(r"(?P<detail>Task watchdog got triggered|Interrupt wdt timeout on CPU\d+)")),
    ("brownout", re.compile(r"Brownout detector was triggered")),
    ("panic", re.compile(r"^\s*Backtrace:\s*0x[0-9a-fA-F]+:0x[0-9a-fA-F]+")),
)
RESET_PATTERN = re.compile(
    r"\brst:0x(?P<code>[0-9a-fA-F]+) \((?P<reason>[A-Z0-9_]+)\)(?:,\s*boot:0x(?P<boot>[0-9a-fA-F]+))?"
)
# The first lines of a boot: the ROM's banner, its reset line.
BOOT_START_PATTERNS = (re.compile(r"^ESP-ROM:"), re.compile(r"\brst:0x[0-9a-fA-F]+ \("))
BOOTLOADER_PATTERN = re.compile(r"\b(?:2nd stage bootloader|ESP-IDF v\S+ 2nd stage)")
BACKTRACE_PATTERN = re.compile(r"Backtrace:(?P<rest>.*)")
FRAME_PATTERN = re.compile(r"0x(?P<pc>[0-9a-fA-F]+):0x(?P<sp>[0-9a-fA-F]+)")


def classify(text: str) -> tuple[str, str] | None:
    """(kind, detail) when `text` is a panic line, else None. Resets are not classified here."""
    for kind, pattern in PANIC_PATTERNS:
        m = pattern.search(text)
        if m is not None:
            return kind, (m.groupdict().get("detail") or "").strip()
    return None


def parse_backtrace(lines: Sequence[str]) -> list[tuple[int, int]]:
    """The (pc, sp) pairs of every `Backtrace:` line, in order (ESP-IDF: `Backtrace: 0xPC:0xSP ...`; a trailing
    `|<-CORRUPTED` ends it)."""
    frames: list[tuple[int, int]] = []
    for line in lines:
        m = BACKTRACE_PATTERN.search(line)
        if m is None:
            continue
        rest = m.group("rest").split("|<-", 1)[0]
        frames += [(int(f.group("pc"), 16), int(f.group("sp"), 16)) for f in FRAME_PATTERN.finditer(rest)]
    return frames


# ---- decoding ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedFrame:
    pc: int
    function: str  # "??" when unknown
    location: str  # "file:line", "??:?" when unknown
    inlined_by: tuple[str, ...] = ()  # "function at file:line" of the callers it was inlined into

    def describe(self, index: int) -> str:
        text = f"#{index:<2} 0x{self.pc:08x} {self.function} at {self.location}"
        return text + "".join(f"\n      (inlined by) {where}" for where in self.inlined_by)

    @property
    def known(self) -> bool:
        return self.function != "??"


@dataclass(frozen=True)
class Symbolizer:
    """addr2line against one ELF. `tool` is a program name looked up on PATH (or a path)."""

    elf: Path | None
    tool: str
    install_hint: str = ""
    why_no_elf: str = ""  # when elf is None: why (shown instead of the decoded backtrace)

    def decode(self, pcs: Sequence[int]) -> tuple[list[DecodedFrame], str]:
        """The decoded frames, and a note ("" when it worked; else why the backtrace is not decoded)."""
        if not pcs:
            return [], ""
        if self.elf is None:
            return [], self.why_no_elf or "the firmware's ELF is unknown: backtrace not decoded"
        if not self.elf.is_file():
            return [], f"the firmware's ELF {self.elf} does not exist: backtrace not decoded"
        exe = shutil.which(self.tool)
        if exe is None:
            hint = f"; {self.install_hint}" if self.install_hint else ""
            return [], f"{self.tool} not found on PATH, so the backtrace is not decoded (raw addresses above){hint}"
        cmd = [exe, "-e", str(self.elf), "-a", "-f", "-C", "-i", "-p", *(f"0x{pc:x}" for pc in pcs)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ADDR2LINE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"{self.tool} failed ({exc}): backtrace not decoded"
        if proc.returncode != 0:
            return [], f"{self.tool} failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}"
        return parse_addr2line(proc.stdout), ""


def parse_addr2line(output: str) -> list[DecodedFrame]:
    """`addr2line -a -f -C -i -p` output: `0xADDR: function at file:line`, then ` (inlined by) ...` lines."""
    frames: list[DecodedFrame] = []
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("(inlined by)") and frames:
            last = frames[-1]
            frames[-1] = DecodedFrame(last.pc, last.function, last.location,
                                      (*last.inlined_by, stripped.removeprefix("(inlined by)").strip()))
            continue
        m = re.match(r"0x(?P<pc>[0-9a-fA-F]+):\s*(?P<rest>.*)", stripped)
        if m is None:
            continue
        function, _, location = m.group("rest").partition(" at ")
        frames.append(DecodedFrame(int(m.group("pc"), 16), function.strip() or "??", location.strip() or "??:?"))
    return frames


def esp_idf_elf(build_dir: Path) -> Path | None:
    """The application ELF of an ESP-IDF build directory: project_description.json's app_elf, else the name of
    flasher_args.json's app image with .elf, else the only *.elf in the directory."""
    import json

    build_dir = Path(build_dir)
    try:
        desc = json.loads((build_dir / "project_description.json").read_text())
        if isinstance(desc, dict) and desc.get("app_elf"):
            return build_dir / str(desc["app_elf"])
    except (OSError, ValueError):
        pass
    try:
        args = json.loads((build_dir / "flasher_args.json").read_text())
        app = args.get("app", {}) if isinstance(args, dict) else {}
        if isinstance(app, dict) and app.get("file"):
            return build_dir / Path(str(app["file"])).with_suffix(".elf").name
    except (OSError, ValueError):
        pass
    elves = sorted(build_dir.glob("*.elf"))
    return elves[0] if len(elves) == 1 else None


def symbolizer_for(target: object) -> Symbolizer | None:
    """How to decode the backtraces of `target`: its own `symbolizer()` (host, qemu), or for the ESP32-S3 the
    ESP-IDF build's app ELF with xtensa-esp32s3-elf-addr2line."""
    own = getattr(target, "symbolizer", None)
    if callable(own):
        return own()
    if getattr(target, "name", None) == "esp32s3":
        build_dir = getattr(target, "build_dir", None)
        if build_dir is None:
            return Symbolizer(None, ESP32S3_ADDR2LINE, ESP32S3_TOOL_HINT,
                              why_no_elf="the board's firmware ELF is unknown (no --hil-fw / --fw build directory), "
                                         "so the backtrace is not decoded; decode it with `idf.py monitor`'s "
                                         "decoder or pass the ESP-IDF build directory")
        elf = esp_idf_elf(Path(build_dir))
        return Symbolizer(elf, ESP32S3_ADDR2LINE, ESP32S3_TOOL_HINT,
                          why_no_elf=f"no application ELF found in {build_dir} (expected <project>.elf from "
                                     "idf.py build), so the backtrace is not decoded")
    return None


# ---- crashes -----------------------------------------------------------------------------------------------


@dataclass
class Crash:
    """One crash seen in the console: its kind, the line that gave it away, the excerpt around it, and the
    backtrace (raw and decoded)."""

    kind: str  # "panic", "abort", "stack smashing", "stack overflow", "assert", "watchdog", "brownout", "reset",
    #             "boot loop"
    headline: str  # the trigger line
    detail: str  # the cause in the headline (e.g. LoadProhibited), the reset reason, ...
    t: float  # time.time() when the trigger line arrived
    lines: list[LineLike] = field(default_factory=list)  # the excerpt
    complete: bool = False  # the device went quiet (or the link ended): no more lines will be added
    reported: bool = False  # a test failure already carries it
    trigger_index: int = 0  # lines[trigger_index] is the trigger; the lines before it are context
    backtrace: list[tuple[int, int]] = field(default_factory=list)
    decoded: list[DecodedFrame] = field(default_factory=list)
    decode_note: str = ""
    _decoded: bool = field(default=False, repr=False)

    @property
    def excerpt(self) -> str:
        return "\n".join(line.text for line in self.lines)

    def summary(self) -> str:
        """One line, e.g. "panic: Guru Meditation Error: Core  0 panic'ed (LoadProhibited) ... in f, g"."""
        where = ""
        names = [f.function for f in self.decoded if f.known]
        if names:
            where = " in " + " <- ".join(names[:4]) + (" ..." if len(names) > 4 else "")
        detail = f" ({self.detail})" if self.kind == "boot loop" else ""
        return f"{self.kind}: {self.headline.strip()}{detail}{where}"

    def decode(self, symbolizer: Symbolizer | None) -> None:
        """Parses and decodes the backtrace once (addr2line runs once per crash)."""
        if self._decoded:
            return
        self._decoded = True
        # The first Backtrace line from the trigger on: the crash's own (not one of the context, nor a later
        # crash's in the same excerpt).
        for line in self.lines[self.trigger_index :]:
            self.backtrace = parse_backtrace([line.text])
            if self.backtrace:
                break
        if not self.backtrace:
            return
        if symbolizer is None:
            self.decode_note = "no symbolizer for this target: backtrace not decoded"
            return
        self.decoded, self.decode_note = symbolizer.decode([pc for pc, _ in self.backtrace])

    def describe(self) -> str:
        """The headline, the excerpt with receive times, and the decoded backtrace (or why it is not)."""
        out = [f"device crash ({self.kind}): {self.headline.strip()}", "console excerpt:"]
        out += [f"  {format_time(line.t)} {line.text}" for line in self.lines]
        if self.backtrace:
            out.append("backtrace decoded:" if self.decoded else "backtrace:")
            if self.decoded:
                out += [f"  {frame.describe(i)}" for i, frame in enumerate(self.decoded)]
            else:
                out += [f"  #{i:<2} 0x{pc:08x} (sp 0x{sp:08x})" for i, (pc, sp) in enumerate(self.backtrace)]
            if self.decode_note:
                out.append(f"  ({self.decode_note})")
        return "\n".join(out)


def format_time(t: float) -> str:
    """UTC, to the millisecond: 2026-12-07T14:16:09.123Z."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((t - whole) * 1000):03d}Z"


class CrashDetector:
    """Decides, line by line, whether the console shows a crash. `armed`: the device is up and answering, so a
    reset is unexpected (set by the client after HELLO)."""

    def __init__(self, *, boot_loop_count: int = BOOT_LOOP_COUNT, boot_loop_window_s: float = BOOT_LOOP_WINDOW_S,
                 ) -> None:
        self.boot_loop_count = boot_loop_count
        self.boot_loop_window_s = boot_loop_window_s
        self.armed = False
        self._boots: deque[float] = deque(maxlen=max(boot_loop_count, 1))
        self._last_rom_reset = float("-inf")

    def check(self, line: LineLike) -> tuple[str, str] | None:
        """(kind, detail) when `line` starts a crash, else None."""
        found = classify(line.text)
        if found is not None:
            return found
        reset = RESET_PATTERN.search(line.text)
        booted = reset is not None
        if reset is not None:
            self._last_rom_reset = line.t
        elif BOOTLOADER_PATTERN.search(line.text) and line.t - self._last_rom_reset > 2.0:
            booted = True  # the ROM's line was unreadable (another baud rate); the bootloader's banner counts
        if not booted:
            return None
        self._boots.append(line.t)
        detail = f"rst:0x{reset.group('code')} ({reset.group('reason')})" if reset is not None else "bootloader started"
        if len(self._boots) >= self.boot_loop_count and line.t - self._boots[0] <= self.boot_loop_window_s:
            return "boot loop", f"{len(self._boots)} boots within {line.t - self._boots[0]:.1f} s, last {detail}"
        if self.armed:
            return "reset", detail
        return None
