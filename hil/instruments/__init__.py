"""Power analyzers over VISA/SCPI: one interface (`base.PowerAnalyzer`), a driver per instrument family, and a
simulated N6705C (`simulated/`) that the same drivers open over a loopback socket.

    from hil.instruments import open_analyzer
    with open_analyzer("TCPIP0::192.0.2.10::inst0::INSTR") as pa:      # driver picked from *IDN?
        pa.configure(CaptureConfig(sample_interval_s=20.48e-6, points=50_000))
        pa.arm("external")
        ...                                                            # the DUT runs; its marker triggers
        trace = pa.fetch()
"""

from hil.instruments.base import (
    CaptureConfig,
    EnergyReading,
    Identity,
    InstrumentError,
    InstrumentTimeout,
    PowerAnalyzer,
    Trace,
)
from hil.instruments.detect import DRIVERS, driver_for_idn, open_analyzer

__all__ = [
    "DRIVERS",
    "CaptureConfig",
    "EnergyReading",
    "Identity",
    "InstrumentError",
    "InstrumentTimeout",
    "PowerAnalyzer",
    "Trace",
    "driver_for_idn",
    "open_analyzer",
]
