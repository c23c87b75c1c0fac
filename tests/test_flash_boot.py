"""Flashing the emulated targets like a board: `hil build` leaves ESP-IDF's flash files (flasher_args.json,
bootloader, partition table, app image), the real esptool flashes them through the emulated ROM loader
(hil.rom_loader) into a flash image file, and host/qemu boot from that image (hil/targets/flash_boot.py), their
HELLO checked against the flashed app. No mocks: real builds, real esptool, real emulated devices."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import struct
from pathlib import Path

import esptool
import pytest

from hil import paths
from hil.dut import DutError, DutOptions, open_dut
from hil.firmware import build_firmware, toolchain_status
from hil.firmware.flashimage import (
    FlashParams,
    ImageFormatError,
    Partition,
    PartitionTableError,
    encode_table,
    find_app,
    parse_table,
    read_app,
    write_flash_files,
)
from hil.firmware.flashimage.app import AppImage, encode_app, expected_app_of_build
from hil.firmware.flashimage.descriptors import AppDesc
from hil.firmware.flashimage.espimage import FLASH_FREQUENCIES, FLASH_MODES, FLASH_SIZES, Segment, encode_image
from hil.firmware.flashimage.flasher import Flasher, FlashSettings, flash_emulated
from hil.firmware.flashimage.identity import FirmwareIdentity, build_id_of, model_of
from hil.firmware.flashimage.partitions import TYPE_APP, TYPE_DATA
from hil.model.artifacts import resolve_model
from hil.rom_loader import RomLoader
from hil.targets import get_target
from hil.targets.esp32s3 import Esp32s3Target, load_flasher_args
from hil.targets.flash_boot import FlashBootError, boot_app, is_flash_image

pytestmark = pytest.mark.timeout(120)

FLASH_FILES = ("flasher_args.json", "flash_args", "bootloader/bootloader.bin",
               "partition_table/partition-table.bin", "hil_fw.bin")
PORTS = ["host", pytest.param("qemu", marks=pytest.mark.qemu)]
IDENTITY_MODEL = paths.DEVICE_FW / "tests" / "models" / "identity"  # hand-written, model sha256 00 01 .. 1f


def need(port: str) -> None:
    status = toolchain_status(port)
    if not status.ok:
        pytest.skip(str(status))


@pytest.fixture(scope="module")
def model():
    return resolve_model(paths.DEFAULT_MODEL)


def build_dir(port: str) -> Path:
    need(port)
    return build_firmware(port, paths.DEFAULT_MODEL).parent


def esptool_out(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        esptool.main(list(args))
    return out.getvalue()


# --- the files `hil build` writes --------------------------------------------------------------------------


@pytest.mark.parametrize("port", PORTS)
def test_hil_build_writes_esp_idf_flash_files_that_esptool_reads(port: str, capsys: pytest.CaptureFixture[str],
                                                                 model) -> None:
    from hil.cli import main

    need(port)
    assert main(["build", "--target", port]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(f"{port}: "))
    binary = Path(line.split(": ", 1)[1].split()[0])
    build = binary.parent
    for name in FLASH_FILES:
        assert (build / name).is_file(), name

    args = json.loads((build / "flasher_args.json").read_text())
    assert args["flash_settings"] == {"flash_mode": "dio", "flash_size": "8MB", "flash_freq": "80m"}
    assert args["flash_files"] == {"0x0": "bootloader/bootloader.bin", "0x8000": "partition_table/partition-table.bin",
                                   "0x10000": "hil_fw.bin"}
    assert args["app"] == {"offset": "0x10000", "file": "hil_fw.bin", "encrypted": "false"}
    assert args["bootloader"]["offset"] == "0x0" and args["partition-table"]["offset"] == "0x8000"
    assert args["extra_esptool_args"] == {"after": "hard_reset", "before": "default_reset", "stub": True,
                                          "chip": "esp32s3"}
    plan = load_flasher_args(build)  # the esp32s3 target's reader takes it as an ESP-IDF build
    assert [offset for offset, _ in plan.files] == [0x0, 0x8000, 0x10000]

    firmware = binary.read_bytes()
    build_id = build_id_of(firmware)
    info = esptool_out("image-info", str(build / "hil_fw.bin"))
    for line in ("Detected image type: ESP32-S3", "Chip ID: 9 (ESP32-S3)", "Project name: hil_fw",
                 f"App version: {build_id}", f"ELF file SHA256: {hashlib.sha256(firmware).hexdigest()}",
                 f"ESP-IDF: hil emulated {port}", "Flash size: 8MB", "Flash mode: DIO"):
        assert line in info, line
    assert "Checksum: 0x" in info and "(valid)" in info.split("Checksum:")[1].splitlines()[0]
    assert info.split("Validation hash:")[1].splitlines()[0].endswith("(valid)")
    boot = esptool_out("image-info", str(build / "bootloader/bootloader.bin"))
    assert "Bootloader version: 1" in boot and "ESP-IDF: hil emulated 2nd stage" in boot
    assert boot.split("Validation hash:")[1].splitlines()[0].endswith("(valid)")

    app = read_app((build / "hil_fw.bin").read_bytes())
    assert app.payload() == firmware  # exactly the emulated firmware, byte for byte
    assert app.hil is not None and (app.hil.port, app.hil.build_id, app.hil.model_sha256.hex()) == \
        (port, build_id, model.sha256)
    table = parse_table((build / "partition_table/partition-table.bin").read_bytes())
    assert table == [Partition("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
                     Partition("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
                     Partition("factory", TYPE_APP, 0x00, 0x10000, 8 * (1 << 20) - 0x10000)]
    assert find_app(table) == table[2] and table[2].size >= len(app.image.segments[1].data)


@pytest.mark.parametrize("port", PORTS)
def test_rebuild_gives_byte_identical_flash_files(port: str, tmp_path: Path) -> None:
    first = build_dir(port)
    before = {name: (first / name).read_bytes() for name in FLASH_FILES}
    mtimes = {name: (first / name).stat().st_mtime_ns for name in FLASH_FILES}
    build_firmware(port, paths.DEFAULT_MODEL)  # cached: the files are checked, not rewritten
    assert {name: (first / name).stat().st_mtime_ns for name in FLASH_FILES} == mtimes
    again = build_firmware(port, paths.DEFAULT_MODEL, build_root=tmp_path).parent  # a real rebuild (make)
    assert again != first
    for name in FLASH_FILES:
        assert (again / name).read_bytes() == before[name], name


# --- formats -----------------------------------------------------------------------------------------------


def test_partition_table_is_esp_idfs_binary_format() -> None:
    parts = [Partition("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000),
             Partition("ota_0", TYPE_APP, 0x10, 0x10000, 0x100000, flags=1)]
    raw = encode_table(parts)
    assert len(raw) == 0xC00
    assert raw[:2] == b"\xaa\x50" and raw[2:4] == bytes([TYPE_DATA, 0x02])
    assert struct.unpack_from("<II16sI", raw, 4) == (0x9000, 0x6000, b"nvs".ljust(16, b"\0"), 0)
    assert raw[64:66] == b"\xeb\xeb" and raw[66:80] == b"\xff" * 14
    assert raw[80:96] == hashlib.md5(raw[:64]).digest() and set(raw[96:]) == {0xFF}
    assert parse_table(raw) == parts and find_app(parts) == parts[1]  # no factory: ota_0
    broken = bytearray(raw)
    broken[8] ^= 1
    with pytest.raises(PartitionTableError, match="MD5"):
        parse_table(bytes(broken))
    with pytest.raises(PartitionTableError, match="erased flash"):
        parse_table(b"\xff" * 0xC00)


def test_header_flash_fields_match_esptools_tables() -> None:
    from esptool.cmds import FLASH_MODES as ESPTOOL_MODES
    from esptool.targets.esp32s3 import ESP32S3ROM

    assert FLASH_MODES == ESPTOOL_MODES
    assert FLASH_FREQUENCIES == ESP32S3ROM.FLASH_FREQUENCY and FLASH_SIZES == ESP32S3ROM.FLASH_SIZES


def test_model_identity_of_every_form_of_hil_model_c() -> None:
    assert model_of(paths.SYNTHETIC_MODEL) == ("synthetic-extractor", resolve_model(paths.SYNTHETIC_MODEL).sha256)
    assert model_of(IDENTITY_MODEL) == ("identity", bytes(range(32)).hex())  # positional initializer
    assert model_of(paths.DEVICE_FW / "tests" / "models" / "crash") == ("crash", "00" * 32)  # {0}


def test_esp_idf_app_expects_its_build_id(tmp_path: Path) -> None:
    """A real ESP-IDF app (no hil descriptor): the port's BUILD_ID is "<PROJECT_VER> idf <IDF_VER>"."""
    desc = AppDesc(version="v0.4.0-12-g3f2a1bc", project_name="hil_fw", idf_ver="v5.2.1",
                   app_elf_sha256=bytes(32))
    app = encode_image([Segment(0x3C000020, desc.encode())], flash=FlashParams())
    (tmp_path / "hil_fw.bin").write_bytes(app)
    (tmp_path / "flasher_args.json").write_text(json.dumps({"app": {"offset": "0x10000", "file": "hil_fw.bin"}}))
    expected = expected_app_of_build(tmp_path)
    assert expected is not None and expected.build_id == "v0.4.0-12-g3f2a1bc idf v5.2.1"
    assert expected.model_sha256 is None
    with pytest.raises(ImageFormatError, match="ESP-IDF app 'hil_fw'.*for a real ESP32-S3"):
        read_app(app).payload()


