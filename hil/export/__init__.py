"""Export of trained models into self-contained model directories under models/.

- `hil.export.agilenn.export_agilenn(run_dir, out_dir, name=...)`: an AgileNN training run -> the int8 device
  part (model.tflite + the generated C), the server's Remote NN, the quantizer and split facts, a model card.
- `hil.export.cards.load_card(model_dir)`: reads a card.json, checks its keys and every artifact's sha256.
- `hil.export.finetune.finetune_remote(run_dir)`: fine-tunes a run's Remote NN on the int8 device part's codes
  (training that needs the int8 device path, so it sits here, above hil.train).

TensorFlow is imported lazily: `hil.export.cards` and the names re-exported here work without it.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; resolved on first access so that loading a card never imports TensorFlow.
_LAZY = {
    "export_agilenn": "hil.export.agilenn",
    "ExportError": "hil.export.agilenn",
    "load_card": "hil.export.cards",
    "CardError": "hil.export.cards",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hil.export' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
