"""The run page (hil/report/page.py): plain checks on its HTML, then the same page in a real headless Chromium."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hil.report.page import write_page

PLOTS = ("latency", "stages", "power", "energy", "accuracy", "confusion", "payload", "comparison", "history")
HOSTILE = "<script>window.pwned = 1</script> & \"quotes\""
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
QEMU = "emulated (QEMU Xtensa lx106, instruction-counted; relative measure, not ESP32-S3 hardware)"


def _metric(name: str, value: float | None, unit: str, provenance: str = "emulated", values: Any = (),
            low: float | None = None, high: float | None = None, test: str = "hil/suite/test_measure.py::test_a",
            detail: str = "") -> dict[str, Any]:
    passed = None if low is None and high is None else (low is None or value >= low) and (high is None or value <= high)
    return {"key": name, "test": test, "name": name, "value": value, "unit": unit, "provenance": provenance,
            "detail": detail or f"synthetic {name}", "low": low, "high": high, "values": [float(v) for v in values],
            "passed": passed}


def _test(nodeid: str, outcome: str, message: str = "", logs: Any = ()) -> dict[str, Any]:
    return {"id": nodeid, "outcome": outcome, "started": "2026-12-07T14:22:34.000Z",
            "ended": None if outcome == "running" else "2026-12-07T14:22:35.500Z",
            "duration_s": None if outcome == "running" else 1.5, "message": message, "worker": None,
            "logs": list(logs)}


def _base(run_id: str, verdict: str) -> dict[str, Any]:
    return {
        "schema": "hil-run/1", "run_id": run_id, "command": "hil run --target qemu",
        "started": "2026-12-07T14:22:33.120Z", "ended": "2026-12-07T14:25:01.900Z", "complete": True,
        "incomplete": None, "verdict": verdict, "exit_status": 0,
        "git": {"revision": "0123456789abcdef0123456789abcdef01234567", "dirty": True, "branch": "main"},
        "target": {"name": "qemu", "provenance": QEMU},
        "model": {"name": "synthetic-extractor", "sha256": "ab" * 32, "path": "models/synthetic"},
        "firmware": {"build_id": "fw-20261207-1", "firmware_version": "0.3.0", "model_sha256": "ab" * 32,
                     "firmware_sha256": "cd" * 32},
        "instruments": [{"idn": "SIM,N6705C,0,1.0", "driver": "simulated", "resource": "sim://analyzer",
                         "simulated": True}],
        "tools": {"packages": {"numpy": "1.26.4", "matplotlib": "3.9.0"}, "tools": {"qemu-system-xtensa": "7.2",
                                                                                  "chromium": None}},
        "host": {"hostname": "ci-1", "cpus": 2}, "options": {"images": 200, "seed": 0},
        "counts": {}, "tests": [], "metrics": [], "out_of_limits": [], "artifacts": [], "data": {},
    }


def passing_run() -> dict[str, Any]:
    rng = np.random.default_rng(1)
    r = _base("20261207T142233Z-qemu-synthetic-extractor", "pass")
    acc = "hil/suite/test_accuracy.py::test_top1"
    r["tests"] = [_test("hil/suite/test_measure.py::test_a", "passed"),
                  _test(acc, "passed", message=HOSTILE),
                  _test("hil/suite/test_device.py::test_skip", "skipped", message="no board")]
    r["counts"] = {"passed": 2, "skipped": 1}
    latency = rng.normal(12.0, 0.4, 200)
    stages = {"extractor": 9e5, "local": 2e5, "quantize": 5e4, "compress": 8e4, "total": 1.23e6}
    r["metrics"] = [
        _metric("latency_device", float(np.median(latency)), "ms", values=latency, high=20.0),
        _metric("latency_host_round_trip", 30.0, "ms", values=rng.normal(30.0, 2.0, 200)),
        _metric("energy_per_inference", 1.1, "mJ", provenance="modelled", values=rng.normal(1.1, 0.05, 40)),
        _metric("accuracy_top1", 0.83, "fraction", test=acc), _metric("accuracy_top1_ci95_low", 0.78, "fraction"),
        _metric("accuracy_top1_ci95_high", 0.87, "fraction"),
        _metric("agreement_with_float", 0.99, "fraction", low=0.95, test=acc),
        _metric("payload_bytes_mean", 410.0, "B", values=rng.normal(410, 30, 200), test=acc),
        *[_metric(f"cycles_{s}_median", c, "cycles", values=rng.normal(c, c * 0.05, 200), test=acc)
          for s, c in stages.items()],
        _metric("peak_current", 95.0, "mA", provenance="measured"),
    ]
    t = np.arange(20000) * 1e-4
    windows = [[0.2 + 0.4 * k, 0.3 + 0.4 * k] for k in range(5)]
    current = 0.03 + sum(0.05 * ((t >= a) & (t < b)) for a, b in windows) + rng.normal(0, 0.001, len(t))
    r["data"] = {
        "power_trace": [{"test": "hil/suite/test_measure.py::test_a", "meta": {"provenance": "emulated"},
                         "value": {"t_s": t.tolist(), "current_a": current.tolist(), "voltage_v": 3.3,
                                   "windows": windows}}],
        "confusion_matrix": [{"test": acc, "meta": {}, "value": {
            "labels": ["airplane", "car", "bird", "<cat>"],
            "matrix": [[40, 2, 3, 5], [1, 45, 2, 2], [4, 1, 38, 7], [6, 3, 5, 36]]}}],
    }
    r["artifacts"] = [{"path": "logs/device.log", "what": "device UART log"}]
    return r


def incomplete_run() -> dict[str, Any]:
    r = _base("20261207T150000Z-qemu-synthetic-extractor", "incomplete")
    running = "hil/suite/test_accuracy.py::test_top1"
    r.update(complete=False, ended=None, exit_status=None, firmware=None, instruments=[], counts={"failed": 1,
                                                                                                "running": 1})
    r["incomplete"] = {"reason": "the journal has no run_end record", "running_tests": [running],
                       "last_record": "2026-12-07T15:01:00.000Z", "torn_lines": 1}
    r["tests"] = [_test("hil/suite/test_device.py::test_bitexact", "failed", message=f"mismatch\n{HOSTILE}",
                        logs=[{"source": "device", "text": "\n".join(f"line {k}" for k in range(100))}]),
                  _test(running, "running")]
    r["metrics"] = [_metric("energy_per_inference", 1.0, "mJ", provenance="measured")]  # span mode: no values
    return r


def comparison() -> dict[str, Any]:
    def row(key: str, ref: float | None, now: float | None, verdict: str, better: str = "lower") -> dict[str, Any]:
        both = ref is not None and now is not None
        return {"key": key, "unit": "ms", "reference": ref, "now": now, "delta": now - ref if both else None,
                "delta_rel": (now - ref) / ref if both else None, "tolerance": "±5% (emulated)", "better": better,
                "verdict": verdict, "provenance": "emulated"}
    return {"reference": {"run_id": "20261201T000000Z-qemu-synthetic-extractor", "path": "/nowhere/ref",
                          "target": "qemu", "model": "synthetic-extractor"},
            "now": {"run_id": "20261207T142233Z-qemu-synthetic-extractor"},
            "rows": [row("latency_device", 11.0, 12.0, "regressed"), row("energy_per_inference", 1.2, 1.1, "improved"),
                     row("payload_bytes_mean", 400.0, 410.0, "ok", "none"), row("cycles_new_median", None, 5.0, "new"),
                     row("cycles_old_median", 3.0, None, "missing")],
            "regressions": 1, "verdict": "fail"}


def history() -> dict[str, Any]:
    runs = [{"run_id": f"run-{k}", "started": f"2026-12-0{k + 1}T00:00:00Z", "verdict": v}
            for k, v in enumerate(["pass", "pass", "fail", "pass", "pass"])]
    return {"runs": runs, "metrics": {"latency_device": {"unit": "ms", "values": [11.0, 11.2, None, 11.9, 12.0]},
                                      "accuracy_top1": {"unit": "fraction", "values": [0.82, 0.83, 0.83, 0.83, 0.83]}}}


def _figure(html: str, name: str) -> str:
    match = re.search(rf'<figure class="plot[^"]*" data-plot="{name}">.*?</figure>', html, re.S)
    assert match, f"no figure for plot {name}"
    return match.group(0)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    good, bad = tmp_path_factory.mktemp("pass"), tmp_path_factory.mktemp("incomplete")
    (good / "journal.jsonl").write_text("{}\n")
    (good / "logs").mkdir()
    (good / "logs" / "device.log").write_text("boot\n")
    return {"pass": write_page(good, passing_run(), comparison(), history()),
            "incomplete": write_page(bad, incomplete_run())}


def test_passing_page_has_the_verdict_first_and_every_plot(pages: dict[str, Path]) -> None:
    html = pages["pass"].read_text(encoding="utf-8")
    assert pages["pass"].name == "index.html"
    body = html[html.index("<body"):]
    first_text = re.sub(r"<[^>]+>", " ", body[:body.index("</header>")]).split()
    assert first_text[0] == "PASS"
    assert body.index('id="verdict"') < body.index('id="tests"') < body.index('id="metrics"') < body.index(
        'id="plots"') < body.index('id="facts"')
    for name in PLOTS:
        figure = _figure(html, name)
        assert 'class="plot"' in figure and "<svg" in figure and "<figcaption>" in figure, name
    assert "emulated" in _figure(html, "latency") and "modelled" in _figure(html, "energy")
    assert "<script>window.pwned" not in html and "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in html
    assert "&lt;cat&gt;" in _figure(html, "confusion")  # labels inside the SVG are escaped too
    assert 'class="prov prov-emulated"' in html and 'class="prov prov-modelled"' in html
    assert 'href="journal.jsonl"' in html and 'href="logs/device.log"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not reach the network"
    assert len(html) < 1_500_000


def test_incomplete_page_names_the_running_test_and_marks_missing_plots(pages: dict[str, Path]) -> None:
    html = pages["incomplete"].read_text(encoding="utf-8")
    banner = html[html.index('<header id="verdict"'):html.index("</header>")]
    assert "INCOMPLETE" in banner and "hil/suite/test_accuracy.py::test_top1" in banner
    missing = {"latency": "no latency histogram", "stages": "no per-stage latency", "power": "no power trace: this "
               "run had no power-analyzer test", "energy": "no per-inference energies", "accuracy": "no accuracy",
               "confusion": "no confusion matrix", "payload": "no payload sizes", "comparison": "no comparison",
               "history": "no history"}
    for name, sentence in missing.items():
        figure = _figure(html, name)
        assert 'class="plot missing"' in figure and sentence in figure and "<svg" not in figure, name
    assert '<tr class="bad">' in html and "line 99" in html and "line 39" not in html  # the log excerpt's tail
    assert "&lt;script&gt;" in html and "<script>window" not in html


def _browser(tmp_path: Path) -> Any:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,2000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _load(driver: Any, page: Path) -> list[dict[str, Any]]:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def test_the_page_renders_in_headless_chromium(pages: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or a driver
    started = time.monotonic()
    driver = _browser(tmp_path)
    try:
        assert _load(driver, pages["pass"]) == []
        banner = driver.find_element(By.ID, "verdict")
        assert banner.is_displayed() and banner.text.split()[0] == "PASS"
        assert driver.execute_script("return window.pwned") is None
        boxes = driver.execute_script("""
            return Array.from(document.querySelectorAll("figure.plot")).map(f => {
                const svg = f.querySelector("svg"); const r = svg ? svg.getBoundingClientRect() : null;
                return [f.dataset.plot, f.classList.contains("missing"), r ? [r.width, r.height] : null]; });""")
        assert sorted(b[0] for b in boxes) == sorted(PLOTS)
        for name, missing, box in boxes:
            assert not missing and box and box[0] > 50 and box[1] > 30, (name, box)
        shot = tmp_path / "page.png"
        assert driver.save_screenshot(str(shot))
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

        assert _load(driver, pages["incomplete"]) == []
        assert driver.find_element(By.ID, "verdict").text.split()[0] == "INCOMPLETE"
        assert driver.execute_script("return document.querySelectorAll('figure.plot.missing svg').length") == 0
    finally:
        driver.quit()
    assert time.monotonic() - started < 120


def test_a_bare_results_dict_still_gives_a_page(tmp_path: Path) -> None:
    html = write_page(tmp_path, {"verdict": "empty", "run_id": "r"}).read_text(encoding="utf-8")
    assert 'class="verdict v-empty"' in html and ">EMPTY<" in html and "No test ran." in html
    assert html.count('class="plot missing"') == len(PLOTS)
