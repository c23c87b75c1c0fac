"""Training side of the AgileNN pipeline: layers, Integrated Gradients, losses, trainer, evaluation (the data
sets are hil.datasets, the custom Keras layers hil.agilenn.layers, the fine-tuning hil.export.finetune).

Stages (hil.train.trainer.train): reference NN trained on the extractor's features (extractor trained with
it, then the reference is frozen) -> optional channel pre-processing (the most often top-k channels are moved
first) -> joint training of extractor, Local NN, quantizer, Remote NN and alpha with the skewness and disorder
losses. The run directory holds checkpoints, metrics.jsonl, the trained parts as .keras files and
agilenn.json (everything the export and the server need: k, centroids, alpha, input format).

TensorFlow is imported lazily: `hil.train.config` works without it, so do the names re-exported here.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; resolved on first access so `import hil.train` does not pull in TensorFlow.
_LAZY = {
    "TrainConfig": "hil.train.config",
    "train": "hil.train.trainer",
    "TrainResult": "hil.train.trainer",
    "TrainedAgileNN": "hil.train.layers",
    "load_trained": "hil.train.layers",
    "device_keras_model": "hil.train.layers",
    "remote_keras_model": "hil.train.layers",
    "evaluate": "hil.train.evaluate",
    "EvalResult": "hil.train.evaluate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hil.train' has no attribute '{name}'")
    return getattr(importlib.import_module(module), name)
