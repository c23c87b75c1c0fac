"""Bench files: every shipped file loads, and every kind of mistake is reported with file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from hil import paths
from hil.bench import KNOWN_TARGETS, BenchError, load_bench

BENCHES = paths.FIXTURES / "benches"


@pytest.mark.parametrize("name", ["emulated", "host", "esp32s3-n6705c"])
def test_each_shipped_bench_loads(name: str) -> None:
    bench = load_bench(BENCHES / f"{name}.yaml")
    assert bench.name == name
    assert bench.target in KNOWN_TARGETS
    assert bench.model_dir == paths.SYNTHETIC_MODEL  # relative to the bench file, not to the working directory


def test_shipped_benches_are_all_tested() -> None:
    assert sorted(p.stem for p in BENCHES.glob("*.yaml")) == ["emulated", "esp32s3-n6705c", "host"]


def test_emulated_bench() -> None:
    bench = load_bench(BENCHES / "emulated.yaml")
    assert bench.target == "qemu"
    assert bench.serial is None and bench.build_dir is None
    assert bench.power_analyzer is not None and bench.power_analyzer.visa is None  # simulated


def test_host_bench() -> None:
    bench = load_bench(BENCHES / "host.yaml")
    assert bench.target == "host"
    assert bench.serial is None and bench.power_analyzer is None and bench.marker is None


def test_real_bench() -> None:
    bench = load_bench(BENCHES / "esp32s3-n6705c.yaml")
    assert bench.target == "esp32s3"
    assert bench.serial is not None
    assert (bench.serial.url, bench.serial.baud) == ("/dev/ttyUSB0", 2_000_000)
    assert bench.power_analyzer is not None
    assert bench.power_analyzer.visa == "TCPIP0::192.0.2.10::inst0::INSTR"
    assert (bench.power_analyzer.model, bench.power_analyzer.channel) == ("N6705C", 1)
    assert bench.marker is not None and (bench.marker.gpio, bench.marker.trigger_pin) == (4, 1)
    assert bench.build_dir == paths.DEVICE_FW / "ports" / "esp32s3" / "build"
    assert (bench.flash, bench.esptool_baud, bench.erase_all) == (True, 921_600, False)


def test_defaults(tmp_path: Path) -> None:
    f = tmp_path / "minimal.yaml"
    f.write_text("target: qemu\n")
    bench = load_bench(f)
    assert bench.name == "minimal"  # from the file name
    assert bench.model_dir is None and bench.build_dir is None and bench.flash is True


def test_absolute_paths_stay_absolute(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("target: host\nmodel: /opt/models/x\n")
    assert load_bench(f).model_dir == Path("/opt/models/x")


SERIAL = "resources:\n  serial: {url: /dev/ttyUSB0, baud: 2000000}\n"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("target: qemu\ncolour: blue\n", "colour", "unknown key (allowed here: name, description, target"),
        (
            "target: esp32s3\nresources:\n  serial: {url: /dev/ttyUSB0, speed: 115200}\n",
            "resources.serial.speed",
            "unknown key (allowed here: url, baud)",
        ),
        ("target: qemu\nresources:\n  scope: {}\n", "resources.scope", "unknown key"),
        ("target: qemu\nfirmware:\n  build: x\n", "firmware.build", "unknown key"),
        ("name: x\n", "target", "required"),
        ("target: esp32\n", "target", "unknown target 'esp32' (known: host, qemu, esp32s3)"),
        ("target: 3\n", "target", "must be a string, not an integer (3)"),
        (
            "target: esp32s3\nresources:\n  serial: {url: /dev/ttyUSB0, baud: fast}\n",
            "resources.serial.baud",
            "must be an integer, not a string ('fast')",
        ),
        (
            "target: esp32s3\nresources:\n  serial: {url: /dev/ttyUSB0, baud: true}\n",
            "resources.serial.baud",
            "must be an integer, not a boolean (True)",
        ),
        ("target: esp32s3\nresources:\n  serial: {baud: 115200}\n", "resources.serial.url", "required"),
        ("target: esp32s3\nresources:\n  serial: /dev/ttyUSB0\n", "resources.serial", "must be a mapping"),
        ("target: esp32s3\n", "resources.serial", "required for target esp32s3"),
        ("target: qemu\n" + SERIAL, "resources.serial", "not used by target qemu"),
        (
            "target: qemu\nresources:\n  power_analyzer: {visa: 5}\n",
            "resources.power_analyzer.visa",
            "must be a string, not an integer (5)",
        ),
        (
            "target: qemu\nresources:\n  power_analyzer: {channel: 9}\n",
            "power_analyzer.channel",
            "between 1 and 4",
        ),
        (
            "target: qemu\nresources:\n  marker: {gpio: 49}\n",
            "resources.marker.gpio",
            "between 0 and 48, not 49",
        ),
        ("target: qemu\nresources:\n  marker: {trigger_pin: 1}\n", "resources.marker.gpio", "required"),
        (
            "target: qemu\nfirmware:\n  flash: yes please\n",
            "firmware.flash",
            "must be true or false, not a string",
        ),
        (
            "target: qemu\nfirmware:\n  build_dir: [a, b]\n",
            "firmware.build_dir",
            "must be a string, not a list",
        ),
        ("target: qemu\nmodel: 7\n", "model", "must be a string, not an integer (7)"),
        ("- target: qemu\n", "(top level)", "must be a mapping, not a list"),
    ],
)
def test_validation_errors_name_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    f = tmp_path / "bench.yaml"
    f.write_text(text)
    with pytest.raises(BenchError) as e:
        load_bench(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}: "), msg
    assert f"{key}: " in msg, msg
    assert problem in msg, msg


def test_yaml_syntax_error_names_the_file(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("target: [qemu\n")
    with pytest.raises(BenchError, match=r"broken\.yaml: not valid YAML"):
        load_bench(f)


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.yaml"
    f.write_text("# nothing\n")
    with pytest.raises(BenchError, match=r"empty\.yaml: empty bench file"):
        load_bench(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match=r"nope\.yaml: bench file not found"):
        load_bench(tmp_path / "nope.yaml")
