"""Firmware builds for the emulated ports (host, qemu); the ESP32-S3 port is built with ESP-IDF."""

from hil.firmware.build import (
    APT_INSTALL_QEMU,
    FirmwareBuildError,
    ToolchainStatus,
    build_firmware,
    toolchain_status,
)

__all__ = ["APT_INSTALL_QEMU", "FirmwareBuildError", "ToolchainStatus", "build_firmware", "toolchain_status"]
