"""End-to-end accuracy of AgileNN on the device under test (`hil accuracy`, hil/suite/test_accuracy.py).

- `hil.accuracy.subset`: the committed CIFAR-10 test subset (fixtures/cifar10/) and the full test set, as
  `ImageSet`s;
- `hil.accuracy.job`: device offload step vs host int8 execution (exact), remote logits from the server,
  combined prediction, float Keras pipeline, accuracy with a Wilson interval, JSON report.

hil/accuracy/README.md says what every number means. Import from the submodules (the package imports nothing,
so `python -m hil.accuracy.subset` runs without a double import).
"""
