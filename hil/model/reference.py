"""The golden reference: TensorFlow Lite Micro's own interpreter (the `tflite-micro` wheel), no TensorFlow.

TFLM, not LiteRT, is the reference for int8 outputs: LiteRT's optimized kernels differ from TFLM's reference
kernels by +-1 in some CONV_2D / FULLY_CONNECTED outputs (see docs/xtensa-emulation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hil.errors import UsageError


@dataclass(frozen=True)
class IoDetail:
    index: int
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


def _detail(index: int, d: dict) -> IoDetail:
    q = d.get("quantization_parameters", {})
    scales = q.get("scales", [])
    zps = q.get("zero_points", [])
    return IoDetail(
        index=index,
        shape=tuple(int(x) for x in d["shape"]),
        dtype=np.dtype(d["dtype"]),
        scale=float(scales[0]) if len(scales) else 0.0,
        zero_point=int(zps[0]) if len(zps) else 0,
    )


class TflmReference:
    """Runs a .tflite with the TFLM interpreter; `run()` returns the outputs in the graph's output order."""

    def __init__(self, tflite: bytes | Path, arena_size: int | None = None) -> None:
        from tflite_micro.python.tflite_micro import runtime

        from hil.model.tflite_reader import read_tflite

        self.model_bytes = Path(tflite).read_bytes() if isinstance(tflite, str | Path) else bytes(tflite)
        graph = read_tflite(self.model_bytes)
        if arena_size is None:
            # TFLM's default (10x the model size) is too small for models with small weights and large
            # activations; every tensor's size twice over plus slack is always enough.
            activations = sum(t.nbytes for t in graph.tensors if not t.is_const)
            arena_size = 2 * activations + len(self.model_bytes) + 256 * 1024
        self._interpreter = runtime.Interpreter.from_bytes(self.model_bytes, arena_size=arena_size)
        self.inputs = [_detail(i, self._interpreter.get_input_details(i)) for i in range(len(graph.inputs))]
        self.outputs = [_detail(i, self._interpreter.get_output_details(i)) for i in range(len(graph.outputs))]

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.inputs):
            raise UsageError(f"the model takes {len(self.inputs)} inputs, got {len(inputs)}")
        for detail, arr in zip(self.inputs, inputs, strict=True):
            a = np.asarray(arr)
            if a.dtype != detail.dtype:
                raise UsageError(f"input {detail.index} must be {detail.dtype}, got {a.dtype}")
            self._interpreter.set_input(np.ascontiguousarray(a.reshape(detail.shape)), detail.index)
        self._interpreter.invoke()
        # Copies: the interpreter may hand out views into its arena, which the next invoke overwrites.
        return [np.array(self._interpreter.get_output(d.index), copy=True) for d in self.outputs]
