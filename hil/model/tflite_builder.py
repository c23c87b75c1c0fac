"""Writes small .tflite flatbuffers directly with the schema's object API (no TensorFlow, milliseconds per model).

- `TfliteBuilder`: builds a single-subgraph model tensor by tensor and operator by operator.
- `builtin_options(cls_name, **fields)`: an operator's builtin options object (e.g. "Conv2DOptionsT").
- `ACTIVATIONS` / `PADDINGS`: the schema's codes for fused activations and padding modes, by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

__all__ = ["ACTIVATIONS", "PADDINGS", "TfliteBuilder", "builtin_options"]

ACTIVATIONS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
PADDINGS = {"SAME": 0, "VALID": 1}
_DTYPES = {
    "int8": (schema.TensorType.INT8, np.int8),
    "int16": (schema.TensorType.INT16, np.int16),
    "int32": (schema.TensorType.INT32, np.int32),
    "float32": (schema.TensorType.FLOAT32, np.float32),
}


class TfliteBuilder:
    """Builds a single-subgraph .tflite with the schema's object API."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [schema.BufferT()]  # buffer 0: the schema's empty sentinel
        self.opcodes: dict[tuple[int, int], int] = {}
        self.operator_codes: list[Any] = []
        self.operators: list[Any] = []

    def tensor(
        self,
        shape: Sequence[int],
        dtype: str = "int8",
        scale: float | Sequence[float] | None = None,
        zero_point: int | Sequence[int] = 0,
        data: np.ndarray | None = None,
        axis: int = 0,
        name: str | None = None,
    ) -> int:
        t = schema.TensorT()
        t.shape = np.array(shape, dtype=np.int32)
        t.type, np_dtype = _DTYPES[dtype]
        t.name = (name or f"t{len(self.tensors)}").encode()
        if scale is not None:
            q = schema.QuantizationParametersT()
            scales = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            if zps.size == 1 and scales.size > 1:
                zps = np.repeat(zps, scales.size)
            q.scale, q.zeroPoint, q.quantizedDimension = scales, zps, axis
            t.quantization = q
        if data is not None:
            arr = np.ascontiguousarray(np.asarray(data, dtype=np_dtype).reshape(tuple(shape)))
            b = schema.BufferT()
            b.data = np.frombuffer(arr.astype(np.dtype(np_dtype).newbyteorder("<")).tobytes(), dtype=np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        opcode: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        options_type: str | None = None,
        version: int = 1,
    ) -> None:
        code = getattr(schema.BuiltinOperator, opcode)
        key = (code, version)
        if key not in self.opcodes:
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, 127)
            oc.version = version
            self.opcodes[key] = len(self.operator_codes)
            self.operator_codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = self.opcodes[key]
        o.inputs = np.array(inputs, dtype=np.int32)
        o.outputs = np.array(outputs, dtype=np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(schema.BuiltinOptions, options_type or type(options).__name__[:-1])
            o.builtinOptions = options
        self.operators.append(o)

    def finish(self, inputs: Sequence[int], outputs: Sequence[int], description: str = "hil synthetic") -> bytes:
        sg = schema.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.operators
        sg.inputs, sg.outputs = np.array(inputs, dtype=np.int32), np.array(outputs, dtype=np.int32)
        sg.name = b"main"
        m = schema.ModelT()
        m.version = 3
        m.operatorCodes, m.subgraphs, m.buffers = self.operator_codes, [sg], self.buffers
        m.description = description.encode()
        b = flatbuffers.Builder(1024)
        b.Finish(m.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def builtin_options(cls_name: str, **fields: Any) -> Any:
    o = getattr(schema, cls_name)()
    for k, v in fields.items():
        if not hasattr(o, k):
            raise AttributeError(f"{cls_name} has no field {k}")
        setattr(o, k, v)
    return o
