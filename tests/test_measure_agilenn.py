"""Latency and energy of the trained AgileNN device part (models/agilenn-cifar10) on the qemu target with the
simulated analyzer, through the plugin's `power_analyzer` and `hil_results` fixtures, so the figures land in the
run's results file whatever the session's default model is."""

import pytest

from hil import paths
from hil.dut import DutOptions, open_dut
from hil.measure.run import MeasureOptions, measure
from hil.model.artifacts import resolve_model

IMAGES = 8
AGILENN = paths.MODELS / "agilenn-cifar10"


@pytest.mark.timeout(180)
def test_agilenn_device_part_latency_and_energy_on_qemu(power_analyzer, hil_results, tmp_path):
    if not power_analyzer.is_simulated:
        pytest.skip("this test drives the qemu stand-in, whose activity only the simulated analyzer sees")
    model = resolve_model(AGILENN)
    with open_dut(model, DutOptions(target="qemu", log_dir=tmp_path)) as dut:
        report = measure(dut, power_analyzer, MeasureOptions(images=IMAGES))
    hil_results.meta.update(target="qemu", model=model.name, summary=report.summary_line())
    hil_results.extend(m for m in report.measurements if m.name != "windows_found")
    hil_results.record(report.get("windows_found").with_limits(IMAGES, IMAGES))

    latency = report.get("latency_device")
    assert latency.provenance == "emulated" and report.model == "agilenn-cifar10"
    # qemu's counter runs at 40 MHz; the device part's 792,626 MACs take about 0.74 M ticks there
    assert 5.0 < latency.value < 50.0
    power_model = power_analyzer.simulated.power_model
    energy = report.get("energy_per_inference")
    assert energy.provenance == "modelled"
    assert energy.value == pytest.approx(power_model.energy_j(latency.value / 1e3) * 1e3, rel=0.01)
