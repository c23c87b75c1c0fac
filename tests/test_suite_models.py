"""The HIL suite's device tests (hil/suite/test_device.py) pass on every model the project ships: each committed
model directory with a model.tflite, int8 and 16x8 alike, on the fast `host` target, through pytest in a
subprocess exactly as a user runs it. (The default model on qemu is run by the suite itself: hil/suite is in
testpaths.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil import paths

SUITE_FILE = paths.SUITE / "test_device.py"
MODEL_DIRS = sorted(p.parent for p in paths.MODELS.glob("*/model.tflite"))
IMAGES = 20
RUN_TIMEOUT_S = 240


def _suite_tests() -> list[str]:
    tree = ast.parse(SUITE_FILE.read_text())
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]


def test_every_shipped_model_is_found() -> None:
    names = {d.name for d in MODEL_DIRS}
    assert paths.DEFAULT_MODEL.name in names, f"discovered {sorted(names)} under {paths.MODELS}"
    for model_dir in paths.MODELS.iterdir():  # a directory with generated C but no .tflite would be skipped here
        if (model_dir / "hil_model.c").is_file():
            assert model_dir in MODEL_DIRS, f"{model_dir} has hil_model.c but no model.tflite"


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=lambda p: p.name)
def test_hil_suite_device_tests_pass_on_host(model_dir: Path, tmp_path: Path) -> None:
    expected = _suite_tests()
    cmd = [
        sys.executable, "-m", "pytest", str(SUITE_FILE),
        "--hil-target", "host", "--hil-model", str(model_dir), "--hil-images", str(IMAGES),
        "--hil-report-dir", str(tmp_path / "reports"), "-p", "no:cacheprovider", "-q", "-rfEs",
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    elapsed = time.monotonic() - started
    output = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode} after {elapsed:.1f} s:\n{output}"
    summary = re.search(r"^=* ?(\d+ passed.*?) in [\d.]+s", proc.stdout, re.MULTILINE)
    assert summary is not None, output
    assert summary.group(1) == f"{len(expected)} passed", f"expected {len(expected)} passed ({expected}):\n{output}"
    print(f"{model_dir.name}: {summary.group(1)} (subprocess {elapsed:.1f} s)")
