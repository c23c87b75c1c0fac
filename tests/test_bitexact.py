"""The device model, end to end through the protocol, bit-exact against TensorFlow Lite Micro on 200 images.

Runs on both emulated targets so the host build and the Xtensa build of the same C core are each checked.
"""

import pytest

from hil import paths
from hil.check import InputSpec, random_inputs, run_check
from hil.dut import DutOptions, open_dut
from hil.model.artifacts import resolve_model
from hil.model.reference import TflmReference

IMAGES = 200


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", ["host", "qemu"])
def test_default_model_bit_exact_on_200_images(target, tmp_path):
    model = resolve_model(paths.DEFAULT_MODEL)
    reference = TflmReference(model.tflite_bytes)
    with open_dut(model, DutOptions(target=target, log_dir=tmp_path)) as dut:
        specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point, t.dtype) for t in dut.info.inputs]
        result = run_check(dut, reference, random_inputs(specs, IMAGES, seed=7), IMAGES)
    assert result.images == IMAGES
    assert result.mismatches == []
    assert result.summary_line() == f"bit-exact {IMAGES}/{IMAGES} on {target}"


@pytest.mark.timeout(120)
def test_qemu_cycle_counts_repeat_between_runs(tmp_path):
    """Same firmware, same inputs, two separate QEMU processes: -icount makes CCOUNT an instruction count."""
    model = resolve_model(paths.DEFAULT_MODEL)
    runs = []
    for _ in range(2):
        with open_dut(model, DutOptions(target="qemu", log_dir=tmp_path)) as dut:
            specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point, t.dtype) for t in dut.info.inputs]
            runs.append([dut.infer(x).cycles for x in random_inputs(specs, 3, seed=1)])
    assert all(c > 0 for c in runs[0])
    assert runs[0] == runs[1]
