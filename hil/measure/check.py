"""The figures of a bit-exactness check (hil.check.CheckResult) as named measurements, for `hil check` and the
HIL suite alike."""

from __future__ import annotations

import numpy as np

from hil.check import CheckResult
from hil.dut import EMULATED_TARGETS
from hil.measure.measurement import Measurement, Provenance


def check_measurements(result: CheckResult) -> list[Measurement]:
    kind: Provenance = "emulated" if result.target in EMULATED_TARGETS else "measured"
    figures = [Measurement("bit_exact_images", result.matched, "images", kind,
                           f"of {result.images}: every output tensor identical to TFLite Micro's; {result.provenance}",
                           low=result.images, high=result.images)]
    if result.cycles:
        figures.append(Measurement("cycles_inference_median", float(np.median(result.cycles)), "cycles", kind,
                                   f"{result.provenance}; {result.clock_hz / 1e6:g} MHz counter",
                                   values=tuple(result.cycles)))
    figures.append(Measurement("wall_s_per_image", result.wall_s / max(result.images, 1), "s", kind,
                               "host wall-clock per image, transport and TFLite Micro reference included"))
    return figures
