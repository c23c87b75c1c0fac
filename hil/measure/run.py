"""The `hil measure` job: N inferences on the device under test while a power analyzer records its supply.

    open the analyzer (a VISA resource, or the simulated N6705C fed by this run's inferences)
    warm-up inference (sizes the capture)  ->  configure + arm (external trigger on the DUT's marker)
    N inferences: device cycles (INFO's clock) and host round trip per inference
    fetch the trace  ->  marker windows  ->  energy per window (or over the N-inference span, MLPerf Tiny style)
    offload time of the payload under the link models  ->  measurements with provenance  ->  summary line

Provenance: latency from cycles is "emulated" on host/qemu and "measured" on an ESP32-S3; marker windows,
energy and power are "measured" with a real analyzer and "modelled" with the simulated one (datasheet currents
over windows built from the device's cycle counts); offload times are always "modelled".
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from hil.dut import EMULATED_TARGETS, PROVENANCE, Dut, DutOptions, open_dut
from hil.errors import UsageError
from hil.instruments.base import CaptureConfig, PowerAnalyzer, Trace
from hil.instruments.simulated import SimulatedAnalyzer, start_simulated_analyzer
from hil.instruments.simulated.dut_activity import DutActivity
from hil.measure.energy import EnergyAnalysis, analyze, span_energy
from hil.measure.link import LINKS, offload_measurements
from hil.measure.measurement import Measurement, Provenance

log = logging.getLogger("hil.measure")

Mode = Literal["window", "span"]
PRETRIGGER_S = 2e-3  # idle baseline kept before the first marker edge
CAPTURE_MARGIN = 2.0  # capture this many times the expected run length (host timing varies)
MIN_CAPTURE_S = 0.05
SAMPLES_PER_WINDOW = 200  # aim for at least this many samples per inference window


@dataclass
class MeasureOptions:
    images: int = 20
    seed: int = 0  # of the random int8 (16x8 models: int16) inputs (and of the simulated analyzer's noise)
    mode: Mode = "window"  # "window": energy per marker window; "span": first edge to last edge / N (MLPerf Tiny)
    subtract_idle: bool = False
    idle_power_w: float | None = None  # a configured idle power to subtract instead of the measured one
    links: tuple[str, ...] = tuple(LINKS)
    payload_bytes: int | None = None  # None: the model's remote_* outputs (else its largest output)
    sample_interval_s: float = 20.48e-6
    trigger: Literal["external", "software"] = "external"
    trigger_pin: int = 1
    current_range_a: float | None = None
    warmup: int = 2  # the slowest warm-up sets the expected period on real time lines

    def __post_init__(self) -> None:
        if self.images < 1:
            raise UsageError("images must be at least 1")
        if self.mode not in ("window", "span"):
            raise UsageError(f"mode must be 'window' or 'span', not {self.mode!r}")
        for key in self.links:
            if key not in LINKS:
                raise UsageError(f"unknown link model {key!r}; choose from {', '.join(LINKS)}")


@dataclass
class AnalyzerHandle:
    """The analyzer of a run, and when it is the simulated one, the DUT activity it must be told about."""

    analyzer: PowerAnalyzer
    simulated: SimulatedAnalyzer | None = None

    @property
    def activity(self) -> DutActivity | None:
        return self.simulated.activity if self.simulated else None

    @property
    def is_simulated(self) -> bool:
        return self.simulated is not None or "hil-sim" in self.analyzer.identity.firmware

    @property
    def provenance(self) -> Provenance:
        return "modelled" if self.is_simulated else "measured"

    @property
    def detail(self) -> str:
        if self.simulated is not None:
            return (f"simulated {self.analyzer.driver_name} at {self.analyzer.session.resource_name}; "
                    f"{self.simulated.power_model.describe()}")
        return f"{self.analyzer.identity} at {self.analyzer.session.resource_name}, channel {self.analyzer.channel}"

    def close(self) -> None:
        try:
            self.analyzer.close()
        finally:
            if self.simulated is not None:
                self.simulated.close()

    def __enter__(self) -> AnalyzerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_power_analyzer(
    visa: str | None = None,
    driver: str | None = None,
    *,
    channel: int = 1,
    seed: int = 0,
    timeout_s: float = 5.0,
    backend: str | None = None,
) -> AnalyzerHandle:
    """The analyzer at `visa` (driver named or picked from *IDN?), or the simulated N6705C when `visa` is None."""
    from hil.instruments.detect import open_analyzer

    if visa:
        return AnalyzerHandle(open_analyzer(visa, driver, backend=backend, timeout_s=timeout_s, channel=channel))
    sim = start_simulated_analyzer(seed=seed)
    try:
        # The simulated server is always reached through pyvisa-py: what CI checks is the pure-Python path.
        analyzer = open_analyzer(sim.resource_name, "n6705c", backend="@py", timeout_s=timeout_s, channel=1)
    except BaseException:
        sim.close()
        raise
    return AnalyzerHandle(analyzer, sim)


@dataclass
class MeasureReport:
    target: str
    target_provenance: str
    model: str
    model_sha256: str
    inferences: int
    analyzer: str
    mode: Mode
    measurements: list[Measurement]
    windows: list[dict] = field(default_factory=list)  # start, end, energy per window (trace time)
    notes: list[str] = field(default_factory=list)
    capture: dict = field(default_factory=dict)
    trace_plot: dict | None = None  # a decimated copy of the trace for plots (see plot_trace)

    def get(self, name: str) -> Measurement:
        for m in self.measurements:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def windows_found(self) -> int:
        return len(self.windows)

    @property
    def ok(self) -> bool:
        return self.windows_found > 0

    def summary_line(self) -> str:
        latency = self.get("latency_device")
        head = f"median latency {latency.value:.2f} ms ({latency.provenance}: {self.target})"
        if not self.ok:
            return f"{head}; the analyzer saw no inference windows"
        energy, power = self.get("energy_per_inference"), self.get("average_power")
        return (f"{head}, energy {energy.value:.3f} mJ/inference ({energy.provenance}), "
                f"average power {power.value:.0f} mW ({power.provenance})")

    def to_json(self) -> dict:
        return {
            "target": self.target, "target_provenance": self.target_provenance, "model": self.model,
            "model_sha256": self.model_sha256, "inferences": self.inferences, "analyzer": self.analyzer,
            "mode": self.mode, "windows_found": self.windows_found, "ok": self.ok, "summary": self.summary_line(),
            "measurements": [m.to_json() for m in self.measurements], "windows": self.windows,
            "notes": self.notes, "capture": self.capture,
        }


def payload_bytes_of(dut: Dut) -> int:
    """Bytes the device part sends to the server: its remote_* outputs (AgileNN's less important features), or
    its largest output when no output is named so."""
    outputs = dut.model.summary.get("outputs", [])
    remote = [o for o in outputs if str(o.get("name", "")).startswith("remote")]
    if remote:
        return int(sum(o["bytes"] for o in remote))
    return int(max((t.size for t in dut.info.outputs), default=0))


def plan_capture(
    analyzer: PowerAnalyzer, options: MeasureOptions, period_s: float, inference_s: float
) -> CaptureConfig:
    """A capture long enough for all N inferences at `period_s` each. The interval is the one asked for, finer
    for short inferences (edge errors are a fraction of a sample: a window needs many samples for 1 % energy),
    never finer than the instrument can do, and coarser when the run would not fit into its memory."""
    duration = max(MIN_CAPTURE_S, options.images * period_s * CAPTURE_MARGIN)
    interval = max(min(options.sample_interval_s, inference_s / SAMPLES_PER_WINDOW), analyzer.min_interval_s)
    pre = max(1, int(round(PRETRIGGER_S / interval)))
    points = math.ceil(duration / interval) + pre
    if points > analyzer.max_points:
        interval = duration / (analyzer.max_points * 0.9)
        pre = max(1, int(round(PRETRIGGER_S / interval)))
        points = math.ceil(duration / interval) + pre
    return CaptureConfig(sample_interval_s=interval, points=points, pretrigger_points=pre,
                         current_range_a=options.current_range_a, trigger=options.trigger,
                         trigger_pin=options.trigger_pin)


def _median_ms(values_s: list[float] | np.ndarray) -> float:
    return float(np.median(values_s)) * 1e3 if len(values_s) else float("nan")


def measure(dut: Dut, handle: AnalyzerHandle, options: MeasureOptions) -> MeasureReport:
    """Runs the job on an open device and analyzer."""
    target = dut.options.target
    kind: Provenance = "emulated" if target in EMULATED_TARGETS else "measured"
    rng = np.random.default_rng(options.seed)
    specs = dut.info.inputs

    def next_inputs() -> list[np.ndarray]:
        # The whole range of each input's type (int8, or int16 for a 16x8 model).
        return [rng.integers(np.iinfo(t.dtype).min, np.iinfo(t.dtype).max, size=t.shape, endpoint=True)
                .astype(t.dtype) for t in specs]

    def run_one() -> tuple[int, int, float]:
        tensors = next_inputs()
        start = time.perf_counter()
        result = dut.infer(tensors)
        round_trip = time.perf_counter() - start
        if handle.activity is not None:
            handle.activity.inference(result.cycles, result.clock_hz, round_trip)
        return int(result.cycles), int(result.clock_hz), round_trip

    warm = [run_one() for _ in range(max(1, options.warmup))]
    # Idle before arming, so that the pre-trigger baseline does not catch the warm-up's last window.
    time.sleep(2 * PRETRIGGER_S)
    if handle.activity is not None:
        handle.activity.idle(2 * PRETRIGGER_S)
    cycles0, clock0, _ = warm[-1]
    if handle.activity is not None and not handle.activity.follow_host:
        period = cycles0 / clock0 + handle.activity.gap_s  # the simulated time line is deterministic
    else:
        period = max(rt for _, _, rt in warm)  # real time: the host's pace sets the period
    analyzer = handle.analyzer
    config = analyzer.configure(plan_capture(analyzer, options, period, cycles0 / clock0))
    analyzer.arm()
    if config.trigger == "software":
        analyzer.trigger()

    cycles, clocks, round_trips = [], [], []
    for _ in range(options.images):
        c, hz, rt = run_one()
        cycles.append(c)
        clocks.append(hz)
        round_trips.append(rt)
    trace = analyzer.fetch(timeout_s=config.duration_s + 10.0 + 2 * sum(round_trips))
    analysis = analyze(trace, subtract_idle=options.subtract_idle, idle_power_w=options.idle_power_w)
    return _report(dut, handle, options, kind, cycles, clocks, round_trips, trace, analysis, config)


def _report(
    dut: Dut, handle: AnalyzerHandle, options: MeasureOptions, kind: Provenance, cycles: list[int],
    clocks: list[int], round_trips: list[float], trace: Trace, analysis: EnergyAnalysis, config: CaptureConfig,
) -> MeasureReport:
    target = dut.options.target
    device_s = [c / hz for c, hz in zip(cycles, clocks, strict=True)]
    a_kind, a_detail = handle.provenance, handle.detail
    idle_note = "idle power subtracted" if options.subtract_idle else "idle power included"
    measurements = [
        Measurement("latency_device", _median_ms(device_s), "ms", kind,
                    f"median of {len(cycles)} inferences, cycles / {clocks[0]} Hz (INFO clock); {PROVENANCE[target]}",
                    values=tuple(s * 1e3 for s in device_s)),
        Measurement("latency_host_round_trip", _median_ms(round_trips), "ms", kind,
                    "host wall clock per inference: LOAD_INPUT frames + INFER + outputs over the link",
                    values=tuple(s * 1e3 for s in round_trips)),
    ]
    notes = list(analysis.notes)
    if analysis.count != options.images:
        notes.append(f"{analysis.count} marker windows for {options.images} inferences")
    windows = [{"start_s": w.window.start_s, "end_s": w.window.end_s, "energy_j": w.energy_j,
                "peak_current_a": w.peak_current_a} for w in analysis.windows]
    if analysis.count:
        durations = analysis.durations_s()
        if options.mode == "span":
            span = span_energy(trace, [w.window for w in analysis.windows], options.images,
                               subtract_idle=options.subtract_idle, idle_power_w=options.idle_power_w)
            energy_mj, power_w = span.energy_per_inference_j * 1e3, span.mean_power_w
            energy_how = f"integral of V*I from the first to the last marker edge / {options.images} (MLPerf Tiny)"
            energy_values: tuple[float, ...] = ()
        else:
            energies = analysis.energies_j()
            energy_mj, power_w = float(np.median(energies)) * 1e3, analysis.mean_power_w
            energy_how = "median over marker windows of the integral of V*I (trapezoid rule)"
            energy_values = tuple(e * 1e3 for e in energies)
        measurements += [
            Measurement("latency_marker", _median_ms(durations), "ms", a_kind,
                        f"median marker window ({analysis.source} edges at 50 %); {a_detail}",
                        values=tuple(d * 1e3 for d in durations)),
            Measurement("energy_per_inference", energy_mj, "mJ", a_kind, f"{energy_how}; {idle_note}; {a_detail}",
                        values=energy_values),
            Measurement("average_power", power_w * 1e3, "mW", a_kind,
                        f"energy / time inside the windows; {idle_note}; {a_detail}"),
            Measurement("peak_current", analysis.peak_current_a * 1e3, "mA", a_kind,
                        f"largest sample inside a window; {a_detail}"),
            Measurement("idle_current", analysis.idle_current_a * 1e3, "mA", a_kind,
                        f"median outside the windows; {a_detail}"),
        ]
    measurements.append(Measurement("windows_found", analysis.count, "windows", a_kind,
                                    f"{options.images} inferences run; {a_detail}"))
    payload = options.payload_bytes if options.payload_bytes is not None else payload_bytes_of(dut)
    measurements += offload_measurements(payload, options.links)
    return MeasureReport(
        target=target, target_provenance=PROVENANCE[target], model=dut.model.name, model_sha256=dut.model.sha256,
        inferences=options.images, analyzer=handle.analyzer.name, mode=options.mode, measurements=measurements,
        windows=windows, notes=notes, trace_plot=plot_trace(trace, windows, kind=a_kind),
        capture={"sample_interval_s": config.sample_interval_s, "points": config.points,
                 "pretrigger_points": config.pretrigger_points, "trigger": config.trigger,
                 "source": trace.source, "t0_s": trace.t0, "duration_s": trace.duration_s},
    )


PLOT_POINTS = 4000


def plot_trace(trace: Trace, windows: list[dict], *, kind: str, points: int = PLOT_POINTS) -> dict:
    """The trace decimated to at most `points` samples (each the mean of its block, so energy reads true, with
    the block's peak kept beside it), the inference windows, and where the numbers come from."""
    n = trace.n
    step = max(1, -(-n // points))
    usable = n - n % step if n >= step else n
    blocks = max(1, usable // step)
    current = trace.current[: blocks * step].reshape(blocks, -1)
    times = trace.times[: blocks * step].reshape(blocks, -1)
    voltage = trace.voltage[: blocks * step].reshape(blocks, -1).mean(axis=1)
    return {
        "t_s": times[:, 0].round(9).tolist(), "current_a": current.mean(axis=1).round(9).tolist(),
        "current_peak_a": current.max(axis=1).round(9).tolist(),
        "voltage_v": float(voltage[0]) if np.allclose(voltage, voltage[0]) else voltage.round(6).tolist(),
        "windows": [[w["start_s"], w["end_s"]] for w in windows], "decimation": step,
        "provenance": kind, "source": trace.source,
    }


def run_measure(
    model, dut_options: DutOptions, options: MeasureOptions, *, visa: str | None = None, driver: str | None = None,
    channel: int = 1, timeout_s: float = 5.0,
    on_open: Callable[[AnalyzerHandle, Dut], None] | None = None,
) -> MeasureReport:
    """Opens the analyzer and the device (`on_open` is told both, to record them), measures, closes both."""
    with open_power_analyzer(visa, driver, channel=channel, seed=options.seed, timeout_s=timeout_s) as handle, \
            open_dut(model, dut_options) as dut:
        if on_open is not None:
            on_open(handle, dut)
        return measure(dut, handle, options)


def write_report(report: MeasureReport, reports_dir: Path) -> Path:
    reports_dir.mkdir(parents=True, exist_ok=True)
    path = reports_dir / f"measure-{report.target}.json"
    path.write_text(json.dumps(report.to_json(), indent=2, allow_nan=False) + "\n")
    return path
