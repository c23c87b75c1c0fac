"""The HIL suite proper: runs on whatever --hil-target selects (qemu by default, an ESP32-S3 on a bench).

These tests use only the plugin's fixtures, exactly as a lab's own suite would. Every input tensor is built in
the dtype the device reports for it (`dut.info.inputs[i].dtype`): int8, or int16 for a 16x8 model. The bit-exact
tests compare a CRC-32 of each output (INFER_DIGEST, device_fw/PROTOCOL.md) with TFLite Micro's and read an output
back only when it differs, to report its values; firmware without INFER_DIGEST is checked with full outputs.
"""

import numpy as np

from hil.check import InputSpec, random_inputs, run_check
from hil.dut import EMULATED_TARGETS
from hil.measure.check import check_measurements
from hil.measure.measurement import Measurement


def _specs(dut) -> list[InputSpec]:
    return [InputSpec(tuple(t.shape), t.scale, t.zero_point, np.dtype(t.dtype)) for t in dut.info.inputs]


def test_device_reports_the_model_it_was_built_with(dut, hil_model, hil_results):
    assert dut.info.model_sha256 == hil_model.sha256
    assert dut.info.kernels.startswith("kernels "), "INFO names the kernels the firmware runs (hil info prints it)"
    kind = "emulated" if dut.options.target in EMULATED_TARGETS else "measured"
    hil_results.record(Measurement("arena_bytes", dut.info.arena_bytes, "B", kind,
                                   f"tensor arena the device reports in HELLO; the compiler planned "
                                   f"{hil_model.summary['arena_bytes']} B", low=hil_model.summary["arena_bytes"],
                                   high=hil_model.summary["arena_bytes"]))
    assert [tuple(t.shape) for t in dut.info.inputs] == [tuple(t["shape"]) for t in hil_model.summary["inputs"]]


def test_outputs_bit_exact_with_tflite_micro(dut, hil_reference, hil_images, hil_results):
    result = run_check(dut, hil_reference, random_inputs(_specs(dut), hil_images, seed=11), hil_images,
                       on_image=lambda i, _ok: hil_results.progress(i + 1, hil_images, "images"))
    hil_results.extend(check_measurements(result))  # bit_exact_images out of [n, n] fails the test here
    assert result.mismatches == [], result.summary_line()
    assert result.matched == hil_images


def test_extreme_inputs_bit_exact(dut, hil_reference):
    """Every input filled with its type's minimum, then its maximum (int8: -128 and 127; int16: -32768 and
    32767), then 0: that drives every accumulator to its extremes, where rounding bugs show first."""
    specs = _specs(dut)
    fills = ("min", "max", "zero")
    tensors = [[np.full(s.shape, _fill_value(s.dtype, fill), dtype=s.dtype) for s in specs] for fill in fills]
    result = run_check(dut, hil_reference, iter(tensors), len(fills))
    failures = []
    for m in result.mismatches:
        values = ", ".join(f"{_fill_value(s.dtype, fills[m.image])} ({s.dtype.name})" for s in specs)
        shown = ", ".join(f"[{i}] device {g} reference {w}" for i, g, w in m.examples)
        failures.append(f"inputs filled with {values}: output {m.output}, {m.differing_values} values differ "
                        f"(max |diff| {m.max_abs_diff}){': ' + shown if shown else ''}{m.note}")
    assert not failures, "\n".join(failures)


def _fill_value(dtype: np.dtype, fill: str) -> int:
    info = np.iinfo(dtype)
    return {"min": int(info.min), "max": int(info.max), "zero": 0}[fill]


def test_inference_cycles_are_reported(dut):
    tensors = [np.zeros(s.shape, dtype=s.dtype) for s in _specs(dut)]
    result = dut.infer(tensors)
    assert result.cycles > 0
    assert dut.info.clock_hz > 0