def test_flash_settings_validate_reset_modes() -> None:
    assert FlashSettings(before="no_reset", after="no-reset-stub").before == "no-reset"
    with pytest.raises(ValueError, match="--after 'reboot': expected one of hard-reset"):
        FlashSettings(after="reboot")


# --- flashing and booting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("port", "stub"), [("host", True), ("host", False), pytest.param("qemu", True,
                                                                                          marks=pytest.mark.qemu)],
                         ids=["host-stub", "host-rom", "qemu-stub"])
def test_flash_compressed_then_boot_from_the_image(port: str, stub: bool, tmp_path: Path, model) -> None:
    build = build_dir(port)
    image = tmp_path / "flash.bin"
    result = flash_emulated(load_flasher_args(build), image, FlashSettings(stub=stub, compress=True))
    stats = result.loader_stats
    assert stats is not None and stats.stub_uploads == (1 if stub else 0)
    assert stats.commands["FLASH_DEFL_DATA"] > 0 and stats.commands["FLASH_DATA"] == 0  # compressed
    assert not result.skipped and len(result.written) == 3
    assert result.output.count("Hash of data verified.") == 3
    flashed = image.read_bytes()
    for offset, path in load_flasher_args(build).files:
        assert flashed[offset : offset + path.stat().st_size] == path.read_bytes()

    dut = open_dut(model, DutOptions(target=port, firmware=image, timeout_s=10))  # --hil-fw FLASH_IMAGE
    try:
        binary = build / ("hil_fw" if port == "host" else "hil_fw.elf")
        assert dut.target.firmware.read_bytes() == binary.read_bytes()  # exactly what the build made
        assert dut.info.build_id == build_id_of(binary.read_bytes()) == dut.target.expected_app.build_id
        assert dut.info.model_sha256 == model.sha256 and dut.info.port == port
        merged = dut.target.merged_image  # what the run records as flash_image_sha256
        assert merged is not None and merged.read_bytes()[0x10000:] == (build / "hil_fw.bin").read_bytes()
    finally:
        dut.close()


