"""The run record: journal -> report rebuild (also of a killed run), regression detection on synthetic
histories, run listing / reference / pruning / history, progress lines off a terminal, xdist workers."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from hil import paths
from hil.cli import main
from hil.measure.measurement import Measurement
from hil.progress import ProgressDisplay
from hil.report.build import build_report
from hil.report.compare import ToleranceError, ToleranceTable, compare_results
from hil.report.journal import Journal, JournalError, read_journal
from hil.report.recorder import RunRecorder
from hil.report.rundir import RunDirError, make_run_dir, resolve_run
from hil.report.summary import load_results

# ---------------------------------------------------------------------------------------------------------------
# journal and report rebuild
# ---------------------------------------------------------------------------------------------------------------


def _run(reports: Path, target: str = "qemu", *, deterministic: bool = True) -> RunRecorder:
    rec = RunRecorder.create(reports, command="test", target=target, model=None)
    rec.journal.append("device", target=target, build_id="b1", cycles_deterministic=deterministic)
    return rec


def test_journal_survives_a_torn_last_line(tmp_path):
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("run_start", run_id="r", target="host")
    journal.append("test_start", test="t::a")
    with (tmp_path / "journal.jsonl").open("ab") as f:
        f.write(b'{"t": "2026-12-07T00:00:00.000Z", "kind": "measurem')  # killed in the middle of a write
    contents = read_journal(tmp_path)
    assert [r["kind"] for r in contents.records] == ["run_start", "test_start"] and contents.torn_lines == 1
    journal.append("test_end", test="t::a", outcome="passed")  # the next writer ends the torn line first
    contents = read_journal(tmp_path)
    assert [r["kind"] for r in contents.records] == ["run_start", "test_start", "test_end"]
    assert contents.torn_lines == 1
    with pytest.raises(ValueError, match="unknown journal record kind"):
        journal.append("gossip")
    (tmp_path / "other.jsonl").write_text('{"kind": "test_start"}\n')
    with pytest.raises(JournalError, match="does not begin with a run_start"):
        read_journal(tmp_path / "other.jsonl")
    with pytest.raises(JournalError, match="no journal"):
        read_journal(tmp_path / "nowhere")


def test_report_of_a_killed_run_holds_every_completed_measurement_and_names_the_running_test(tmp_path):
    rec = _run(tmp_path)
    rec.test_start("suite.py::test_a")
    rec.measurement(Measurement("latency_device", 9.5, "ms", "emulated", values=(9.4, 9.6)), test="suite.py::test_a")
    rec.test_end("suite.py::test_a", "passed", 0.5)
    rec.test_start("suite.py::test_b")
    rec.measurement(Measurement("energy_per_inference", 2.3, "mJ", "modelled", high=5.0), test="suite.py::test_b")
    rec.data("images", [[0, True], [1, False]], test="suite.py::test_b", fields=["index", "ok"])
    # ... and here the process is SIGKILLed: no test_end, no run_end
    report = build_report(rec.run_dir)
    r = report.results
    assert r["verdict"] == "incomplete" and not r["complete"]
    assert r["incomplete"]["running_tests"] == ["suite.py::test_b"]
    assert r["incomplete"]["completed_images"] == 2
    assert {m["key"]: m["value"] for m in r["metrics"]} == {"test_a::latency_device": 9.5,
                                                            "test_b::energy_per_inference": 2.3}
    assert json.loads((rec.run_dir / "results.json").read_text()) == r
    suite = ET.parse(rec.run_dir / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("errors") == "1"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["test_a::latency_device"].startswith("9.5 ms (emulated)") and props["verdict"] == "incomplete"
    families = {f.name: f for f in text_string_to_metric_families((rec.run_dir / "metrics.txt").read_text())}
    [sample] = families["hil_latency_device_milliseconds"].samples
    assert sample.value == 9.5 and sample.labels["provenance"] == "emulated"
    page = (rec.run_dir / "index.html").read_text()
    assert "INCOMPLETE" in page and "suite.py::test_b" in page


def test_junit_survives_what_a_device_prints(tmp_path):
    rec = _run(tmp_path)
    rec.test_start("t::boot")
    rec.log("device", "\x1b[0;31mE (312) boot: \x00\x07 garbage at the wrong baud \xff\n", test="t::boot")
    rec.test_end("t::boot", "failed", 0.1, "LinkTimeout: \x1b[0m no HELLO")
    rec.finish(1)
    suite = ET.parse(rec.run_dir / "junit.xml").getroot().find("testsuite")
    assert "\\x1b[0;31m" in suite.find("testcase").find("system-out").text


def test_a_finished_run_has_a_verdict_and_latest_points_at_it(tmp_path):
    rec = _run(tmp_path)
    rec.test_start("t::ok")
    rec.test_end("t::ok", "passed", 0.1)
    rec.test_start("t::bad")
    rec.measurement(Measurement("windows_found", 3, "windows", "modelled", low=5, high=5), test="t::bad")
    rec.test_end("t::bad", "failed", 0.2, "measurement out of limits")
    report = rec.finish(1)
    assert report.verdict == "fail" and report.results["out_of_limits"] == ["bad::windows_found"]
    assert (tmp_path / "latest").resolve() == rec.run_dir.resolve()
    for name in ("journal.jsonl", "results.json", "junit.xml", "metrics.txt", "index.html"):
        assert (rec.run_dir / name).is_file(), name
    second = make_run_dir(tmp_path, "qemu", "no-model")
    assert second != rec.run_dir  # never over an earlier run, even within the same second


# ---------------------------------------------------------------------------------------------------------------
# regression detection
# ---------------------------------------------------------------------------------------------------------------


def _results(metrics: dict[str, tuple[float, str]], *, deterministic: bool = True, tests=None) -> dict:
    return {"run_id": "r", "target": {"name": "qemu"}, "model": {"name": "m", "sha256": "x"},
            "firmware": {"cycles_deterministic": deterministic},
            "metrics": [{"key": k, "name": k, "value": v, "unit": "u", "provenance": p} for k, (v, p) in
                        metrics.items()],
            "tests": tests or []}


def _verdicts(comparison: dict) -> dict[str, str]:
    return {r["key"]: r["verdict"] for r in comparison["rows"]}


def test_regressions_improvements_tolerance_new_and_missing():
    table = ToleranceTable.load()
    reference = _results({"latency_device": (10.0, "emulated"), "accuracy_top1": (0.80, "emulated"),
                          "energy_per_inference": (2.0, "modelled"), "cycles_total_median": (1000.0, "emulated"),
                          "payload_bytes_mean": (150.0, "emulated")})
    now = _results({"latency_device": (10.03, "emulated"),  # +0.3%: within the deterministic 0.5%
                    "accuracy_top1": (0.79, "emulated"),  # lower accuracy: worse
                    "energy_per_inference": (1.5, "modelled"),  # less energy: better
                    "cycles_total_median": (1010.0, "emulated"),  # +1%: beyond 0.5%, worse
                    "offload_wifi_6mbps": (28.0, "modelled")})  # new; payload_bytes_mean missing
    c = compare_results(now, reference, table)
    assert _verdicts(c) == {"latency_device": "ok", "accuracy_top1": "regressed", "energy_per_inference": "improved",
                            "cycles_total_median": "regressed", "payload_bytes_mean": "missing",
                            "offload_wifi_6mbps": "new"}
    assert c["verdict"] == "fail" and c["regressions"] == 3
    row = next(r for r in c["rows"] if r["key"] == "cycles_total_median")
    assert row["delta"] == pytest.approx(10.0) and row["delta_rel"] == pytest.approx(0.01)
    assert "0.5%" in row["tolerance"] and "deterministic" in row["tolerance"]


def test_noisy_figures_get_the_wider_tolerance_and_provenance_changes_are_never_compared():
    table = ToleranceTable.load()
    reference = _results({"latency_device": (10.0, "measured"), "energy_per_inference": (2.0, "measured")},
                         deterministic=False)
    now = _results({"latency_device": (10.8, "measured"),  # +8%: inside the hardware 10%
                    "energy_per_inference": (2.0, "modelled")}, deterministic=False)
    c = compare_results(now, reference, table)
    assert _verdicts(c) == {"latency_device": "ok", "energy_per_inference": "incomparable"}
    assert c["verdict"] == "pass"
    # host wall-clock timings are emulated but not deterministic: only gross changes count; accuracy is exact
    host = compare_results(_results({"latency_device": (17.0, "emulated"), "accuracy_top1": (0.79, "emulated")},
                                    deterministic=False),
                           _results({"latency_device": (10.0, "emulated"), "accuracy_top1": (0.80, "emulated")},
                                    deterministic=False), table)
    assert _verdicts(host) == {"latency_device": "ok", "accuracy_top1": "regressed"}
    # modelled energy on a board (simulated analyzer fed by the board's timing) is noisy, not wall-clock
    board_ref = _results({"energy_per_inference": (2.0, "modelled")}, deterministic=False)
    board_now = _results({"energy_per_inference": (3.8, "modelled")}, deterministic=False)
    board_ref["target"] = board_now["target"] = {"name": "esp32s3"}
    assert _verdicts(compare_results(board_now, board_ref, table)) == {"energy_per_inference": "regressed"}
    assert "wallclock" in host["rows"][0]["tolerance"]


def test_a_test_that_passed_before_and_fails_now_is_a_regression():
    table = ToleranceTable.load()
    ref = _results({}, tests=[{"id": "a", "outcome": "passed"}, {"id": "b", "outcome": "passed"}])
    now = _results({}, tests=[{"id": "a", "outcome": "failed"}])
    assert _verdicts(compare_results(now, ref, table)) == {"test:a": "regressed", "test:b": "missing"}


def test_user_tolerances_come_first_and_bad_files_are_explained(tmp_path):
    strict = tmp_path / "tol.yaml"
    strict.write_text("metrics:\n  latency_*: {better: lower, deterministic: {abs: 0}}\n")
    table = ToleranceTable.load(strict)
    c = compare_results(_results({"latency_device": (10.03, "emulated")}),
                        _results({"latency_device": (10.0, "emulated")}), table)
    assert _verdicts(c) == {"latency_device": "regressed"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("metrics:\n  latency_*: {better: faster}\n")
    with pytest.raises(ToleranceError, match="better must be lower, higher or none"):
        ToleranceTable.load(bad)
    bad.write_text("metrics:\n  latency_*: {noisy: {pct: 3}}\n")
    with pytest.raises(ToleranceError, match="abs and/or rel"):
        ToleranceTable.load(bad)


def _finished_run(reports: Path, metrics: dict[str, float]) -> Path:
    rec = _run(reports)
    rec.test_start("t::m")
    for name, value in metrics.items():
        rec.measurement(Measurement(name, value, "ms", "emulated"), test="t::m")
    rec.test_end("t::m", "passed", 0.1)
    rec.finish(0)
    time.sleep(0.01)
    return rec.run_dir


def test_compare_runs_reference_and_history_commands(tmp_path, capsys):
    reports = tmp_path / "reports"
    first = _finished_run(reports, {"latency_device": 10.0})
    second = _finished_run(reports, {"latency_device": 12.0})
    third = _finished_run(reports, {"latency_device": 10.01})
    base = ["--report-dir", str(reports)]
    assert main(["runs", "--mark-reference", first.name, *base]) == 0
    assert resolve_run("reference", reports) == first.resolve()
    capsys.readouterr()
    assert main(["compare", second.name, "--against", "reference", *base]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "1 regression(s) against" in out
    assert json.loads((second / "comparison.json").read_text())["verdict"] == "fail"
    assert json.loads((second / "results.json").read_text())["verdict"] == "fail"  # a regression fails the run
    assert 'data-plot="comparison"' in (second / "index.html").read_text()
    assert main(["compare", "latest", "--against", "reference", *base]) == 0
    assert "no regression" in capsys.readouterr().out
    assert main(["history", "--metric", "latency_device", "--json", *base]) == 0
    history = json.loads(capsys.readouterr().out)
    assert history["metrics"]["m::latency_device"]["values"] == [10.0, 12.0, 10.01]
    assert main(["runs", "--json", *base]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == [first.name, second.name, third.name]
    assert [r["reference"] for r in listed] == [True, False, False]
    assert main(["runs", "--prune", "--keep", "1", *base]) == 0
    assert first.is_dir() and not second.exists() and third.is_dir()  # the reference and the latest stay
    assert main(["compare", "nonesuch", "--against", "reference", *base]) == 2
    with pytest.raises(RunDirError, match="no run 'nonesuch'"):
        resolve_run("nonesuch", reports)


# ---------------------------------------------------------------------------------------------------------------
# a real `hil run`, SIGKILLed half way, then `hil report`
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_hil_run_killed_mid_suite_leaves_a_journal_that_hil_report_rebuilds(tmp_path):
    reports = tmp_path / "reports"
    # So many images that the bit-exact test is still running when the process group is killed.
    cmd = [sys.executable, "-m", "hil.cli", "run", "--target", "host", "--model", str(paths.SYNTHETIC_MODEL),
           "--images", "1000000", "--report-dir", str(reports), "--", "-k", "test_device or test_measure", "-p",
           "no:randomly"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        journal = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            found = list((reports / "runs").glob("*/journal.jsonl")) if (reports / "runs").is_dir() else []
            if found and "test_outputs_bit_exact_with_tflite_micro" in found[0].read_text():
                journal = found[0]
                break
            time.sleep(0.2)
        assert journal is not None, "the bit-exact test never started"
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    run_dir = journal.parent
    assert not (run_dir / "results.json").exists()
    assert main(["report", str(run_dir)]) == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["verdict"] == "incomplete"
    assert results["incomplete"]["running_tests"] == ["test_device.py::test_outputs_bit_exact_with_tflite_micro"]
    finished = [t for t in results["tests"] if t["outcome"] == "passed"]
    assert [t["id"] for t in finished] == ["test_device.py::test_device_reports_the_model_it_was_built_with"]
    assert results["firmware"]["build_id"] and results["model"]["name"] == "synthetic-extractor"
    assert results["git"].get("revision") is None or len(results["git"]["revision"]) == 40
    recorded = {m["name"] for m in results["metrics"]}
    completed_in_journal = {json.loads(line)["measurement"]["name"] for line in journal.read_text().splitlines()
                            if '"kind":"measurement"' in line}
    assert recorded == completed_in_journal
    assert "INCOMPLETE" in (run_dir / "index.html").read_text()


# ---------------------------------------------------------------------------------------------------------------
# pytest-xdist: every worker's records in the one run directory
# ---------------------------------------------------------------------------------------------------------------

XDIST_TESTS = """
import pytest
from hil.measure.measurement import Measurement

