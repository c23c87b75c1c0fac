"""Latency and energy of the device part on whatever --hil-target selects (qemu by default), with the analyzer
--hil-visa names (the simulated N6705C by default). The figures go to <report dir>/measurements/results.json.

With the simulated analyzer the expected energy is known: the datasheet's inference current x 3.3 V x each
window's length, where the windows come from the device's own cycle counts. On a bench the checks are looser:
marker windows must agree with the device's cycle counter, and energy must be physically plausible.
"""

import pytest

from hil.dut import EMULATED_TARGETS
from hil.measure.run import MeasureOptions, measure

IMAGES = 10


@pytest.fixture
def measure_options(hil_bench) -> MeasureOptions:
    pin = hil_bench.marker.trigger_pin if hil_bench is not None and hil_bench.marker is not None else None
    return MeasureOptions(images=IMAGES, trigger_pin=pin or 1)


def test_latency_and_energy_of_the_device_part(dut, power_analyzer, hil_results, measure_options):
    report = measure(dut, power_analyzer, measure_options)
    sample_s = report.capture["sample_interval_s"]
    latency = report.get("latency_device")
    hil_results.meta.update(target=report.target, model=report.model, analyzer=report.analyzer,
                            summary=report.summary_line())
    hil_results.extend(m for m in report.measurements if m.name != "windows_found")
    hil_results.record(report.get("windows_found").with_limits(IMAGES, IMAGES))  # fails the test when short

    # provenance: never an emulated or modelled number passed off as measured
    emulated = dut.options.target in EMULATED_TARGETS
    assert latency.provenance == ("emulated" if emulated else "measured")
    assert report.get("latency_host_round_trip").provenance == latency.provenance
    analyzer_kind = "modelled" if power_analyzer.is_simulated else "measured"
    for name in ("latency_marker", "energy_per_inference", "average_power", "peak_current", "idle_current"):
        assert report.get(name).provenance == analyzer_kind, name
    assert all(m.provenance == "modelled" for m in report.measurements if m.name.startswith("offload_"))

    # the marker window is the inference the device timed with its own counter
    marker = report.get("latency_marker")
    tolerance_ms = 2 * sample_s * 1e3 if power_analyzer.is_simulated else 0.05 * latency.value + 2 * sample_s * 1e3
    assert marker.value == pytest.approx(latency.value, abs=tolerance_ms)

    energy, power = report.get("energy_per_inference"), report.get("average_power")
    if power_analyzer.is_simulated:
        model = power_analyzer.simulated.power_model
        assert energy.value == pytest.approx(model.energy_j(latency.value / 1e3) * 1e3, rel=0.01)
        assert power.value == pytest.approx(model.active_power_w * 1e3, rel=0.01)
        assert report.get("idle_current").value == pytest.approx(model.idle_a * 1e3, rel=0.01)
    else:  # an ESP32-S3 at 3.3 V draws between a few mA and 500 mA
        assert 3.3 * 0.005 * 1e3 < power.value < 3.3 * 0.5 * 1e3
        assert energy.value == pytest.approx(power.value * marker.value / 1e3, rel=0.05)
    assert report.summary_line().startswith(f"median latency {latency.value:.2f} ms ({latency.provenance}: ")