def test_second_flash_skips_and_reflash_writes_again(tmp_path: Path, model) -> None:
    build = build_dir("host")
    flasher = Flasher("host", FlashSettings(), flash_image=tmp_path / "flash.bin", build=build,
                      merged=tmp_path / "merged.bin")
    first = flasher.flash()
    second = flasher.flash()
    print(f"\nfirst flash {first.seconds:.3f} s ({first.summary()}); second {second.seconds:.3f} s "
          f"({second.summary()})")
    assert len(first.written) == 3 and first.loader_stats.flash_data_packets > 0
    assert second.all_skipped and "already in flash, skipping write." in second.output
    assert "nothing written" in second.summary() and "skipped" in second.summary()
    assert second.loader_stats.flash_data_packets == 0 and second.loader_stats.bytes_written == 0
    assert first.merged_sha256 == second.merged_sha256 == hashlib.sha256((tmp_path / "merged.bin").read_bytes()) \
        .hexdigest()
    third = flasher.flash(reflash=True)
    assert len(third.written) == 3 and third.loader_stats.flash_data_packets > 0
    assert "--skip-flashed" not in third.command
    erase = flasher.flash(erase_all=True)
    assert "--erase-all" in erase.command and erase.loader_stats.commands["ERASE_FLASH"] == 1
    boot = boot_app(tmp_path / "flash.bin", "host")
    assert hashlib.sha256(boot.merged_image.read_bytes()).hexdigest() == first.merged_sha256


