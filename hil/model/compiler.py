"""Compiles a full-integer int8 (or 16x8: int16 activations, int8 weights) .tflite into C for the portable
kernel core (device_fw/core).

Public API: `compile_tflite(tflite, out_dir, name=None) -> CompiledModel`, which writes `hil_model.c`
(see codegen.py) and `model.json` into out_dir. `lower_graph()` is the same translation without
writing files.

Every operator is lowered to one kernel call with a fully precomputed params struct (TFLM's Prepare step,
done at compile time with TFLM's exact arithmetic, see quantization.py), or to an alias for the ops that
only relabel bytes (RESHAPE, SQUEEZE, EXPAND_DIMS). Shape arithmetic on constants (the SHAPE -> STRIDED_SLICE
-> PACK -> RESHAPE chain the converter writes for Keras Flatten and Reshape((-1,)) with an unknown batch
size) is folded first (`fold_constants`): those operators compute nothing at run time. Anything else raises
UnsupportedModelError naming the operator or tensor and what to change. The per-operator lowerings live in
hil.model.lowering, one module per op family (mirroring device_fw/core/kernels/); this module plans the arena
and writes the files.

By default every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED that a specialised kernel can run exactly also
gets that kernel's call (hil.model.lowering.fast: the input zero point folded into the bias, weights packed for
the loop, 1x1 convolution as a matrix product, unrolled 3x3 depthwise), which hil_model.c runs unless built
with HIL_USE_ESP_NN; `specialise=False` keeps the generic kernels only (the "before" of `hil bench runtime`).
The arena plan lets later tensors take a graph input's bytes after its last reader and runs elementwise ops
and slices in place (planner.py); `preserve_inputs=True` keeps the inputs intact (model.json
`input_preserved`).

Graph inputs and outputs are int8 or int16 tensors; a float32 graph input that only feeds QUANTIZE ops and a
float32 graph output written by DEQUANTIZE (the converter's float I/O) are compiled too, with dtype "float32"
in model.json. The device protocol has no float32 tensors (device_fw/PROTOCOL.md), so such a model runs
through the host model runner (hil/model/hostrun.py) only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hil.model.lowering import LOWERINGS, SUPPORTED_OPS
from hil.model.lowering import fast as fast_kernels
from hil.model.lowering.common import ACTIVATION_DTYPES, ConstArray, KernelCall
from hil.model.planner import ArenaPlan, plan_arena
from hil.model.tflite_reader import Graph, Operator, Tensor, UnsupportedModelError, read_tflite

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
    "fold_constants",
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
    specialised_kernel: str | None = None  # what a default build calls; None: the generic kernel


@dataclass
class LoweredModel:
    graph: Graph  # after constant folding: folded tensors hold their values
    calls: list[KernelCall]
    plan: ArenaPlan
    inputs: list[TensorSummary]
    outputs: list[TensorSummary]
    folded: list[Operator] = field(default_factory=list)  # operators evaluated at compile time
    specialised: bool = True
    preserve_inputs: bool = False

    def runs(self, call: KernelCall) -> KernelCall:
        """The call a default build runs: the specialised one where there is one."""
        return call.fast if call.fast is not None else call

    @property
    def weights_bytes(self) -> int:
        """Constant data (weights, biases, requantization parameters, tables) of a default build."""
        return sum(c.nbytes for call in self.calls for c in self.runs(call).consts)

    @property
    def code_bytes_estimate(self) -> int:
        from hil.model.codegen import code_bytes_estimate

        return code_bytes_estimate(self)

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
    input_preserved: bool = False
    specialised: bool = True
    code_bytes_estimate: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "arena_bytes": self.arena_bytes,
            "weights_bytes": self.weights_bytes,
            "macs": self.macs,
            # Whether an inference leaves its input tensors intact; false: INFER again only after LOAD_INPUT.
            "input_preserved": self.input_preserved,
            "specialised": self.specialised,
            # Flash of a default build: constant data (= weights_bytes) and the code, estimated from the
            # lx106 sizes of the kernels it calls (hil/model/codegen.py, KERNEL_CODE_BYTES).
            "flash": {
                "constant_bytes": self.weights_bytes,
                "code_bytes_estimate": self.code_bytes_estimate,
                "total_bytes_estimate": self.weights_bytes + self.code_bytes_estimate,
            },
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": [asdict(t) for t in self.outputs],
            "ops": [asdict(o) for o in self.ops],
        }


# --------------------------------------------------------------------------------------------------------
# Constant folding of shape arithmetic

# Operators folded when their output is an int32/int64 tensor (shape arithmetic) and every input is known:
# constant, or, for SHAPE, an activation whose shape is static.
FOLDABLE_OPS = (
    "SHAPE",
    "STRIDED_SLICE",
    "PACK",
    "GATHER",
    "REDUCE_PROD",
    "CONCATENATION",
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "CAST",
)
_INDEX_DTYPES = ("int32", "int64")


def _const_input(op: Operator, tensors: list[Tensor], pos: int) -> np.ndarray:
    return tensors[op.inputs[pos]].data


def _strided_slice_value(op: Operator, tensors: list[Tensor]) -> np.ndarray:
    x = _const_input(op, tensors, 0)
    begin, end = (_const_input(op, tensors, k).reshape(-1) for k in (1, 2))
    strides = _const_input(op, tensors, 3).reshape(-1) if len(op.inputs) > 3 else np.ones_like(begin)
    o = op.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0) or o.get("offset", False):
        raise UnsupportedModelError(f"{op.describe()}: ellipsis/new-axis masks and offset are not folded")
    index: list[Any] = []
    for axis in range(x.ndim):
        if axis >= len(begin):
            index.append(slice(None))
        elif o.get("shrink_axis_mask", 0) & (1 << axis):
            index.append(int(begin[axis]))
        else:
            start = None if o.get("begin_mask", 0) & (1 << axis) else int(begin[axis])
            stop = None if o.get("end_mask", 0) & (1 << axis) else int(end[axis])
            index.append(slice(start, stop, int(strides[axis])))  # NumPy clamps as TFLite does
    return np.asarray(x[tuple(index)])


def _fold_value(op: Operator, tensors: list[Tensor]) -> np.ndarray:
    """The value of a foldable operator's output, from its (known) inputs."""
    o, code = op.options, op.opcode
    if code == "SHAPE":
        return np.array(tensors[op.inputs[0]].shape, dtype=np.int64)
    if code == "STRIDED_SLICE":
        return _strided_slice_value(op, tensors)
    if code == "PACK":
        return np.stack([_const_input(op, tensors, k) for k in range(len(op.inputs))], axis=int(o.get("axis", 0)))
    if code == "GATHER":
        if o.get("batch_dims", 0):
            raise UnsupportedModelError(f"{op.describe()}: GATHER with batch_dims is not folded")
        return np.take(_const_input(op, tensors, 0), _const_input(op, tensors, 1), axis=int(o.get("axis", 0)))
    if code == "REDUCE_PROD":
        axes = tuple(int(a) for a in _const_input(op, tensors, 1).reshape(-1))
        return np.prod(_const_input(op, tensors, 0), axis=axes, keepdims=bool(o.get("keep_dims", False)))
    if code == "CONCATENATION":
        return np.concatenate(
            [np.atleast_1d(_const_input(op, tensors, k)) for k in range(len(op.inputs))], axis=int(o.get("axis", 0))
        )
    # RESHAPE, SQUEEZE, EXPAND_DIMS, CAST: the values, in the output's stored shape
    return _const_input(op, tensors, 0).reshape(-1)


