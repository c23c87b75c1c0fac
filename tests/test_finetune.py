"""Server-side fine-tuning of the Remote NN on the int8 device part's codes (hil.export.finetune), on a tiny
synthetic run: by default the device weights go on the int8 grid first (then the int8 model holds the float
model's weights); without that the device part stays byte-identical; the export records and checks both."""

import hashlib
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from helpers_train import tiny_config

from hil.datasets import synthetic_dataset

pytestmark = [pytest.mark.tf, pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from hil.export.agilenn import export_agilenn
    from hil.export.finetune import FinetuneConfig, finetune_remote
    from hil.train.trainer import train

    root = tmp_path_factory.mktemp("finetune")
    data = synthetic_dataset(64, 32, seed=3)
    npz = root / "data.npz"
    np.savez_compressed(npz, x_train=data.x_train, y_train=data.y_train, x_test=data.x_test, y_test=data.y_test)
    run = root / "run"
    assert train(tiny_config(npz), run, progress=False).complete
    before = export_agilenn(run, root / "before", name="tiny")  # same name: the C embeds it
    joint_remote = (run / "remote_nn.keras").read_bytes()
    joint_extractor = (run / "extractor.keras").read_bytes()
    shutil.copytree(run, root / "run_plain")  # for fine-tuning without snapping
    config = FinetuneConfig(epochs=2, batch_size=16, lr=0.05)
    record = finetune_remote(run, config, progress=False)
    limits = {"targets_missed": "tiny run", "what_limited_it": ["two steps per stage"], "next_steps": "none"}
    after = export_agilenn(run, root / "after", name="tiny", limits=limits)
    return SimpleNamespace(root=root, run=run, config=config, record=record, before=before, after=after,
                           joint_remote=joint_remote, joint_extractor=joint_extractor)


def test_finetune_without_snapping_leaves_the_device_part_byte_identical(tuned):
    from hil.export.agilenn import export_agilenn
    from hil.export.finetune import FinetuneConfig, finetune_remote

    run = tuned.root / "run_plain"
    record = finetune_remote(run, FinetuneConfig(epochs=1, batch_size=16, lr=0.05, snap_weights=False),
                             progress=False)
    assert record["weights_snap"] is None and not (run / "extractor.joint.keras").exists()
    card = export_agilenn(run, tuned.root / "plain", name="tiny")
    for name in ("model.tflite", "hil_model.c", "hil_offload.c"):
        assert _sha(tuned.root / "before" / name) == _sha(tuned.root / "plain" / name), name
    # ... and the record names that very int8 model.
    assert record["device_tflite_sha256"] == _sha(tuned.root / "plain" / "model.tflite")
    assert card["server_finetune"]["weights_snap"] is None


def test_finetune_snaps_the_device_weights_and_keeps_the_joint_ones(tuned):
    snap = tuned.record["weights_snap"]
    assert [row["name"] for row in snap["layers"]] == [
        "e0_conv", "e1_dw", "e1_pw", "e2_dw", "e2_pw", "e3_dw", "e3_pw", "l0_conv", "l1_conv", "l_logits"]
    assert all(row["max_change_steps"] <= 0.5 for row in snap["layers"])
    assert snap["before_snap"]["samples"] == tuned.record["before"]["samples"] == 32
    assert (tuned.run / "extractor.joint.keras").read_bytes() == tuned.joint_extractor
    # The device part changed (its weights moved by up to half an int8 step), and the record names the new one.
    assert _sha(tuned.root / "before" / "model.tflite") != _sha(tuned.root / "after" / "model.tflite")
    assert tuned.record["device_tflite_sha256"] == _sha(tuned.root / "after" / "model.tflite")
    readme = (tuned.root / "after" / "README.md").read_text()
    assert "put the device part's weights on the int8 grid (10 kernels" in readme
    assert "| on 32 test images | joint-trained | weights on the int8 grid | Remote NN fine-tuned |" in readme


def test_the_snapped_int8_model_holds_the_float_models_weights(tuned):
    """The exported float device model is on the int8 grid (test_train_snap: then the int8 conversion holds
    exactly its weights)."""
    import keras

    from hil.train.snap import snap_model_to_int8_grid

    float_model = keras.models.load_model(tuned.root / "after" / "device_float.keras")
    # Snapping what is already on the grid moves nothing ...
    assert max(r.max_change_steps for r in snap_model_to_int8_grid(float_model)) < 1e-4
    # ... while the joint-trained model was off it (the int8 conversion rounds its weights).
    joint = keras.models.load_model(tuned.root / "before" / "device_float.keras")
    assert max(r.max_change_steps for r in snap_model_to_int8_grid(joint)) > 0.3


def test_finetune_changes_the_remote_nn_and_keeps_the_joint_one(tuned):
    assert (tuned.run / "remote_nn.joint.keras").read_bytes() == tuned.joint_remote
    assert _sha(tuned.root / "before" / "remote.keras") != _sha(tuned.root / "after" / "remote.keras")


def test_finetune_record_metrics_and_card(tuned):
    record = tuned.record
    assert record["complete"] and record["epochs_done"] == 2
    pairs = 2 * 64  # the training images and their mirror images
    rows = [json.loads(line) for line in (tuned.run / "metrics.jsonl").read_text().splitlines()]
    ft_rows = [r for r in rows if r.get("stage") == "remote_finetune"]
    assert [r["epoch"] for r in ft_rows] == [1, 2]
    assert ft_rows[0]["steps"] == pairs // tuned.config.batch_size
    for key in ("combined_float", "combined_int8", "int8_float_agreement", "code_mismatch"):
        assert 0.0 <= record["after"][key] <= 1.0
    assert record["after"]["samples"] == 32
    card = tuned.after
    assert card["server_finetune"]["after"] == record["after"]
    assert card["training"]["epochs"]["remote_finetune"] == 2
    assert tuned.before["server_finetune"] is None
    # The card's own evaluation (export, TFLM + the fine-tuned remote.keras) says what the record says.
    assert card["accuracy"]["combined_int8"] == pytest.approx(record["after"]["combined_int8"], abs=1e-9)
    assert card["accuracy"]["int8_float_agreement"] == pytest.approx(record["after"]["int8_float_agreement"], abs=1e-9)
    readme = (tuned.root / "after" / "README.md").read_text()
    assert "Remote NN fine-tuned on the device's int8 codes" in readme


def test_limits_go_into_the_card_and_its_readme(tuned):
    assert tuned.after["limits"]["what_limited_it"] == ["two steps per stage"]
    assert "limits" not in tuned.before
    readme = (tuned.root / "after" / "README.md").read_text()
    assert "## What limited it" in readme and "- two steps per stage" in readme


def test_finetune_again_returns_the_finished_record_without_training(tuned):
    from hil.export.finetune import finetune_remote

    lines = (tuned.run / "metrics.jsonl").read_text().count("\n")
    assert finetune_remote(tuned.run, tuned.config, progress=False) == tuned.record
    assert (tuned.run / "metrics.jsonl").read_text().count("\n") == lines


def test_finetune_with_other_settings_is_refused(tuned):
    from hil.export.finetune import FinetuneConfig, FinetuneSettingsError, finetune_remote

    with pytest.raises(FinetuneSettingsError, match="other settings"):
        finetune_remote(tuned.run, FinetuneConfig(epochs=3, batch_size=16, lr=0.05), progress=False)


def test_export_refuses_a_remote_tuned_on_another_device_part(tuned, tmp_path):
    from hil.export.agilenn import export_agilenn
    from hil.export.common import ExportError

    run = tmp_path / "run"
    shutil.copytree(tuned.run, run, ignore=shutil.ignore_patterns("ckpt", "finetune"))
    record = json.loads((run / "finetune.json").read_text())
    record["device_tflite_sha256"] = "0" * 64
    (run / "finetune.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="another int8 device part"):
        export_agilenn(run, tmp_path / "out", name="out")
    record["complete"] = False
    (run / "finetune.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="not finished"):
        export_agilenn(run, tmp_path / "out2", name="out2")


def test_finetune_config_rejects_bad_values():
    from hil.export.finetune import FinetuneConfig, FinetuneSettingsError

    with pytest.raises(FinetuneSettingsError, match="epochs"):
        FinetuneConfig(epochs=0).validate()
    with pytest.raises(FinetuneSettingsError, match="lr"):
        FinetuneConfig(lr=-1.0).validate()


def test_finetune_command(tuned, capsys):
    from hil.cli import main

    rc = main(["finetune", "--quiet", "--run-dir", str(tuned.run), "--set", "epochs=2", "--set", "batch_size=16",
               "--set", "lr=0.05"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert out[-1].startswith(f"{tuned.run}: int8/float agreement ") and "hil export --run-dir" in out[-1]
    assert main(["finetune", "--run-dir", str(tuned.run), "--set", "epoch=2"]) == 2
    assert "unexpected keyword argument 'epoch'" in capsys.readouterr().err
    assert main(["finetune", "--run-dir", str(tuned.run)]) == 2  # the defaults differ from the finished record
    assert "other settings" in capsys.readouterr().err


def test_agreement_report_says_which_int8_part_disagrees():
    """Hand-made pairs: the int8 local logits flip image 0, the int8 codes flip image 1, image 2 agrees."""
    from hil.export.finetune import CodePairs, agreement_report

    centroids = np.array([0.0, 1.0], np.float32)
    codes_f = np.zeros((3, 1, 1, 2), np.uint8)
    codes_f[:, 0, 0, 0] = 1  # remote says class 0 weakly on every image
    codes_i = codes_f.copy()
    codes_i[1, 0, 0] = (0, 1)  # image 1: the int8 codes say class 1
    local_f = np.zeros((3, 2), np.float32)
    local_i = local_f.copy()
    local_i[0] = (0.0, 5.0)  # image 0: the int8 local logits say class 1
    pairs = CodePairs(codes_float=codes_f, codes_int8=codes_i, local_float=local_f, local_int8=local_i,
                      y=np.array([0, 0, 1], np.int32))

    def remote(values, training=False):
        return values.reshape(len(values), 2)

    report = agreement_report(remote, pairs, centroids, alpha=0.5)
    assert report["agreement_int8_local_only"] == pytest.approx(2 / 3)
    assert report["agreement_int8_codes_only"] == pytest.approx(2 / 3)
    assert report["int8_float_agreement"] == pytest.approx(1 / 3)
    assert report["code_mismatch"] == pytest.approx(2 / 6)
    assert report["combined_float"] == pytest.approx(2 / 3)