def test_board_target_flashes_with_the_same_function(tmp_path: Path) -> None:
    """Esp32s3Target on an emulated ROM loader's socket:// URL: the board path (flasher_args.json, --skip-flashed,
    merge-bin) on the emulated host build."""
    build = build_dir("host")
    with RomLoader(tmp_path / "flash.bin", "8MB") as loader:
        target = Esp32s3Target(loader.url, build_dir=build, boot_wait_s=0, log_dir=tmp_path / "logs",
                               flash_settings=FlashSettings(baud=460_800))
        target.start()
        assert target.flash_result is not None and len(target.flash_result.written) == 3
        assert loader.stats().baud == 460_800
        target.start()
        assert target.flash_result.all_skipped
        expected = target.expected_app
        assert expected is not None and expected.build_id == read_app((build / "hil_fw.bin").read_bytes()).hil.build_id
        merged = target.merged_image
        assert merged == tmp_path / "logs" / "merged.bin"
        assert merged.read_bytes()[0x8000:0x8C00] == (build / "partition_table/partition-table.bin").read_bytes()


# --- what goes wrong ---------------------------------------------------------------------------------------


@pytest.fixture
def flashed_image(tmp_path: Path) -> Path:
    """A flash image holding the host build, as esptool wrote it."""
    image = tmp_path / "flash.bin"
    flash_emulated(load_flasher_args(build_dir("host")), image)
    return image


def test_corrupted_app_image_is_named(flashed_image: Path) -> None:
    data = bytearray(flashed_image.read_bytes())
    data[0x10000 + 0x400] ^= 0x40  # a byte of the firmware inside the app image
    flashed_image.write_bytes(bytes(data))
    with pytest.raises(FlashBootError, match=rf"app image at 0x10000 of {flashed_image}: bad checksum .*flash "
                                             r"incomplete\?.*hil flash --target host"):
        get_target("host", flash_image=flashed_image)
    data[0x10000 + 0x400] ^= 0x40
    data[0x10000 + 4] ^= 0x01  # the entry point: covered by the SHA-256 only
    flashed_image.write_bytes(bytes(data))
    with pytest.raises(FlashBootError, match=r"app image at 0x10000 of .*: bad SHA-256"):
        get_target("host", flash_image=flashed_image)


def test_no_app_partition_and_erased_flash_are_named(flashed_image: Path, tmp_path: Path) -> None:
    data = bytearray(flashed_image.read_bytes())
    data[0x8000:0x8C00] = encode_table([Partition("nvs", TYPE_DATA, 0x02, 0x9000, 0x6000)])
    flashed_image.write_bytes(bytes(data))
    with pytest.raises(FlashBootError, match=rf"no app partition \(factory or ota_0\) in the partition table at "
                                             rf"0x8000 of {flashed_image} \(it lists: nvs \(data/nvs\)"):
        get_target("host", flash_image=flashed_image)
    erased = tmp_path / "erased.bin"
    erased.write_bytes(b"\xff" * (1 << 20))
    assert is_flash_image(erased)
    with pytest.raises(FlashBootError, match="partition table at 0x8000 of .*: no partition table .erased flash"):
        get_target("host", flash_image=erased)
    with pytest.raises(FlashBootError, match="holds firmware for the host target, not for qemu"):
        boot_app(_restore(flashed_image), "qemu")


def _restore(image: Path) -> Path:
    flash_emulated(load_flasher_args(build_dir("host")), image)
    return image


def test_flash_image_of_another_model_fails_with_both_sha256s(tmp_path: Path, model) -> None:
    other = build_firmware("host", IDENTITY_MODEL, kernels=False)
    image = tmp_path / "flash.bin"
    flash_emulated(load_flasher_args(other.parent), image)
    with pytest.raises(DutError) as exc:
        open_dut(model, DutOptions(target="host", firmware=image))
    message = str(exc.value)
    assert model.sha256 in message and bytes(range(32)).hex() in message
    assert "'identity'" in message and "--hil-model" in message


def test_device_that_does_not_run_what_was_flashed_fails_naming_both(tmp_path: Path, model) -> None:
    """An app whose descriptor promises another build id than the firmware it carries reports."""
    build = tmp_path / "build"
    shutil.copytree(build_dir("host"), build, ignore=shutil.ignore_patterns("core", "model", "ports"))
    write_flash_files(build / "hil_fw", "host", paths.DEFAULT_MODEL, build_id="src-000000000000 gcc-0.0")
    image = tmp_path / "flash.bin"
    flash_emulated(load_flasher_args(build), image)
    with pytest.raises(DutError, match=r"does not run what was flashed \(build id differ\): it reports build id "
                                       r"'src-[0-9a-f]{12} gcc-.*holds build id 'src-000000000000 gcc-0.0'"
                                       r".*--hil-reflash"):
        open_dut(model, DutOptions(target="host", firmware=image))


