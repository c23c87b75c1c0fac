"""Reads a .tflite flatbuffer into a small IR of dataclasses, without TensorFlow.

The flatbuffer is parsed with the schema bindings that ship with `ai-edge-litert`. Only what the compiler
needs is kept: tensors (shape, dtype, quantization, constant data), operators (name, version, inputs,
outputs, builtin options as a dict with snake_case keys) and the graph's inputs and outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hil.errors import ModelError


class UnsupportedModelError(ModelError, ValueError):
    """The model uses something the int8 compiler cannot translate; the message says what and what to do."""


def _enum_names(enum_cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


OPCODE_NAMES = _enum_names(schema.BuiltinOperator)
DTYPE_NAMES = {code: name.lower() for code, name in _enum_names(schema.TensorType).items()}
ACTIVATION_NAMES = _enum_names(schema.ActivationFunctionType)
PADDING_NAMES = _enum_names(schema.Padding)

_NUMPY_DTYPES = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "bool": np.bool_,
}


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel along `axis`."""

    scales: tuple[float, ...]  # float32 values, held exactly as Python floats
    zero_points: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1

    @property
    def scale(self) -> float:
        return self.scales[0]

    @property
    def zero_point(self) -> int:
        return self.zero_points[0]


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8", "int32", "float32", ...
    quant: QuantParams | None
    data: np.ndarray | None = field(default=None, repr=False)  # constant contents, shaped; None if computed

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(_NUMPY_DTYPES.get(self.dtype, np.int8)).itemsize

    def describe(self) -> str:
        return f"tensor {self.index} '{self.name}' {self.dtype}{list(self.shape)}"


@dataclass
class Operator:
    index: int
    opcode: str  # builtin operator name, e.g. "CONV_2D"; custom ops as "CUSTOM:<name>"
    version: int
    inputs: tuple[int, ...]  # tensor indices, -1 for an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any]

    def describe(self) -> str:
        return f"operator {self.index} ({self.opcode})"


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""
    # Names from the model's signature (e.g. Keras output names), by tensor index; may be empty.
    signature_names: dict[int, str] = field(default_factory=dict)

    def io_name(self, tensor_index: int) -> str:
        return self.signature_names.get(tensor_index) or self.tensors[tensor_index].name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _options_dict(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    out: dict[str, Any] = {}
    for key, value in vars(options).items():
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        out[_snake(key)] = value
    return out


def _buffer_bytes(model: Any, buf: bytes, buffer_index: int) -> bytes | None:
    if buffer_index <= 0 or buffer_index >= len(model.buffers):
        return None  # buffer 0 is the schema's empty sentinel
    b = model.buffers[buffer_index]
    if b.offset and b.offset > 1:  # data stored after the flatbuffer (models above 2 GB)
        return bytes(buf[b.offset : b.offset + b.size])
    if b.data is None or len(b.data) == 0:
        return None
    return np.asarray(b.data, dtype=np.uint8).tobytes()


def _read_tensor(index: int, t: Any, model: Any, buf: bytes) -> Tensor:
    name = t.name.decode("utf-8", "replace") if isinstance(t.name, bytes) else (t.name or "")
    shape = tuple(int(d) for d in t.shape) if t.shape is not None else ()
    dtype = DTYPE_NAMES.get(t.type, f"type{t.type}")
    if t.sparsity is not None:
        raise UnsupportedModelError(
            f"tensor {index} '{name}' is sparse; convert the model without sparsity (dense weights)"
        )
    quant = None
    q = t.quantization
    if q is not None and q.scale is not None and len(q.scale) > 0:
        zps = q.zeroPoint if q.zeroPoint is not None else [0] * len(q.scale)
        quant = QuantParams(
            scales=tuple(float(np.float32(s)) for s in q.scale),
            zero_points=tuple(int(z) for z in zps),
            axis=int(q.quantizedDimension),
        )
    data = None
    raw = _buffer_bytes(model, buf, t.buffer)
    if raw is not None:
        np_dtype = _NUMPY_DTYPES.get(dtype)
        if np_dtype is None:
            raise UnsupportedModelError(f"constant tensor {index} '{name}' has unsupported type {dtype}")
        arr = np.frombuffer(raw, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
        expected = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if arr.size != expected:
            raise UnsupportedModelError(
                f"constant tensor {index} '{name}' holds {arr.size} values but its shape {list(shape)} needs {expected}"
            )
        data = arr.reshape(shape)
    return Tensor(index=index, name=name, shape=shape, dtype=dtype, quant=quant, data=data)


def read_tflite(buf: bytes) -> Graph:
    """Parses .tflite bytes into a Graph (the first subgraph; control-flow models are rejected)."""
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    except Exception as exc:  # flatbuffers raises assorted errors on garbage
        raise UnsupportedModelError(f"not a readable .tflite flatbuffer: {exc}") from exc
    if not model.subgraphs:
        raise UnsupportedModelError("the .tflite has no subgraph")
    if len(model.subgraphs) > 1:
        raise UnsupportedModelError(
            f"the .tflite has {len(model.subgraphs)} subgraphs (control flow such as WHILE/IF); "
            "only single-subgraph models are supported"
        )
    sg = model.subgraphs[0]
    tensors = [_read_tensor(i, t, model, buf) for i, t in enumerate(sg.tensors or [])]
    operators = []
    for i, op in enumerate(sg.operators or []):
        oc = model.operatorCodes[op.opcodeIndex]
        # Codes above 127 live in builtinCode only; older files fill deprecatedBuiltinCode only.
        code = max(int(oc.builtinCode), int(oc.deprecatedBuiltinCode))
        opcode = OPCODE_NAMES.get(code, f"BUILTIN_{code}")
        if opcode == "CUSTOM":
            cname = oc.customCode.decode() if isinstance(oc.customCode, bytes) else str(oc.customCode)
            opcode = f"CUSTOM:{cname}"
        operators.append(
            Operator(
                index=i,
                opcode=opcode,
                version=int(oc.version),
                inputs=tuple(int(x) for x in (op.inputs if op.inputs is not None else [])),
                outputs=tuple(int(x) for x in (op.outputs if op.outputs is not None else [])),
                options=_options_dict(op.builtinOptions),
            )
        )
    desc = model.description.decode("utf-8", "replace") if isinstance(model.description, bytes) else ""
    signature_names: dict[int, str] = {}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex != 0:
            continue
        for tm in list(sig.inputs or []) + list(sig.outputs or []):
            key = tm.name.decode("utf-8", "replace") if isinstance(tm.name, bytes) else str(tm.name)
            signature_names.setdefault(int(tm.tensorIndex), key)
    return Graph(
        tensors=tensors,
        operators=operators,
        inputs=tuple(int(x) for x in (sg.inputs if sg.inputs is not None else [])),
        outputs=tuple(int(x) for x in (sg.outputs if sg.outputs is not None else [])),
        description=desc or "",
        signature_names=signature_names,
    )