def _foldable(op: Operator, tensors: list[Tensor]) -> bool:
    if op.opcode not in FOLDABLE_OPS or len(op.outputs) != 1:
        return False
    out = tensors[op.outputs[0]]
    if out.dtype not in _INDEX_DTYPES or out.quant is not None:
        return False
    inputs = [i for i in op.inputs if i >= 0]
    if op.opcode == "SHAPE":
        return len(inputs) == 1
    return all(tensors[i].is_const and tensors[i].dtype in _INDEX_DTYPES for i in inputs)


def _check_reshape(op: Operator, tensors: list[Tensor]) -> None:
    """A RESHAPE whose new shape is a constant (as written, or folded) must produce its output's stored shape:
    the kernels run on stored shapes. The converter leaves stale stored shapes behind some dynamic-batch shape
    arithmetic (e.g. a Dense layer on a 3-D tensor); such a model needs a fixed batch size."""
    if op.opcode != "RESHAPE" or len(op.inputs) < 2 or op.inputs[1] < 0:
        return
    shape_t, inp, out = tensors[op.inputs[1]], tensors[op.inputs[0]], tensors[op.outputs[0]]
    if not shape_t.is_const or shape_t.dtype not in _INDEX_DTYPES or shape_t.data.ndim > 1:
        return
    new_shape = [int(d) for d in shape_t.data.reshape(-1)]
    if new_shape.count(-1) == 1:
        known = int(np.prod([d for d in new_shape if d != -1], dtype=np.int64))
        new_shape[new_shape.index(-1)] = inp.size // known if known else 0
    if new_shape != [int(d) for d in out.shape]:
        raise UnsupportedModelError(
            f"{op.describe()}: the new shape {new_shape} of {inp.describe()} disagrees with the stored shape of "
            f"{out.describe()}; the converter wrote shapes for another batch size. Convert a model with a fixed "
            "batch size (keras.Input(shape, batch_size=1))"
        )


