"""The AgileNN paper's own figures for the comparison `hil bench offload` reproduces: shown beside ours, in a column
of their own, never mixed into ours (they were measured on another device, link and server).

Source: Kai Huang and Wei Gao, "Real-time Neural Network Inference on Extremely Weak Devices: Agile Offloading
with Explainable AI", ACM MobiCom 2022 (arXiv 2312.14229), as summarized in ../shared/docs/agilenn.md. Setup:
STM32F746 (Cortex-M7, 216 MHz) with int8 TFLite Micro + CMSIS-NN, ESP-WROOM-02D WiFi at 6 Mbps (UDP), a desktop
server with an RTX A6000. Figures read off the paper's plots are approximate (about 1%). CIFAR-10.
"""

from __future__ import annotations

from typing import Any

SOURCE = ("Huang & Gao, AgileNN, ACM MobiCom 2022 (arXiv 2312.14229), via ../shared/docs/agilenn.md; STM32F746 + "
          "WiFi 6 Mbps + RTX A6000 server; CIFAR-10; plot readings approximate (~1%)")
DATASET = "CIFAR-10"
LINK = "wifi-6mbps"  # the paper's end-to-end figures are over its 6 Mbps WiFi link

# Which baseline of the paper each model kind of this project stands for.
PAPER_SYSTEM = {
    "agilenn": "AgileNN",
    "encoder": "DeepCOD",
    "partition": "SPINN",
    "edge_only": "Edge-only",
    "full_local": "MCUNet",
}

# CIFAR-10 end-to-end latency (ms) over WiFi 6 Mbps and top-1 accuracy; the breakdown where the paper prints it
# (local NN / compressor / network / remote).
CIFAR10: dict[str, dict[str, Any]] = {
    "AgileNN": {"e2e_ms": 21.8, "accuracy": 0.942,
                "breakdown_ms": {"local_nn": 14.0, "compress": 1.9, "network": 5.0, "remote": 0.9}},
    "DeepCOD": {"e2e_ms": 54.8, "accuracy": 0.947, "breakdown_ms": None},
    "SPINN": {"e2e_ms": 72.6, "accuracy": 0.950, "breakdown_ms": None},
    "Edge-only": {"e2e_ms": 78.2, "accuracy": 0.955,
                  "breakdown_ms": {"local_nn": 0.0, "compress": 2.5, "network": 74.7, "remote": 1.0}},
    "MCUNet": {"e2e_ms": 140.0, "accuracy": 0.938, "breakdown_ms": None},
}

# Printed claims (not per-row figures): what a reader compares our ratios with.
CLAIMS = {
    "data_vs_deepcod": "AgileNN sends 43.7% less data than DeepCOD on CIFAR-10 (printed)",
    "data_ratio_deepcod_to_agilenn": round(1 / (1 - 0.437), 3),  # DeepCOD's payload / AgileNN's
    "local_energy": "more than 8x less local energy (compute + WiFi) than the other schemes (claim)",
    "latency": "end-to-end latency 2-2.5x lower than other offloading schemes, up to 6x overall (claim)",
    "comparable_accuracy": "baselines tuned to stay within 10% of AgileNN's accuracy (paper's setup)",
}


def paper_row(kind: str) -> dict[str, Any] | None:
    """The paper's figures for the system a model kind stands for, with the ratios to the paper's AgileNN."""
    system = PAPER_SYSTEM.get(kind)
    if system is None:
        return None
    fig = CIFAR10[system]
    ref = CIFAR10["AgileNN"]
    row: dict[str, Any] = {
        "system": system,
        "dataset": DATASET,
        "link": LINK,
        "e2e_ms": fig["e2e_ms"],
        "accuracy": fig["accuracy"],
        "breakdown_ms": fig["breakdown_ms"],
        "e2e_ratio_to_agilenn": round(fig["e2e_ms"] / ref["e2e_ms"], 3),
        "accuracy_gap_points": round(100 * (fig["accuracy"] - ref["accuracy"]), 1),
        "source": SOURCE,
    }
    if system == "DeepCOD":
        row["payload_ratio_to_agilenn"] = CLAIMS["data_ratio_deepcod_to_agilenn"]
    return row


def paper_section() -> dict[str, Any]:
    return {"source": SOURCE, "dataset": DATASET, "link": LINK, "systems": CIFAR10, "claims": CLAIMS,
            "kinds": PAPER_SYSTEM}


__all__ = ["CIFAR10", "CLAIMS", "PAPER_SYSTEM", "SOURCE", "paper_row", "paper_section"]
