"""The emulated ESP32-S3 ROM loader (hil/rom_loader) against the real esptool 5: its Python API in this
process, its command line in a subprocess, and a small raw SLIP client for what esptool cannot send (bad
checksums, a connection cut in the middle of a write).

Reset modes: on socket:// esptool switches --before to no-reset by itself (no DTR/RTS over TCP) and its
--after hard-reset toggles RTS, which pyserial's socket handler ignores. On a pty both reset attempts get
ENOTTY from the modem-line ioctls, which esptool turns into one warning. So the defaults work on both and
most tests use them; test_no_reset_modes covers --before/--after no-reset, which the stub answers with a
soft reset back into the ROM loader.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import esptool
import pytest
from esptool.cmds import detect_chip
from esptool.util import FatalError

from hil import paths
from hil.rom_loader import CHIP_ID, ChipIdentity, FlashImage, FlashImageError, Mode, RomLoader, slip
from hil.rom_loader.protocol import Op, data_request, parse_response, request
from hil.targets.esp32s3 import load_flasher_args, write_flash_command

pytestmark = pytest.mark.timeout(60)

MB = 1 << 20
IDENTITY = ChipIdentity()
MISMATCH = "This chip is ESP32-S3, not ESP32. Wrong chip argument?"


def data(n: int, seed: int = 1, compressible: bool = False) -> bytes:
    rng = random.Random(seed)
    if compressible:  # text-like: zlib shrinks it a lot, so esptool really sends it compressed
        words = [bytes(rng.choices(b"abcdefghij", k=rng.randint(2, 8))) for _ in range(64)]
        out = b" ".join(rng.choice(words) for _ in range(n // 3))
        return out[:n].ljust(n, b".")
    return rng.randbytes(n)


def esptool_api(url: str, *args: str) -> str:
    """esptool.main() in this process; its output (stdout and stderr). Raises esptool's FatalError as it is."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        esptool.main(["--port", url, *args])
    return out.getvalue()


# esptool waits 3 s for a reply by default (e.g. the stub's OHAI); the emulated loader is a Python process that a
# loaded 2-core machine can starve for longer, so the tests give it 15 s (esptool's own config file mechanism).
ESPTOOL_CFG = Path(__file__).resolve().parent.parent / "fixtures" / "esptool-emulated.cfg"


def esptool_cli(url: str, *args: str, timeout: float = 45) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "esptool", "--port", url, *args],
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=os.environ | {"ESPTOOL_CFGFILE": str(ESPTOOL_CFG)})


@pytest.fixture
def image(tmp_path: Path) -> Path:
    return tmp_path / "flash.bin"


@pytest.fixture
def loader(image: Path) -> Iterator[RomLoader]:
    with RomLoader(image, "8MB") as rl:
        yield rl


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, blob in {"random": data(20_000, 1), "text": data(60_000, 2, compressible=True),
                       "other": data(20_000, 3)}.items():
        out[name] = tmp_path / f"{name}.bin"
        out[name].write_bytes(blob)
    return out


class RawClient:
    """Just enough of esptool's side of the protocol to send what esptool never sends."""

    def __init__(self, url: str, stub: bool = False) -> None:
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.decoder = slip.SlipDecoder()
        self.frames: list[bytes] = []
        self.stub = stub

    def send(self, packet: bytes) -> None:
        self.sock.sendall(slip.encode(packet))

    def frame(self) -> bytes:
        while not self.frames:
            chunk = self.sock.recv(4096)
            assert chunk, "the loader closed the connection"
            self.frames.extend(self.decoder.feed(chunk))
        return self.frames.pop(0)

    def command(self, packet: bytes) -> tuple[int, bytes, bytes]:
        """(value, data, status bytes) of the response to `packet`."""
        self.send(packet)
        while True:
            op, value, body, status = parse_response(self.frame(), stub=self.stub)
            if op == packet[1]:
                return value, body, status

    def sync(self) -> int:
        value, _, status = self.command(request(Op.SYNC, b"\x07\x07\x12\x20" + b"\x55" * 32))
        for _ in range(7):  # the ROM answers a SYNC eight times
            self.frame()
        assert status == b"\x00" * 4
        return value

    def close(self) -> None:
        self.sock.close()


