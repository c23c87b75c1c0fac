"""The pytest plugin as another repository would use it: options, ini keys, the session-scoped dut, logs."""

import pytest

from hil import paths

INNER_TESTS = """
import numpy as np

SEEN = []

def test_first(dut):
    SEEN.append(id(dut))
    assert dut.info.port == "host"
    assert dut.infer([np.zeros(t.shape, np.int8) for t in dut.info.inputs]).cycles > 0

def test_second(dut, hil_options):
    SEEN.append(id(dut))
    assert hil_options.target == "host"
    assert SEEN[0] == SEEN[1], "dut must be one device for the whole session"
"""


@pytest.mark.timeout(120)
def test_dut_is_session_scoped_and_each_test_gets_a_log(pytester):
    pytester.makepyfile(test_inner=INNER_TESTS)
    # the synthetic model by name (int8 input, the run's name), whatever the default is; --hil-model=DIR in one
    # word, so that pytest does not take the path into its rootdir search
    result = pytester.runpytest("--hil-target", "host", f"--hil-model={paths.SYNTHETIC_MODEL}", "--hil-report-dir",
                                str(pytester.path / "out"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    run = (pytester.path / "out" / "latest").resolve()  # the session's run directory, reports/runs/<run>
    assert run.parent.name == "runs" and run.name.endswith("-host-synthetic-extractor")
    logs = sorted(p.name for p in (run / "logs").glob("*.log"))
    assert logs == ["test_inner.py_test_first.log", "test_inner.py_test_second.log"]
    first_log = (run / "logs" / "test_inner.py_test_first.log").read_text()
    assert "sent INFER" in first_log  # the protocol traffic of that test, and only of that test
    assert "sent INFER" not in (run / "logs" / "test_inner.py_test_second.log").read_text()


@pytest.mark.timeout(120)
def test_ini_file_selects_the_target(pytester):
    pytester.makeini("[pytest]\nhil_target = host\n")
    pytester.makepyfile(test_inner="def test_target(hil_options):\n    assert hil_options.target == 'host'\n")
    pytester.runpytest().assert_outcomes(passed=1)


def test_unknown_target_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-target", "esp8266")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown target 'esp8266'*host, qemu, esp32s3*"])


def test_esp32s3_without_a_port_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-target", "esp32s3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*esp32s3 needs --hil-port*"])


def test_non_numeric_baud_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-target", "host", "--hil-baud", "fast")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*hil-baud*'fast' is not a whole number*"])


def test_bench_file_supplies_the_options_and_explicit_options_win(pytester):
    bench = pytester.path / "bench.yaml"
    bench.write_text("name: lab1\ntarget: esp32s3\nresources:\n  serial:\n    url: rfc2217://lab1:4000\n"
                     "    baud: 921600\nfirmware:\n  flash: false\n")
    pytester.makepyfile(test_inner="""
def test_options(hil_options, hil_bench):
    assert hil_bench.name == "lab1"
    assert (hil_options.target, hil_options.port, hil_options.baud) == ("esp32s3", "rfc2217://lab1:4000", 921600)
    assert hil_options.flash is False
""")
    pytester.runpytest("--hil-bench", str(bench)).assert_outcomes(passed=1)
    pytester.makepyfile(test_inner="def test_options(hil_options):\n    assert hil_options.baud == 115200\n")
    pytester.runpytest("--hil-bench", str(bench), "--hil-baud", "115200").assert_outcomes(passed=1)


def test_broken_bench_file_is_a_usage_error_naming_the_key(pytester):
    bench = pytester.path / "bench.yaml"
    bench.write_text("name: lab1\ntarget: esp32s3\nresources:\n  serial:\n    url: /dev/ttyUSB0\n    baud: fast\n")
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-bench", str(bench))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-bench*bench.yaml*baud*"])
