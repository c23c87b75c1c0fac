"""The device model: .tflite reader, int8 model compiler to C, TFLite Micro reference, synthetic models.

- `compile_tflite(tflite, out_dir, name=None) -> CompiledModel` (hil.model.compiler): writes hil_model.c and
  model.json for the portable int8 kernel core in device_fw/core; raises `UnsupportedModelError`.
- `TflmReference(tflite).run(inputs)` (hil.model.reference): golden outputs from TFLite Micro.
- `build_host_runner` / `run_host` (hil.model.hostrun): the compiled model natively on the host.
- `make_extractor_model`, `write_synthetic_model`, `make_single_op_model` (hil.model.synthetic).

Names are imported lazily so that `import hil.model` stays cheap (and never imports TensorFlow).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compile_tflite": "hil.model.compiler",
    "CompiledModel": "hil.model.compiler",
    "UnsupportedModelError": "hil.model.tflite_reader",
    "read_tflite": "hil.model.tflite_reader",
    "TflmReference": "hil.model.reference",
    "build_host_runner": "hil.model.hostrun",
    "run_host": "hil.model.hostrun",
    "run_host_many": "hil.model.hostrun",
    "make_extractor_model": "hil.model.synthetic",
    "make_single_op_model": "hil.model.synthetic",
    "write_synthetic_model": "hil.model.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hil.model' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
