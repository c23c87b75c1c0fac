"""The AgileNN facts every side of the split shares, below training, export, the server and the accuracy job:

- `hil.agilenn.quant.Quant`: the per-tensor int8 quantization record (numpy only);
- `hil.agilenn.layers`: the custom Keras layers a saved AgileNN part holds (ChannelSlice, SoftToHardQuantizer,
  Alpha), registered under the package name "agilenn", so that a .keras file loads after importing this module
  without pulling in the trainer (imports TensorFlow).

The package imports nothing itself; import from the submodules.
"""
