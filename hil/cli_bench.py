"""`hil bench ...`: benchmark commands. `add_bench_parser(sub)` adds the `bench` group to the `hil` command's
subparsers with its `runtime` subcommand and returns the group's subparsers, to which other benchmarks add
theirs (each sets `func`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hil import paths
from hil.cli_types import positive_int


def add_bench_parser(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Adds `hil bench` (with `hil bench runtime`) to `sub`; returns the bench group's subparsers."""
    p = sub.add_parser("bench", help="benchmarks (hil bench runtime: the C runtime against TensorFlow Lite Micro)")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    r = bench_sub.add_parser(
        "runtime",
        help="instructions per inference (ours vs TFLite Micro on this host; qemu before/after specialisation), "
        "peak arena, flash, bit-exactness",
        description="Measures one model in one run: host instructions per inference of this runtime and of TFLite "
        "Micro (callgrind, inside the inference call), emulated instructions on qemu of the generic kernels "
        "(before) and the specialised ones (after), the peak arena of both runtimes, flash, and bit-exactness on "
        "the same inputs. Figures only; no pass/fail.",
    )
    r.add_argument(
        "--model",
        type=Path,
        default=paths.DEFAULT_MODEL,
        help="model directory or .tflite (default: the synthetic extractor)",
    )
    r.add_argument("--images", type=int, default=20, help="inputs checked for bit-exactness (default 20)")
    r.add_argument("--runs", type=positive_int, default=3,
                   help="inferences counted under callgrind after a warm-up (default 3)")
    r.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    r.add_argument("--no-qemu", action="store_true", help="skip the emulated (qemu) figures")
    r.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=cmd_bench_runtime)
    h = bench_sub.add_parser("harness", help="the harness on the wire: bytes and images/s per checked inference, "
                                             "full outputs + serial reference against digests + overlapped reference")
    h.add_argument("--target", choices=("host", "qemu"), default="host", help="emulated device (default host)")
    h.add_argument("--model", type=Path, default=None, help="model directory or .tflite (default: the synthetic model)")
    h.add_argument("--images", type=int, default=200, help="images per path and round (default 200)")
    h.add_argument("--rounds", type=positive_int, default=3,
                   help="rounds per path; each path's best counts (default 3)")
    h.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    h.set_defaults(func=cmd_bench_harness)
    return bench_sub


def cmd_bench_harness(args: argparse.Namespace) -> int:
    from hil.bench.harness import bench_harness, format_report

    out = bench_harness(args.target, args.model, args.images, args.rounds)
    print(format_report(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def cmd_bench_runtime(args: argparse.Namespace) -> int:
    from hil.bench.runtime import BenchError, bench_runtime

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  {msg} ...", flush=True)

    try:
        result = bench_runtime(
            args.model, images=args.images, runs=args.runs, qemu=not args.no_qemu, seed=args.seed, progress=progress
        )
    except BenchError as exc:
        print(f"hil bench runtime: {exc}")
        return 2
    rows = result.table()
    width = max(len(r[0]) for r in rows)
    print(
        f"model {result.model}: {len(result.specialised_ops)} operators on specialised kernels "
        f"({', '.join(result.specialised_ops) or 'none'})"
    )
    for figure, ours, ref, ratio in rows:
        print(f"{figure:<{width}}  {ours:>16}  {ref:<48} {ratio}")
    if result.qemu:
        print(
            f"qemu figures: {result.qemu['provenance']}; {result.qemu['instructions_per_tick']} instructions "
            "per CCOUNT tick"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
        print(f"figures written to {args.json}")
    print(result.summary_line())
    return 0
