"""Keysight N6705C DC power analyzer with an N6781A/N6785A SMU module (N6705A/B speak the same commands).

Digitizer (capture): SENS:FUNC:CURR/VOLT, SENS:CURR:RANG, SENS:SWE:TINT (sample interval), SENS:SWE:POIN,
SENS:SWE:OFFS:POIN (negative = pre-trigger points), TRIG:ACQ:SOUR BUS|PIN<n>, INIT:ACQ, *TRG, then
FETC:ARR:CURR?/VOLT?, which the instrument answers once the acquisition is complete. Data come as FORM REAL:
IEEE 488.2 blocks of big-endian float32 (FORM:BORD NORM).

Data logger (labgrid start()/stop()): SENS:ELOG:FUNC:CURR/VOLT, SENS:ELOG:PER, TRIG:ELOG:SOUR BUS, INIT:ELOG,
TRIG:ELOG, FETC:ELOG? <records>, ABOR:ELOG. Each record holds the average current, then the average voltage, of
one integration period (min/max columns switched off), so integrating records x period is the exact energy.

The marker GPIO of the DUT goes to a digital port pin configured as trigger input (DIG:PIN<n>:FUNC TINP); the
N6705C cannot record that pin alongside the digitizer, so windows are found in the current trace.
"""

from __future__ import annotations

import logging

import numpy as np

from hil.instruments.base import CaptureConfig, InstrumentError, PowerAnalyzer, Trace

log = logging.getLogger("hil.instruments")

# N6781A/N6785A: the SMUs with the 200 kHz digitizer and seamless ranging. Other modules work, more slowly.
FAST_MODULES = ("N6781A", "N6782A", "N6785A", "N6786A")
ELOG_MIN_PERIOD_S = 102.4e-6  # shortest data-logger integration period
ELOG_CHUNK_RECORDS = 10_000  # records per FETC:ELOG? (bounded replies, bounded memory per read)
ELOG_MAX_READS = 10_000  # a logger that never runs dry must not loop forever


def fmt(value: float) -> str:
    """Numbers as the dialogue fixtures expect them: 6 significant digits, E notation when needed."""
    return f"{value:.6G}"


