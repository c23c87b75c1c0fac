"""Inference windows in a supply trace, and the energy inside them.

Windows come from the marker channel when the trace has one (the DUT's GPIO is high exactly while an inference
runs), otherwise from the current itself: the current steps up by tens of mA when the core leaves WAITI. Either
way a comparator with hysteresis turns the samples into high/low states, so noise near one threshold cannot
split a window; edges are then placed at the 50 % level by linear interpolation between the two samples around
it, which keeps edge errors well below one sample interval.

Energy per window is the trapezoid-rule integral of V*I from edge to edge (interpolated at the edges), minus the
idle power times the window's duration when asked. MLPerf Tiny's energy mode instead integrates everything
between two marker edges around N inferences and divides by N: `span_energy` does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hil.errors import InstrumentError, UsageError
from hil.instruments.base import Trace

Source = Literal["auto", "marker", "current"]

SEPARATION_SIGMAS = 8.0  # active and idle levels must be this many noise sigmas apart to call them two levels
RISE_FRACTION = 0.6  # hysteresis thresholds, as fractions of the idle -> active step
FALL_FRACTION = 0.4
MIN_SAMPLES = 3  # shorter windows and gaps are glitches (merged or dropped)
EDGE_GUARD_SAMPLES = 3  # samples next to an edge are excluded from the idle estimate


class NoWindows(InstrumentError, ValueError):
    """The trace holds no complete inference window."""


@dataclass(frozen=True)
class Window:
    """An inference window in trace time (seconds after the trigger)."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Levels:
    idle: float
    active: float
    noise: float  # robust sigma of the idle samples

    @property
    def separated(self) -> bool:
        return self.active - self.idle > SEPARATION_SIGMAS * max(self.noise, 1e-12)


@dataclass(frozen=True)
class WindowEnergy:
    window: Window
    energy_j: float  # after idle subtraction when that was asked for
    charge_c: float
    peak_current_a: float
    idle_subtracted_j: float = 0.0

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / self.window.duration_s


@dataclass
class EnergyAnalysis:
    windows: list[WindowEnergy]
    source: str  # "marker" or "current"
    levels: Levels | None
    idle_current_a: float
    idle_power_w: float
    subtract_idle: bool
    partial_windows: int = 0  # windows cut by the start or end of the trace (not counted)
    notes: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.windows)

    def durations_s(self) -> np.ndarray:
        return np.array([w.window.duration_s for w in self.windows])

    def energies_j(self) -> np.ndarray:
        return np.array([w.energy_j for w in self.windows])

    @property
    def mean_power_w(self) -> float:
        """Energy in all windows over their total time: the average power while inferring."""
        total = float(self.durations_s().sum())
        return float(self.energies_j().sum()) / total if total > 0 else float("nan")

    @property
    def peak_current_a(self) -> float:
        return max((w.peak_current_a for w in self.windows), default=float("nan"))


def two_levels(x: np.ndarray, iterations: int = 32) -> Levels:
    """Idle and active levels of a two-level signal (iterative intermeans threshold), with the idle noise."""
    x = np.asarray(x, dtype=np.float64)
    threshold = float((x.min() + x.max()) / 2)
    low_mean = high_mean = threshold
    for _ in range(iterations):
        low, high = x[x <= threshold], x[x > threshold]
        if low.size == 0 or high.size == 0:
            break
        low_mean, high_mean = float(low.mean()), float(high.mean())
        new = (low_mean + high_mean) / 2
        if abs(new - threshold) < 1e-12 * max(1.0, abs(new)):
            break
        threshold = new
    low = x[x <= threshold]
    if low.size == 0 or x[x > threshold].size == 0:
        return Levels(float(np.median(x)), float(np.median(x)), float(x.std()))
    noise = 1.4826 * float(np.median(np.abs(low - np.median(low))))  # MAD: robust to the edge samples
    return Levels(float(np.median(low)), float(np.median(x[x > threshold])), noise)


