"""`hil measure` as a user runs it, and the plugin's power_analyzer / hil_results fixtures as another
repository's suite would use them."""

import json

import pytest

from hil import paths
from hil.cli import main
from hil.instruments.simulated import start_simulated_analyzer


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    return tmp_path / "reports"


@pytest.mark.timeout(120)
def test_measure_on_qemu_prints_latency_energy_and_power(reports, capsys):
    rc = main(["measure", "--model", str(paths.SYNTHETIC_MODEL), "--target", "qemu", "--images", "5"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 0
    # the latency is qemu's cycle count of the synthetic extractor at its 40 MHz counter; the simulated analyzer's
    # ESP32-S3 datasheet model draws 72.4 mA at 3.3 V while the device infers
    report = json.loads((reports / "latest" / "measure-qemu.json").read_text())
    latency_ms = next(m for m in report["measurements"] if m["name"] == "latency_device")["value"]
    assert last.startswith(f"median latency {latency_ms:.2f} ms (emulated: qemu)")
    assert "mJ/inference (modelled)" in last and "mW (modelled)" in last
    assert report["ok"] and report["windows_found"] == 5 and report["summary"] == last
    energy = next(m for m in report["measurements"] if m["name"] == "energy_per_inference")
    assert energy["value"] == pytest.approx(0.0724 * 3.3 * latency_ms, rel=0.01)
    # the default offload payload: the model's remote_features output, 32 x 32 x 19 int8
    wifi = next(m for m in report["measurements"] if m["name"] == "offload_wifi_6mbps")
    assert wifi["provenance"] == "modelled" and "19456 B payload" in wifi["detail"]


@pytest.mark.timeout(120)
def test_measure_span_mode_with_idle_subtracted(reports, capsys):
    rc = main(["measure", "--model", str(paths.SYNTHETIC_MODEL), "--target", "qemu", "--images", "4",
               "--mode", "span", "--subtract-idle",
               "--link", "bt-270kbps", "--payload-bytes", "27000"])
    assert rc == 0
    report = json.loads((reports / "latest" / "measure-qemu.json").read_text())
    figures = {m["name"]: m for m in report["measurements"]}
    latency_ms = figures["latency_device"]["value"]
    # MLPerf Tiny style: first to last edge / N; with the idle power removed only the inference's excess is left
    assert figures["energy_per_inference"]["value"] == pytest.approx((0.0724 - 0.0329) * 3.3 * latency_ms,
                                                                     rel=0.01)
    assert "MLPerf Tiny" in figures["energy_per_inference"]["detail"]
    assert [n for n in figures if n.startswith("offload_")] == ["offload_bt_270kbps"]
    assert figures["offload_bt_270kbps"]["value"] == pytest.approx(27000 * 8 / 270e3 * 1e3)
    rc = main(["measure", "--model", str(paths.SYNTHETIC_MODEL), "--target", "qemu", "--images", "2",
               "--idle-power-mw", "0"])
    energy = json.loads((reports / "latest" / "measure-qemu.json").read_text())["measurements"][3]
    assert rc == 0 and energy["name"] == "energy_per_inference"
    assert energy["value"] == pytest.approx(0.0724 * 3.3 * latency_ms, rel=0.01)  # nothing subtracted


@pytest.mark.timeout(120)
def test_measure_exits_non_zero_when_the_analyzer_sees_no_windows(reports, capsys):
    # An analyzer nobody reports the DUT's activity to: its supply trace is flat idle current.
    with start_simulated_analyzer() as sim:
        rc = main(["measure", "--target", "host", "--images", "3", "--hil-visa", sim.resource_name,
                   "--trigger", "software"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert rc == 1
    assert last.endswith("the analyzer saw no inference windows") and "(emulated: host)" in last


@pytest.mark.timeout(120)
def test_measure_reports_an_unreachable_analyzer_as_an_instrument_error(reports, capsys):
    rc = main(["measure", "--target", "host", "--images", "3", "--hil-visa", "TCPIP0::127.0.0.1::1::SOCKET"])
    err = capsys.readouterr().err
    assert rc == 4 and "TCPIP0::127.0.0.1::1::SOCKET" in err and "*IDN?" in err  # EXIT_INSTRUMENT
    assert "instrument error" in err


INNER = """
from hil.measure.run import MeasureOptions, measure

def test_measure(dut, power_analyzer, hil_results):
    report = measure(dut, power_analyzer, MeasureOptions(images=3))
    hil_results.extend(report.measurements)
    assert report.windows_found == 3

def test_out_of_limits(hil_results):
    from hil.measure.measurement import Measurement
    hil_results.record(Measurement("energy_per_inference", 9.0, "mJ", "modelled").with_limits(high=1.0))
"""


@pytest.mark.timeout(120)
def test_plugin_records_measurements_into_the_results_file(pytester):
    pytester.makepyfile(test_inner=INNER)
    out = pytester.path / "out"
    result = pytester.runpytest("--hil-target", "host", "--hil-report-dir", str(out), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*measurement out of limits: energy_per_inference = 9 mJ*FAIL*"])
    results = json.loads((out / "latest" / "results.json").read_text())
    assert results["verdict"] == "fail" and results["counts"] == {"passed": 1, "failed": 1}
    by_test = {t: [m for m in results["metrics"] if m["test"] == t]
               for t in ("test_inner.py::test_measure", "test_inner.py::test_out_of_limits")}
    names = {m["name"]: m for m in by_test["test_inner.py::test_measure"]}
    assert names["latency_device"]["provenance"] == "emulated"
    assert names["energy_per_inference"]["provenance"] == "modelled"
    assert by_test["test_inner.py::test_out_of_limits"][0]["passed"] is False  # a failed figure is still written
    assert results["out_of_limits"] == ["test_out_of_limits::energy_per_inference"]


def test_visa_option_and_bench_resource_reach_the_fixture(pytester):
    pytester.makepyfile(test_inner="""
def test_x(pytestconfig):
    from hil.plugin import _analyzer_setting
    assert _analyzer_setting(pytestconfig, "hil_visa") == "TCPIP0::192.0.2.10::inst0::INSTR"
    assert _analyzer_setting(pytestconfig, "hil_analyzer") == "N6705C"
""")
    bench = paths.FIXTURES / "benches" / "esp32s3-n6705c.yaml"
    result = pytester.runpytest("--hil-bench", str(bench), "--hil-port", "/dev/null", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    pytester.makepyfile(test_inner="""
def test_x(pytestconfig):
    from hil.plugin import _analyzer_setting
    assert _analyzer_setting(pytestconfig, "hil_visa") == "TCPIP0::10.0.0.5::5025::SOCKET"
    assert _analyzer_setting(pytestconfig, "hil_analyzer") == "ngm202"
""")
    result = pytester.runpytest("--hil-visa", "TCPIP0::10.0.0.5::5025::SOCKET", "--hil-analyzer", "ngm202",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
