"""hil.offload.value_codes and the firmware's int16 -> code step (hil_offload_codes_from_int16): both give,
for every int16 value, the code of the last run that starts at or below it; the runs are the nearest-centroid
codes of the dequantized values."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hil import paths
from hil.offload.value_codes import ValueCodes, ValueCodesError, nearest_codes, runs_of

CENTROIDS = [0.004, 2.013, 2.013, 3.243, 5.232, 0.9, 4.1, 2.6]  # unsorted, with a duplicate (first index wins)

HARNESS = r"""
#include <stdio.h>
#include <stdint.h>
#include "hil_offload.h"
static int16_t values[65536];
static int8_t codes[65536];
int main(void) {
    int16_t starts[256]; uint8_t run_codes[256]; uint32_t n_runs, i;
    if (fread(&n_runs, 4, 1, stdin) != 1 || n_runs == 0 || n_runs > 256) return 1;
    if (fread(starts, 2, n_runs, stdin) != n_runs || fread(run_codes, 1, n_runs, stdin) != n_runs) return 1;
    if (fread(values, 2, 65536, stdin) != 65536) return 1;
    hil_offload_codes_from_int16(values, 65536, starts, run_codes, n_runs, codes);
    for (i = 0; i < 65536; i++) fputc((uint8_t)codes[i], stdout);
    return 0;
}
"""


def test_runs_reproduce_the_nearest_centroid_of_every_int16_value() -> None:
    scale = 6 / 32767
    mapping = ValueCodes.int16(CENTROIDS, scale)
    q = np.arange(-32768, 32768)
    want = nearest_codes(CENTROIDS, scale, 0, q)
    assert np.array_equal(mapping.codes(q), want)
    assert mapping.run_start is not None and mapping.run_start[0] == -32768
    assert len(mapping.run_start) == len(set(np.unique(want)))  # monotone: one run per centroid used
    assert 2 not in set(want.tolist())  # the duplicate centroid never wins (first index on ties)


def test_int8_table_and_runs_agree_where_they_describe_the_same_quantization() -> None:
    """An int8 export's table, and runs read off that table, give the same codes for every int8 value."""
    q8 = np.arange(-128, 128)
    table = nearest_codes(CENTROIDS, 6 / 255, -128, q8)
    runs = runs_of(table, -128)
    runs[0][0] = -32768  # the first run reaches down to the int16 minimum
    assert np.array_equal(ValueCodes.of_export({"int8_to_code": table.tolist()}).codes(q8), table)
    assert np.array_equal(ValueCodes.from_runs(runs).codes(q8), table)


@pytest.mark.parametrize(("runs", "message"), [
    ([], "non-empty"),
    ([[-32768, 0], [5]], "non-empty list of \\[start, code\\] pairs"),
    ([[-32767, 0]], "ascend from -32768"),
    ([[-32768, 0], [10, 1], [10, 2]], "ascend"),
    ([[-32768, 0], [40000, 1]], "within the int16 range"),
    ([[-32768, 256]], "0..255"),
])
def test_malformed_runs_are_refused(runs, message) -> None:
    with pytest.raises(ValueCodesError, match=message):
        ValueCodes.from_runs(runs)


def test_an_export_without_a_mapping_is_refused() -> None:
    with pytest.raises(ValueCodesError, match="neither int16_code_runs nor a 256-entry int8_to_code"):
        ValueCodes.of_export({"int8_to_code": [0] * 10})


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_firmware_int16_mapping_equals_the_host_on_all_values(tmp_path: Path) -> None:
    core = paths.PROJECT_ROOT / "device_fw" / "core"
    (tmp_path / "main.c").write_text(HARNESS)
    binary = tmp_path / "codes"
    subprocess.run(["cc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{core / 'include'}",
                    str(tmp_path / "main.c"), str(core / "src" / "offload.c"), "-o", str(binary)], check=True)
    mapping = ValueCodes.int16(CENTROIDS, 6 / 32767)
    assert mapping.run_start is not None and mapping.run_code is not None
    values = np.random.default_rng(0).permutation(np.arange(-32768, 32768)).astype("<i2")
    stdin = (np.uint32(len(mapping.run_start)).tobytes() + mapping.run_start.astype("<i2").tobytes()
             + mapping.run_code.astype(np.uint8).tobytes() + values.tobytes())
    out = subprocess.run([str(binary)], input=stdin, capture_output=True, check=True, timeout=30).stdout
    assert np.array_equal(np.frombuffer(out, np.uint8), mapping.codes(values))
