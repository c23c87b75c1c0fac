"""Every committed model directory: its card checks out (`hil models`), and its int8 device part runs bit-exact
through the C core on the host target (firmware built from the directory's hil_model.c) against TensorFlow Lite
Micro on model.tflite. Catches a regenerated model whose C, or a compiler change whose output, no longer matches."""

import pytest

from hil import paths
from hil.check import InputSpec, random_inputs, run_check
from hil.cli import main
from hil.dut import DutOptions, open_dut
from hil.export.cards import scan_models
from hil.model.artifacts import resolve_model
from hil.model.reference import TflmReference

IMAGES = 10
DEVICE_MODELS = sorted(d.name for d in paths.MODELS.iterdir() if (d / "model.tflite").is_file())


def test_every_committed_card_checks_out(capsys):
    rows = scan_models(paths.MODELS)
    assert {r.directory for r in rows} >= {"synthetic-extractor", "agilenn-cifar10"}
    assert [r.problem for r in rows if not r.ok] == []
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["model", "kind"] and len(out) == 1 + len(rows)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", DEVICE_MODELS)
def test_committed_device_part_bit_exact_on_host(name, tmp_path):
    model = resolve_model(paths.MODELS / name)
    reference = TflmReference(model.tflite_bytes)
    with open_dut(model, DutOptions(target="host", log_dir=tmp_path)) as dut:
        specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point, t.dtype) for t in dut.info.inputs]
        result = run_check(dut, reference, random_inputs(specs, IMAGES, seed=3), IMAGES)
    assert result.mismatches == []
    assert result.summary_line() == f"bit-exact {IMAGES}/{IMAGES} on host"


def test_models_command_fails_on_a_tampered_card(tmp_path, capsys):
    import shutil

    shutil.copytree(paths.MODELS / "synthetic-extractor", tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{}")
    assert main(["models", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "card does not check out" in err and "model.json: sha256" in err