def _hysteresis_states(x: np.ndarray, rise: float, fall: float) -> np.ndarray:
    """1 while high, 0 while low; between the thresholds a sample keeps the previous state."""
    decided = np.where(x > rise, 1, np.where(x < fall, 0, -1))
    if decided[0] < 0:
        decided[0] = 1 if x[0] >= (rise + fall) / 2 else 0
    index = np.where(decided >= 0, np.arange(x.size), 0)
    np.maximum.accumulate(index, out=index)
    return decided[index]


def _crossing(x: np.ndarray, times: np.ndarray, i: int, level: float, rising: bool) -> float:
    """Time at which x crosses `level` around the state change at sample i, by linear interpolation."""
    k = i
    # Walk back to the last sample on the old side of the level (at most a few samples, noise permitting).
    for _ in range(8):
        if k <= 0:
            break
        before_old_side = x[k - 1] < level if rising else x[k - 1] > level
        if before_old_side:
            break
        k -= 1
    if k <= 0:
        return float(times[i])
    x0, x1 = x[k - 1], x[k]
    if x1 == x0:
        return float(times[k])
    frac = float(np.clip((level - x0) / (x1 - x0), 0.0, 1.0))
    return float(times[k - 1] + frac * (times[k] - times[k - 1]))


def find_windows(
    trace: Trace,
    *,
    source: Source = "auto",
    min_duration_s: float | None = None,
    min_gap_s: float | None = None,
) -> tuple[list[Window], str, Levels | None, int]:
    """Complete inference windows of `trace`: (windows, source used, levels, partial windows cut off)."""
    use_marker = source == "marker" or (source == "auto" and trace.marker is not None)
    if use_marker and trace.marker is None:
        raise ValueError("source='marker' but the trace has no marker channel")
    x = trace.marker if use_marker else trace.current
    assert x is not None
    name = "marker" if use_marker else "current"
    if x.size < 2 * MIN_SAMPLES:
        return [], name, None, 0
    levels = two_levels(x)
    if not levels.separated:
        return [], name, levels, 0
    step = levels.active - levels.idle
    rise = levels.idle + RISE_FRACTION * step
    fall = levels.idle + FALL_FRACTION * step
    mid = levels.idle + 0.5 * step
    states = _hysteresis_states(x, rise, fall)
    changes = np.flatnonzero(np.diff(states)) + 1  # first sample of each new state
    times = trace.times
    min_duration = MIN_SAMPLES * trace.dt if min_duration_s is None else min_duration_s
    min_gap = MIN_SAMPLES * trace.dt if min_gap_s is None else min_gap_s

    raw: list[list[float]] = []
    partial = 0
    start: float | None = None
    if states[0] == 1:
        partial += 1  # already high at the first sample: its start is not in the trace
    for i in changes:
        if states[i] == 1:
            start = _crossing(x, times, int(i), mid, rising=True)
        elif start is not None:
            raw.append([start, _crossing(x, times, int(i), mid, rising=False)])
            start = None
    if start is not None:
        partial += 1  # still high at the last sample

    merged: list[list[float]] = []
    for w in raw:
        if merged and w[0] - merged[-1][1] < min_gap:
            merged[-1][1] = w[1]  # a glitch low inside one window
        else:
            merged.append(w)
    windows = [Window(s, e) for s, e in merged if e - s >= min_duration]
    return windows, name, levels, partial


def integrate(trace: Trace, start_s: float, end_s: float) -> tuple[float, float]:
    """(energy J, charge C) between two times by the trapezoid rule, with V*I and I interpolated at both ends."""
    if end_s <= start_s:
        return 0.0, 0.0
    times = trace.times
    power = trace.power
    inside = (times > start_s) & (times < end_s)
    t = np.concatenate(([start_s], times[inside], [end_s]))
    p = np.concatenate(([np.interp(start_s, times, power)], power[inside], [np.interp(end_s, times, power)]))
    i = np.concatenate(([np.interp(start_s, times, trace.current)], trace.current[inside],
                        [np.interp(end_s, times, trace.current)]))
    return float(np.trapezoid(p, t)), float(np.trapezoid(i, t))


