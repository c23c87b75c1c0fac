"""Marker windows and energy integration on synthesized traces whose answers are known exactly.

Traces are built from a time line of windows (edges at arbitrary, not sample-aligned times) through the ESP32-S3
power model, which averages each sample over its interval as a digitizer front end does, plus seeded noise. The
known answer of a window is active current x supply voltage x its duration.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hil.instruments.base import Trace
from hil.instruments.simulated import ESP32S3_240MHZ as MODEL
from hil.instruments.simulated import DutActivity
from hil.measure.energy import NoWindows, analyze, find_windows, integrate, span_energy, two_levels

DT = 20.48e-6  # the N6705C digitizer interval hil measure uses


def synthesize(durations_s, gaps_s, *, seed=0, marker=False, noise=1.0, lead_s=3e-3, tail_s=3e-3, dt=DT):
    """A trace of windows of `durations_s` each preceded by `gaps_s` of idle; returns (trace, true windows)."""
    activity = DutActivity(gap_s=1e-6)
    activity.idle(lead_s)
    for duration, gap in zip(durations_s, gaps_s, strict=True):
        activity.idle(gap)
        activity.inference(int(round(duration * 1e9)), 1_000_000_000)  # 1 GHz counter: duration to the ns
    t_first = 0.37 * dt  # not aligned with any edge
    n = int((activity.now() + tail_s - t_first) / dt)
    rng = np.random.default_rng(seed)
    current, voltage = MODEL.render(activity.duty(t_first, dt, n), rng, noise_scale=noise)
    mark = activity.marker(t_first, dt, n) if marker else None
    return Trace(dt=dt, current=current, voltage=voltage, t0=t_first, marker=mark), activity.windows


def known_energy(window, subtract_idle=False):
    return MODEL.energy_j(window.duration_s, subtract_idle=subtract_idle)


def test_windows_and_energy_match_the_known_answer_within_one_percent():
    rng = np.random.default_rng(42)
    durations = rng.uniform(2e-3, 15e-3, 25)
    gaps = rng.uniform(0.5e-3, 8e-3, 25)  # jitter: every inference starts after a different idle time
    trace, truth = synthesize(durations, gaps, seed=1)
    analysis = analyze(trace)
    assert analysis.count == len(truth)
    assert analysis.source == "current"
    for found, true in zip(analysis.windows, truth, strict=True):
        assert abs(found.window.start_s - true.start_s) < 0.5 * DT
        assert abs(found.window.end_s - true.end_s) < 0.5 * DT
        assert found.energy_j == pytest.approx(known_energy(true), rel=0.01)
    assert analysis.idle_current_a == pytest.approx(MODEL.idle_a, rel=0.01)
    assert analysis.mean_power_w == pytest.approx(MODEL.active_power_w, rel=0.01)
    assert analysis.peak_current_a > MODEL.active_a  # noise rides on the active level


def test_idle_subtraction_leaves_the_inference_energy_alone():
    trace, truth = synthesize([10e-3] * 8, [3e-3] * 8, seed=2)
    analysis = analyze(trace, subtract_idle=True)
    assert analysis.count == 8
    for found, true in zip(analysis.windows, truth, strict=True):
        assert found.energy_j == pytest.approx(known_energy(true, subtract_idle=True), rel=0.01)
        assert found.idle_subtracted_j == pytest.approx(MODEL.idle_power_w * true.duration_s, rel=0.01)


def test_a_configured_idle_power_is_used_instead_of_the_measured_one():
    trace, truth = synthesize([10e-3] * 3, [3e-3] * 3, seed=3)
    analysis = analyze(trace, subtract_idle=True, idle_power_w=0.0)
    assert analysis.windows[0].energy_j == pytest.approx(known_energy(truth[0]), rel=0.01)


@settings(max_examples=25, deadline=None)
@given(
    durations=st.lists(st.floats(1e-3, 20e-3), min_size=1, max_size=12),
    gap=st.floats(0.3e-3, 10e-3),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_train_of_windows_is_found_and_integrated_within_one_percent(durations, gap, seed):
    gaps = np.random.default_rng(seed).uniform(gap, 2 * gap, len(durations))
    trace, truth = synthesize(durations, gaps, seed=seed)
    windows, source, _levels, partial = find_windows(trace)
    assert (len(windows), source, partial) == (len(truth), "current", 0)
    analysis = analyze(trace)
    for found, true in zip(analysis.windows, truth, strict=True):
        assert found.energy_j == pytest.approx(known_energy(true), rel=0.01)


def test_marker_channel_wins_over_current_when_present():
    trace, truth = synthesize([5e-3, 7e-3, 9e-3], [2e-3, 2e-3, 2e-3], marker=True, seed=4)
    # Wreck the current: a plateau in the middle of the idle time that current-based detection would call a
    # window. The marker says when inferences ran; the current only how much they cost.
    current = trace.current.copy()
    plateau = (trace.times > truth[0].end_s + 0.5e-3) & (trace.times < truth[1].start_s - 0.5e-3)
    current[plateau] = MODEL.active_a
    wrecked = Trace(dt=trace.dt, current=current, voltage=trace.voltage, t0=trace.t0, marker=trace.marker)
    windows, source, _, _ = find_windows(wrecked)
    assert source == "marker"
    assert len(windows) == 3
    for found, true in zip(windows, truth, strict=True):
        assert abs(found.start_s - true.start_s) <= DT  # a sampled logic input: one sample of resolution
        assert abs(found.end_s - true.end_s) <= DT
    assert len(find_windows(wrecked, source="current")[0]) == 4


def test_hysteresis_ignores_short_spikes_and_dips():
    trace, truth = synthesize([10e-3, 10e-3], [4e-3, 4e-3], noise=0.2, seed=5)
    current = trace.current.copy()
    times = trace.times
    spike = int(np.searchsorted(times, truth[0].start_s - 2e-3))
    current[spike: spike + 2] = MODEL.active_a  # 2-sample spike in the idle gap
    dip = int(np.searchsorted(times, truth[1].start_s + 5e-3))
    current[dip] = MODEL.idle_a  # 1-sample dip inside a window
    # noise that crosses the midpoint but not the hysteresis band: one threshold alone would chatter
    mid = (MODEL.idle_a + MODEL.active_a) / 2
    chatter = int(np.searchsorted(times, truth[1].end_s + 1e-3))
    current[chatter: chatter + 20: 2] = mid + 0.05 * (MODEL.active_a - MODEL.idle_a)
    edited = Trace(dt=trace.dt, current=current, voltage=trace.voltage, t0=trace.t0)
    windows, _, _, _ = find_windows(edited)
    assert len(windows) == 2
    assert windows[1].start_s == pytest.approx(truth[1].start_s, abs=DT)
    assert windows[1].end_s == pytest.approx(truth[1].end_s, abs=DT)


def test_windows_cut_by_the_capture_are_not_counted():
    trace, truth = synthesize([6e-3, 6e-3, 6e-3], [2e-3, 2e-3, 2e-3], lead_s=0.0, tail_s=0.0, seed=6)
    start = int(np.searchsorted(trace.times, truth[0].start_s + 2e-3))
    stop = int(np.searchsorted(trace.times, truth[2].end_s - 2e-3))
    cut = Trace(dt=trace.dt, current=trace.current[start:stop], voltage=trace.voltage[start:stop],
                t0=float(trace.times[start]))
    analysis = analyze(cut)
    assert analysis.count == 1 and analysis.partial_windows == 2
    assert analysis.windows[0].window.start_s == pytest.approx(truth[1].start_s, abs=0.5 * DT)
    assert any("cut by the start or end" in note for note in analysis.notes)


def test_a_flat_trace_has_no_windows():
    rng = np.random.default_rng(7)
    current = MODEL.idle_a + rng.normal(0, MODEL.current_noise_a, 5000)
    analysis = analyze(Trace(dt=DT, current=current, voltage=np.full(5000, 3.3)))
    assert analysis.count == 0
    assert analysis.notes and "no two distinct levels" in analysis.notes[0]
    with pytest.raises(NoWindows):
        span_energy(Trace(dt=DT, current=current, voltage=np.full(5000, 3.3)), [], 10)


def test_span_energy_is_mlperf_tiny_energy_per_inference():
    durations, gaps = [8e-3] * 10, [2e-3] * 10
    trace, truth = synthesize(durations, gaps, seed=8)
    windows, _, _, _ = find_windows(trace)
    span = span_energy(trace, windows, 10)
    gaps_between = sum(gaps[1:])  # idle between the first rising and the last falling edge
    expected = MODEL.energy_j(sum(durations)) + MODEL.idle_power_w * gaps_between
    assert span.energy_j == pytest.approx(expected, rel=0.01)
    assert span.energy_per_inference_j == pytest.approx(expected / 10, rel=0.01)
    assert span.latency_per_inference_s == pytest.approx((truth[-1].end_s - truth[0].start_s) / 10, rel=1e-3)
    net = span_energy(trace, windows, 10, subtract_idle=True)
    assert net.energy_per_inference_j == pytest.approx(MODEL.energy_j(8e-3, subtract_idle=True), rel=0.01)


def test_trapezoid_integration_is_exact_for_linear_power():
    t = np.arange(1000) * 1e-4
    current = 0.01 + 0.05 * t  # linear in time; constant voltage: V*I is linear, trapezoids are exact
    trace = Trace(dt=1e-4, current=current, voltage=np.full(1000, 2.0))
    energy, charge = integrate(trace, 0.01234, 0.08765)
    expected_charge = 0.01 * (0.08765 - 0.01234) + 0.025 * (0.08765**2 - 0.01234**2)
    assert charge == pytest.approx(expected_charge, rel=1e-9)
    assert energy == pytest.approx(2.0 * expected_charge, rel=1e-9)
    assert integrate(trace, 0.05, 0.05) == (0.0, 0.0)


def test_two_levels_of_a_duty_cycled_signal():
    rng = np.random.default_rng(9)
    x = np.where(rng.random(20000) < 0.1, 0.0724, 0.0329) + rng.normal(0, 0.0005, 20000)
    levels = two_levels(x)
    assert levels.idle == pytest.approx(0.0329, abs=2e-4)
    assert levels.active == pytest.approx(0.0724, abs=2e-4)
    assert levels.noise == pytest.approx(0.0005, rel=0.2)
    assert levels.separated
