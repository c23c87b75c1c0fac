"""`hil baseline train|export`: the comparison baselines (hil.train.baselines, hil.export.baselines).

Wiring into hil/cli.py (one line in build_parser): `from hil.cli_baseline import add_baseline_parser;
add_baseline_parser(sub)`. Nothing here imports TensorFlow until a command runs.

    hil baseline train  --run-dir DIR [--kind KIND] [--preset cpu|gpu|auto] [--data SPEC] [--from-agilenn RUN]
                        [--set KEY=VALUE ...] [--max-epochs N] [--quiet]
    hil baseline export --run-dir DIR --out DIR [--name NAME] [--test-limit N] [--codec deflate|lzma|lzw]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hil.cli_types import positive_int
from hil.errors import EXIT_USAGE, UsageError
from hil.train.baseline_config import KINDS  # TensorFlow-free


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE with JSON values (plain strings as they are), as `hil train --set`."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set '{pair}': expected KEY=VALUE, e.g. --set epochs=20")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def baseline_config(args: argparse.Namespace) -> Any:
    """The BaselineConfig to train: the run directory's own when resuming without changes, else the preset
    (or an AgileNN run's settings with --from-agilenn) with --data / --set applied."""
    from hil.train.baseline_config import BaselineConfig
    from hil.train.config import TrainConfig

    run_dir = Path(args.run_dir)
    saved = run_dir / "config.json"
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["dataset"] = args.data
    if saved.is_file() and not overrides and not args.from_agilenn:
        config = BaselineConfig.from_json(saved)  # resume exactly what was started
        if args.kind and args.kind != config.kind:
            raise UsageError(f"{run_dir} holds a {config.kind} run, not {args.kind}; use another --run-dir")
        return config
    if not args.kind:
        raise UsageError("--kind is required to start a new run")
    if args.from_agilenn:
        source = Path(args.from_agilenn)
        agilenn = TrainConfig.from_json(source / "config.json" if source.is_dir() else source)
        return BaselineConfig.from_agilenn(args.kind, agilenn, **overrides)
    preset = args.preset
    if preset == "auto":
        return BaselineConfig.auto(args.kind, **overrides)
    return getattr(BaselineConfig, preset)(args.kind, **overrides)


def cmd_baseline_train(args: argparse.Namespace) -> int:
    from hil.train.baselines import train_baseline

    if args.max_epochs is not None and args.max_epochs < 0:
        print("hil baseline train: --max-epochs must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    config = baseline_config(args)
    result = train_baseline(
        config.kind, config, Path(args.run_dir), progress=not args.quiet, stop_after_epochs=args.max_epochs
    )
    if not result.complete:
        print(f"stopped after --max-epochs {args.max_epochs} ({result.seconds:.0f} s); run the same command to resume")
        return 0
    summary = {"run_dir": args.run_dir, "kind": config.kind, "evaluation": result.evaluation}
    print(json.dumps(summary | {"seconds": round(result.seconds)}, indent=2, default=str))
    return 0


def cmd_baseline_export(args: argparse.Namespace) -> int:
    from hil.export.baselines import export_baseline

    if args.test_limit is not None and args.test_limit < 1:
        print("hil baseline export: --test-limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    card = export_baseline(
        Path(args.run_dir), out, args.name or out.name, test_limit=args.test_limit, edge_codec=args.codec
    )
    acc, dev = card["accuracy"], card["device"]
    top1 = f"int8 {acc['top1_int8']:.4f}" if "top1_int8" in acc else f"top1 {acc['top1']:.4f}"
    print(
        f"{out}: {card['kind']} {top1} (float {acc['top1_float']:.4f}) on {acc['samples']} test images; payload "
        f"{card['payload_bits']} bits; device weights {dev['weights_bytes']} B, arena {dev['arena_bytes']} B, "
        f"{dev['macs']:,} MACs"
    )
    return 0


def add_baseline_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds `baseline` with its `train` and `export` subcommands to hil's subparsers."""
    p = sub.add_parser("baseline", help="train / export the comparison baselines (full_local, edge_only, ...)")
    bsub = p.add_subparsers(dest="baseline_command", required=True)

    t = bsub.add_parser("train", help="train a baseline (resumes from the run directory's checkpoints)")
    t.add_argument("--run-dir", required=True, help="where checkpoints, metrics and trained parts go")
    t.add_argument("--kind", choices=KINDS, help="which baseline (required for a new run)")
    t.add_argument(
        "--preset",
        choices=("cpu", "gpu", "auto"),
        default="auto",
        help="schedule: cpu (~15-20 min on 2 cores), gpu (150 epochs), auto (gpu when TensorFlow sees one)",
    )
    t.add_argument("--data", help="data set: 'cifar10' (keras download), a .npz, or an image folder")
    t.add_argument(
        "--from-agilenn",
        metavar="RUN",
        help="copy data, backbone and optimiser settings from an AgileNN run directory (or its config.json)",
    )
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a BaselineConfig field (JSON value), e.g. --set epochs=20",
    )
    t.add_argument("--max-epochs", type=positive_int, help="stop after this many epochs in this call (resume later)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_baseline_train)

    e = bsub.add_parser("export", help="export a finished baseline run into a model directory (card, int8, C)")
    e.add_argument("--run-dir", required=True, help="the finished run (hil baseline train --run-dir)")
    e.add_argument("--out", required=True, help="model directory to write, e.g. models/baseline-partition")
    e.add_argument("--name", help="model name (default: the directory name)")
    e.add_argument("--test-limit", type=int, help="evaluate on the first N test images only (default: all)")
    e.add_argument(
        "--codec",
        choices=("deflate", "lzma", "lzw"),
        default="deflate",
        help="edge_only: the codec whose mean compressed size is payload_bits (all three are in the card)",
    )
    e.set_defaults(func=cmd_baseline_export)
    return p


__all__ = ["add_baseline_parser", "baseline_config", "cmd_baseline_export", "cmd_baseline_train", "parse_overrides"]
