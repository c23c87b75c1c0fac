"""What every power analyzer driver offers, whatever SCPI dialect it speaks.

Two ways to use one:

* capture (digitizer style, for per-inference energy): `configure(CaptureConfig)` -> `arm("external" or
  "software")` -> [`trigger()`] -> the DUT runs -> `fetch()` returns a `Trace` of current and voltage samples;
* accumulate (labgrid's `EnergyAnalyzerProtocol` names and units, so a labgrid bench adopts these drivers without
  glue): `start()` ... `stop()` -> {"energy_J", "charge_C", "duration_s"}, then `get_statistics()`.

Every failure is an `InstrumentError` that names the instrument and the SCPI command, so a broken bench reads as
"N6705C MY123 at TCPIP0::...: 'SENS:CURR:RANG 10,(@1)': -222,"Data out of range"" and not as a pyvisa traceback.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, TypedDict

import numpy as np

from hil import errors
from hil.errors import UsageError

if TYPE_CHECKING:
    from hil.instruments.scpi import ScpiSession

TriggerSource = Literal["software", "external"]
TRIGGER_SOURCES: tuple[str, ...] = ("software", "external")


class InstrumentError(errors.InstrumentError, RuntimeError):
    """An instrument refused a command, reported an error in SYST:ERR?, or could not be reached."""

    def __init__(self, instrument: str, command: str, message: str) -> None:
        self.instrument = instrument
        self.command = command
        self.message = message
        super().__init__(f"{instrument}: {command!r}: {message}")


class InstrumentTimeout(InstrumentError):
    """No reply within the command's timeout."""


class UnsupportedInstrument(InstrumentError):
    """*IDN? names an instrument no driver handles, or a driver name is unknown."""


@dataclass(frozen=True)
class Identity:
    """The four fields of an IEEE 488.2 *IDN? reply."""

    manufacturer: str
    model: str
    serial: str = ""
    firmware: str = ""

    @classmethod
    def from_idn(cls, reply: str) -> Identity:
        parts = [p.strip() for p in reply.strip().split(",")]
        parts += [""] * (4 - len(parts))
        return cls(parts[0], parts[1], parts[2], ",".join(parts[3:]).strip(","))

    def __str__(self) -> str:
        return f"{self.manufacturer} {self.model} (serial {self.serial or '?'}, firmware {self.firmware or '?'})"


@dataclass(frozen=True)
class CaptureConfig:
    """One triggered acquisition. Drivers return the values the instrument actually set (sample intervals are
    quantized by the hardware), which are the ones to compute with."""

    sample_interval_s: float = 20.48e-6
    points: int = 4096
    pretrigger_points: int = 0  # samples kept from before the trigger (the idle baseline before the first edge)
    current_range_a: float | None = None  # None: auto ranging where the instrument has it, else its top range
    trigger: TriggerSource = "software"
    trigger_pin: int = 1  # N6705C digital port pin the DUT's marker GPIO is wired to (external trigger)

    def __post_init__(self) -> None:
        if not self.sample_interval_s > 0:
            raise UsageError(f"sample interval must be positive, not {self.sample_interval_s}")
        if self.points < 1:
            raise UsageError(f"points must be at least 1, not {self.points}")
        if not 0 <= self.pretrigger_points < self.points:
            raise UsageError(f"pre-trigger points must be in 0..{self.points - 1}, not {self.pretrigger_points}")
        if self.current_range_a is not None and not self.current_range_a > 0:
            raise UsageError(f"current range must be positive, not {self.current_range_a}")
        if self.trigger not in TRIGGER_SOURCES:
            raise UsageError(f"trigger must be one of {', '.join(TRIGGER_SOURCES)}, not {self.trigger!r}")

    @property
    def duration_s(self) -> float:
        return self.points * self.sample_interval_s


@dataclass(frozen=True, eq=False)
class Trace:
    """Equally spaced samples of the DUT's supply. Sample k was taken at t0 + k*dt seconds after the trigger
    (t0 < 0 when pre-trigger samples are kept)."""

    dt: float
    current: np.ndarray  # A
    voltage: np.ndarray  # V (a constant array where an instrument reports one voltage level per capture)
    t0: float = 0.0
    marker: np.ndarray | None = None  # the DUT's marker line where the instrument records one (high > 0.5)
    source: str = ""  # the instrument that recorded it, or "simulated ..."
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        current = np.asarray(self.current, dtype=np.float64).reshape(-1)
        voltage = np.asarray(self.voltage, dtype=np.float64).reshape(-1)
        if voltage.size == 1 and current.size != 1:
            voltage = np.full(current.shape, float(voltage[0]))
        if current.shape != voltage.shape:
            raise ValueError(f"trace has {current.size} current but {voltage.size} voltage samples")
        if not self.dt > 0:
            raise ValueError(f"trace sample interval must be positive, not {self.dt}")
        object.__setattr__(self, "current", current)
        object.__setattr__(self, "voltage", voltage)
        if self.marker is not None:
            marker = np.asarray(self.marker, dtype=np.float64).reshape(-1)
            if marker.shape != current.shape:
                raise ValueError(f"trace has {current.size} current but {marker.size} marker samples")
            object.__setattr__(self, "marker", marker)

    @property
    def n(self) -> int:
        return int(self.current.size)

    @property
    def duration_s(self) -> float:
        return self.n * self.dt

    @property
    def times(self) -> np.ndarray:
        return self.t0 + self.dt * np.arange(self.n)

    @property
    def power(self) -> np.ndarray:
        return self.current * self.voltage


