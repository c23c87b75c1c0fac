"""`hil check` and friends as a user runs them: exit codes, the verdict line, given and random inputs."""

import numpy as np
import pytest

from hil import paths
from hil.check import CheckResult, InputSpec, file_inputs, run_check
from hil.cli import main
from hil.model.synthetic import make_single_op_model
from hil.transport.frame import InferResult


@pytest.fixture
def reports(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    return tmp_path / "reports"


@pytest.mark.timeout(120)
def test_check_any_tflite_on_host(tmp_path, reports, capsys):
    model = tmp_path / "conv.tflite"
    model.write_bytes(make_single_op_model("CONV_2D", np.random.default_rng(3), height=9, width=7, in_channels=5,
                                           out_channels=6, stride=(2, 2), padding="SAME"))
    rc = main(["check", "--target", "host", "--images", "20", "--model", str(model), "--quiet"])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "bit-exact 20/20 on host"
    assert rc == 0
    assert (reports / "latest" / "check-host.json").is_file()


@pytest.mark.timeout(120)
def test_check_given_uint8_images_on_qemu(tmp_path, reports, capsys):
    images = np.random.default_rng(0).integers(0, 256, size=(12, 96, 96, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", image=images)
    rc = main(["check", "--target", "qemu", "--images", "12", "--inputs", str(tmp_path / "images.npz"), "--quiet",
               "--model", str(paths.SYNTHETIC_MODEL)])
    assert capsys.readouterr().out.strip().splitlines()[-1] == "bit-exact 12/12 on qemu"
    assert rc == 0


def test_check_rejects_inputs_of_the_wrong_shape(tmp_path, reports, capsys):
    np.save(tmp_path / "small.npy", np.zeros((4, 32, 32, 3), np.int8))
    rc = main(["check", "--target", "host", "--images", "4", "--inputs", str(tmp_path / "small.npy"), "--quiet",
               "--model", str(paths.SYNTHETIC_MODEL)])
    assert rc == 2
    assert "images of shape (32, 32, 3), the model expects (96, 96, 3)" in capsys.readouterr().err


def test_check_rejects_a_missing_model(tmp_path, capsys):
    rc = main(["check", "--target", "host", "--model", str(tmp_path / "nope.tflite")])
    assert rc == 6  # EXIT_MODEL
    assert "neither a model directory" in capsys.readouterr().err


def test_check_rejects_zero_images(capsys):
    assert main(["check", "--target", "host", "--images", "0"]) == 2


def test_check_rejects_an_unsupported_model_naming_the_op(tmp_path, capsys):
    from hil.model.synthetic import TfliteBuilder

    b = TfliteBuilder()
    x = b.tensor([1, 4], scale=0.1, zero_point=0, name="x")
    y = b.tensor([1, 4], scale=0.1, zero_point=0, name="y")
    b.op("ABS", [x], [y])  # an op the kernel core does not have
    model = tmp_path / "abs.tflite"
    model.write_bytes(b.finish([x], [y]))
    rc = main(["check", "--target", "host", "--model", str(model)])
    assert rc == 6  # EXIT_MODEL
    assert "model error" in (err := capsys.readouterr().err) and "ABS" in err


class _OffByOneDut:
    """A device whose second output is off by one on odd images: what a rounding bug looks like."""

    name, provenance = "fake", "test double"

    def __init__(self, reference):
        self.reference = reference
        self.info = type("Info", (), {"clock_hz": 1})()
        self.model = type("Model", (), {"name": "m", "sha256": "0" * 64})()
        self.calls = 0

    def infer(self, tensors):
        outputs = [o.copy() for o in self.reference.run(tensors)]
        if self.calls % 2:
            outputs[-1].flat[0] = np.int8(outputs[-1].flat[0] ^ 1)
        self.calls += 1
        return InferResult(outputs=outputs, cycles=5, time_us=0, clock_hz=1, inline=True)


def test_run_check_counts_a_single_differing_value_as_a_mismatch():
    from hil.model.reference import TflmReference

    reference = TflmReference((paths.SYNTHETIC_MODEL / "model.tflite").read_bytes())
    dut = _OffByOneDut(reference)
    specs = [InputSpec((1, 96, 96, 3), 1.0, 0)]
    inputs = ([np.full(s.shape, i, np.int8) for s in specs] for i in range(4))
    result: CheckResult = run_check(dut, reference, inputs, 4)
    assert (result.matched, result.images, result.ok) == (2, 4, False)
    assert [(m.image, m.output, m.differing_values, m.max_abs_diff) for m in result.mismatches] == [
        (1, 1, 1, 1), (3, 1, 1, 1)]
    assert result.summary_line() == "bit-exact 2/4 on fake"


def test_uint8_images_are_quantized_with_the_input_parameters(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[[0, 255]]], np.uint8))
    spec = InputSpec((1, 1, 2), scale=1 / 255, zero_point=-128)
    [[tensor]] = list(file_inputs(tmp_path / "x.npy", [spec], 1))
    assert tensor.tolist() == [[[-128, 127]]]


@pytest.mark.timeout(60)
def test_info_prints_what_the_device_reports(capsys):
    assert main(["info", "--target", "host", "--model", str(paths.SYNTHETIC_MODEL)]) == 0
    out = capsys.readouterr().out
    assert "model: synthetic-extractor, sha256 " in out
    assert "input 0: int8 (1, 96, 96, 3)" in out
    assert "emulated (host build" in out


def test_train_overrides_are_json_values_and_bad_ones_are_explained():
    from hil.cli_baseline import parse_overrides  # hil train, finetune and baseline train share it

    assert parse_overrides(["joint_epochs=30", "lam=0.3", "dataset=data/x.npz"]) == {
        "joint_epochs": 30, "lam": 0.3, "dataset": "data/x.npz"}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_overrides(["joint_epochs"])
