"""Which quantizer code each quantized remote feature value gets, for int8 and 16x8 device models.

An int8 export carries `int8_to_code` (agilenn.json): a 256-entry table, code of q = table[q + 128]. A 16x8
export (int16 activations) carries `int16_code_runs` instead: [[start, code], ...] with ascending starts, the
first -32768; value q has the code of the last run whose start is <= q. Both come from the same rule: the
index of the centroid nearest to the dequantized value, float32 squared distances, first index on ties
(the training quantizer's hard mode), evaluated for every value of the type, so device, host and server agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hil.errors import ModelError

__all__ = ["ValueCodes", "ValueCodesError", "nearest_codes", "runs_of"]


class ValueCodesError(ModelError, ValueError):
    """agilenn.json's code mapping is missing or malformed."""


def nearest_codes(centroids: Sequence[float], scale: float, zero_point: int, q: np.ndarray) -> np.ndarray:
    """Index of the centroid nearest to scale * (q - zero_point), in float32 as the training quantizer."""
    c = np.asarray(centroids, np.float32)
    values = (np.float32(scale) * (np.asarray(q, np.float32) - np.float32(zero_point))).astype(np.float32)
    return np.argmin(np.square(values[:, None] - c[None, :]), axis=1).astype(np.uint8)


def runs_of(codes_by_value: np.ndarray, first: int) -> list[list[int]]:
    """[[start, code], ...]: where the code of consecutive values (from `first` up) changes."""
    codes = np.asarray(codes_by_value)
    change = np.flatnonzero(np.diff(codes.astype(np.int16))) + 1
    starts = np.concatenate([[0], change])
    return [[int(first + s), int(codes[s])] for s in starts]


@dataclass(frozen=True)
class ValueCodes:
    """The code mapping of one export: `codes(q)` for an array of its quantized remote values."""

    dtype: str  # "int8" or "int16"
    table: np.ndarray | None = None  # int8: uint8 (256,)
    run_start: np.ndarray | None = None  # int16: int32 ascending, first -32768
    run_code: np.ndarray | None = None  # int16: uint8

    @classmethod
    def int16(cls, centroids: Sequence[float], scale: float) -> ValueCodes:
        q = np.arange(-32768, 32768)
        runs = runs_of(nearest_codes(centroids, scale, 0, q), -32768)
        return cls.from_runs(runs)

    @classmethod
    def from_runs(cls, runs: Sequence[Sequence[int]]) -> ValueCodes:
        if not runs or any(len(r) != 2 for r in runs):
            raise ValueCodesError("int16_code_runs must be a non-empty list of [start, code] pairs")
        start = np.array([int(r[0]) for r in runs], np.int32)
        code = np.array([int(r[1]) for r in runs], np.int64)
        if start[0] != -32768 or np.any(np.diff(start) <= 0) or start[-1] > 32767:
            raise ValueCodesError("int16_code_runs starts must ascend from -32768 within the int16 range")
        if np.any(code < 0) or np.any(code > 255):
            raise ValueCodesError("int16_code_runs codes must be within 0..255")
        return cls("int16", run_start=start, run_code=code.astype(np.uint8))

    @classmethod
    def of_export(cls, meta: dict[str, Any]) -> ValueCodes:
        """From agilenn.json: int16_code_runs when present, else int8_to_code."""
        if "int16_code_runs" in meta:
            return cls.from_runs(meta["int16_code_runs"])
        table = np.asarray(meta.get("int8_to_code", []), np.int64)
        if table.shape != (256,) or table.min(initial=0) < 0 or table.max(initial=0) > 255:
            raise ValueCodesError("agilenn.json has neither int16_code_runs nor a 256-entry int8_to_code table")
        return cls("int8", table=table.astype(np.uint8))

    def codes(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q)
        if self.dtype == "int8":
            assert self.table is not None
            return self.table[q.astype(np.int16) + 128]
        assert self.run_start is not None and self.run_code is not None
        return self.run_code[np.searchsorted(self.run_start, q.astype(np.int32), side="right") - 1]

    def max_code(self) -> int:
        return int((self.table if self.dtype == "int8" else self.run_code).max())