def idle_level(trace: Trace, windows: list[Window]) -> tuple[float, float]:
    """(median current A, median power W) of the samples outside every window and its edges' guard band."""
    times = trace.times
    outside = np.ones(trace.n, dtype=bool)
    guard = EDGE_GUARD_SAMPLES * trace.dt
    for w in windows:
        outside &= ~((times >= w.start_s - guard) & (times <= w.end_s + guard))
    if not outside.any():
        return float("nan"), float("nan")
    return float(np.median(trace.current[outside])), float(np.median(trace.power[outside]))


def window_energies(
    trace: Trace, windows: list[Window], *, subtract_idle: bool = False, idle_power_w: float | None = None
) -> list[WindowEnergy]:
    if subtract_idle and idle_power_w is None:
        idle_power_w = idle_level(trace, windows)[1]
    result = []
    times = trace.times
    for w in windows:
        energy, charge = integrate(trace, w.start_s, w.end_s)
        inside = (times >= w.start_s) & (times <= w.end_s)
        peak = float(trace.current[inside].max()) if inside.any() else float("nan")
        idle = (idle_power_w or 0.0) * w.duration_s if subtract_idle else 0.0
        result.append(WindowEnergy(w, energy - idle, charge, peak, idle))
    return result


def analyze(
    trace: Trace, *, source: Source = "auto", subtract_idle: bool = False, idle_power_w: float | None = None
) -> EnergyAnalysis:
    """Windows and per-window energy of a trace. `idle_power_w`: a configured idle power to subtract instead
    of the one measured between windows."""
    windows, used, levels, partial = find_windows(trace, source=source)
    idle_current, idle_power = idle_level(trace, windows) if windows else (float("nan"), float("nan"))
    if idle_power_w is not None:
        idle_power = idle_power_w
    energies = window_energies(trace, windows, subtract_idle=subtract_idle, idle_power_w=idle_power)
    notes = []
    if levels is not None and not levels.separated:
        notes.append(f"no two distinct levels in the {used} trace (step {levels.active - levels.idle:.3g}, "
                     f"noise {levels.noise:.3g})")
    if partial:
        notes.append(f"{partial} window(s) cut by the start or end of the capture, not counted")
    return EnergyAnalysis(energies, used, levels, idle_current, idle_power, subtract_idle, partial, notes)


@dataclass(frozen=True)
class SpanEnergy:
    """MLPerf Tiny energy mode: everything between the first rising and the last falling marker edge."""

    start_s: float
    end_s: float
    inferences: int
    energy_j: float  # total over the span (after idle subtraction when asked)

    @property
    def energy_per_inference_j(self) -> float:
        return self.energy_j / self.inferences

    @property
    def latency_per_inference_s(self) -> float:
        return (self.end_s - self.start_s) / self.inferences

    @property
    def mean_power_w(self) -> float:
        return self.energy_j / (self.end_s - self.start_s)


def span_energy(
    trace: Trace, windows: list[Window], inferences: int, *, subtract_idle: bool = False,
    idle_power_w: float | None = None,
) -> SpanEnergy:
    """Energy of `inferences` inferences between two marker edges: the first window's start and the last one's
    end (with a marker raised once around all N inferences, that is one window)."""
    if not windows:
        raise NoWindows("no marker window in the trace")
    if inferences < 1:
        raise UsageError("inferences must be at least 1")
    start, end = windows[0].start_s, windows[-1].end_s
    energy, _charge = integrate(trace, start, end)
    if subtract_idle:
        idle = idle_level(trace, windows)[1] if idle_power_w is None else idle_power_w
        energy -= idle * (end - start)
    return SpanEnergy(start, end, inferences, energy)