def fold_constants(graph: Graph) -> tuple[Graph, list[Operator]]:
    """Evaluates the shape arithmetic at compile time: every operator of FOLDABLE_OPS whose output is an int32 or
    int64 tensor and whose inputs are known is removed, its output becoming a constant. Returns the new graph
    (the input graph is not changed) and the folded operators, in graph order. Keras Flatten and
    Reshape((-1,)) with an unknown batch size convert to SHAPE -> STRIDED_SLICE -> PACK -> RESHAPE; after
    folding, the RESHAPE has a constant shape and is an alias."""
    tensors = list(graph.tensors)
    kept: list[Operator] = []
    folded: list[Operator] = []
    for op in graph.operators:
        if not _foldable(op, tensors):
            kept.append(op)
            continue
        out = tensors[op.outputs[0]]
        value = _fold_value(op, tensors)
        if value.size != out.size:
            raise UnsupportedModelError(
                f"{op.describe()}: folded to {value.tolist()}, which does not fit {out.describe()}"
            )
        tensors[out.index] = dataclasses.replace(out, data=value.astype(out.dtype).reshape(out.shape))
        folded.append(op)
    for op in kept:
        _check_reshape(op, tensors)
    return dataclasses.replace(graph, tensors=tensors, operators=kept), folded


# --------------------------------------------------------------------------------------------------------
# Lowering


def _float_io_ok(graph: Graph, index: int, role: str) -> bool:
    """A float32 graph input read only by QUANTIZE ops, or a float32 graph output written by DEQUANTIZE."""
    if role == "input":
        readers = [op for op in graph.operators if index in op.inputs]
        return bool(readers) and all(op.opcode == "QUANTIZE" for op in readers)
    return any(op.opcode == "DEQUANTIZE" and index in op.outputs for op in graph.operators)


