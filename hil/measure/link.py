"""Offload link time: how long the device part's payload takes to reach the server. Always MODELLED.

AgileNN's evaluation sends the device part's output over WiFi (6 Mbps) and Bluetooth (2 Mbps and 270 kbps);
these models turn a payload size into a transfer time:

    time = (payload + packets * header_bytes) * 8 / rate + packets * per_packet_s + setup_s,
    packets = ceil(payload / payload_per_packet)

The per-packet terms are stated assumptions, not measurements:

* wifi-6mbps: 1460-byte TCP segments; 40 B TCP/IPv4 + 24 B 802.11 MAC + 8 B LLC/SNAP + 4 B FCS headers; 100 us per
  frame for DIFS, mean backoff, SIFS and the ACK at a 6 Mbps basic rate.
* bt-2mbps: Bluetooth LE 2M PHY with data length extension: 244-byte ATT payloads per link-layer packet; 18 B of
  preamble, access address, header, CRC and L2CAP/ATT headers; 344 us per packet for two T_IFS (150 us) and the
  peer's empty acknowledgement packet.
* bt-270kbps: the paper's figure is already an application throughput over Bluetooth, so no further overhead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hil.errors import UsageError
from hil.measure.measurement import Measurement


@dataclass(frozen=True)
class LinkModel:
    key: str
    label: str
    rate_bps: float
    payload_per_packet: int
    header_bytes: int = 0
    per_packet_s: float = 0.0
    setup_s: float = 0.0
    assumption: str = ""

    def packets(self, payload_bytes: int) -> int:
        return math.ceil(payload_bytes / self.payload_per_packet) if payload_bytes > 0 else 0

    def transfer_time_s(self, payload_bytes: int) -> float:
        if payload_bytes < 0:
            raise ValueError(f"payload must not be negative, not {payload_bytes}")
        packets = self.packets(payload_bytes)
        on_air_bytes = payload_bytes + packets * self.header_bytes
        return on_air_bytes * 8 / self.rate_bps + packets * self.per_packet_s + (self.setup_s if packets else 0.0)

    def describe(self) -> str:
        return (f"{self.label}: {self.rate_bps / 1e6:g} Mbit/s, {self.payload_per_packet} B/packet, "
                f"{self.header_bytes} B headers, {self.per_packet_s * 1e6:g} us/packet ({self.assumption})")


LINKS: dict[str, LinkModel] = {
    m.key: m
    for m in (
        LinkModel("wifi-6mbps", "WiFi 6 Mbps", 6e6, 1460, header_bytes=76, per_packet_s=100e-6,
                  assumption="TCP/IPv4 over 802.11, ACK at 6 Mbps"),
        LinkModel("bt-2mbps", "Bluetooth 2 Mbps", 2e6, 244, header_bytes=18, per_packet_s=344e-6,
                  assumption="BLE 2M PHY, DLE, 2 x T_IFS + empty ACK packet"),
        LinkModel("bt-270kbps", "Bluetooth 270 kbps", 270e3, 244,
                  assumption="application throughput as in the AgileNN paper; no extra overhead"),
    )
}


def link_by_key(key: str) -> LinkModel:
    if key not in LINKS:
        raise UsageError(f"unknown link model {key!r}; choose from {', '.join(LINKS)}")
    return LINKS[key]


def offload_measurements(payload_bytes: int, links: Iterable[str] = tuple(LINKS)) -> list[Measurement]:
    """One modelled `offload_<link>` figure (ms) per link model."""
    result = []
    for key in links:
        link = link_by_key(key)
        result.append(Measurement(
            name=f"offload_{key.replace('-', '_')}", value=link.transfer_time_s(payload_bytes) * 1e3, unit="ms",
            provenance="modelled", detail=f"{payload_bytes} B payload, {link.describe()}",
        ))
    return result
