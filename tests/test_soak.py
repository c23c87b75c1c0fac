"""`hil soak` on the real firmware: thousands of inferences over a link with every kind of injected fault on the
host target, a shorter soak on QEMU, the inputs in LOAD_INPUT chunks at a byte fault rate where one frame of them
seldom gets through, exit 1 when results are wrong, a killed soak's journal, and `--hil-faults` in the plugin.

The 1%-of-bytes soaks use a one-layer model with a 16-byte input (FULLY_CONNECTED 16 -> 4): at flip=0.01 a request
carrying the default model's 27,648-byte input would hold about 276 flipped bytes, so it goes in ~1,300 chunks and
takes about 30 s per inference (hil/soak.py); the link code under test is the same.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil import paths
from hil.cli import main
from hil.firmware import toolchain_status
from hil.model.single_op import make_single_op_model
from hil.report.journal import read_journal
from hil.report.summary import load_results

SUMMARY = re.compile(r"soak (\d+) done, (\d+) wrong, (\d+) lost, (\d+) retries, (\d+) restarts")


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    return tmp_path / "reports"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[Path]:
    """Two FULLY_CONNECTED 16 -> 4 models with the same input and different weights (their firmware is built once
    and cached: the .tflite bytes depend only on the seed)."""
    out = tmp_path_factory.mktemp("models")
    models = []
    for seed in (1, 2):
        path = out / f"fc16-{seed}.tflite"
        path.write_bytes(make_single_op_model("FULLY_CONNECTED", np.random.default_rng(seed), depth=16, units=4))
        models.append(path)
    return models


def _last_line(out: str) -> re.Match[str]:
    last = out.strip().splitlines()[-1]
    match = SUMMARY.fullmatch(last)
    assert match, f"last line {last!r}"
    return match


def _soak_records(run: Path) -> list[dict]:
    return [r["value"] for r in read_journal(run).records if r.get("kind") == "data" and r.get("name") == "soak"]


@pytest.mark.timeout(400)
def test_host_soak_with_every_fault_kind_loses_nothing(tiny, reports, capsys):
    started = time.monotonic()
    rc = main(["soak", "--target", "host", "--model", str(tiny[0]), "--inferences", "2000", "--quiet", "--faults",
               "flip=0.01,drop=0.002,garbage=0.002,stall=0.003,reset=0.003,stall_s=0.1,seed=11"])
    wall = time.monotonic() - started
    out = capsys.readouterr()
    done, wrong, lost, retries, restarts = (int(g) for g in _last_line(out.out).groups())
    assert (done, wrong, lost, rc) == (2000, 0, 0, 0), out.err[-3000:]
    run = (reports / "latest").resolve()
    soak = json.loads((run / "soak.json").read_text())
    for direction in ("faults_sent", "faults_received"):
        for kind in ("flip", "drop", "garbage", "stall"):
            assert soak[direction][kind] > 0, f"no {kind} in {direction}: {soak[direction]}"
    assert soak["faults_sent"]["reset"] > 0
    assert restarts >= soak["faults"]["reset"]  # every reset kills the device: the soak must restart it
    assert retries == soak["resends"] + soak["redone"] > soak["faults"]["flip"] / 10
    records = _soak_records(run)
    assert [r["index"] for r in records] == list(range(2000))
    assert {r["status"] for r in records} == {"ok"}
    results = load_results(run)
    assert results["verdict"] == "pass"
    metrics = {m["name"]: m for m in results["metrics"]}
    assert metrics["soak_wrong"]["value"] == 0 and metrics["soak_wrong"]["passed"] is True
    assert (run / "soak-reference.json").is_file()
    print(f"host soak of 2000 inferences: {wall:.1f} s wall; {out.out.strip().splitlines()[-1]}")


@pytest.mark.timeout(300)
def test_inputs_go_in_chunks_where_one_frame_of_them_seldom_gets_through(reports, capsys):
    # The synthetic model's 27,648-byte input at 1e-4 flips per byte: a whole request passes 6% of the time.
    rc = main(["soak", "--target", "host", "--model", str(paths.SYNTHETIC_MODEL), "--inferences", "40", "--quiet",
               "--faults", "flip=1e-4,drop=1e-5,garbage=1e-5,seed=4"])
    out = capsys.readouterr()
    assert re.search(r"inputs in LOAD_INPUT chunks of \d+ bytes", out.err)
    done, wrong, lost, _, _ = (int(g) for g in _last_line(out.out).groups())
    assert (done, wrong, lost, rc) == (40, 0, 0, 0), out.err[-3000:]


@pytest.mark.qemu
@pytest.mark.timeout(400)
def test_qemu_soak(reports, capsys):
    status = toolchain_status("qemu")
    if not status.ok:
        pytest.skip(f"cannot build/run the qemu firmware: {status}")
    rc = main(["soak", "--target", "qemu", "--model", str(paths.SYNTHETIC_MODEL), "--inferences", "150", "--quiet",
               "--faults", "flip=2e-5,drop=2e-6,garbage=5e-6,stall=0.01,reset=0.02,stall_s=0.15,seed=3"])
    out = capsys.readouterr()
    done, wrong, lost, _, restarts = (int(g) for g in _last_line(out.out).groups())
    assert (done, wrong, lost, rc) == (150, 0, 0, 0), out.err[-3000:]
    soak = json.loads(((reports / "latest").resolve() / "soak.json").read_text())
    assert soak["faults"]["flip"] > 0 and restarts >= soak["faults"]["reset"] > 0


@pytest.mark.timeout(300)
def test_wrong_results_fail_the_soak(tiny, reports, capsys):
    """The second model's device, compared with the reference the first model's soak saved: every accepted result
    differs, and the soak says so and exits 1."""
    assert main(["soak", "--target", "host", "--model", str(tiny[0]), "--inferences", "10", "--quiet"]) == 0
    first = (reports / "latest").resolve()
    capsys.readouterr()
    rc = main(["soak", "--target", "host", "--model", str(tiny[1]), "--inferences", "40", "--quiet", "--faults",
               "flip=0.005,seed=2", "--reference", str(first)])
    out = capsys.readouterr()
    assert rc == 1
    done, wrong, lost, _, _ = (int(g) for g in _last_line(out.out).groups())
    assert (done, wrong, lost) == (40, 40, 0)
    assert "the reference was made with model" in out.err and "every difference counts as wrong" in out.err
    assert "wrong: inference 0 (pool input 0)" in out.err
    run = (reports / "latest").resolve()
    assert run != first
    results = load_results(run)
    assert results["verdict"] == "fail"
    assert {m["name"]: m["passed"] for m in results["metrics"]}["soak_wrong"] is False
    assert {r["status"] for r in _soak_records(run)} == {"wrong"}


@pytest.mark.parametrize(("spec", "says"), [
    ("flip=2", "flip=2: flip is a probability per byte, a number from 0 to 1"),
    ("flp=0.01", "unknown key 'flp'; allowed keys: flip, drop, garbage"),
])
def test_a_bad_fault_spec_is_a_usage_error(spec, says, reports, capsys):
    rc = main(["soak", "--target", "host", "--inferences", "5", "--faults", spec])
    assert rc == 2
    assert says in capsys.readouterr().err
    assert not reports.exists()  # refused before anything started


@pytest.mark.timeout(300)
def test_a_killed_soak_keeps_every_inference_it_finished(tiny, tmp_path):
    cmd = [sys.executable, "-m", "hil.cli", "soak", "--target", "host", "--model", str(tiny[0]), "--inferences",
           "100000", "--quiet", "--faults", "flip=0.01,seed=1", "--report-dir", str(tmp_path / "reports")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        journal = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "reports" / "runs").glob("*/journal.jsonl"))
            if found and found[0].read_bytes().count(b'"name":"soak"') >= 50:
                journal = found[0]
                break
            time.sleep(0.2)
        assert journal is not None, proc.stderr.read().decode() if proc.poll() is not None else "too slow"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run = journal.parent
    records = _soak_records(run)
    assert len(records) >= 50
    assert [r["index"] for r in records] == list(range(len(records)))  # none missing, none torn
    assert {r["status"] for r in records} == {"ok"}
    results = load_results(run)
    assert results["verdict"] == "incomplete" and results["incomplete"]["running_tests"] == ["hil soak"]


PLUGIN_TEST = """
import numpy as np

