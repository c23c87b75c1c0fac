"""The HIL suite proper: runs on whatever --hil-target selects (qemu by default, an ESP32-S3 on a bench).

These tests use only the plugin's fixtures, exactly as a lab's own suite would.
"""

import numpy as np

from hil.check import InputSpec, random_inputs, run_check


def test_device_reports_the_model_it_was_built_with(dut, hil_model):
    assert dut.info.model_sha256 == hil_model.sha256
    assert dut.info.arena_bytes == hil_model.summary["arena_bytes"]
    assert [tuple(t.shape) for t in dut.info.inputs] == [tuple(t["shape"]) for t in hil_model.summary["inputs"]]


def test_outputs_bit_exact_with_tflite_micro(dut, hil_reference, hil_images):
    specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point) for t in dut.info.inputs]
    result = run_check(dut, hil_reference, random_inputs(specs, hil_images, seed=11), hil_images)
    assert result.mismatches == [], result.summary_line()
    assert result.matched == hil_images


def test_extreme_inputs_bit_exact(dut, hil_reference):
    """All -128 and all 127 drive every accumulator to its extremes, where rounding bugs show first."""
    for value in (-128, 127, 0):
        tensors = [np.full(t.shape, value, dtype=np.int8) for t in dut.info.inputs]
        got = dut.infer(tensors).outputs
        want = hil_reference.run(tensors)
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(np.asarray(g).reshape(w.shape), w), f"input filled with {value}"


def test_inference_cycles_are_reported(dut):
    tensors = [np.zeros(t.shape, dtype=np.int8) for t in dut.info.inputs]
    result = dut.infer(tensors)
    assert result.cycles > 0
    assert dut.info.clock_hz > 0