# --- building blocks -----------------------------------------------------------------------------------------


def test_slip_framing_roundtrip_and_resync() -> None:
    payload = bytes(range(256)) * 3
    decoder = slip.SlipDecoder()
    # noise before a frame, escapes, an empty frame, a frame split across two reads
    stream = b"boot noise" + slip.encode(payload) + slip.encode(b"a\xc0b\xdb") + b"\xc0\xc0"
    assert decoder.feed(stream + slip.encode(b"z")[:-1]) == [payload, b"a\xc0b\xdb"]
    assert decoder.feed(b"\xc0") == [b"z"]
    assert decoder.noise_bytes == len(b"boot noise")
    assert decoder.feed(b"\xc0ab\xdb\x01c\xc0\xc0ok\xc0") == [b"ok"]  # invalid escape: that frame dropped
    assert decoder.bad_frames == 1


def test_flash_image_created_erased_persistent_and_size_checked(image: Path) -> None:
    with FlashImage(image, "4MB") as flash:
        assert image.stat().st_size == 4 * MB and flash.read(0, 16) == b"\xff" * 16
        flash.erase(0x1000, 1)
        flash.program(0x1000, b"\x0f\xf0")
        flash.program(0x1000, b"\xf3\x3f")  # NOR: bits only go from 1 to 0
        with pytest.raises(FlashImageError, match="in use"):
            FlashImage(image, "4MB")
    assert image.read_bytes()[0x1000:0x1003] == b"\x03\x30\xff"
    with pytest.raises(FlashImageError, match=r"is 4194304 bytes, not the 8MB .* pass --flash-size 4MB"):
        FlashImage(image, "8MB")
    with pytest.raises(ValueError, match="expected one of 4MB, 8MB, 16MB"):
        RomLoader(image, "3MB")


# --- chip detection ------------------------------------------------------------------------------------------


def test_chip_detection_api_reports_esp32s3(loader: RomLoader) -> None:
    esp = detect_chip(loader.url, connect_mode="no-reset")  # esptool's auto-detection: GET_SECURITY_INFO
    try:
        assert esp.CHIP_NAME == "ESP32-S3" and not esp.IS_STUB
        assert esp.get_chip_id() == CHIP_ID == esp.IMAGE_CHIP_ID
        assert esp.get_chip_description() == "ESP32-S3 (QFN56) (revision v0.2)"
        assert esp.read_mac() == tuple(IDENTITY.mac)
        assert esp.read_reg(esp.CHIP_DETECT_MAGIC_REG_ADDR) == 9  # what pre-GET_SECURITY_INFO tools read
        assert esp.get_crystal_freq() == 40 and not esp.get_secure_boot_enabled()
        assert esp.flash_md5sum(0, 4096) == hashlib.md5(b"\xff" * 4096).hexdigest()  # ROM: 32 hex bytes
        stub = esp.run_stub()
        assert stub.IS_STUB and stub.flash_md5sum(0, 4096) == hashlib.md5(b"\xff" * 4096).hexdigest()  # raw
    finally:
        esp._port.close()
    assert loader.stats().stub_uploads == 1


def test_chip_id_and_read_mac_auto_and_explicit(loader: RomLoader) -> None:
    out = esptool_api(loader.url, "chip-id")
    assert "Detecting chip type... ESP32-S3" in out
    assert "Chip type:          ESP32-S3 (QFN56) (revision v0.2)" in out
    assert f"MAC:                {IDENTITY.mac_text}" in out
    out = esptool_api(loader.url, "--chip", "esp32s3", "--no-stub", "read-mac")
    assert "Connected to ESP32-S3" in out and IDENTITY.mac_text in out
    out = esptool_api(loader.url, "flash-id")
    assert "Detected flash size: 8MB" in out


