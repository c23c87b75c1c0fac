"""The harness on the wire, old against new, side by side on one device and the same inputs.

    old: every output back (INFER, READ_OUTPUT when not inline), the input in stop-and-wait LOAD_INPUT chunks of
         4,091 bytes (the 4 KB rx_max of firmware before INFER_DIGEST), TFLite Micro after the device's reply;
    new: hil check's default: INFER_DIGEST with the input in the request when it fits rx_max (a CRC-32 per output
         comes back; outputs are read only on a mismatch), TFLite Micro running while the device computes.

Prints, for each, the bytes on the wire per checked inference (both directions, frame headers and CRCs included,
counted by the link), requests per inference and images per second, then the ratios. Figures only, no verdict: on
an emulated target the throughput is host wall-clock and says nothing about an ESP32-S3, while the byte counts
are the same on every target. The two paths take turns for `rounds` rounds (old first, then new first, ...) and
each keeps its best round, so a neighbour's burst of CPU use on a shared machine biases neither. Entry points:
`bench_harness(target, model, images)` (a dict) and `main(argv)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from hil import paths
from hil.check import CheckResult, InputSpec, random_inputs, run_check
from hil.transport.frame import LOAD_HEADER_SIZE, FrameType, InferResult

LEGACY_RX_MAX = 4096  # the firmware's rx_max before INFER_DIGEST; the old client's LOAD_INPUT chunk was this - 5
WARMUP_IMAGES = 5  # per path, not counted: the first inferences pay for page faults and caches


class _LegacyDut:
    """The device as the harness drove it before INFER_DIGEST: stop-and-wait LOAD_INPUT chunks of at most
    LEGACY_RX_MAX - 5 bytes, INFER, the outputs inline or fetched with READ_OUTPUT. Wraps the real Dut, so run_check
    counts its bytes on the same link."""

    def __init__(self, dut) -> None:
        self._dut = dut
        self.name, self.provenance, self.model, self.info = dut.name, dut.provenance, dut.model, dut.info

    @property
    def client(self):
        return self._dut.client

    def infer(self, tensors: list[np.ndarray]) -> InferResult:
        client = self._dut.client
        for i, array in enumerate(tensors):
            client.load_input(i, array, max_chunk=LEGACY_RX_MAX - LOAD_HEADER_SIZE, window=1)
        return client._infer_result(client.info, client.request(FrameType.INFER, timeout=client.infer_timeout))


def _process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) the process has used so far, from /proc; None where it cannot be read."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _figures(result: CheckResult, requests: int, label: str, host_cpu_s: float,
             device_cpu_s: float | None) -> dict:
    images = result.images
    return {
        "path": label,
        "mode": result.mode,
        "images": images,
        "matched": result.matched,
        "bytes_per_inference": result.wire_bytes / images if images else 0.0,
        "requests_per_inference": requests / images if images else 0.0,
        "images_per_s": images / result.wall_s if result.wall_s > 0 else 0.0,
        "wall_s": result.wall_s,
        # CPU per inference: less sensitive than images/s to what else the machine runs
        "host_cpu_ms_per_inference": 1e3 * host_cpu_s / images if images else 0.0,
        "device_cpu_ms_per_inference": (1e3 * device_cpu_s / images if images and device_cpu_s is not None
                                        else None),  # emulated targets: the emulator process; None on a board
    }


def bench_harness(target: str = "host", model: str | Path | None = None, images: int = 200, rounds: int = 3) -> dict:
    """Runs `images` random inputs through the old path and the new one on one device (started here), `rounds`
    times each, and returns both paths' figures (their best round; every round's images/s under
    `images_per_s_rounds`) and the ratios (new over old for throughput, old over new for bytes)."""
    from hil.dut import DutOptions, open_dut
    from hil.model.artifacts import resolve_model
    from hil.model.reference import TflmReference

    if images < 1 or rounds < 1:
        raise ValueError("images and rounds must be at least 1")
    device_model = resolve_model(model if model is not None else paths.SYNTHETIC_MODEL)
    reference = TflmReference(device_model.tflite_bytes)
    with open_dut(device_model, DutOptions(target=target)) as dut:
        specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point, np.dtype(t.dtype)) for t in dut.info.inputs]
        warmup = list(random_inputs(specs, WARMUP_IMAGES, seed=99))
        inputs = list(random_inputs(specs, images, seed=1))
        legacy = _LegacyDut(dut)
        paths_run = {
            "old": (legacy, {"full_outputs": True, "overlap": False},
                    "full outputs, 4 KB stop-and-wait input chunks, reference after the reply"),
            "new": (dut, {}, "digest (CRC-32 per output), input in the request, reference overlapped"),
        }
        out: dict = {
            "target": target, "provenance": dut.provenance, "model": device_model.name, "images": images,
            "rounds": rounds, "input_bytes": dut.info.input_bytes, "rx_max": dut.info.rx_max,
        }
        for device, kwargs, _label in paths_run.values():
            run_check(device, reference, iter(warmup), len(warmup), **kwargs)
        for r in range(rounds):
            for key in (("old", "new") if r % 2 == 0 else ("new", "old")):
                device, kwargs, label = paths_run[key]
                before = dut.client.requests
                cpu0, dev0 = time.process_time(), _process_cpu_s(dut.pid)
                result = run_check(device, reference, iter(inputs), images, **kwargs)
                cpu1, dev1 = time.process_time(), _process_cpu_s(dut.pid)
                figures = _figures(result, dut.client.requests - before, label, cpu1 - cpu0,
                                   dev1 - dev0 if dev0 is not None and dev1 is not None else None)
                best = out.get(key)
                figures["images_per_s_rounds"] = [*(best["images_per_s_rounds"] if best else []),
                                                  figures["images_per_s"]]
                if best is not None and best["images_per_s"] >= figures["images_per_s"]:
                    best["images_per_s_rounds"] = figures["images_per_s_rounds"]
                else:
                    out[key] = figures
    old, new = out["old"], out["new"]
    out["ratio"] = {
        "throughput": new["images_per_s"] / old["images_per_s"] if old["images_per_s"] else 0.0,
        "bytes": old["bytes_per_inference"] / new["bytes_per_inference"] if new["bytes_per_inference"] else 0.0,
    }
    return out


def format_report(out: dict) -> str:
    lines = [
        f"harness on {out['target']} ({out['provenance']}), model {out['model']}, {out['images']} images x "
        f"{out['rounds']} rounds per path (best round shown), input {out['input_bytes']:,} bytes, device rx_max "
        f"{out['rx_max']:,}",
        f"{'path':<5} {'bytes/inference':>16} {'requests/inf':>13} {'images/s':>10} {'host CPU ms':>12} "
        f"{'device CPU ms':>14} {'bit-exact':>10}  how",
    ]
    for key in ("old", "new"):
        f = out[key]
        device_cpu = f["device_cpu_ms_per_inference"]
        lines.append(f"{key:<5} {f['bytes_per_inference']:>16,.0f} {f['requests_per_inference']:>13.1f} "
                     f"{f['images_per_s']:>10.1f} {f['host_cpu_ms_per_inference']:>12.2f} "
                     f"{'-' if device_cpu is None else f'{device_cpu:.2f}':>14} {f['matched']:>5}/{f['images']:<4}  "
                     f"{f['path']}")
    new_over_input = out["new"]["bytes_per_inference"] - out["input_bytes"]
    lines.append(f"new/old throughput x{out['ratio']['throughput']:.2f}; bytes old/new x{out['ratio']['bytes']:.2f} "
                 f"(new: input + {new_over_input:,.0f} bytes per inference)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hil bench harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="host", help="host or qemu (an esp32s3 needs a port: use the API)")
    parser.add_argument("--model", default=None, help="model directory or .tflite (default: the synthetic model)")
    parser.add_argument("--images", type=int, default=200, help="images per path and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path (each path's best counts)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    out = bench_harness(args.target, args.model, args.images, args.rounds)
    print(format_report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