def _check_io_dtype(graph: Graph, index: int, role: str) -> None:
    t = graph.tensors[index]
    if t.dtype in ACTIVATION_DTYPES or (t.dtype == "float32" and _float_io_ok(graph, index, role)):
        return
    op = "QUANTIZE" if role == "input" else "DEQUANTIZE"
    raise UnsupportedModelError(
        f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 (or, for 16x8 models, int16) tensors "
        f"(float32 only {'into' if role == 'input' else 'out of'} a {op}). Convert with "
        "inference_input_type/inference_output_type=tf.int8 (tf.int16 for 16x8)"
    )


def _io_summary(graph: Graph, index: int, plan: ArenaPlan, role: str) -> TensorSummary:
    t = graph.tensors[index]
    if t.is_const:
        raise UnsupportedModelError(f"graph {role} {t.describe()} is a constant")
    if not 1 <= len(t.shape) <= 4:
        raise UnsupportedModelError(f"graph {role} {t.describe()} must have rank 1 to 4")
    if t.dtype == "float32":  # a float graph input or output (QUANTIZE / DEQUANTIZE): no quantization
        zero_point, scale = 0, 0.0
    else:
        if t.dtype not in ACTIVATION_DTYPES or t.quant is None:
            raise UnsupportedModelError(
                f"graph {role} {t.describe()} is {t.dtype}; the device takes int8 (or, for 16x8 models, int16) "
                "tensors only. Convert with inference_input_type/inference_output_type=tf.int8 (tf.int16 for 16x8)"
            )
        if t.quant.per_channel:
            raise UnsupportedModelError(f"graph {role} {t.describe()} is quantized per channel")
        zero_point, scale = int(t.quant.zero_point), float(t.quant.scale)
    return TensorSummary(
        name=graph.io_name(t.index),
        index=t.index,
        shape=[int(d) for d in t.shape],
        dtype=t.dtype,
        zero_point=zero_point,
        scale=scale,
        bytes=t.nbytes,
        arena_offset=plan.offsets[t.index],
    )


def tensor_args(call: KernelCall) -> list[int]:
    """The arena tensors a call reads: its integer args, and those inside a list arg (CONCATENATION's inputs)."""
    out: list[int] = []
    for a in call.args:
        items = a if isinstance(a, list) else [a]
        out.extend(x for x in items if isinstance(x, int))
    return out


# Ops whose kernel reads each element before it writes the same position (elementwise, in order) or, for a
# slice, writes each row at or before the place it reads it from: their output may take an input's bytes.
IN_PLACE_OPS = (
    "RELU",
    "RELU6",
    "LEAKY_RELU",
    "LOGISTIC",
    "TANH",
    "HARD_SWISH",
    "QUANTIZE",
    "ADD",
    "SUB",
    "MUL",
    "STRIDED_SLICE",
)
# Scratch buffers get planner ids above every tensor index.
SCRATCH_ID_BASE = 1 << 24


def in_place_candidates(graph: Graph, call: KernelCall) -> list[int]:
    """The arena inputs of a call whose bytes its output may take (same element type, and for elementwise ops
    the output's size: no broadcasting of that input)."""
    if call.opcode not in IN_PLACE_OPS or call.kernel is None:
        return []
    out = graph.tensors[call.outputs[0]]
    found = []
    for a in call.args:
        if not isinstance(a, int) or a in found:
            continue
        t = graph.tensors[a]
        if t.dtype != out.dtype or t.dtype not in ACTIVATION_DTYPES:
            continue
        if call.opcode != "STRIDED_SLICE" and t.size != out.size:
            continue
        found.append(a)
    return found


def scratch_id(call: KernelCall) -> int:
    return SCRATCH_ID_BASE + call.op_index