def test_wrong_chip_argument_fails_with_esptools_mismatch_message(loader: RomLoader) -> None:
    proc = esptool_cli(loader.url, "--chip", "esp32", "chip-id")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"A fatal error occurred: {MISMATCH}" in proc.stdout + proc.stderr
    assert loader.stats().commands["GET_SECURITY_INFO"] == 1
    with pytest.raises(FatalError, match=MISMATCH):
        esptool_api(loader.url, "--chip", "esp32", "read-mac")
    # esptool's connect() leaves its port open after that error; the next client takes the loader over
    assert "Connected to ESP32-S3" in esptool_api(loader.url, "--chip", "esp32s3", "--no-stub", "read-mac")


# --- writing, verifying, reading, erasing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stub", "compress"),
    [(True, True), (True, False), (False, False), (False, True)],
    ids=["stub-compressed", "stub-uncompressed", "rom-uncompressed", "rom-compressed"],
)
def test_write_flash(loader: RomLoader, image: Path, files: dict[str, Path], stub: bool, compress: bool) -> None:
    opts = [] if stub else ["--no-stub"]
    mode = "--compress" if compress else "--no-compress"
    # a compressible file at an aligned offset and a random one at an unaligned offset (the sector is erased)
    out = esptool_api(loader.url, *opts, "write-flash", mode, "0x10000", str(files["text"]),
                      "0x3100", str(files["random"]))
    assert out.count("Hash of data verified.") == 2
    stats = loader.stats()
    assert stats.stub_uploads == (1 if stub else 0)
    assert stats.flash_data_packets == stats.commands["FLASH_DATA"] + stats.commands["FLASH_DEFL_DATA"]
    if compress:  # the text file went compressed (the random one cannot be compressed and goes as it is)
        assert stats.commands["FLASH_DEFL_DATA"] > 0
        assert f"Wrote {len(files['text'].read_bytes())} bytes (" in out
    else:
        assert stats.commands["FLASH_DEFL_DATA"] == 0 and stats.commands["FLASH_DATA"] > 0
    assert not stats.failures
    text, rnd = files["text"].read_bytes(), files["random"].read_bytes()
    assert loader.read_flash(0x10000, len(text)) == text
    assert loader.read_flash(0x3000, 0x100) == b"\xff" * 0x100  # erased before the unaligned start
    loader.stop()
    flash = image.read_bytes()  # the file holds it after the loader stopped
    assert len(flash) == 8 * MB
    assert flash[0x10000 : 0x10000 + len(text)] == text and flash[0x3100 : 0x3100 + len(rnd)] == rnd
    assert flash[0x10000 + len(text) : 0x10000 + len(text) + 64] == b"\xff" * 64


def test_verify_flash_with_and_without_stub(loader: RomLoader, files: dict[str, Path]) -> None:
    esptool_api(loader.url, "write-flash", "0x8000", str(files["random"]))
    for opts in ([], ["--no-stub"]):
        out = esptool_api(loader.url, *opts, "verify-flash", "0x8000", str(files["random"]))
        assert "Verification successful (digest matched)." in out
        with pytest.raises(FatalError, match="Verification failed"):
            esptool_api(loader.url, *opts, "verify-flash", "0x8000", str(files["other"]))
    # the chip's MD5 is of what the flash holds
    assert loader.stats().last_md5 == (0x8000, 20_000, hashlib.md5(files["random"].read_bytes()).hexdigest())


def test_read_flash_back_with_and_without_stub(loader: RomLoader, files: dict[str, Path], tmp_path: Path) -> None:
    written = files["random"].read_bytes()
    esptool_api(loader.url, "write-flash", "0x20000", str(files["random"]))
    back = tmp_path / "back.bin"
    esptool_api(loader.url, "read-flash", "0x20000", str(len(written)), str(back))  # stub: READ_FLASH + acks
    assert back.read_bytes() == written
    # --no-stub: esptool falls back to the ROM's READ_FLASH_SLOW, 64 bytes per command
    esptool_api(loader.url, "--no-stub", "read-flash", "0x20000", "4096", str(back))
    assert back.read_bytes() == written[:4096]
    stats = loader.stats()
    assert stats.commands["READ_FLASH"] == 1 and stats.commands["READ_FLASH_SLOW"] == 4096 // 64


