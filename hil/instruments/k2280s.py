"""Keithley 2280S (2280S-32-6, 2280S-60-3; the 2281S shares the measurement commands).

Concurrent current and voltage readings (SENS:FUNC "CONC") go into the trace buffer (TRAC:POIN, at most 2500
readings; TRAC:FEED SENS). The reading rate follows the integration time in power-line cycles (NPLC, 0.002 to 15
at 50 Hz, 12 at 60 Hz), so the driver derives the sample interval from the buffer's relative time stamps (REL)
instead of trusting a nominal rate. TRAC:DATA? "READ,SOUR,REL" returns current, voltage and seconds per reading.
Trigger: IMM (a software start at arm()) or EXT (the rear trigger input, where the DUT's marker can be wired).
"""

from __future__ import annotations

import numpy as np

from hil.instruments.base import CaptureConfig, InstrumentError, PowerAnalyzer, Trace
from hil.instruments.n6705c import fmt

NPLC_MIN = 0.002
NPLC_MAX = {50: 15.0, 60: 12.0}


class K2280S(PowerAnalyzer):
    driver_name = "2280S"
    idn_models = (r"228[01]S",)
    max_points = 2500
    min_interval_s = NPLC_MIN / 60  # 0.002 power-line cycles at 60 Hz

    def configure(self, config: CaptureConfig) -> CaptureConfig:
        if config.points > self.max_points:
            raise InstrumentError(self.name, ":TRAC:POIN", f"{config.points} readings exceed the buffer's "
                                                          f"{self.max_points}")
        if config.pretrigger_points:
            raise InstrumentError(self.name, ":TRAC", "the trace buffer has no pre-trigger; use pretrigger_points=0")
        w = self.session.write
        self.session.clear_status()
        line_hz = self.session.query_int(":SYST:LFR?")
        nplc = float(np.clip(config.sample_interval_s * line_hz, NPLC_MIN, NPLC_MAX.get(line_hz, 12.0)))
        w(':SENS:FUNC "CONC"')
        if config.current_range_a is None:
            w(":SENS:CURR:RANG:AUTO ON")
        else:
            w(f":SENS:CURR:RANG {fmt(config.current_range_a)}")
        w(f":SENS:CONC:NPLC {fmt(nplc)}")
        w(":TRAC:CLE")
        w(f":TRAC:POIN {config.points}")
        w(":TRAC:FEED SENS")
        w(f":TRIG:SAMP:COUN {config.points}")
        w(":TRIG:SOUR EXT" if config.trigger == "external" else ":TRIG:SOUR IMM")
        actual = CaptureConfig(
            sample_interval_s=nplc / line_hz,  # nominal; fetch() measures the real spacing from time stamps
            points=config.points, current_range_a=config.current_range_a, trigger=config.trigger,
            trigger_pin=config.trigger_pin,
        )
        self.config = actual
        return actual

    def arm(self) -> None:
        self._require_config(":INIT")
        self.session.write(":INIT")

    def trigger(self) -> None:
        """Nothing to send: with TRIG:SOUR IMM the readings start at arm()."""

    def fetch(self, timeout_s: float | None = None) -> Trace:
        config = self._require_config(":TRAC:DATA?")
        # *OPC? answers once the triggered readings are complete: the wait for the buffer to fill.
        self.session.query("*OPC?", timeout_s=self.fetch_timeout() if timeout_s is None else timeout_s)
        data = self.session.query_ascii_floats(':TRAC:DATA? "READ,SOUR,REL"', timeout_s=30.0)
        self.session.check_error(":TRAC:DATA?")
        if data.size % 3 or data.size == 0:
            raise InstrumentError(self.name, ":TRAC:DATA?", f"{data.size} values are not (current, voltage, time) "
                                                            "triples")
        current, voltage, rel = data[0::3], data[1::3], data[2::3]
        steps = np.diff(rel)
        dt = float(np.median(steps)) if steps.size and np.median(steps) > 0 else config.sample_interval_s
        return Trace(dt=dt, current=current, voltage=voltage, t0=float(rel[0]), source=self.name,
                     meta={"mode": "trace buffer", "nominal_interval_s": config.sample_interval_s,
                           "interval_jitter_s": float(steps.std()) if steps.size else 0.0})

    def _log_start(self) -> None:
        raise NotImplementedError(
            f"{self.name}: start()/stop() accumulation is not implemented for the 2280S: its trace buffer holds "
            f"{self.max_points} readings, too few for an open-ended window; use capture() with a known duration"
        )

    def _log_stop(self) -> Trace:  # pragma: no cover - _log_start refuses first
        raise NotImplementedError
