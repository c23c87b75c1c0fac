"""Per-operator lowerings: one module per op family, mirroring device_fw/core/kernels/.

Each lowering is `lower(graph, op, prefix) -> KernelCall`: it checks the operator against what the int8 kernel
core supports (raising UnsupportedModelError otherwise) and precomputes the kernel's params struct with TFLM's
arithmetic (quantization.py). prefix names the constant arrays it emits (e.g. "op3" -> op3_filter).
`LOWERINGS` maps each supported TFLite builtin name to its lowering; the shared checks are in common.py.
"""

from __future__ import annotations

from collections.abc import Callable

from hil.model.lowering.add import lower_add
from hil.model.lowering.alias import lower_alias
from hil.model.lowering.common import KernelCall
from hil.model.lowering.conv_2d import lower_conv_2d
from hil.model.lowering.depthwise_conv_2d import lower_depthwise_conv_2d
from hil.model.lowering.fully_connected import lower_fully_connected
from hil.model.lowering.mean import lower_mean
from hil.model.lowering.pad import lower_pad
from hil.model.lowering.pool_2d import lower_pool_2d
from hil.model.lowering.strided_slice import lower_strided_slice
from hil.model.tflite_reader import Graph, Operator

__all__ = ["LOWERINGS", "SUPPORTED_OPS"]

LOWERINGS: dict[str, Callable[[Graph, Operator, str], KernelCall]] = {
    "CONV_2D": lower_conv_2d,
    "DEPTHWISE_CONV_2D": lower_depthwise_conv_2d,
    "FULLY_CONNECTED": lower_fully_connected,
    "AVERAGE_POOL_2D": lower_pool_2d,
    "MAX_POOL_2D": lower_pool_2d,
    "MEAN": lower_mean,
    "ADD": lower_add,
    "STRIDED_SLICE": lower_strided_slice,
    "PAD": lower_pad,
    "PADV2": lower_pad,
    "RESHAPE": lower_alias,
    "SQUEEZE": lower_alias,
    "EXPAND_DIMS": lower_alias,
}

SUPPORTED_OPS = tuple(sorted(LOWERINGS))
