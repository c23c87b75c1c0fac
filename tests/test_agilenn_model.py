"""The committed trained AgileNN (models/agilenn-cifar10) end to end on qemu, whatever the session's default model:
`hil accuracy` on the first 200 images of the committed CIFAR-10 subset through the firmware's INFER_OFFLOAD, the
remote-model server and the float pipeline. The device must equal the host int8 execution on every image, and
the accuracy must be what the card's full-test-set figure predicts for 200 images (a Remote NN or lookup table
that does not belong to model.tflite drops it to chance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hil import paths
from hil.cli import main

pytestmark = [pytest.mark.tf, pytest.mark.qemu, pytest.mark.timeout(300),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]

AGILENN = paths.MODELS / "agilenn-cifar10"
IMAGES = 200  # of the committed subset: 20 per class


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    return tmp_path / "reports"


def test_trained_agilenn_on_qemu_matches_host_int8_and_its_card(reports, capsys):
    pytest.importorskip("tensorflow")
    card = json.loads((AGILENN / "card.json").read_text())
    rc = main(["accuracy", "--quiet", "--target", "qemu", "--model", str(AGILENN), "--images", str(IMAGES)])
    out, err = capsys.readouterr()
    assert rc == 0, err  # 0: the device equals host int8 on every image
    report = json.loads((reports / "latest" / "accuracy-qemu.json").read_text())
    assert report["images"] == IMAGES and report["mismatches"] == []
    assert report["class_counts"] == [IMAGES // 10] * 10

    # Four standard errors of a binomial proportion around the card's 10,000-image accuracy: about +-0.11 here,
    # far from the 0.1 that a mismatched Remote NN would give.
    p = card["accuracy"]["combined_int8"]
    bound = 4 * math.sqrt(p * (1 - p) / IMAGES)
    assert abs(report["accuracy"]["combined"] - p) < bound, (report["accuracy"], p)
    q = card["accuracy"]["int8_float_agreement"]
    assert abs(report["agreement_with_float"] - q) < 4 * math.sqrt(q * (1 - q) / IMAGES) + 1 / IMAGES
    # The payload: LZW over the 3-bit codes, below the packed 456 bytes on average (device_fw/OFFLOAD.md).
    mean_payload = sum(r["payload_bytes"] for r in report["per_image"]) / IMAGES
    assert 0 < mean_payload < card["payload"]["bytes"]