@pytest.mark.parametrize("i", range(6))
def test_record(hil_results, i):
    hil_results.record(Measurement(f"figure_{i}", float(i), "ms", "emulated"))
"""


@pytest.mark.timeout(180)
def test_xdist_workers_write_one_run(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_inner=XDIST_TESTS)
    out = pytester.path / "out"
    result = pytester.runpytest_subprocess("-n", "2", "--hil-target", "host", "--hil-report-dir", str(out),
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)
    runs = list((out / "runs").iterdir())
    assert len(runs) == 1, runs
    results = load_results(runs[0])
    assert results["verdict"] == "pass" and results["counts"] == {"passed": 6}
    assert sorted(m["name"] for m in results["metrics"]) == [f"figure_{i}" for i in range(6)]
    assert {m["key"] for m in results["metrics"]} == {f"test_record[{i}]::figure_{i}" for i in range(6)}
    workers = {json.loads(line).get("worker") for line in (runs[0] / "journal.jsonl").read_text().splitlines()}
    assert {"gw0", "gw1"} <= workers
    assert (out / "latest").resolve() == runs[0].resolve()


# ---------------------------------------------------------------------------------------------------------------
# progress off a terminal
# ---------------------------------------------------------------------------------------------------------------


def test_plain_progress_lines_every_tenth_and_every_few_seconds():
    stream = io.StringIO()  # not a terminal
    with ProgressDisplay("check qemu", 100, counter="mismatched", stream=stream, every_s=3600) as p:
        for i in range(100):
            p.advance(count=int(i == 7))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("check qemu: 10/100 (10%), 1 mismatched")
    assert lines[-1].startswith("check qemu: 100/100 (100%)")
    ten = io.StringIO()
    with ProgressDisplay("ten", 10, stream=ten, every_s=3600) as p:
        for _ in range(10):
            p.advance()
    assert [line.split(":")[1].split()[0] for line in ten.getvalue().splitlines()] == [f"{i}/10" for i in
                                                                                       range(1, 11)]
    slow = io.StringIO()
    with ProgressDisplay("accuracy", 1000, stream=slow, every_s=0.0) as p:
        p.advance()
        p.advance()
    assert len(slow.getvalue().splitlines()) >= 2  # the time rule fires before the first tenth


def test_piped_hil_check_prints_progress_and_records_a_run(tmp_path):
    reports = tmp_path / "reports"
    proc = subprocess.run([sys.executable, "-m", "hil.cli", "check", "--target", "host", "--images", "20",
                           "--report-dir", str(reports)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "bit-exact 20/20 on host"
    assert "check host: 2/20 (10%), 0 mismatched" in proc.stderr
    results = load_results(reports / "latest")
    assert results["verdict"] == "pass" and results["tests"][0]["id"] == "hil check"
    figures = {m["key"]: m for m in results["metrics"]}
    assert figures["bit_exact_images"]["value"] == 20 and figures["bit_exact_images"]["passed"]
    assert len(figures["cycles_inference_median"]["values"]) == 20
    assert results["command"].startswith("hil check --target host")
    assert Path(paths.display(reports)).name == "reports"


# ---------------------------------------------------------------------------------------------------------------
# the nightly recipe, as a bench or CI would run it
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_nightly_script_makes_a_reference_then_compares_against_it(tmp_path):
    script = paths.PROJECT_ROOT / "scripts" / "nightly" / "hil-nightly.sh"
    if not script.is_file():
        pytest.skip("not a source checkout")
    reports = tmp_path / "reports"
    env = dict(os.environ, HIL_TARGET="qemu", HIL_REPORTS=str(reports), HIL_KEEP="5")
    first = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "becomes the reference" in first.stderr
    assert (reports / "reference").resolve() == (reports / "latest").resolve()
    second = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "against " + (reports / "reference").resolve().name in second.stdout
    latest = (reports / "latest").resolve()
    assert latest != (reports / "reference").resolve()
    assert json.loads((latest / "comparison.json").read_text())["reference"]["run_id"] == \
        (reports / "reference").resolve().name


AGAINST_TEST = """
import os
from hil.measure.measurement import Measurement