def lower_graph(graph: Graph, *, specialise: bool = True, preserve_inputs: bool = False) -> LoweredModel:
    """Folds shape arithmetic, lowers every operator (and, with `specialise`, finds its specialised kernel),
    plans the arena and describes the graph's inputs and outputs."""
    for role, indices in (("input", graph.inputs), ("output", graph.outputs)):
        for i in indices:
            _check_io_dtype(graph, i, role)
    graph, folded = fold_constants(graph)
    calls: list[KernelCall] = []
    for op in graph.operators:
        lower = LOWERINGS.get(op.opcode)
        if lower is None:
            raise UnsupportedModelError(
                f"{op.describe()} is not supported by the int8 kernel core. Supported ops: "
                f"{', '.join(SUPPORTED_OPS)} (and shape arithmetic on constants: {', '.join(FOLDABLE_OPS)}). "
                "Remove the op from the model or add a kernel in device_fw/core/kernels/"
            )
        call = lower(graph, op, f"op{op.index}")
        if specialise and call.kernel is not None:
            call.fast = fast_kernels.specialise(call)
        calls.append(call)

    arena_tensors: set[int] = set(graph.inputs) | set(graph.outputs)
    for call in calls:
        arena_tensors.update(tensor_args(call))
        arena_tensors.update(call.outputs)
    for t in sorted(arena_tensors):
        if graph.tensors[t].is_const:
            raise UnsupportedModelError(
                f"{graph.tensors[t].describe()} is a constant used where the kernels expect an activation"
            )
    sizes = {t: graph.tensors[t].nbytes for t in arena_tensors}
    kernel_calls = [c for c in calls if c.kernel is not None]
    steps = [(tensor_args(c), c.outputs) for c in kernel_calls]
    aliases = [(c.args[0], c.outputs[0]) for c in calls if c.kernel is None]
    in_place = [(i, t, c.outputs[0]) for i, c in enumerate(kernel_calls) for t in in_place_candidates(graph, c)]
    scratch: dict[int, int] = {}
    for i, c in enumerate(kernel_calls):
        if c.fast is not None and c.fast.scratch_bytes:
            sizes[scratch_id(c)] = c.fast.scratch_bytes
            scratch[scratch_id(c)] = i
    # Aliases have no step of their own: the planner gives each alias group the union of its lifetimes.
    plan = plan_arena(
        sizes,
        steps,
        list(graph.inputs),
        list(graph.outputs),
        aliases,
        preserve_inputs=preserve_inputs,
        in_place=in_place,
        scratch=scratch,
    )
    inputs = [_io_summary(graph, i, plan, "input") for i in graph.inputs]
    outputs = [_io_summary(graph, i, plan, "output") for i in graph.outputs]
    return LoweredModel(
        graph=graph,
        calls=calls,
        plan=plan,
        inputs=inputs,
        outputs=outputs,
        folded=folded,
        specialised=specialise,
        preserve_inputs=preserve_inputs,
    )


def json_text(obj: Any) -> str:
    """Indented JSON with lists of plain numbers (shapes) kept on one line."""
    text = json.dumps(obj, indent=2)
    text = re.sub(
        r"\[\s*(-?[0-9][-0-9.e+, \n]*?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]",
        text,
    )
    return text + "\n"


def compile_tflite(
    tflite: Path | bytes,
    out_dir: Path,
    name: str | None = None,
    *,
    specialise: bool = True,
    preserve_inputs: bool = False,
) -> CompiledModel:
    """Compiles an int8 (or 16x8) .tflite into out_dir/hil_model.c and out_dir/model.json.

    name defaults to the .tflite's file stem (or "model" for bytes). `specialise=False`: generic kernels only.
    `preserve_inputs=True`: the arena never reuses a graph input's bytes. Raises UnsupportedModelError for ops,
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
    lowered = lower_graph(read_tflite(data), specialise=specialise, preserve_inputs=preserve_inputs)
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
            specialised_kernel=c.fast.kernel if c.fast is not None else None,
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
        input_preserved=lowered.plan.inputs_preserved,
        specialised=specialise,
        code_bytes_estimate=lowered.code_bytes_estimate,
    )
    compiled.c_path.write_text(source)
    # model.json last: its presence marks a complete model directory (see hil.model.artifacts).
    compiled.json_path.write_text(json_text(compiled.to_json()))
    return compiled
