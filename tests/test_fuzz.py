"""Fuzzing of the firmware core and of the server's decoder (issue 18; README.md "Fuzzing", scripts/fuzz.py).

The libFuzzer harnesses of device_fw/fuzz/ are built with clang, AddressSanitizer and UndefinedBehaviorSanitizer
against the core's own sources, each runs a bounded number of inputs from its seed corpus (fixtures/fuzz/) and
must finish clean having executed a floor of them; the seeds and every recorded crash (fixtures/fuzz/*/regressions/) are
replayed; the Python decoder runs under atheris and, everywhere, its property under Hypothesis. Two builds with a
planted bug show that the harness does fail: an off-by-one capacity is reported by AddressSanitizer, a corrupted
payload by the round-trip check. Skipped, with the reason, only where clang (or atheris) is not installed;
scripts/setup.sh installs both.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import struct
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(300)

# The smoke runs are bounded by work, not time: each target runs SMOKE_RUNS inputs (about a second of CPU each:
# a C harness does 1,000-25,000 inputs a second, the synthetic model's some tens to hundreds, an inference each,
# the Python one a few hundred), at most SMOKE_TIME_CAP seconds, so that a starved machine (the suite beside a
# training job) takes longer instead of failing; a run must still have executed MIN_RUNS.
SMOKE_RUNS = {"receiver": 4000, "receiver_rx64": 4000, "handlers": 1000, "handlers_synthetic": 60, "offload": 3000,
              "server_decoder": 300}
SMOKE_TIME_CAP = 60
MIN_RUNS = {"handlers_synthetic": 20, "server_decoder": 100}
MIN_RUNS_C = 300


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


fuzz = _load("hil_fuzz_script", ROOT / "scripts" / "fuzz.py")
server_decoder = _load("hil_fuzz_server_decoder", ROOT / "device_fw" / "fuzz" / "server_decoder.py")

C_TARGETS = [t for t in fuzz.TARGETS.values() if not t.python]
PY_TARGET = fuzz.TARGETS["server_decoder"]


def _seed_files(target) -> list[Path]:
    return sorted((fuzz.SEEDS / target.seeds).glob("*.bin"))


@functools.cache
def _build_all() -> dict[str, Path]:
    with ThreadPoolExecutor(2) as pool:  # build() itself compiles a target's files in parallel too
        return dict(zip([t.name for t in C_TARGETS], pool.map(fuzz.build, C_TARGETS), strict=True))


@pytest.fixture(scope="module")
def binaries() -> dict[str, Path]:
    why = fuzz.clang_available()
    if why:
        pytest.skip(f"cannot build the fuzz targets: {why}")
    return _build_all()


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every target at once (C ones where clang is installed, the Python one where atheris is), each growing a
    corpus of its own in a temporary directory."""
    binaries = {} if fuzz.clang_available() else _build_all()
    targets = [*(t for t in C_TARGETS if t.name in binaries), *([] if fuzz.atheris_available() else [PY_TARGET])]
    if not targets:
        return {}
    with ThreadPoolExecutor(len(targets)) as pool:
        futures = {
            t.name: pool.submit(fuzz.run, t, seconds=SMOKE_TIME_CAP, runs=SMOKE_RUNS[t.name],
                                binary=binaries.get(t.name), corpus=tmp_path_factory.mktemp(f"corpus-{t.name}"),
                                timeout=SMOKE_TIME_CAP + 120)
            for t in targets
        }
        return {name: f.result() for name, f in futures.items()}


def _seeds_loaded(output: str) -> int:
    m = re.search(r"seed corpus: files: (\d+)", output)
    return int(m.group(1)) if m else 0


@pytest.mark.parametrize("name", [t.name for t in C_TARGETS])
def test_smoke_run_is_clean_and_executes_inputs(smoke_runs: dict[str, object], name: str) -> None:
    if name not in smoke_runs:
        pytest.skip(f"cannot build the fuzz targets: {fuzz.clang_available()}")
    res = smoke_runs[name]
    assert res.returncode == 0, f"{name} failed:\n{res.output[-6000:]}"
    floor = MIN_RUNS.get(name, MIN_RUNS_C)
    assert res.runs is not None and res.runs >= floor, f"{name}: only {res.runs} runs\n{res.output[-3000:]}"
    target = fuzz.TARGETS[name]
    assert _seeds_loaded(res.output) >= len(_seed_files(target)), f"{name} did not read its seed corpus"


@pytest.mark.parametrize("name", [t.name for t in C_TARGETS])
def test_seeds_and_regressions_replay_clean(binaries: dict[str, Path], name: str) -> None:
    """Every seed and every recorded crash, once: a fixed bug that comes back fails here."""
    target = fuzz.TARGETS[name]
    files = _seed_files(target) + fuzz.regression_files(target)
    assert len(_seed_files(target)) >= 5, f"fixtures/fuzz/{target.seeds}/ lacks seeds: run scripts/fuzz.py seeds"
    res = fuzz.replay(target, files, binary=binaries[name])
    assert res.returncode == 0, res.output[-6000:]
    assert res.output.count("Executed ") == len(files)