def test_erase_region_with_and_without_stub(loader: RomLoader, files: dict[str, Path]) -> None:
    esptool_api(loader.url, "write-flash", "0x40000", str(files["random"]))
    esptool_api(loader.url, "erase-region", "0x41000", "0x1000")  # stub: ERASE_REGION
    esptool_api(loader.url, "--no-stub", "erase-region", "0x43000", "0x1000")  # ROM: FLASH_BEGIN erases
    written = files["random"].read_bytes()
    now = loader.read_flash(0x40000, len(written))
    assert now[0x1000:0x2000] == b"\xff" * 0x1000 and now[0x3000:0x4000] == b"\xff" * 0x1000
    assert now[:0x1000] == written[:0x1000] and now[0x2000:0x3000] == written[0x2000:0x3000]
    assert now[0x4000:] == written[0x4000:]
    stats = loader.stats()
    assert stats.commands["ERASE_REGION"] == 1 and stats.commands["FLASH_BEGIN"] >= 1


def test_skip_flashed_second_write_sends_no_data(loader: RomLoader, files: dict[str, Path]) -> None:
    esptool_api(loader.url, "write-flash", "--skip-flashed", "0x10000", str(files["text"]))
    first = loader.stats()
    assert first.flash_data_packets > 0
    out = esptool_api(loader.url, "write-flash", "--skip-flashed", "0x10000", str(files["text"]))
    assert "already in flash, skipping write." in out
    second = loader.stats()
    assert second.flash_data_packets == first.flash_data_packets  # only the MD5 went back and forth
    assert second.bytes_written == first.bytes_written
    text = files["text"].read_bytes()
    assert second.last_md5 == (0x10000, len(text), hashlib.md5(text).hexdigest())
    # without the stub the ROM computes the MD5 (hex on the wire) and the write is skipped as well
    esptool_api(loader.url, "--no-stub", "write-flash", "--skip-flashed", "0x10000", str(files["text"]))
    assert loader.stats().flash_data_packets == first.flash_data_packets
    # changed data is written
    esptool_api(loader.url, "write-flash", "--skip-flashed", "0x10000", str(files["other"]))
    assert loader.stats().flash_data_packets > first.flash_data_packets


def test_target_write_flash_command_flashes_through_loader(tmp_path: Path) -> None:
    """hil.targets.esp32s3's own esptool command line (flasher_args.json, --skip-flashed, default resets)."""
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(paths.FIXTURES / "esp32s3" / "flasher_args.json", build / "flasher_args.json")
    blobs = {"bootloader/bootloader.bin": b"BOOT" * 300, "partition_table/partition-table.bin": data(3072, 4),
         "hil_fw.bin": data(70_001, 5, compressible=True)}
    for rel, blob in blobs.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_bytes(blob)
    plan = load_flasher_args(build)  # a 4MB flash
    with RomLoader(tmp_path / "flash.bin", plan.flash_size) as rl:
        cmd = write_flash_command(plan, rl.url)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=45, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        packets = rl.stats().flash_data_packets
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=45, check=False)
        assert proc.returncode == 0 and proc.stdout.count("already in flash, skipping write.") == 3
        assert rl.stats().flash_data_packets == packets
        assert rl.stats().baud == 921_600  # the target's esptool baud rate, set through CHANGE_BAUDRATE
        for (offset, _), blob in zip(plan.files, (blobs["bootloader/bootloader.bin"],
                                                  blobs["partition_table/partition-table.bin"],
                                                  blobs["hil_fw.bin"]), strict=True):
            assert rl.read_flash(offset, len(blob)) == blob


# --- errors --------------------------------------------------------------------------------------------------