def test_app_image_writer_rejects_what_does_not_fit() -> None:
    identity = FirmwareIdentity("host", "x" * 33, "m", "00" * 32)
    with pytest.raises(ValueError, match="longer than its 32-byte field"):
        encode_app(b"\0" * 8, "hil_fw", identity, FlashParams())
    app = encode_app(b"12345", "hil_fw", FirmwareIdentity("host", "b", "m", "00" * 32), FlashParams())
    assert isinstance(read_app(app), AppImage) and read_app(app).payload() == b"12345"  # padded, then cut back


# --- the command and the fixture ----------------------------------------------------------------------------


def _flash_cli(argv: list[str]) -> int:
    import argparse

    from hil import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "flash" not in sub.choices:  # until hil/cli.py registers it
        from hil.cli_flash import add_flash_parsers

        add_flash_parsers(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.qemu
def test_hil_flash_qemu_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("qemu")
    image = tmp_path / "qemu-flash.bin"
    common = ["flash", "--target", "qemu", "--flash-image", str(image), "--merged", str(tmp_path / "merged.bin")]
    assert _flash_cli(common) == 0
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"merged image {tmp_path / 'merged.bin'} sha256 ")
    sha = last.rsplit(" ", 1)[1]
    assert sha == hashlib.sha256((tmp_path / "merged.bin").read_bytes()).hexdigest()
    assert "wrote 3 region(s)" in out and "booted qemu from" in out and "matches the flashed app" in out
    assert hashlib.sha256(get_target("qemu", flash_image=image).merged_image.read_bytes()).hexdigest() == sha

    assert _flash_cli(common) == 0
    out = capsys.readouterr().out
    assert "nothing written: all 3 regions already in flash (MD5 matched), skipped" in out
    assert "emulated ROM loader: 0 FLASH_DATA packets, 0 bytes written" in out and out.strip().endswith(sha)
    assert _flash_cli([*common, "--reflash", "--no-boot"]) == 0
    assert "wrote 3 region(s)" in capsys.readouterr().out


def test_hil_flash_esp32s3_needs_port_and_build(capsys: pytest.CaptureFixture[str]) -> None:
    assert _flash_cli(["flash", "--target", "esp32s3"]) == 2
    assert "needs --port" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_flasher_fixture_and_dut_booting_from_the_flashed_image(pytester: pytest.Pytester, tmp_path: Path) -> None:
    build = build_dir("host")  # --hil-fw BUILD_DIR: both fixtures flash this one build
    pytester.makepyfile(test_inner="""
def test_flash_twice(flasher):
    first = flasher.flash()
    second = flasher.flash()
    print(f"first {first.seconds:.2f} s, second {second.seconds:.2f} s: {second.summary()}")
    assert len(first.written) == 3
    assert second.all_skipped and second.loader_stats.flash_data_packets == 0
    assert first.merged_sha256 == second.merged_sha256

def test_dut_boots_from_it(dut, flasher):
    assert dut.target.flash_image == flasher.image
    assert dut.flash_result.all_skipped
    assert dut.info.build_id == dut.target.expected_app.build_id
""")
    image = tmp_path / "fixture-flash.bin"
    result = pytester.runpytest("--hil-target", "host", "--hil-fw", str(build), "--hil-flash-image", str(image),
                                "--hil-flash-baud", "460800", "--hil-report-dir", str(pytester.path / "out"),
                                "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*first * s, second * s: flashed in * nothing written*skipped*"])
    pytester.makepyfile(test_inner="""
def test_reflashed(dut, flasher):
    assert flasher.settings.reflash and flasher.settings.baud == 460800
    assert len(dut.flash_result.written) == 3 and dut.info.build_id == dut.target.expected_app.build_id
""")
    pytester.runpytest("--hil-target", "host", "--hil-fw", str(build), "--hil-flash-image", str(image),
                       "--hil-flash-baud", "460800", "--hil-reflash", "--hil-report-dir", str(pytester.path / "out"),
                       "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_bad_flash_options_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-target", "host", "--hil-before", "sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--before 'sometimes': expected one of default-reset*"])
    result = pytester.runpytest("--hil-target", "host", "--hil-flash-baud", "fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