def test_seed_corpus_is_small() -> None:
    total = sum(p.stat().st_size for p in fuzz.SEEDS.rglob("*") if p.is_file())
    assert 0 < total < 100_000


def test_seeds_are_what_the_generator_makes() -> None:
    """fixtures/fuzz/ is regenerated by `scripts/fuzz.py seeds`, not edited by hand."""
    for name, make in fuzz.SEED_MAKERS.items():
        want = make()
        got = {p.name: p.read_bytes() for p in (fuzz.SEEDS / name).glob("*.bin")}
        assert got == want, f"fixtures/fuzz/{name}/ differs from its generator: rerun scripts/fuzz.py seeds"


# ---- the harness can fail: planted bugs ----


def _overflow_input() -> tuple[bytes, int]:
    """An offload input whose payload is exactly one byte larger than its fuzzed capacity (100 random 3-bit
    codes go stored: 4 + 38 = 42 bytes; capacity 41)."""
    from hil.offload.codec import encode_payload

    codes = np.random.default_rng(5).integers(0, 8, 100)
    size = len(encode_payload(codes, 3))
    return bytes([2, 0x10]) + struct.pack("<H", size - 1) + codes.astype(np.uint8).tobytes(), size


def test_planted_off_by_one_is_reported_by_asan(binaries: dict[str, Path], tmp_path: Path) -> None:
    data, size = _overflow_input()
    case = tmp_path / "overflow.bin"
    case.write_bytes(data)
    clean = fuzz.replay("offload", [case], binary=binaries["offload"])
    assert clean.returncode == 0, clean.output[-4000:]
    planted = fuzz.build("offload", defines=("FUZZ_PLANTED_BUG=1",), suffix="_planted1")
    res = fuzz.replay("offload", [case], binary=planted)
    assert res.returncode != 0
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in res.output, res.output[-4000:]
    assert re.search(rf"0 bytes (after|to the right of) {size - 1}-byte region", res.output), res.output[-4000:]
    assert re.search(r"SUMMARY: AddressSanitizer: heap-buffer-overflow \S*core/src/offload.c", res.output)


def test_planted_corruption_is_found_by_fuzzing(binaries: dict[str, Path], tmp_path: Path) -> None:
    """A fuzzing run (not a crafted input) of a harness whose encoder output is corrupted stops with the
    round-trip violation and saves the input."""
    planted = fuzz.build("offload", defines=("FUZZ_PLANTED_BUG=2",), suffix="_planted2")
    crashes = tmp_path / "crashes"
    crashes.mkdir()
    res = fuzz.run("offload", seconds=30, binary=planted, corpus=tmp_path / "corpus",
                   extra=[f"-artifact_prefix={crashes}/"], timeout=120)
    assert res.returncode != 0, res.output[-4000:]
    assert "PROPERTY VIOLATED" in res.output and "does not decode" in res.output, res.output[-4000:]
    assert list(crashes.glob("crash-*")), "libFuzzer saved no crash input"


# ---- the server's decoder (Python) ----


def test_server_decoder_smoke_run_under_atheris(smoke_runs: dict[str, object]) -> None:
    why = fuzz.atheris_available()
    if why:
        pytest.skip(f"{why}; the Hypothesis test below checks the same property")
    res = smoke_runs[PY_TARGET.name]
    assert res.returncode == 0, res.output[-6000:]
    floor = MIN_RUNS["server_decoder"]
    assert res.runs is not None and res.runs >= floor, f"only {res.runs} runs\n{res.output[-3000:]}"
    assert _seeds_loaded(res.output) >= len(_seed_files(PY_TARGET))


def test_server_decoder_seeds_and_regressions_in_process() -> None:
    files = _seed_files(PY_TARGET) + fuzz.regression_files(PY_TARGET)
    assert len(files) >= 5
    for f in files:
        server_decoder.check_one(f.read_bytes())


@pytest.fixture(scope="module")
def _server() -> Iterator[None]:
    server, _ = server_decoder._server()
    yield
    server.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.integers(0, 3), body=st.binary(max_size=600))
def test_server_decoder_property_under_hypothesis(_server: None, kind: int, body: bytes) -> None:
    """The same property as the atheris target, for platforms without its wheels (atheris ships x86_64 only)."""
    server_decoder.check_one(bytes([kind]) + body)


def test_server_decoder_property_catches_a_wrong_error_class(monkeypatch: pytest.MonkeyPatch) -> None:
    """A decoder that raises anything but PayloadError on bad data is a property violation (an escape)."""
    import hil.offload.codec as codec

    def broken(*args: object, **kwargs: object) -> None:
        raise IndexError("list index out of range")

    monkeypatch.setattr(codec, "decode_payload", broken)
    with pytest.raises(IndexError):
        server_decoder.check_one(bytes([0]) + struct.pack("<HBB", 8, 2, 0) + b"\x01\x00\x03\x00\xff")
