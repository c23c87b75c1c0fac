"""Writes a model directory's `hil_offload.c`: the AgileNN offload configuration the firmware compiles.

`write_offload_c(agilenn_json, model_summary, out_dir)` takes the export's agilenn.json and the compiler's
model.json (both as dicts) and defines `hil_offload_config()` (device_fw/core/include/hil_offload.h): which
output is the local logits and which the remote-bound features, the 256-entry int8 -> code table, the bits per
code, the Local NN's operator indices (for the per-stage cycle split), a static payload buffer sized for the
worst case (device_fw/OFFLOAD.md: header + the codes bit-packed) and, when agilenn.json has
`huffman_code_lengths`, those lengths (the device then also considers format mode 2, static Huffman; without
them the file is exactly what it was before mode 2). device_fw/Makefile and the esp32s3
CMakeLists.txt compile it when present. Deterministic output; no TensorFlow.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hil.errors import ModelError
from hil.offload.codec import HUFFMAN_LENGTHS_KEY, huffman_lengths_of, payload_bound
from hil.offload.value_codes import ValueCodes, ValueCodesError

__all__ = ["OFFLOAD_C", "OffloadConfigError", "local_head_ops", "offload_c_source", "write_offload_c"]

OFFLOAD_C = "hil_offload.c"
REPLY_FIXED_BYTES = 52  # INFER_OFFLOAD reply before the logits and the payload (PROTOCOL.md)
MAX_FRAME_PAYLOAD = 0xFFFF
MAX_OPS = 256  # HIL_MAX_OPS in hil_model.h
LOCAL_NAME, REMOTE_NAME = "local_logits", "remote_features"
_SLICE_RANGE = re.compile(r"(\d+):(\d+)\]\s*$")  # the last axis of a STRIDED_SLICE summary: "[..., 0:5]"


class OffloadConfigError(ModelError, ValueError):
    """agilenn.json and model.json do not describe a model the firmware can offload from."""


def _output_index(agilenn: dict[str, Any], summary: dict[str, Any], name: str, default: int) -> int:
    index = default
    for entry in agilenn.get("outputs") or []:
        if entry.get("name") == name:
            index = int(entry["index"])
            break
    outputs = summary["outputs"]
    if not 0 <= index < len(outputs):
        raise OffloadConfigError(f"{name} is output {index}, but the compiled model has {len(outputs)} outputs")
    for entry in agilenn.get("outputs") or []:
        if entry.get("name") == name and "shape" in entry and list(entry["shape"]) != list(outputs[index]["shape"]):
            raise OffloadConfigError(
                f"{name}: agilenn.json says shape {entry['shape']}, model.json output {index} is "
                f"{outputs[index]['shape']}"
            )
    if outputs[index].get("dtype", "int8") not in ("int8", "int16"):
        raise OffloadConfigError(f"{name} (output {index}) is {outputs[index]['dtype']}, not int8 or int16")
    return index


def local_head_ops(summary: dict[str, Any], k: int, local_output: int) -> list[int]:
    """Operator indices of the Local NN in model.json's `ops`: the STRIDED_SLICE that takes channels [0, k)
    and the chain of operators after it whose input is the previous one's output (by shape), up to the one
    that produces the local logits. [] when no such chain exists (the local stage then reads 0 cycles)."""
    target = list(summary["outputs"][local_output]["shape"])
    ops = summary["ops"]
    for start, op in enumerate(ops):
        if op["op"] != "STRIDED_SLICE" or not op["outputs"] or op["outputs"][0][-1:] != [k]:
            continue
        m = _SLICE_RANGE.search(op.get("summary", ""))
        if m is None or (int(m.group(1)), int(m.group(2))) != (0, k):
            continue
        chain = [int(op["index"])]
        shape = list(op["outputs"][0])
        for nxt in ops[start + 1 :]:
            if shape == target:
                break
            if any(list(s) == shape for s in nxt["inputs"]) and nxt["outputs"]:
                chain.append(int(nxt["index"]))
                shape = list(nxt["outputs"][0])
        if shape == target:
            return chain
    return []


def _c_comment(text: str) -> str:
    return text.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")


def offload_c_source(
    agilenn: dict[str, Any],
    summary: dict[str, Any],
    *,
    payload_capacity: int | None = None,
    local_ops: Sequence[int] | None = None,
) -> str:
    """The text of hil_offload.c (see write_offload_c)."""
    bits = int(agilenn["bits_per_value"])
    if not 1 <= bits <= 8:
        raise OffloadConfigError(f"bits_per_value {bits} outside 1..8")
    n_codes = min(len(agilenn.get("centroids") or []) or (1 << bits), 1 << bits)
    try:
        mapping = ValueCodes.of_export(agilenn)
    except ValueCodesError as e:
        raise OffloadConfigError(str(e)) from None
    if mapping.max_code() >= n_codes:
        raise OffloadConfigError(f"the code mapping holds {mapping.max_code()}, outside 0..{n_codes - 1} ({bits} bits)")
    try:
        huffman = huffman_lengths_of(agilenn, bits)
    except ValueError as e:
        raise OffloadConfigError(f"{HUFFMAN_LENGTHS_KEY}: {e}") from None
    local = _output_index(agilenn, summary, LOCAL_NAME, 0)
    remote = _output_index(agilenn, summary, REMOTE_NAME, 1)
    if local == remote:
        raise OffloadConfigError(f"local logits and remote features are the same output ({local})")
    out_local, out_remote = summary["outputs"][local], summary["outputs"][remote]
    value_dtype = out_remote.get("dtype", "int8")
    if value_dtype != mapping.dtype:
        raise OffloadConfigError(
            f"remote features are {value_dtype} but agilenn.json maps {mapping.dtype} values to codes"
        )
    n_values = int(out_remote["bytes"]) // (2 if value_dtype == "int16" else 1)
    if mapping.dtype == "int8":
        assert mapping.table is not None
        lut = [int(v) for v in mapping.table]
    else:
        # The device maps int16 values to codes first (runs); the compressor then reads codes as int8 values.
        lut = [(i - 128) % 256 if 0 <= i - 128 < n_codes else 0 for i in range(256)]
    bound = payload_bound(n_values, bits)
    capacity = bound if payload_capacity is None else int(payload_capacity)
    if capacity < 1:
        raise OffloadConfigError(f"payload capacity {capacity} must be at least 1 byte")
    reply = REPLY_FIXED_BYTES + int(out_local["bytes"]) + capacity
    if reply > MAX_FRAME_PAYLOAD:
        raise OffloadConfigError(
            f"an INFER_OFFLOAD reply of up to {reply} bytes ({n_values} codes of {bits} bits) does not fit one "
            f"frame ({MAX_FRAME_PAYLOAD} bytes)"
        )
    if local_ops is None:
        local_ops = local_head_ops(summary, int(agilenn["k"]), local)
    local_ops = [int(i) for i in local_ops]
    if any(not 0 <= i < MAX_OPS for i in local_ops):
        raise OffloadConfigError(f"Local NN op indices {local_ops} outside 0..{MAX_OPS - 1}")
    sha = str(summary["sha256"])
    by_index = {int(op["index"]): op["op"] for op in summary.get("ops", [])}
    name = str(summary.get("name", agilenn.get("name", "model")))

    lines = [
        f"/* hil_offload.c for model '{_c_comment(name)}' (model.tflite sha256 {sha}),",
        " * generated by hil.offload.codegen from agilenn.json and model.json. Do not edit: regenerate instead.",
        " *",
        f" * local logits:    output {local} {out_local['shape']}, sent as they are",
        f" * remote features: output {remote} {out_remote['shape']}, {n_values} {value_dtype} values -> "
        f"{bits}-bit codes",
        " *                  through " + ("int8_to_code" if value_dtype == "int8" else "int16 runs") +
        ", compressed (device_fw/OFFLOAD.md)",
    ]
    if local_ops:
        names = ", ".join(f"{i} {by_index.get(i, '?')}" for i in local_ops)
        lines.append(f" * Local NN:        ops {names}")
    else:
        lines.append(" * Local NN:        not found in model.json (no STRIDED_SLICE of channels [0, k) leading to the")
        lines.append(" *                  local logits): the reply's local stage is 0, the extractor stage holds all")
    note = "the worst case: header + packed codes" if capacity == bound else f"NOT the worst case {bound}"
    if huffman is not None:
        lines.append(f" * Huffman:         code lengths {huffman} (format mode 2)")
    lines.append(f" * payload buffer:  {capacity} bytes ({note})")
    lines.append(" */")
    out = ["\n".join(lines), '#include <stddef.h>\n#include <stdint.h>\n\n#include "hil_offload.h"\n']

    rows = []
    for start in range(0, 256, 16):
        values = ", ".join(f"{v}" for v in lut[start : start + 16])
        rows.append(f"    {values}, /* q = {start - 128}..{start - 113} */")
    what = "code of int8 value q" if value_dtype == "int8" else "int16 models: the identity on the codes"
    out.append(f"/* {what} = int8_to_code[q + 128] */\nstatic const uint8_t int8_to_code[256] = {{\n"
               + "\n".join(rows) + "\n};\n")  # fmt: skip
    int16_fields = ""
    if value_dtype == "int16":
        assert mapping.run_start is not None and mapping.run_code is not None
        n_runs = len(mapping.run_start)
        starts = ", ".join("(-32767 - 1)" if s == -32768 else str(int(s)) for s in mapping.run_start)
        codes = ", ".join(str(int(c)) for c in mapping.run_code)
        out.append(f"/* int16 value q has code int16_run_code[i] of the last i with int16_run_start[i] <= q */\n"
                   f"static const int16_t int16_run_start[{n_runs}] = {{{starts}}};\n"
                   f"static const uint8_t int16_run_code[{n_runs}] = {{{codes}}};\n"
                   f"static int8_t code_buffer[{n_values}];\n")  # fmt: skip
        int16_fields = (
            "    .value_dtype = 2, /* HIL_DTYPE_INT16 */\n"
            f"    .n_int16_runs = {n_runs},\n"
            "    .int16_run_start = int16_run_start,\n"
            "    .int16_run_code = int16_run_code,\n"
            "    .code_buffer = code_buffer,\n"
        )
    if local_ops:
        out.append(f"static const uint16_t local_ops[{len(local_ops)}] = {{{', '.join(map(str, local_ops))}}};\n")
    huffman_field = ""
    if huffman is not None:
        out.append(f"/* canonical Huffman code length of each code (agilenn.json {HUFFMAN_LENGTHS_KEY}) */\n"
                   f"static const uint8_t huffman_lengths[{len(huffman)}] = {{{', '.join(map(str, huffman))}}};\n")
        huffman_field = "    .huffman_lengths = huffman_lengths,\n"
    out.append(f"static uint8_t payload[{capacity}];\n")
    digest = bytes.fromhex(sha)
    sha_lines = ",\n".join("        " + ", ".join(f"0x{b:02x}" for b in digest[i : i + 16]) for i in range(0, 32, 16))
    out.append(
        "static const hil_offload_config_t config = {\n"
        f"    .model_sha256 = {{\n{sha_lines},\n    }},\n"
        f"    .local_output = {local},\n"
        f"    .remote_output = {remote},\n"
        f"    .bits = {bits},\n"
        f"    .n_values = {n_values},\n"
        "    .int8_to_code = int8_to_code,\n"
        "    .payload = payload,\n"
        f"    .payload_capacity = {capacity},\n"
        f"    .local_ops = {'local_ops' if local_ops else 'NULL'},\n"
        f"    .n_local_ops = {len(local_ops)},\n"
        f"{int16_fields}"
        f"{huffman_field}"
        "};\n"
    )
    out.append("const hil_offload_config_t *hil_offload_config(void)\n{\n    return &config;\n}\n")
    return "\n".join(out)


def write_offload_c(
    agilenn_json: dict[str, Any],
    compiled_model_summary: dict[str, Any],
    out_dir: Path,
    *,
    payload_capacity: int | None = None,
    local_ops: Sequence[int] | None = None,
) -> Path:
    """Writes out_dir/hil_offload.c and returns its path.

    payload_capacity: the payload buffer's size (default: the worst case, so the device never overflows; a
    smaller one makes the device report OVERFLOW for payloads that do not fit). local_ops: the Local NN's
    operator indices (default: found in model.json by local_head_ops). Raises OffloadConfigError when the two
    files do not fit together or a reply could not fit one frame.
    """
    source = offload_c_source(
        agilenn_json, compiled_model_summary, payload_capacity=payload_capacity, local_ops=local_ops
    )
    path = Path(out_dir) / OFFLOAD_C
    path.write_text(source)
    return path
