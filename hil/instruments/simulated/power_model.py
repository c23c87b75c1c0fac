"""How much current an ESP32-S3 draws while idle and while running an int8 inference: a MODELLED figure.

Source: Espressif, "ESP32-S3 Series Datasheet" (v1.x/2.0), section 5.6.2 "Current Consumption in Other Modes",
Table 5-9 "Current Consumption in Modem-sleep Mode" (Wi-Fi clock gated, 3.3 V supply, 25 C, typical values):

    240 MHz, WAITI (both cores idle)                                        32.9 mA (*1)   47.6 mA (*2)
    240 MHz, single core running 128-bit data access instructions,
             the other core in idle state                                    72.4 mA (*1)   87.9 mA (*2)
    (*1) all peripheral clocks disabled   (*2) all peripheral clocks enabled

Why these rows: the device waits for the host's next frame in WAITI (idle), and runs the inference on one core;
ESP-NN's optimized int8 kernels use the PIE 128-bit vector loads/stores, the row closest to a convolution inner
loop. The firmware clocks only UART0 and one GPIO, so the default uses column *1; `ESP32S3_240MHZ_PERIPH_ON` is
the upper bound with every peripheral clock on. Flash access can add current (the datasheet's note 3) and a
dev board adds its LDO's quiescent current and LEDs: none of that is in the model. Every figure computed from
this model is labelled "modelled", never "measured".

The supply is the analyzer channel's 3.3 V; the model adds Gaussian noise of a fixed seed so that the window
finder and integrator are exercised on realistic-looking, reproducible traces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATASHEET = "Espressif ESP32-S3 Series Datasheet, Table 5-9 (Current Consumption in Modem-sleep Mode), 240 MHz"


@dataclass(frozen=True)
class PowerModel:
    name: str
    idle_a: float
    active_a: float
    supply_v: float = 3.3
    current_noise_a: float = 0.5e-3  # rms per sample at the digitizer's rate
    voltage_noise_v: float = 0.5e-3  # rms per sample
    citation: str = DATASHEET

    @property
    def active_power_w(self) -> float:
        return self.active_a * self.supply_v

    @property
    def idle_power_w(self) -> float:
        return self.idle_a * self.supply_v

    def energy_j(self, active_s: float, *, subtract_idle: bool = False) -> float:
        """Noise-free energy of `active_s` seconds of inference: the known answer simulated traces integrate to."""
        current = self.active_a - (self.idle_a if subtract_idle else 0.0)
        return current * self.supply_v * active_s

    def render(
        self, duty: np.ndarray, rng: np.random.Generator, *, noise_scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Current and voltage samples for `duty`, the fraction of each sample interval spent inferring.

        `noise_scale` < 1 models an instrument that averages many internal samples into one (a data logger)."""
        duty = np.asarray(duty, dtype=np.float64)
        current = self.idle_a + (self.active_a - self.idle_a) * duty
        current = current + rng.normal(0.0, self.current_noise_a * noise_scale, duty.shape)
        voltage = self.supply_v + rng.normal(0.0, self.voltage_noise_v * noise_scale, duty.shape)
        return current, voltage

    def describe(self) -> str:
        return (f"{self.name}: idle {self.idle_a * 1e3:.1f} mA, inference {self.active_a * 1e3:.1f} mA at "
                f"{self.supply_v:g} V ({self.citation}; modelled)")


ESP32S3_240MHZ = PowerModel("ESP32-S3 @ 240 MHz, peripheral clocks off", idle_a=32.9e-3, active_a=72.4e-3)
ESP32S3_240MHZ_PERIPH_ON = PowerModel("ESP32-S3 @ 240 MHz, peripheral clocks on", idle_a=47.6e-3, active_a=87.9e-3)
POWER_MODELS = {"esp32s3-240mhz": ESP32S3_240MHZ, "esp32s3-240mhz-periph-on": ESP32S3_240MHZ_PERIPH_ON}
