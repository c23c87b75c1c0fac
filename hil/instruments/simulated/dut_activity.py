"""The emulated DUT's activity on a simulated time line: when its marker pin is high (an inference runs).

The host reports every inference it runs (`inference(cycles, clock_hz, host_round_trip_s)`); each becomes a window
of cycles / clock_hz seconds, the latency the device itself reports. Before it the device idles for `gap_s` (it
waits for the host's next input). By default the gap is fixed: on an emulated device the host round trip says
nothing about the device's clock, and a time line built from host timing would change with the load of the build
machine. `follow_host=True` instead idles for as long as the host needed beyond the inference (at least `gap_s`).
While the host waits for the analyzer (`advance_to`), the device idles: it only works when the host asks.

The simulated analyzer renders its traces from this time line, never from wall-clock time, so its figures are
reproducible.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

DEFAULT_GAP_S = 2e-3  # idle between inferences: the device waiting for the next input frame
DEFAULT_MAX_WINDOWS = 200_000  # bounded memory: older windows are forgotten (no capture reaches that far back)


@dataclass(frozen=True)
class ActivityWindow:
    start_s: float
    end_s: float
    cycles: int
    clock_hz: int

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class DutActivity:
    """Thread-safe: the host appends from the test thread while the simulated analyzer's server thread reads."""

    def __init__(
        self, *, gap_s: float = DEFAULT_GAP_S, follow_host: bool = False, max_windows: int = DEFAULT_MAX_WINDOWS
    ) -> None:
        if gap_s <= 0:
            raise ValueError("gap_s must be positive: back-to-back windows would merge into one")
        self.gap_s = gap_s
        self.follow_host = follow_host
        self._lock = threading.Lock()
        self._windows: deque[ActivityWindow] = deque(maxlen=max_windows)
        self._now = 0.0

    def now(self) -> float:
        with self._lock:
            return self._now

    @property
    def windows(self) -> list[ActivityWindow]:
        with self._lock:
            return list(self._windows)

    def inference(self, cycles: int, clock_hz: int, host_round_trip_s: float = 0.0) -> ActivityWindow:
        if clock_hz <= 0 or cycles <= 0:
            raise ValueError(f"an inference needs positive cycles and clock, not {cycles} at {clock_hz} Hz")
        duration = cycles / clock_hz
        gap = max(self.gap_s, host_round_trip_s - duration) if self.follow_host else self.gap_s
        with self._lock:
            start = self._now + gap
            window = ActivityWindow(start, start + duration, int(cycles), int(clock_hz))
            self._windows.append(window)
            self._now = window.end_s
        return window

    def idle(self, seconds: float) -> None:
        with self._lock:
            self._now += max(0.0, seconds)

    def advance_to(self, t: float) -> None:
        with self._lock:
            self._now = max(self._now, t)

    def first_rise_at_or_after(self, t: float) -> float | None:
        starts, _ = self._arrays()
        i = int(np.searchsorted(starts, t, side="left"))
        return float(starts[i]) if i < starts.size else None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            starts = np.fromiter((w.start_s for w in self._windows), np.float64, len(self._windows))
            ends = np.fromiter((w.end_s for w in self._windows), np.float64, len(self._windows))
        return starts, ends

    def high_time_until(self, t: np.ndarray) -> np.ndarray:
        """Total marker-high time from the first window up to each time in `t` (windows never overlap)."""
        starts, ends = self._arrays()
        t = np.asarray(t, dtype=np.float64)
        if starts.size == 0:
            return np.zeros_like(t)
        durations = ends - starts
        before = np.concatenate(([0.0], np.cumsum(durations)))  # high time of all windows before index i
        i = np.searchsorted(starts, t, side="right") - 1  # the last window starting at or before t
        inside = np.where(i >= 0, np.clip(t - starts[np.maximum(i, 0)], 0.0, durations[np.maximum(i, 0)]), 0.0)
        return np.where(i >= 0, before[np.maximum(i, 0)] + inside, 0.0)

    def duty(self, t_first: float, dt: float, n: int) -> np.ndarray:
        """Fraction of [t_k - dt/2, t_k + dt/2) with the marker high, t_k = t_first + k*dt: what a sampling
        instrument whose front end averages over one sample interval sees."""
        edges = t_first - dt / 2 + dt * np.arange(n + 1)
        high = self.high_time_until(edges)
        return np.clip(np.diff(high) / dt, 0.0, 1.0)

    def marker(self, t_first: float, dt: float, n: int) -> np.ndarray:
        """The marker pin sampled at t_k (1.0 high, 0.0 low), as a logic input would record it."""
        times = t_first + dt * np.arange(n)
        starts, ends = self._arrays()
        if starts.size == 0:
            return np.zeros(n)
        i = np.searchsorted(starts, times, side="right") - 1
        return np.where((i >= 0) & (times < ends[np.maximum(i, 0)]), 1.0, 0.0)
