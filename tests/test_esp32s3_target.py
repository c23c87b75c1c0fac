"""The ESP32-S3 bench target without a board: flasher_args.json parsing, the esptool command lines, port
errors, the reset sequence and merge_image (esptool merge-bin works offline)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hil import paths
from hil.targets import Target, esp32s3, get_target
from hil.targets.esp32s3 import (
    Esp32s3Target,
    EsptoolError,
    FlasherArgsError,
    PortNotFoundError,
    PortPermissionError,
    check_port,
    load_flasher_args,
    merge_image,
    write_flash_command,
)

FIXTURE = paths.FIXTURES / "esp32s3" / "flasher_args.json"

# Distinct, recognisable contents. The bootloader must not start with 0xE9 (the image magic): merge-bin would
# then rewrite its flash-settings header and the merged bytes would no longer equal the input.
FAKE_IMAGES = {
    "bootloader/bootloader.bin": b"BOOT" * 300 + b"\x01",
    "partition_table/partition-table.bin": b"\xaa\x50" + bytes(range(256)) * 2,
    "hil_fw.bin": bytes((i * 7 + 3) % 256 for i in range(70_001)),
}
OFFSETS = {
    "bootloader/bootloader.bin": 0x0,
    "partition_table/partition-table.bin": 0x8000,
    "hil_fw.bin": 0x10000,
}


@pytest.fixture
def build_dir(tmp_path: Path) -> Path:
    """A fake ESP-IDF build directory: the fixture flasher_args.json plus small fake binaries."""
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(FIXTURE, build / "flasher_args.json")
    for rel, data in FAKE_IMAGES.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_bytes(data)
    return build


@pytest.fixture
def fake_port(tmp_path: Path) -> str:
    """A path that exists and is readable, so check_port() accepts it; nothing opens it in these tests."""
    port = tmp_path / "ttyUSB-fake"
    port.write_bytes(b"")
    return str(port)


def test_parses_esp_idf_v5_flasher_args(build_dir: Path) -> None:
    plan = load_flasher_args(build_dir)
    assert plan.chip == "esp32s3"
    # Sorted by offset although the JSON lists the app before the partition table.
    assert plan.files == (
        (0x0, build_dir / "bootloader/bootloader.bin"),
        (0x8000, build_dir / "partition_table/partition-table.bin"),
        (0x10000, build_dir / "hil_fw.bin"),
    )
    assert (plan.flash_mode, plan.flash_freq, plan.flash_size) == ("dio", "80m", "4MB")
    # ESP-IDF writes esptool 4 spellings; esptool 5 wants dashes.
    assert (plan.before, plan.after, plan.stub) == ("default-reset", "hard-reset", True)


def test_parse_without_binaries_reads_the_checked_in_fixture() -> None:
    plan = load_flasher_args(FIXTURE.parent, require_files=False)
    assert [offset for offset, _ in plan.files] == [0x0, 0x8000, 0x10000]
    assert plan.files[2][1].name == "hil_fw.bin"


def test_missing_flasher_args_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(FlasherArgsError) as e:
        load_flasher_args(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "flasher_args.json") in msg
    assert "idf.py" in msg and "build" in msg and "--hil-fw" in msg


def test_missing_binary_is_named(build_dir: Path) -> None:
    (build_dir / "hil_fw.bin").unlink()
    with pytest.raises(FlasherArgsError, match=r"hil_fw\.bin at 0x10000.*missing.*rerun idf\.py build"):
        load_flasher_args(build_dir)


def test_build_for_another_chip_is_refused(build_dir: Path) -> None:
    text = (build_dir / "flasher_args.json").read_text().replace('"esp32s3"', '"esp32"')
    (build_dir / "flasher_args.json").write_text(text)
    with pytest.raises(FlasherArgsError, match="for esp32, not esp32s3.*idf.py set-target esp32s3"):
        load_flasher_args(build_dir)


def test_write_flash_command(build_dir: Path) -> None:
    plan = load_flasher_args(build_dir)
    cmd = write_flash_command(plan, "/dev/ttyUSB0", 921600)
    assert cmd == [
        sys.executable, "-m", "esptool", "--chip", "esp32s3", "-p", "/dev/ttyUSB0", "-b", "921600",
        "--before", "default-reset", "--after", "hard-reset",
        "write-flash", "--skip-flashed",
        "--flash-mode", "dio", "--flash-freq", "80m", "--flash-size", "4MB",
        "0x0", str(build_dir / "bootloader/bootloader.bin"),
        "0x8000", str(build_dir / "partition_table/partition-table.bin"),
        "0x10000", str(build_dir / "hil_fw.bin"),
    ]  # fmt: skip
    erase = write_flash_command(plan, "/dev/ttyUSB0", 921600, erase_all=True)
    # --skip-flashed compares against flash that --erase-all is about to wipe: one or the other.
    assert "--erase-all" in erase and "--skip-flashed" not in erase


def test_installed_esptool_accepts_the_write_flash_options(build_dir: Path) -> None:
    # Click rejects an unknown option name as soon as it reaches it, and the global options' values (--chip,
    # --before, --after) before the subcommand runs; the trailing --help then prints the usage instead of
    # connecting. So a zero exit means esptool 5 knows all of these spellings, without a board. (The flash
    # settings' values are checked for real by the merge-bin test, which passes the same ones.)
    cmd = write_flash_command(load_flasher_args(build_dir), "/dev/ttyUSB0", 921600) + ["--help"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "write-flash" in proc.stdout


def test_missing_port_lists_available_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = [SimpleNamespace(device="/dev/ttyUSB7", description="CP2102N USB to UART Bridge")]
    monkeypatch.setattr(esp32s3.serial.tools.list_ports, "comports", lambda: ports)
    with pytest.raises(PortNotFoundError) as e:
        check_port("/dev/ttyNO-SUCH-PORT")
    msg = str(e.value)
    assert "/dev/ttyNO-SUCH-PORT does not exist" in msg
    assert "/dev/ttyUSB7 (CP2102N USB to UART Bridge)" in msg


def test_missing_port_with_no_ports_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(esp32s3.serial.tools.list_ports, "comports", lambda: [])
    with pytest.raises(PortNotFoundError, match="is the board plugged in"):
        check_port("/dev/ttyNO-SUCH-PORT")


def test_start_checks_the_port_before_anything_else(monkeypatch: pytest.MonkeyPatch, build_dir: Path) -> None:
    monkeypatch.setattr(esp32s3.serial.tools.list_ports, "comports", lambda: [])

    def no_esptool(*args: object, **kwargs: object) -> str:
        raise AssertionError("esptool must not run when the port is missing")

    monkeypatch.setattr(esp32s3, "_run_esptool", no_esptool)
    with pytest.raises(PortNotFoundError):
        Esp32s3Target("/dev/ttyNO-SUCH-PORT", build_dir=build_dir).start()


def test_permission_denied_hints_at_dialout(monkeypatch: pytest.MonkeyPatch, fake_port: str) -> None:
    # Tests may run as root, for whom every file is accessible: simulate the refusal.
    monkeypatch.setattr(esp32s3.os, "access", lambda path, mode: False)
    with pytest.raises(PortPermissionError, match="dialout"):
        check_port(fake_port)


def test_urls_are_not_checked_locally() -> None:
    check_port("rfc2217://labhost:4000")  # no exception: a remote port cannot be checked from here


def test_without_a_build_nothing_is_flashed(monkeypatch: pytest.MonkeyPatch, fake_port: str) -> None:
    # No --hil-fw: the board runs what it holds (the caller checks the model sha256 from HELLO); just reset.
    resets: list[str] = []
    monkeypatch.setattr(esp32s3, "reset_board", resets.append)
    monkeypatch.setattr(esp32s3, "_run_esptool", lambda *a: pytest.fail("nothing to flash"))
    target = Esp32s3Target(fake_port, build_dir=None, flash=True, boot_wait_s=0)
    assert not target.will_flash
    assert target.start() == fake_port and resets == [fake_port]


def test_build_dir_without_flasher_args_says_how_to_build(tmp_path: Path, fake_port: str) -> None:
    with pytest.raises(FlasherArgsError, match=r"(?s)flasher_args\.json not found.*idf\.py.*--hil-fw"):
        Esp32s3Target(fake_port, build_dir=tmp_path / "build", boot_wait_s=0).start()


def test_registry_options_fit(build_dir: Path, tmp_path: Path) -> None:
    # hil.targets.get_target passes --hil-fw as firmware= (a directory or its flasher_args.json) and log_dir.
    target = get_target(
        "esp32s3",
        port="/dev/ttyUSB0",
        baud=921600,
        firmware=build_dir / "flasher_args.json",
        flash=True,
        log_dir=tmp_path,
    )
    assert isinstance(target, Esp32s3Target)
    assert isinstance(target, Target)  # the structural protocol in hil.targets.base
    assert (target.build_dir, target.baud, target.url, target.will_flash) == (build_dir, 921600, None, True)


def test_start_flashes_then_returns_the_port(
    monkeypatch: pytest.MonkeyPatch, build_dir: Path, fake_port: str, tmp_path: Path
) -> None:
    calls: list[tuple[list[str], float, str]] = []
    monkeypatch.setattr(
        esp32s3, "_run_esptool", lambda cmd, timeout, what: calls.append((cmd, timeout, what)) or "ok"
    )
    monkeypatch.setattr(esp32s3, "reset_board", lambda port: pytest.fail("esptool's hard reset suffices"))
    logs = tmp_path / "logs"
    target = Esp32s3Target(fake_port, build_dir=build_dir, esptool_baud=460800, boot_wait_s=0, log_dir=logs)
    with target as t:
        assert t.url == fake_port
        assert t.baud == 2_000_000
    assert target.url is None
    [(cmd, timeout, what)] = calls
    assert what == "write-flash" and timeout == esp32s3.FLASH_TIMEOUT_S
    assert cmd == write_flash_command(load_flasher_args(build_dir), fake_port, 460800)
    assert target.log_path is not None and target.log_path.parent == logs
    assert target.log_path.read_text() == f"# {' '.join(cmd)}\nok"


def test_start_without_flashing_resets_through_rts(monkeypatch: pytest.MonkeyPatch, fake_port: str) -> None:
    resets: list[str] = []
    monkeypatch.setattr(esp32s3, "reset_board", resets.append)
    url = Esp32s3Target(fake_port, flash=False, boot_wait_s=0).start()
    assert url == fake_port and resets == [fake_port]


class RecordingSerial:
    """Stands in for pyserial: records modem-line changes and open/close in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self._dtr = self._rts = True  # pyserial's defaults

    @property
    def dtr(self) -> bool:
        return self._dtr

    @dtr.setter
    def dtr(self, value: bool) -> None:
        self._dtr = value
        self.events.append(("dtr", value))

    @property
    def rts(self) -> bool:
        return self._rts

    @rts.setter
    def rts(self, value: bool) -> None:
        self._rts = value
        self.events.append(("rts", value))

    def open(self) -> None:
        self.events.append(("open", None))

    def close(self) -> None:
        self.events.append(("close", None))


