"""The HIL accuracy check on the committed AgileNN export (models/agilenn-cifar10, a 16x8 device part) and the
committed 500-image CIFAR-10 subset, on QEMU: the device equals the host 16x8 execution on every image, the
combined prediction agrees with the float Keras pipeline on at least 99% of them (the bound
hil/suite/test_accuracy.py applies to whatever --hil-model it is given), and the card's accuracy on the byte-exact
test images, from which the subset is drawn, lies within the subset's confidence interval."""

from __future__ import annotations

import json

import pytest

from hil import paths
from hil.cli import main

MODEL = paths.MODELS / "agilenn-cifar10"
AGREEMENT_MIN = 0.99

pytestmark = [pytest.mark.tf, pytest.mark.qemu, pytest.mark.timeout(600),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def test_committed_16x8_export_meets_the_agreement_bound_on_qemu(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "REPORTS", tmp_path)
    rc = main(["accuracy", "--target", "qemu", "--model", str(MODEL), "--quiet"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, out
    report = json.loads((tmp_path / "latest" / "accuracy-qemu.json").read_text())
    assert report["device_part"] == "16x8"
    assert report["images"] == 500 and report["class_counts"] == [50] * 10
    assert report["device_equals_host_int8"]["matched"] == 500 and report["mismatches"] == []
    assert report["agreement_with_float"] >= AGREEMENT_MIN, out[-1]
    card = json.loads((MODEL / "card.json").read_text())
    assert card["accuracy"]["int8_float_agreement"] >= AGREEMENT_MIN  # all 10000 test images, at export
    # The subset is 50 byte-exact test images per class, so the card's accuracy on the byte-exact test images
    # (1,017 of the 10,000; the JPEG re-encoded rest is a few points harder) must be a plausible value for these
    # 500: it lies inside the subset's Wilson 95% interval. A wrong Remote NN, lookup table or code mapping
    # drops far below it.
    exact = card["accuracy"]["byte_exact"]
    lo, hi = report["accuracy"]["combined_ci95"]
    assert exact["samples"] >= 500 and lo <= exact["combined_int8"] <= hi, (report["accuracy"], exact)
