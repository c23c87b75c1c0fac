"""Measurements with provenance: latency, energy and power from a power analyzer's trace, offload time from link
models, and the results files they are written to. The chain: model -> firmware -> transport -> device (`dut`)
-> instruments (`hil.instruments`) -> measurement (here) -> report."""

from hil.measure.measurement import PROVENANCES, Measurement, Provenance, ResultsWriter, read_results

__all__ = ["PROVENANCES", "Measurement", "Provenance", "ResultsWriter", "read_results"]
