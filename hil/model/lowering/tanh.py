"""TANH -> hil_tanh (device_fw/core/kernels/tanh.c): gemmlowp's fixed-point tanh for int8, TFLM's sigmoid
table for int16 (hil_tanh_i16). Prepare is LOGISTIC's (logistic.py) with TANH's output quantization."""

from __future__ import annotations

from hil.model.lowering.common import KernelCall
from hil.model.lowering.logistic import lower_sigmoid_like
from hil.model.tflite_reader import Graph, Operator


def lower_tanh(graph: Graph, op: Operator, prefix: str) -> KernelCall:
    return lower_sigmoid_like(graph, op, prefix, "hil_tanh")