def test_reset_sequence_pulses_en_without_touching_gpio0(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = RecordingSerial()
    monkeypatch.setattr(esp32s3.serial, "serial_for_url", lambda url, do_not_open: fake)
    esp32s3.reset_board("/dev/ttyUSB0", pulse_s=0)
    lines = [(k, v) for k, v in fake.events if k != "dtr"]
    # Both lines released before opening (no reset, no download mode on open), then an RTS pulse = EN low.
    assert fake.events[:3] == [("dtr", False), ("rts", False), ("open", None)]
    assert lines == [("rts", False), ("open", None), ("rts", True), ("rts", False), ("close", None)]
    assert all(v is False for k, v in fake.events if k == "dtr")  # DTR (GPIO0) never asserted


def test_esptool_timeout_is_an_error_not_a_hang() -> None:
    cmd = [sys.executable, "-c", "import time; print('connecting...', flush=True); time.sleep(30)"]
    with pytest.raises(EsptoolError, match="did not finish within 1 s"):
        esp32s3._run_esptool(cmd, 1.0, "write-flash")


def test_esptool_failure_carries_its_output_and_a_hint() -> None:
    script = "import sys; print('Failed to connect to ESP32-S3: No serial data received.'); sys.exit(2)"
    cmd = [sys.executable, "-c", script]
    with pytest.raises(EsptoolError, match=r"(?s)exit 2.*No serial data received.*hint: .*BOOT"):
        esp32s3._run_esptool(cmd, 30.0, "write-flash")


def test_merge_image_places_each_file_at_its_offset(build_dir: Path, tmp_path: Path) -> None:
    out = merge_image(build_dir, tmp_path / "archive" / "merged.bin")
    merged = out.read_bytes()
    end = 0
    for rel, data in FAKE_IMAGES.items():
        offset = OFFSETS[rel]
        assert merged[offset : offset + len(data)] == data, rel
        end = max(end, offset + len(data))
    assert len(merged) == end  # no padding after the last image
    covered = set()
    for rel, data in FAKE_IMAGES.items():
        covered.update(range(OFFSETS[rel], OFFSETS[rel] + len(data)))
    gaps = bytes(b for i, b in enumerate(merged) if i not in covered)
    assert gaps and set(gaps) == {0xFF}  # erased-flash filler between the images
