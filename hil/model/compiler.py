"""Compiles a full-integer int8 (or 16x8: int16 activations, int8 weights) .tflite into C for the portable
kernel core (device_fw/core).

Public API: `compile_tflite(tflite, out_dir, name=None) -> CompiledModel`, which writes `hil_model.c`
(see codegen.py) and `model.json` into out_dir. `lower_graph()` is the same translation without
writing files.

Every operator is lowered to one kernel call with a fully precomputed params struct (TFLM's Prepare step,
done at compile time with TFLM's exact arithmetic, see quantization.py), or to an alias for the ops that
only relabel bytes (RESHAPE, SQUEEZE, EXPAND_DIMS). Anything else raises UnsupportedModelError naming the
operator or tensor and what to change. The per-operator lowerings live in hil.model.lowering, one module per
op family (mirroring device_fw/core/kernels/); this module plans the arena and writes the files.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hil.model.lowering import LOWERINGS, SUPPORTED_OPS
from hil.model.lowering.common import ACTIVATION_DTYPES, ConstArray, KernelCall
from hil.model.planner import ArenaPlan, plan_arena
from hil.model.tflite_reader import Graph, UnsupportedModelError, read_tflite

__all__ = [
    "SUPPORTED_OPS",
    "CompiledModel",
    "ConstArray",
    "KernelCall",
    "LoweredModel",
    "OpSummary",
    "TensorSummary",
    "UnsupportedModelError",
    "compile_tflite",
    "json_text",
    "lower_graph",
]


@dataclass
class TensorSummary:
    name: str
    index: int
    shape: list[int]
    dtype: str
    zero_point: int
    scale: float
    bytes: int
    arena_offset: int


@dataclass
class OpSummary:
    index: int
    op: str
    kernel: str | None
    inputs: list[list[int]]
    outputs: list[list[int]]
    macs: int
    summary: str


@dataclass
class LoweredModel:
    graph: Graph
    calls: list[KernelCall]
    plan: ArenaPlan
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]

    @property
    def weights_bytes(self) -> int:
        return sum(c.nbytes for call in self.calls for c in call.consts)

    @property
    def macs(self) -> int:
        return sum(call.macs for call in self.calls)


@dataclass
class CompiledModel:
    name: str
    sha256: str
    arena_bytes: int
    weights_bytes: int
    macs: int
    ops: list[OpSummary]
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    c_path: Path | None = None
    json_path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "arena_bytes": self.arena_bytes,
            "weights_bytes": self.weights_bytes,
            "macs": self.macs,
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "ops": [asdict(o) for o in self.ops],
        }


def _io_summary(graph: Graph, index: int, plan: ArenaPlan, role: str) -> TensorSummary:
    t = graph.tensors[index]
    if t.dtype not in ACTIVATION_DTYPES or t.quant is None:
        raise UnsupportedModelError(
            f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 (or, for 16x8 models, int16) tensors "
            "only. Convert with inference_input_type/inference_output_type=tf.int8 (tf.int16 for 16x8)"
        )
    if t.is_const:
        raise UnsupportedModelError(f"graph {role} {t.describe()} is a constant")
    if not 1 <= len(t.shape) <= 4:
        raise UnsupportedModelError(f"graph {role} {t.describe()} must have rank 1 to 4")
    if t.quant.per_channel:
        raise UnsupportedModelError(f"graph {role} {t.describe()} is quantized per channel")
    return TensorSummary(
        name=graph.io_name(t.index),
        index=t.index,
        shape=[int(d) for d in t.shape],
        dtype=t.dtype,
        zero_point=int(t.quant.zero_point),
        scale=float(t.quant.scale),
        bytes=t.nbytes,
        arena_offset=plan.offsets[t.index],
    )


def lower_graph(graph: Graph) -> LoweredModel:
    """Lowers every operator, plans the arena and describes the graph's inputs and outputs."""
    for role, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for i in indices:
            t = graph.tensors[i]
            if t.dtype not in ACTIVATION_DTYPES:
                raise UnsupportedModelError(
                    f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 (or, for 16x8 models, int16) "
                    "tensors only. Convert with inference_input_type/inference_output_type=tf.int8 (tf.int16 for "
                    "16x8)"
                )
    calls: list[KernelCall] = []
    for op in graph.operators:
        lower = LOWERINGS.get(op.opcode)
        if lower is None:
            hint = ""
            if op.opcode in ("QUANTIZE", "DEQUANTIZE"):
                hint = " (the model converts between float and int8 inside the graph; convert with int8 input/output)"
            raise UnsupportedModelError(
                f"{op.describe()} is not supported by the int8 kernel core{hint}. Supported ops: "
                f"{', '.join(SUPPORTED_OPS)}. Remove the op from the model or add a kernel in "
                "device_fw/core/kernels/"
            )
        calls.append(lower(graph, op, f"op{op.index}"))

    arena_tensors: set[int] = set(graph.inputs) | set(graph.outputs)
    for call in calls:
        arena_tensors.update(a for a in call.args if isinstance(a, int))
        arena_tensors.update(call.outputs)
    for t in sorted(arena_tensors):
        if graph.tensors[t].is_const:
            raise UnsupportedModelError(
                f"{graph.tensors[t].describe()} is a constant used where the kernels expect an activation"
            )
    sizes = {t: graph.tensors[t].nbytes for t in arena_tensors}
    steps = [([a for a in c.args if isinstance(a, int)], c.outputs) for c in calls if c.kernel is not None]
    aliases = [(c.args[0], c.outputs[0]) for c in calls if c.kernel is None]
    # Aliases have no step of their own: the planner gives each alias group the union of its lifetimes.
    plan = plan_arena(sizes, steps, list(graph.inputs), list(graph.outputs), aliases)
    inputs = [_io_summary(graph, i, plan, "input") for i in graph.inputs]
    outputs = [_io_summary(graph, i, plan, "output") for i in graph.outputs]
    return LoweredModel(graph=graph, calls=calls, plan=plan, inputs=inputs, outputs=outputs)