def test_writing_past_the_end_of_flash_fails(loader: RomLoader, files: dict[str, Path]) -> None:
    # esptool reads the flash chip's JEDEC id (8 MB) and refuses before sending anything
    proc = esptool_cli(loader.url, "write-flash", "0x7fc000", str(files["random"]))
    assert proc.returncode == 2
    assert "will not fit in 8388608 bytes of flash" in proc.stdout + proc.stderr
    # what the loader itself answers when FLASH_BEGIN / FLASH_DEFL_BEGIN reach past the end
    esp = detect_chip(loader.url, connect_mode="no-reset")
    try:
        with pytest.raises(FatalError, match=r"(?i)enter flash download mode \(result was 0106: Message is ok"):
            esp.flash_begin(0x8000, 8 * MB - 0x4000)
        stub = esp.run_stub()
        with pytest.raises(FatalError, match=r"(?i)compressed flash mode \(result was c400: Failed SPI operation"):
            stub.flash_defl_begin(0x8000, 100, 8 * MB - 0x4000)
        stub.flash_begin(0x1000, 8 * MB - 0x1000)  # the last sector is fine
    finally:
        esp._port.close()
    assert loader.read_flash(8 * MB - 0x1000, 16) == b"\xff" * 16


def words(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


def test_bad_checksum_gets_the_checksum_error_status(loader: RomLoader) -> None:
    block = data(0x400, 6)
    raw = RawClient(loader.url)
    try:
        assert raw.sync() != 0  # the ROM's SYNC value (the stub's is 0)
        _, _, status = raw.command(request(Op.FLASH_BEGIN, words(0x400, 1, 0x400, 0x5000, 0)))
        assert status == b"\x00" * 4
        bad = data_request(Op.FLASH_DATA, 0, block, chk=0xEF)
        assert raw.command(bad)[2] == b"\x01\x07\x00\x00"  # ROM: failed, 0x07 invalid checksum, 2 reserved
        assert raw.command(data_request(Op.FLASH_DATA, 0, block))[2] == b"\x00" * 4  # the resend goes through
    finally:
        raw.close()
    assert loader.read_flash(0x5000, 0x400) == block
    assert loader.stats().checksum_errors == 1
    # through esptool's API: its message for the ROM's and the stub's status
    esp = detect_chip(loader.url, connect_mode="no-reset")
    try:
        esp.flash_begin(0x400, 0x6000)
        header = (0x400).to_bytes(4, "little") + bytes(12)
        with pytest.raises(FatalError, match=r"(?i)result was 0107: Checksum error"):
            esp.check_command("write to target flash", Op.FLASH_DATA, header + block, esp.checksum(block) ^ 1)
        stub = esp.run_stub()
        stub.flash_begin(0x4000, 0x8000)
        with pytest.raises(FatalError, match=r"(?i)result was c100: Bad data checksum"):
            stub.check_command("write to target flash", Op.FLASH_DATA, header + block, stub.checksum(block) ^ 1)
    finally:
        esp._port.close()
    assert loader.stats().checksum_errors == 3


def test_disconnect_mid_write_keeps_data_and_serves_the_next_client(loader: RomLoader, tmp_path: Path) -> None:
    blocks = [data(0x400, 10 + i) for i in range(4)]
    raw = RawClient(loader.url)
    raw.sync()
    assert raw.command(request(Op.FLASH_BEGIN, words(4 * 0x400, 4, 0x400, 0x60000, 0)))[2] == b"\x00" * 4
    for seq in (0, 1):
        assert raw.command(data_request(Op.FLASH_DATA, seq, blocks[seq]))[2] == b"\x00" * 4
    raw.sock.sendall(slip.encode(data_request(Op.FLASH_DATA, 2, blocks[2]))[:300])  # cut inside a frame
    raw.close()
    wait_for(lambda: loader.stats().disconnects_mid_write == 1)
    assert loader.read_flash(0x60000, 0x800) == blocks[0] + blocks[1]
    assert loader.read_flash(0x60800, 0x800) == b"\xff" * 0x800  # the ROM erased the region up front
    kept = tmp_path / "kept.bin"
    kept.write_bytes(blocks[0] + blocks[1])
    out = esptool_api(loader.url, "--no-stub", "verify-flash", "0x60000", str(kept))
    assert "Verification successful" in out


@pytest.mark.parametrize("transport", ["socket", "pty"])
def test_esptool_killed_mid_write_then_next_esptool_works(image: Path, tmp_path: Path, transport: str) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(data(768 * 1024, 7))
    with RomLoader(image, "8MB", transport=transport) as rl:
        proc = subprocess.Popen([sys.executable, "-m", "esptool", "--port", rl.url, "--no-stub", "write-flash",
                                 "0x100000", str(big)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while rl.stats().flash_data_packets < 40 and time.monotonic() < deadline:
                assert proc.poll() is None, "esptool finished before it could be interrupted"
                time.sleep(0.01)
            proc.kill()
        finally:
            proc.wait(10)
        wait_for(lambda: rl.stats().disconnects_mid_write == 1)
        assert 40 <= rl.stats().flash_data_packets < 768
        head = big.read_bytes()[: 40 * 0x400]
        assert rl.read_flash(0x100000, len(head)) == head
        small = tmp_path / "small.bin"
        small.write_bytes(b"next client")
        out = esptool_api(rl.url, "write-flash", "0x0", str(small))
        assert "Hash of data verified." in out and rl.read_flash(0, 11) == b"next client"
        assert rl.stats().connections == 2
    assert image.read_bytes()[0x100000 : 0x100000 + len(head)] == head


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- transports, reset modes, lifecycle ----------------------------------------------------------------------


def test_pty_transport_with_default_reset_modes(image: Path, files: dict[str, Path], tmp_path: Path) -> None:
    with RomLoader(image, "8MB", transport="pty") as rl:
        assert rl.url.startswith("/dev/pts/")
        # API and command line alternate: a pty has no connect event, the loader sees a client go when the
        # last one closes the slave side; a process start between two clients leaves it ample time for that.
        t0 = time.monotonic()
        out = esptool_api(rl.url, "write-flash", "0x9000", str(files["text"]))  # --before/--after defaults
        assert "Hash of data verified." in out and time.monotonic() - t0 < 10
        proc = esptool_cli(rl.url, "--chip", "esp32", "chip-id")
        assert proc.returncode == 2 and MISMATCH in proc.stdout + proc.stderr
        back = tmp_path / "back.bin"
        esptool_api(rl.url, "--no-stub", "read-flash", "0x9000", "1024", str(back))
        assert back.read_bytes() == files["text"].read_bytes()[:1024]
        proc = esptool_cli(rl.url, "verify-flash", "0x9000", str(files["text"]))
        assert proc.returncode == 0 and "Verification successful" in proc.stdout, proc.stdout + proc.stderr
        # the reset attempts fail with ENOTTY: esptool warns (once per process) and carries on
        assert "Setting RTS/DTR lines is not supported" in proc.stdout + proc.stderr
        stats = rl.stats()
        assert stats.connections == 4 and stats.stub_uploads == 2  # each client found the ROM loader


def test_no_reset_modes_and_kept_state(image: Path, files: dict[str, Path]) -> None:
    with RomLoader(image, "8MB", reset_on_connect=False) as rl:
        esptool_api(rl.url, "--before", "no-reset", "--after", "no-reset", "write-flash", "0x0", str(files["text"]))
        assert rl.mode is Mode.ROM  # --after no-reset: the stub soft-resets back into the ROM loader
        out = esptool_api(rl.url, "--before", "no-reset", "--after", "no-reset-stub", "chip-id")
        assert rl.mode is Mode.STUB and rl.stats().stub_uploads == 2
        out = esptool_api(rl.url, "--before", "no-reset", "--after", "no-reset-stub", "verify-flash", "0x0",
                          str(files["text"]))
        assert "Stub flasher is already running. No upload is necessary." in out  # SYNC answered with 0
        assert rl.stats().stub_uploads == 2
        rl.reset()
        esptool_api(rl.url, "--no-stub", "--after", "soft-reset", "chip-id")  # ROM FLASH_END: runs the app
        assert rl.mode is Mode.APP
        with pytest.raises(FatalError, match="No serial data received"):
            esptool_api(rl.url, "--before", "no-reset", "--connect-attempts", "1", "chip-id")
        rl.reset()
        assert "ESP32-S3" in esptool_api(rl.url, "--no-stub", "chip-id")


def test_stop_is_prompt_with_a_silent_client_and_port_zero_is_free(image: Path) -> None:
    rl = RomLoader(image, "4MB", idle_timeout_s=0.3)
    url = rl.start()
    host, port = url.removeprefix("socket://").rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    dropped = socket.create_connection((host, int(port)), timeout=5)
    assert dropped.recv(16) == b""  # idle_timeout_s: a client that says nothing is let go
    dropped.close()
    silent = socket.create_connection((host, int(port)), timeout=5)
    silent.sendall(b"\xc0\x00\x08")  # half a frame, then nothing
    time.sleep(0.15)
    t0 = time.monotonic()
    rl.stop()
    assert time.monotonic() - t0 < 1.0 and not rl.running
    silent.close()


@pytest.mark.parametrize("where", [["--listen", "127.0.0.1:0"], ["--pty"]], ids=["listen", "pty"])
def test_hil_rom_loader_command_prints_url_serves_and_stops_on_sigterm(tmp_path: Path, where: list[str]) -> None:
    image = tmp_path / "cli-flash.bin"
    payload = tmp_path / "payload.bin"
    payload.write_bytes(data(10_000, 8))
    code = ("import sys; from hil.cli_rom_loader import main; "
            "sys.exit(main(['rom-loader', '--flash-image', sys.argv[1], '--flash-size', '4MB', *sys.argv[2:]]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(image), *where], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout=15), "no URL within 15 s"
        url = proc.stdout.readline().strip()
        if where[0] == "--pty":
            assert url.startswith("/dev/pts/")
        else:
            assert url.startswith("socket://127.0.0.1:") and not url.endswith(":0")
        flashed = esptool_cli(url, "--chip", "esp32s3", "write-flash", "0x2000", str(payload))
        assert flashed.returncode == 0, flashed.stdout + flashed.stderr
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=1.0) == 0 and time.monotonic() - t0 < 1.0
        assert "1 connection(s)" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    flash = image.read_bytes()
    assert len(flash) == 4 * MB and flash[0x2000 : 0x2000 + 10_000] == payload.read_bytes()
    # the image persists: a wrong --flash-size is refused with a clear message
    proc2 = subprocess.run([sys.executable, "-m", "hil.cli_rom_loader", "rom-loader", "--flash-image", str(image)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert proc2.returncode == 2 and "pass --flash-size 4MB" in proc2.stderr and not proc2.stdout


def test_ram_download_of_other_code_runs_it_and_silences_the_loader(loader: RomLoader) -> None:
    code = zlib.compress(b"not the esptool stub") * 8
    raw = RawClient(loader.url)
    try:
        raw.sync()
        assert raw.command(request(Op.MEM_BEGIN, words(len(code), 1, 0x1800, 0x40380000)))[2] == bytes(4)
        assert raw.command(data_request(Op.MEM_DATA, 0, code))[2] == bytes(4)
        assert raw.command(request(Op.MEM_END, words(0, 0x40380000)))[2] == bytes(4)
        time.sleep(0.2)
        assert loader.mode is Mode.APP and loader.stats().stub_uploads == 0
        bad = words(16, 1, 16, 0x10000000)
        raw.send(request(Op.MEM_BEGIN, bad))  # the "app" does not answer the loader protocol any more
        raw.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            raw.frame()
    finally:
        raw.close()
    raw = RawClient(loader.url)  # a new connection: the chip was reset into the ROM loader
    try:
        raw.sync()
        _, _, status = raw.command(request(Op.MEM_BEGIN, bad))
        assert status == b"\x01\x0f\x00\x00"  # invalid RAM binary address
    finally:
        raw.close()
