"""RESHAPE, SQUEEZE and EXPAND_DIMS: no kernel, the output is an alias of the input's bytes."""

from __future__ import annotations

from hil.model.lowering import common
from hil.model.lowering.common import KernelCall
from hil.model.tflite_reader import Graph, Operator, UnsupportedModelError


def lower_alias(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    inp, out = common.tensor(graph, op, 0, "input"), common.output(graph, op)
    common.require_activation(op, inp, "input")
    common.require_activation(op, out, "output")
    common.same_activation_dtype(op, inp, out)
    if inp.size != out.size:
        raise UnsupportedModelError(f"{op.describe()}: {inp.describe()} and {out.describe()} differ in size")
    return KernelCall(
        op_index=op.index,
        opcode=op.opcode,
        kernel=None,
        params_type=None,
        params={},
        args=[inp.index],
        outputs=[out.index],
        summary=f"{common.shape_str(inp.shape)} -> {common.shape_str(out.shape)}, same bytes (alias)",
        input_shapes=[list(inp.shape)],
        output_shapes=[list(out.shape)],
    )
