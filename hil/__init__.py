"""HIL: hardware-in-the-loop tests for AgileNN int8 inference on the ESP32-S3 and its emulated stand-ins.

Data flows model -> firmware -> transport -> targets (the device) -> measurement -> report:
- hil.model: .tflite reader, int8 model compiler to C, TFLite Micro reference
- hil.firmware: builds device_fw/ for a port and a model
- hil.transport: framed serial protocol and the device client
- hil.targets: host, qemu and esp32s3 launchers
- hil.dut / hil.plugin / hil.cli: the pytest plugin and the `hil` command
"""

__version__ = "0.1.0"
