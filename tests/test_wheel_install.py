"""`pip install` of the built wheel (not editable) into a fresh venv outside the repository: the `hil` command and
the pytest plugin find the firmware sources and the default model as package data (pyproject.toml
[tool.setuptools], hil/paths.py).

Nothing is downloaded: the wheel is built with .venv's setuptools (no build isolation), and the fresh venv gets
the project's dependencies through a .pth file naming .venv's site-packages. A .pth line only appends its
directory to sys.path; .pth files inside that directory (the editable install's finder, which would map `hil`
back to the checkout) are not processed, which test_imports_the_installed_copy checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]  # the checkout running this test
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "HIL_CACHE_DIR")
USER_TEST = """
import numpy as np


def test_user(dut, hil_reference):
    rng = np.random.default_rng(7)
    inputs = [rng.integers(-128, 127, size=d.shape, endpoint=True).astype(d.dtype) for d in hil_reference.inputs]
    device = dut.infer(inputs)
    golden = hil_reference.run(inputs)
    assert len(device.outputs) == len(golden)
    for got, want in zip(device.outputs, golden, strict=True):
        assert np.array_equal(np.asarray(got).reshape(want.shape), want)
"""


def _source_packages() -> set[str]:
    """Every directory of hil/ holding .py files, as a dotted package name."""
    return {
        ".".join(d.relative_to(ROOT).parts)
        for d in [ROOT / "hil", *(ROOT / "hil").rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    }


def test_pyproject_lists_every_package() -> None:
    """pyproject.toml lists the packages (it maps the data folders too, which `packages.find` cannot do)."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    code = {p for p in listed if not p.startswith("hil._data.")}
    source = _source_packages()
    assert not source - code, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(source - code)}"
    assert not code - source, f"listed in pyproject.toml but not in hil/: {sorted(code - source)}"


@dataclass
class Installed:
    wheel: Path
    venv: Path
    site: Path  # the fresh venv's site-packages
    work: Path  # the working directory of every command: outside the repository
    cache: Path  # HIL_CACHE_DIR
    env: dict[str, str]

    def run(self, args: list[str | Path], timeout: float, step: str, cwd: Path | None = None):
        start = time.perf_counter()
        proc = subprocess.run(
            [str(a) for a in args],
            cwd=cwd or self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        print(f"{step}: {time.perf_counter() - start:.1f} s (exit {proc.returncode})")
        return proc


def _timed(step: str, args: list[str | Path], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    start = time.perf_counter()
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    print(f"{step}: {time.perf_counter() - start:.1f} s")
    assert proc.returncode == 0, f"{step} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools in this venv (requirements.lock)")
    for tool in ("cc", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"the host firmware needs {tool}")
    tmp = tmp_path_factory.mktemp("wheel-install")
    assert not tmp.resolve().is_relative_to(ROOT), f"{tmp} must be outside the repository {ROOT}"
    env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]

    # setuptools builds in-tree by default (ROOT/build/lib, whose stale files would leak into the wheel, and
    # ROOT/hil.egg-info): an extra distutils config moves both into tmp.
    (tmp / "build.cfg").write_text(f"[build]\nbuild_base = {tmp / 'build'}\n[egg_info]\negg_base = {tmp}\n")
    wheels = tmp / "wheels"
    _timed(
        "wheel build",
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, ROOT],
        timeout=300,
        env={**env, "DIST_EXTRA_CONFIG": str(tmp / "build.cfg")},
    )
    (wheel,) = wheels.glob("hil-*.whl")
    print(f"wheel: {wheel.name}, {wheel.stat().st_size / 1e6:.2f} MB")

    venv = tmp / "venv"
    _timed("venv", [sys.executable, "-m", "venv", "--without-pip", venv], timeout=120, env=env)
    python = venv / "bin" / "python"
    # Installed before the .pth exists, so pip sees no other `hil` (the editable one in .venv).
    _timed("pip install", [*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], timeout=300, env=env)
    site = Path(
        _timed(
            "site-packages",
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            timeout=60,
            env=env,
        ).stdout.strip()
    )
    (site / "_hil_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    work = tmp / "work"
    work.mkdir()
    cache = tmp / "cache"
    return Installed(wheel, venv, site, work, cache, {**env, "HIL_CACHE_DIR": str(cache)})


@pytest.mark.slow
def test_wheel_contents(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    data = "hil/_data/"
    for required in (
        "device_fw/Makefile",
        "device_fw/core/src/app.c",
        "device_fw/core/include/hil_port.h",
        "device_fw/ports/host/port_host.c",
        "device_fw/ports/qemu/qemu.ld",
        "device_fw/ports/esp32s3/main/port_esp32s3.c",
        "device_fw/tests/run_model_main.c",
        "models/synthetic-extractor/model.tflite",
        "models/synthetic-extractor/hil_model.c",
        "models/synthetic-extractor/model.json",
        "fixtures/cifar10/test-subset-500.npz",
        "fixtures/benches/host.yaml",
    ):
        assert data + required in names
    # Every module of the source tree (hil/suite has no __init__.py), and the YAML files next to the code.
    source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "hil").rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    }
    assert not source - set(names), f"missing from the wheel: {sorted(source - set(names))}"
    # Nothing big or generated: only the default model, no build outputs.
    models = {n.split("/")[3] for n in names if n.startswith(data + "models/") and n.count("/") > 3}
    assert models == {"synthetic-extractor"}
    leaks = [n for n in names if re.search(r"/build[^/]*/|/sdkconfig$|managed_components|\.o$|__pycache__", n)]
    assert not leaks
    assert not [n for n in names if not n.startswith(("hil/", "hil-"))], "only hil/ and its dist-info"
    assert installed.wheel.stat().st_size < 4_000_000


@pytest.mark.slow
def test_imports_the_installed_copy(installed: Installed) -> None:
    proc = installed.run(
        [
            installed.venv / "bin" / "python",
            "-c",
            "import hil, hil.plugin; from hil import paths; "
            "print(hil.__file__); print(paths.DEFAULT_MODEL); print(paths.IS_CHECKOUT)",
        ],
        timeout=120,
        step="import",
    )
    assert proc.returncode == 0, proc.stderr
    module, model, checkout = proc.stdout.split()
    assert Path(module).is_relative_to(installed.site / "hil"), f"imported {module}, not the installed copy"
    assert Path(model).is_relative_to(installed.site / "hil" / "_data")
    assert checkout == "False"


@pytest.mark.slow
def test_hil_check_host(installed: Installed) -> None:
    package = installed.site / "hil"
    before = _files(package)
    proc = installed.run(
        [installed.venv / "bin" / "hil", "check", "--target", "host", "--images", "5"],
        timeout=300,
        step="hil check --target host --images 5",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "bit-exact 5/5 on host"
    assert _files(package) == before, "hil wrote into site-packages"
    assert any((installed.cache / "firmware").glob("host-*/hil_fw")), "the firmware was not built in HIL_CACHE_DIR"


@pytest.mark.slow
def test_user_test_file_with_the_fixtures(installed: Installed) -> None:
    user = installed.work / "user"
    user.mkdir()
    (user / "test_user.py").write_text(USER_TEST)
    proc = installed.run(
        [
            installed.venv / "bin" / "python",
            "-m",
            "pytest",
            "test_user.py",
            "--hil-target",
            "host",
            "-p",
            "no:cacheprovider",
        ],
        timeout=300,
        step="pytest test_user.py --hil-target host",
        cwd=user,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 passed" in proc.stdout