def test_latency(hil_results):
    hil_results.record(Measurement("latency_device", float(os.environ["LATENCY_MS"]), "ms", "emulated"))
"""


@pytest.mark.timeout(120)
def test_against_latest_means_the_run_before_this_one(pytester, monkeypatch):
    pytester.makepyfile(test_inner=AGAINST_TEST)
    out = pytester.path / "out"
    monkeypatch.setenv("LATENCY_MS", "10")
    pytester.runpytest("--hil-target", "host", "--hil-report-dir", str(out)).assert_outcomes(passed=1)
    first = (out / "latest").resolve()
    monkeypatch.setenv("LATENCY_MS", "35")  # 3.5x: beyond even the wall-clock tolerance of the host target
    result = pytester.runpytest("--hil-target", "host", "--hil-report-dir", str(out), "--hil-against", "latest")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the test passed; the comparison failed the session
    result.stdout.fnmatch_lines(["*test_latency::latency_device*regressed*", "*1 regression(s) against*"])
    second = (out / "latest").resolve()
    assert second != first
    comparison = json.loads((second / "comparison.json").read_text())
    assert comparison["reference"]["run_id"] == first.name
    results = json.loads((second / "results.json").read_text())
    assert results["verdict"] == "fail" and results["comparison"]["regressions"] == 1
    assert 'hil_run_passed{' in (second / "metrics.txt").read_text()
    assert "} 0.0" in [line for line in (second / "metrics.txt").read_text().splitlines()
                       if line.startswith("hil_run_passed")][0]