class EnergyReading(TypedDict):
    """labgrid EnergyAnalyzerProtocol.stop() result: SI units in the key names."""

    energy_J: float
    charge_C: float
    duration_s: float


def trace_statistics(trace: Trace) -> dict:
    """labgrid-style statistics of a whole trace: avg/std/min/max of current, voltage and power, plus the charge
    and energy accumulated over it (trapezoid rule on samples; rectangle rule on period averages)."""

    def stats(x: np.ndarray) -> dict[str, float]:
        return {"avg": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}

    if trace.meta.get("averages"):
        # Each sample is the average over its period (a data logger's record): the rectangle rule is exact.
        charge, energy = float(trace.current.sum() * trace.dt), float(trace.power.sum() * trace.dt)
    elif trace.n > 1:
        charge = float(np.trapezoid(trace.current, dx=trace.dt))
        energy = float(np.trapezoid(trace.power, dx=trace.dt))
    else:
        charge = energy = 0.0
    return {
        "current": stats(trace.current),
        "voltage": stats(trace.voltage),
        "power": stats(trace.power),
        "charge_C": charge,
        "energy_J": energy,
        "duration_s": trace.duration_s,
        "samples": trace.n,
    }


class PowerAnalyzer(ABC):
    """A power analyzer channel that supplies and measures the DUT, driven over a `ScpiSession`.

    A driver never sends *RST or switches the output: the instrument powers the DUT, and a reset would turn it
    off mid-test. It only configures measurement, triggering and data transfer."""

    driver_name: ClassVar[str]  # e.g. "N6705C"
    idn_models: ClassVar[tuple[str, ...]]  # regexes on *IDN?'s model field that this driver handles
    max_points: ClassVar[int]  # the largest single acquisition
    min_interval_s: ClassVar[float]  # the shortest sample interval with current and voltage both recorded

    def __init__(self, session: ScpiSession, identity: Identity, channel: int = 1) -> None:
        self.session = session
        self.identity = identity
        self.channel = channel
        self.config: CaptureConfig | None = None
        self._last_log: Trace | None = None
        self._logging = False
        session.name = self.name

    @classmethod
    def handles(cls, identity: Identity) -> bool:
        return any(re.search(p, identity.model, re.IGNORECASE) for p in cls.idn_models)

    @property
    def name(self) -> str:
        serial = f" {self.identity.serial}" if self.identity.serial else ""
        return f"{self.driver_name}{serial} at {self.session.resource_name}"

    # ---- capture ----

    @abstractmethod
    def configure(self, config: CaptureConfig) -> CaptureConfig:
        """Sets up one acquisition; returns what the instrument set (quantized interval, clipped points)."""

    @abstractmethod
    def arm(self) -> None:
        """Starts waiting for the trigger chosen in `configure` (or starts at once where the instrument has no
        trigger wait for the chosen source)."""

    @abstractmethod
    def trigger(self) -> None:
        """Software trigger of an armed acquisition."""

    @abstractmethod
    def fetch(self, timeout_s: float | None = None) -> Trace:
        """Waits for the acquisition to complete (at most `timeout_s`) and reads it back."""

    def capture(self, config: CaptureConfig, timeout_s: float | None = None) -> Trace:
        actual = self.configure(config)
        self.arm()
        if actual.trigger == "software":
            self.trigger()
        return self.fetch(timeout_s)

    def fetch_timeout(self, margin_s: float = 5.0) -> float:
        """Enough time for the configured acquisition to fill, plus transfer time."""
        duration = self.config.duration_s if self.config else 0.0
        return duration + margin_s

    def _require_config(self, command: str) -> CaptureConfig:
        if self.config is None:
            raise InstrumentError(self.name, command, "configure() the acquisition first")
        return self.config

    # ---- labgrid EnergyAnalyzerProtocol ----

    def start(self) -> None:
        """Opens an accumulation window (the instrument's data logger)."""
        self._log_start()
        self._logging = True
        self._last_log = None

    def stop(self) -> EnergyReading:
        """Closes the window; energy and charge accumulated since start(), and its duration."""
        if not self._logging:
            raise InstrumentError(self.name, "stop()", "start() was not called")
        self._logging = False
        self._last_log = self._log_stop()
        stats = trace_statistics(self._last_log)
        return EnergyReading(energy_J=stats["energy_J"], charge_C=stats["charge_C"], duration_s=stats["duration_s"])

    def get_statistics(self) -> dict:
        """current/voltage/power avg, std, min, max and charge/energy of the last start()..stop() window."""
        if self._last_log is None:
            raise InstrumentError(self.name, "get_statistics()", "no completed start()/stop() window yet")
        return trace_statistics(self._last_log)

    @abstractmethod
    def _log_start(self) -> None: ...

    @abstractmethod
    def _log_stop(self) -> Trace: ...

    # ---- lifetime ----

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PowerAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
