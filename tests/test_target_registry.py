"""One list of targets: built-ins plus the `hil.targets` entry point group, read by the CLI, the plugin, bench
files and get_target()."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hil.targets import get_target, target_names
from hil.targets.base import TargetError
from hil.targets.registry import BUILTIN, TargetSpec


def test_builtins_and_their_provenance():
    assert target_names()[:3] == ["host", "qemu", "esp32s3"]
    by_name = {s.name: s for s in BUILTIN}
    assert by_name["esp32s3"].serial and not by_name["esp32s3"].emulated
    assert by_name["qemu"].emulated and "not ESP32-S3 hardware" in by_name["qemu"].provenance
    with pytest.raises(TargetError, match="unknown target 'esp8266'; choose one of host, qemu, esp32s3"):
        get_target("esp8266")


def test_a_third_party_target_is_one_module_plus_one_entry_point(tmp_path):
    """A package that declares a target through the entry point: the CLI's choices, --hil-target, bench files
    and get_target() all know it, with its own provenance; a clash with a built-in is refused."""
    pkg = tmp_path / "site"
    (pkg / "hil_fake_board").mkdir(parents=True)
    (pkg / "hil_fake_board" / "__init__.py").write_text(textwrap.dedent("""
        from hil.targets.registry import TargetSpec

        class FakeBoard:
            def __init__(self, **options):
                self.options = options

        TARGET = TargetSpec("fakeboard", "hil_fake_board:FakeBoard", emulated=False, serial=True,
                            provenance="measured on hardware (a fake board)")
        CLASH = TargetSpec("qemu", "hil_fake_board:FakeBoard", emulated=False, provenance="impostor")
    """))
    dist = pkg / "hil_fake_board-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hil-fake-board\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hil.targets]\nfakeboard = hil_fake_board:TARGET\n"
                                           "qemu = hil_fake_board:CLASH\n")
    code = textwrap.dedent("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from hil.dut import PROVENANCE, TARGETS, EMULATED_TARGETS
            from hil.bench import KNOWN_TARGETS, SERIAL_TARGETS
            from hil.cli import build_parser
            from hil.targets import get_target
        print(TARGETS, KNOWN_TARGETS, SERIAL_TARGETS, EMULATED_TARGETS)
        print(PROVENANCE["fakeboard"], PROVENANCE["qemu"])
        print(type(get_target("fakeboard", port="socket://x")).__name__)
        print(build_parser().parse_args(["check", "--target", "fakeboard"]).target)
        print([str(w.message) for w in caught if "clashes" in str(w.message)])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(pkg), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "'fakeboard'" in lines[0] and lines[0].count("fakeboard") == 3  # TARGETS, KNOWN_TARGETS, SERIAL
    assert lines[1].startswith("measured on hardware (a fake board) emulated (QEMU")
    assert lines[2] == "FakeBoard" and lines[3] == "fakeboard"
    assert "clashes with hil.targets.qemu:QemuTarget" in lines[4]


def test_target_spec_is_plain_data():
    spec = TargetSpec("x", "m:C", emulated=True, provenance="emulated (x)")
    assert not spec.serial and not spec.make_port
