"""Every committed model directory: its card.json loads, has the keys tools read, and hashes its files."""

import json
import shutil

import pytest

from hil import paths
from hil.export.cards import CardError, load_card

MODEL_DIRS = sorted(p.parent for p in paths.MODELS.glob("*/card.json"))


def test_there_are_committed_models():
    assert MODEL_DIRS, f"no */card.json under {paths.MODELS}"


@pytest.mark.parametrize("model_dir", MODEL_DIRS, ids=[p.name for p in MODEL_DIRS])
def test_committed_card_loads_and_hashes_match(model_dir):
    card = load_card(model_dir)  # keys, value ranges, every artifact's sha256, no unlisted files
    assert card["name"] == model_dir.name
    if "model.tflite" in card["artifacts"]:
        from hil.model.artifacts import resolve_model

        # Firmware-usable: the generated C belongs to this .tflite (resolve_model checks model.json's sha256).
        assert resolve_model(model_dir).sha256 == card["artifacts"]["model.tflite"]
    if card["kind"] == "agilenn":
        meta = json.loads((model_dir / "agilenn.json").read_text())
        from hil.offload.value_codes import ValueCodes

        codes = ValueCodes.of_export(meta)  # int8_to_code, or a 16x8 export's int16_code_runs; checks their shape
        assert codes.max_code() < len(meta["centroids"])
        assert card["accuracy"]["full_test_set"], "a committed card reports the full test set"


def test_card_errors_name_the_file(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(paths.MODELS / "synthetic-extractor", model)
    load_card(model)
    (model / "hil_model.c").write_text((model / "hil_model.c").read_text() + "\n")
    with pytest.raises(CardError, match=r"hil_model\.c: sha256 [0-9a-f]{64} != card\.json"):
        load_card(model)
    shutil.copy(paths.MODELS / "synthetic-extractor" / "hil_model.c", model / "hil_model.c")
    (model / "extra.bin").write_bytes(b"x")
    with pytest.raises(CardError, match=r"extra\.bin: present but not listed"):
        load_card(model)
    (model / "extra.bin").unlink()
    (model / "model.tflite").unlink()
    with pytest.raises(CardError, match=r"model\.tflite: listed in card\.json but missing"):
        load_card(model)


def test_card_key_errors(tmp_path):
    model = tmp_path / "m"
    shutil.copytree(paths.MODELS / "synthetic-extractor", model)
    card = json.loads((model / "card.json").read_text())
    (model / "card.json").write_text(json.dumps(card | {"kind": "agilenn"}))
    with pytest.raises(CardError, match="missing keys accuracy, skewness, payload_bits"):
        load_card(model)
    trained = card | {"kind": "agilenn", "skewness": 0.8, "payload_bits": 3648, "accuracy": {"combined_int8": 94.2}}
    (model / "card.json").write_text(json.dumps(trained))
    with pytest.raises(CardError, match="combined_int8 = 94.2 is not a fraction"):
        load_card(model)
    (model / "card.json").write_text(json.dumps(trained | {"accuracy": {"top1": 0.9}}))
    with pytest.raises(CardError, match="needs combined_int8"):
        load_card(model)
    (model / "card.json").write_text(json.dumps(card | {"kind": "mystery"}))
    with pytest.raises(CardError, match="kind 'mystery'"):
        load_card(model)
