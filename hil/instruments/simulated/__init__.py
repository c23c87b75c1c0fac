"""The simulated power analyzer: an N6705C dialect SCPI server on a loopback port, fed by the emulated DUT.

    with start_simulated_analyzer(seed=0) as sim:            # server on 127.0.0.1:<free port>
        analyzer = open_analyzer(sim.resource_name)          # the real N6705C driver, over pyvisa-py
        ...
        sim.activity.inference(cycles, clock_hz, round_trip_s)   # what the DUT did, reported by the host
"""

from __future__ import annotations

from dataclasses import dataclass

from hil.instruments.simulated.dut_activity import ActivityWindow, DutActivity
from hil.instruments.simulated.power_model import ESP32S3_240MHZ, POWER_MODELS, PowerModel
from hil.instruments.simulated.scpi_server import ScpiServer, SimulatedN6705C


@dataclass
class SimulatedAnalyzer:
    instrument: SimulatedN6705C
    server: ScpiServer

    @property
    def activity(self) -> DutActivity:
        return self.instrument.activity

    @property
    def power_model(self) -> PowerModel:
        return self.instrument.power_model

    @property
    def resource_name(self) -> str:
        return self.server.resource_name

    def close(self) -> None:
        self.server.stop()

    def __enter__(self) -> SimulatedAnalyzer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_simulated_analyzer(
    activity: DutActivity | None = None, power_model: PowerModel = ESP32S3_240MHZ, *, seed: int = 0
) -> SimulatedAnalyzer:
    instrument = SimulatedN6705C(activity, power_model, seed=seed)
    return SimulatedAnalyzer(instrument, ScpiServer(instrument).start())


__all__ = [
    "ESP32S3_240MHZ",
    "POWER_MODELS",
    "ActivityWindow",
    "DutActivity",
    "PowerModel",
    "ScpiServer",
    "SimulatedAnalyzer",
    "SimulatedN6705C",
    "start_simulated_analyzer",
]