def test_inferences_over_a_faulty_link(dut, hil_options):
    faults = hil_options.faults
    assert faults is not None and str(faults.spec) == "flip=2e-05,seed=1"
    rng = np.random.default_rng(0)
    inputs = [[rng.integers(-128, 128, size=t.shape).astype(np.int8) for t in dut.info.inputs] for _ in range(8)]
    with faults.paused():
        clean = [dut.client.infer_digest(x).digests for x in inputs]
    for _ in range(3):
        assert [dut.client.infer_digest(x).digests for x in inputs] == clean
    assert faults.sent.flip > 0 and dut.client.resends > 0
"""


@pytest.mark.timeout(200)
def test_the_plugin_injects_faults_with_hil_faults(pytester):
    pytester.makepyfile(test_inner=PLUGIN_TEST)
    result = pytester.runpytest("--hil-target", "host", f"--hil-model={paths.SYNTHETIC_MODEL}", "--hil-faults",
                                "flip=2e-5,seed=1", "--hil-report-dir", str(pytester.path / "out"), "-p",
                                "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_bad_hil_faults_is_a_usage_error(pytester):
    pytester.makepyfile(test_inner="def test_x():\n    pass\n")
    result = pytester.runpytest("--hil-target", "host", "--hil-faults", "drop=1.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil-faults*drop=1.5*from 0 to 1*"])
