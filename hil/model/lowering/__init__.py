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
from hil.model.lowering.concatenation import lower_concatenation
from hil.model.lowering.conv_2d import lower_conv_2d
from hil.model.lowering.depthwise_conv_2d import lower_depthwise_conv_2d
from hil.model.lowering.dequantize import lower_dequantize
from hil.model.lowering.fully_connected import lower_fully_connected
from hil.model.lowering.hard_swish import lower_hard_swish
from hil.model.lowering.leaky_relu import lower_leaky_relu
from hil.model.lowering.logistic import lower_logistic
from hil.model.lowering.mean import lower_mean
from hil.model.lowering.mul import lower_mul
from hil.model.lowering.pad import lower_pad
from hil.model.lowering.pool_2d import lower_pool_2d
from hil.model.lowering.quantize import lower_quantize
from hil.model.lowering.relu import lower_relu
from hil.model.lowering.relu6 import lower_relu6
from hil.model.lowering.softmax import lower_softmax
from hil.model.lowering.strided_slice import lower_strided_slice
from hil.model.lowering.sub import lower_sub
from hil.model.lowering.tanh import lower_tanh
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
    "SOFTMAX": lower_softmax,
    "LOGISTIC": lower_logistic,
    "TANH": lower_tanh,
    "HARD_SWISH": lower_hard_swish,
    "MUL": lower_mul,
    "SUB": lower_sub,
    "CONCATENATION": lower_concatenation,
    "QUANTIZE": lower_quantize,
    "DEQUANTIZE": lower_dequantize,
    "RELU": lower_relu,
    "RELU6": lower_relu6,
    "LEAKY_RELU": lower_leaky_relu,
}

SUPPORTED_OPS = tuple(sorted(LOWERINGS))