class N6705C(PowerAnalyzer):
    driver_name = "N6705C"
    idn_models = (r"N6705[ABC]?\b",)
    max_points = 524_288  # 512 K points per digitizer acquisition
    min_interval_s = 10.24e-6  # N678xA digitizing current and voltage (the instrument rounds; we read it back)

    def __init__(self, session, identity, channel: int = 1, *, elog_period_s: float = ELOG_MIN_PERIOD_S) -> None:
        super().__init__(session, identity, channel)
        self.elog_period_s = max(elog_period_s, ELOG_MIN_PERIOD_S)
        self.module = self.session.query(f"SYST:CHAN:MOD? {self.ch}")
        if self.module not in FAST_MODULES:
            log.warning("%s: channel %d holds %s, not an N678xA SMU: slower digitizer, no seamless ranging",
                        self.name, channel, self.module or "no module")

    @property
    def ch(self) -> str:
        return f"(@{self.channel})"

    # ---- digitizer ----

    def configure(self, config: CaptureConfig) -> CaptureConfig:
        if config.points > self.max_points:
            raise InstrumentError(self.name, "SENS:SWE:POIN", f"{config.points} points exceed the {self.max_points}")
        ch, w = self.ch, self.session.write
        self.session.clear_status()
        w(f"SENS:FUNC:CURR ON,{ch}")
        w(f"SENS:FUNC:VOLT ON,{ch}")
        if config.current_range_a is None:
            w(f"SENS:CURR:RANG:AUTO ON,{ch}")
        else:
            w(f"SENS:CURR:RANG {fmt(config.current_range_a)},{ch}")
        w(f"SENS:SWE:TINT {fmt(config.sample_interval_s)},{ch}")
        w(f"SENS:SWE:POIN {config.points},{ch}")
        w(f"SENS:SWE:OFFS:POIN {-config.pretrigger_points},{ch}")
        if config.trigger == "external":
            pin = config.trigger_pin
            w(f"DIG:PIN{pin}:FUNC TINP")
            w(f"DIG:PIN{pin}:POL POS")
            w(f"TRIG:ACQ:SOUR PIN{pin},{ch}")
        else:
            w(f"TRIG:ACQ:SOUR BUS,{ch}")
        w("FORM REAL")
        w("FORM:BORD NORM")
        # The instrument rounds the interval to its sampling grid; compute with what it set (one compound query).
        tint, points, offset = self.session.query_compound(
            [f"SENS:SWE:TINT? {ch}", f"SENS:SWE:POIN? {ch}", f"SENS:SWE:OFFS:POIN? {ch}"])
        try:
            interval, n, pre = float(tint), round(float(points)), -round(float(offset))
        except ValueError:
            raise InstrumentError(self.name, "SENS:SWE:TINT?;...", f"expected three numbers, got {tint!r}, "
                                                                   f"{points!r}, {offset!r}") from None
        actual = CaptureConfig(
            sample_interval_s=interval,
            points=n,
            pretrigger_points=pre,
            current_range_a=config.current_range_a,
            trigger=config.trigger,
            trigger_pin=config.trigger_pin,
        )
        self.config = actual
        return actual

    def arm(self) -> None:
        self._require_config("INIT:ACQ")
        self.session.write(f"INIT:ACQ {self.ch}")

    def trigger(self) -> None:
        self.session.write("*TRG")

    def fetch(self, timeout_s: float | None = None) -> Trace:
        config = self._require_config("FETC:ARR:CURR?")
        timeout = self.fetch_timeout() if timeout_s is None else timeout_s
        current = self.session.query_binary_floats(f"FETC:ARR:CURR? {self.ch}", big_endian=True, timeout_s=timeout)
        voltage = self.session.query_binary_floats(f"FETC:ARR:VOLT? {self.ch}", big_endian=True)
        self.session.check_error("FETC:ARR:VOLT?")
        if current.size != config.points or voltage.size != config.points:
            raise InstrumentError(self.name, "FETC:ARR", f"expected {config.points} samples, got {current.size} "
                                                          f"current and {voltage.size} voltage")
        return Trace(
            dt=config.sample_interval_s, current=current, voltage=voltage,
            t0=-config.pretrigger_points * config.sample_interval_s, source=self.name,
            meta={"module": self.module, "channel": self.channel, "mode": "digitizer"},
        )

    # ---- data logger: labgrid start()/stop() ----

    def _log_start(self) -> None:
        ch, w = self.ch, self.session.write
        self.session.clear_status()
        w(f"SENS:ELOG:FUNC:CURR ON,{ch}")
        w(f"SENS:ELOG:FUNC:VOLT ON,{ch}")
        w(f"SENS:ELOG:FUNC:CURR:MINM OFF,{ch}")
        w(f"SENS:ELOG:FUNC:VOLT:MINM OFF,{ch}")
        w(f"SENS:ELOG:PER {fmt(self.elog_period_s)},{ch}")
        w(f"TRIG:ELOG:SOUR BUS,{ch}")
        w("FORM REAL")
        w("FORM:BORD NORM")
        self.elog_period_s = self.session.query_float(f"SENS:ELOG:PER? {ch}")
        w(f"INIT:ELOG {ch}")
        w(f"TRIG:ELOG {ch}")
        self._elog: list[np.ndarray] = []

    def _read_elog(self) -> int:
        block = self.session.query_binary_floats(f"FETC:ELOG? {ELOG_CHUNK_RECORDS},{self.ch}", big_endian=True)
        if block.size % 2:
            raise InstrumentError(self.name, "FETC:ELOG?", f"odd number of values ({block.size}) for I,V records")
        if block.size:
            self._elog.append(block)
        return block.size

    def _log_stop(self) -> Trace:
        # Drain what has been logged, stop, then drain the tail logged before the abort took effect.
        for _ in range(ELOG_MAX_READS):
            if self._read_elog() < 2 * ELOG_CHUNK_RECORDS:
                break
        self.session.write(f"ABOR:ELOG {self.ch}")
        try:
            for _ in range(ELOG_MAX_READS):
                if self._read_elog() == 0:
                    break
        except InstrumentError as exc:  # a logger that keeps no data after ABOR: the drain above is the data
            log.debug("%s: no data after ABOR:ELOG: %s", self.name, exc)
        data = np.concatenate(self._elog) if self._elog else np.zeros(0)
        if data.size < 4:
            raise InstrumentError(self.name, "FETC:ELOG?", "the data logger returned fewer than two records")
        return Trace(dt=self.elog_period_s, current=data[0::2], voltage=data[1::2], source=self.name,
                     meta={"module": self.module, "channel": self.channel, "mode": "elog", "averages": True})