def json_text(obj: Any) -> str:
    """Indented JSON with lists of plain numbers (shapes) kept on one line."""
    text = json.dumps(obj, indent=2)
    text = re.sub(
        r"\[\s*(-?[0-9][-0-9.e+, \n]*?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    return text + "\n"


def compile_tflite(tflite: Path | bytes, out_dir: Path, name: str | None = None) -> CompiledModel:
    """Compiles an int8 .tflite into out_dir/hil_model.c and out_dir/model.json.

    name defaults to the .tflite's file stem (or "model" for bytes). Raises UnsupportedModelError for ops,
    tensor types or options the kernel core does not support.
    """
    from hil.model import codegen

    if isinstance(tflite, bytes | bytearray):
        data = bytes(tflite)
        default_name = "model"
    else:
        path = Path(tflite)
        data = path.read_bytes()
        default_name = path.stem
    name = name or default_name
    sha256 = hashlib.sha256(data).hexdigest()
    lowered = lower_graph(read_tflite(data))
    source = codegen.generate_c(lowered, name=name, sha256=sha256)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ops = [
        OpSummary(
            index=c.op_index,
            op=c.opcode,
            kernel=c.kernel,
            inputs=c.input_shapes,
            outputs=c.output_shapes,
            macs=c.macs,
            summary=c.summary,
        )
        for c in lowered.calls
    ]
    compiled = CompiledModel(
        name=name,
        sha256=sha256,
        arena_bytes=lowered.plan.arena_bytes,
        weights_bytes=lowered.weights_bytes,
        macs=lowered.macs,
        ops=ops,
        inputs=lowered.inputs,
        outputs=lowered.outputs,
        c_path=out_dir / "hil_model.c",
        json_path=out_dir / "model.json",
    )
    compiled.c_path.write_text(source)
    # model.json last: its presence marks a complete model directory (see hil.model.artifacts).
    compiled.json_path.write_text(json_text(compiled.to_json()))
    return compiled
