"""Measurements (provenance, limits, JSON), the results file, and the offload link models."""

import json
import math

import pytest

from hil.measure.link import LINKS, link_by_key, offload_measurements
from hil.measure.measurement import Measurement, ResultsWriter, read_results


def test_provenance_is_one_of_three():
    for kind in ("measured", "emulated", "modelled"):
        assert Measurement("x", 1.0, "ms", kind).provenance == kind
    with pytest.raises(ValueError, match="provenance must be one of"):
        Measurement("x", 1.0, "ms", "simulated")


def test_limits_pass_fail_and_nan():
    m = Measurement("energy", 2.3, "mJ", "modelled")
    assert m.passed is None and m.validate()
    assert m.with_limits(2.0, 2.5).passed is True
    assert m.with_limits(high=2.0).passed is False and not m.with_limits(high=2.0).validate()
    assert m.with_limits(low=2.31).passed is False
    assert Measurement("x", math.nan, "mJ", "measured").with_limits(0, 1).passed is False
    assert "FAIL" in m.with_limits(high=1).describe() and "(modelled: )" in m.describe()


def test_results_file_round_trips_and_survives_nan(tmp_path):
    path = tmp_path / "deep" / "results.json"
    writer = ResultsWriter(path, meta={"target": "qemu"})
    writer.add("test_a", [Measurement("latency", 9.77, "ms", "emulated", "qemu", values=(9.7, 9.8))])
    writer.add("test_b", [Measurement("energy", math.nan, "mJ", "modelled").with_limits(0, 5)], run=2)
    data = json.loads(path.read_text())  # strict JSON: NaN became null
    assert data["schema"] == "hil-results/1" and data["meta"] == {"target": "qemu"}
    assert data["records"][1]["measurements"][0]["value"] is None
    assert data["records"][1]["measurements"][0]["passed"] is False
    records = read_results(path)
    assert [r.key for r in records] == ["test_a", "test_b"]
    assert records[0].measurements[0] == Measurement("latency", 9.77, "ms", "emulated", "qemu", values=(9.7, 9.8))
    assert math.isnan(records[1].measurements[0].value) and records[1].meta == {"run": 2}
    assert not list(path.parent.glob("*.tmp"))  # written atomically, nothing left behind


def test_link_models_known_answers():
    wifi = link_by_key("wifi-6mbps")
    assert wifi.transfer_time_s(0) == 0.0
    assert wifi.transfer_time_s(1460) == pytest.approx((1460 + 76) * 8 / 6e6 + 100e-6)
    assert wifi.transfer_time_s(1461) == pytest.approx((1461 + 2 * 76) * 8 / 6e6 + 2 * 100e-6)
    bt = link_by_key("bt-270kbps")
    assert bt.transfer_time_s(19456) == pytest.approx(19456 * 8 / 270e3)
    # the paper's ordering: WiFi fastest, Bluetooth at 270 kbps slowest
    times = [LINKS[k].transfer_time_s(19456) for k in ("wifi-6mbps", "bt-2mbps", "bt-270kbps")]
    assert times == sorted(times)
    with pytest.raises(ValueError, match="unknown link model"):
        link_by_key("lte")


def test_offload_figures_are_modelled_and_name_the_payload():
    figures = offload_measurements(19456)
    assert [m.name for m in figures] == ["offload_wifi_6mbps", "offload_bt_2mbps", "offload_bt_270kbps"]
    assert all(m.provenance == "modelled" and m.unit == "ms" and "19456 B" in m.detail for m in figures)
    assert figures[2].value == pytest.approx(19456 * 8 / 270e3 * 1e3)
