"""Rohde & Schwarz NGM202 (and NGM201/NGU) power supply with FastLog.

FastLog streams to the SCPI port (FLOG:TARG SCPI) at a fixed set of rates (FLOG:SRAT S500K ... S100). Each
FLOG:DATA? returns an IEEE 488.2 block of little-endian float32 (voltage, current) pairs: the samples logged since
the previous read, possibly none. Logging starts when FLOG:STAT 1 is written, so a software trigger is time zero
at arm(); starting on the DUT's marker needs the digital-I/O option's trigger, which this driver does not drive.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from hil.instruments.base import CaptureConfig, InstrumentError, InstrumentTimeout, PowerAnalyzer, Trace
from hil.instruments.n6705c import fmt

log = logging.getLogger("hil.instruments")

# FLOG:SRAT tokens and their sample rates, fastest first.
FASTLOG_RATES: tuple[tuple[str, float], ...] = (
    ("S500K", 500e3), ("S250K", 250e3), ("S050K", 50e3), ("S010K", 10e3), ("S001K", 1e3), ("S100", 100.0),
)
LOG_RATE = "S010K"  # start()/stop() accumulation: 10 kS/s is ample for energy and keeps LAN traffic small
EMPTY_BLOCK_WAIT_S = 0.02  # pause after an empty FLOG:DATA? before asking again
MAX_DRAIN_READS = 100_000


def fastlog_rate_for(interval_s: float) -> tuple[str, float]:
    """The slowest FastLog rate that samples at least as often as `interval_s` asks (the fastest if none)."""
    wanted = 1.0 / interval_s
    candidates = [(token, rate) for token, rate in FASTLOG_RATES if rate >= wanted * (1 - 1e-9)]
    return candidates[-1] if candidates else FASTLOG_RATES[0]


class NGM202(PowerAnalyzer):
    driver_name = "NGM202"
    idn_models = (r"NGM20[12]\b", r"NGU\d{3}\b")
    max_points = 5_000_000  # host memory bound: FastLog itself streams without limit
    min_interval_s = 2e-6  # FastLog at 500 kS/s

    def configure(self, config: CaptureConfig) -> CaptureConfig:
        if config.trigger == "external":
            raise NotImplementedError(
                f"{self.name}: FastLog start on an external trigger (digital I/O option) is not implemented; "
                "use trigger='software' (logging starts at arm())"
            )
        if config.pretrigger_points:
            raise InstrumentError(self.name, "FLOG", "FastLog has no pre-trigger buffer; use pretrigger_points=0")
        if config.points > self.max_points:
            raise InstrumentError(self.name, "FLOG", f"{config.points} points exceed the {self.max_points}")
        w = self.session.write
        self.session.clear_status()
        w(f"INST:NSEL {self.channel}")
        if config.current_range_a is None:
            w("SENS:CURR:RANG:AUTO 1")
        else:
            w(f"SENS:CURR:RANG {fmt(config.current_range_a)}")
        token, rate = fastlog_rate_for(config.sample_interval_s)
        w(f"FLOG:SRAT {token}")
        w("FLOG:TARG SCPI")
        actual = CaptureConfig(sample_interval_s=1.0 / rate, points=config.points,
                               current_range_a=config.current_range_a, trigger="software")
        self.config = actual
        return actual

    def arm(self) -> None:
        self._require_config("FLOG:STAT 1")
        self.session.write("FLOG:STAT 1")

    def trigger(self) -> None:
        """Nothing to send: FastLog runs from arm()."""

    def _read_block(self) -> np.ndarray:
        return self.session.query_binary_floats("FLOG:DATA?", big_endian=False)

    def fetch(self, timeout_s: float | None = None) -> Trace:
        config = self._require_config("FLOG:DATA?")
        wanted = 2 * config.points
        deadline = time.monotonic() + (self.fetch_timeout() if timeout_s is None else timeout_s)
        blocks: list[np.ndarray] = []
        have = 0
        try:
            while have < wanted:
                block = self._read_block()
                if block.size:
                    blocks.append(block)
                    have += block.size
                elif time.monotonic() > deadline:
                    raise InstrumentTimeout(self.name, "FLOG:DATA?",
                                            f"{have // 2} of {config.points} samples within the fetch timeout")
                else:
                    time.sleep(EMPTY_BLOCK_WAIT_S)
        finally:
            self.session.write("FLOG:STAT 0")
        data = np.concatenate(blocks)[:wanted]
        if data.size % 2:
            data = data[:-1]
        return Trace(dt=config.sample_interval_s, voltage=data[0::2], current=data[1::2], source=self.name,
                     meta={"channel": self.channel, "mode": "fastlog"})

    # ---- labgrid start()/stop(): a FastLog at a moderate rate ----

    def _log_start(self) -> None:
        w = self.session.write
        self.session.clear_status()
        w(f"INST:NSEL {self.channel}")
        w(f"FLOG:SRAT {LOG_RATE}")
        w("FLOG:TARG SCPI")
        w("FLOG:STAT 1")
        self._log_rate = dict(FASTLOG_RATES)[LOG_RATE]
        self._log_blocks: list[np.ndarray] = []

    def _log_stop(self) -> Trace:
        self.session.write("FLOG:STAT 0")
        for _ in range(MAX_DRAIN_READS):
            block = self._read_block()
            if block.size == 0:
                break
            self._log_blocks.append(block)
        data = np.concatenate(self._log_blocks) if self._log_blocks else np.zeros(0)
        if data.size % 2:
            data = data[:-1]
        if data.size < 4:
            raise InstrumentError(self.name, "FLOG:DATA?", "FastLog returned fewer than two samples")
        return Trace(dt=1.0 / self._log_rate, voltage=data[0::2], current=data[1::2], source=self.name,
                     meta={"channel": self.channel, "mode": "fastlog"})
