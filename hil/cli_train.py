"""`hil train | export | finetune | models`: the AgileNN model pipeline (hil.train, hil.export) and the model
directories' cards. Nothing here imports TensorFlow until a command runs.

    hil train    --run-dir DIR [--preset cpu|gpu|auto] [--data SPEC] [--set KEY=VALUE ...] [--max-epochs N]
    hil finetune --run-dir DIR [--set KEY=VALUE ...]       (int8-grid device weights, Remote NN on its codes)
    hil export   --run-dir DIR --out models/NAME [--name NAME] [--test-limit N] [--limits FILE.json]
    hil export   --from-model models/NAME --activations int16 --out models/NAME-a16 [--data SPEC]
                                                           (the device part re-quantized as 16x8)
    hil models   [--dir models] [--json]                   (every card checked, headline numbers)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil import paths
from hil.cli_baseline import parse_overrides
from hil.cli_types import positive_int
from hil.errors import EXIT_USAGE


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from hil.train.config import TrainConfig
    from hil.train.trainer import train

    if args.refit_reference is not None:
        from hil.train.refit import refit_finished_run

        result = refit_finished_run(args.run_dir, args.refit_reference)
        print(json.dumps({"run_dir": args.run_dir, "reference_refit": {
            k: v for k, v in result["reference_refit"].items() if k != "evaluation_before"},
            "evaluation": result["evaluation"]}, indent=2, default=str))
        return 0
    overrides = parse_overrides(args.set)
    if args.data:
        overrides["dataset"] = args.data
    run_dir = Path(args.run_dir)
    if (run_dir / "config.json").is_file() and not args.set and not args.data:
        config = TrainConfig.from_json(run_dir / "config.json")  # resume exactly what was started
    else:
        config = getattr(TrainConfig, args.preset)(**overrides)
    result = train(config, run_dir, progress=not args.quiet, stop_after_epochs=args.max_epochs)
    if not result.complete:
        print(f"stopped after --max-epochs {args.max_epochs} ({result.seconds:.0f} s); run the same command to resume")
        return 0
    print(json.dumps({"run_dir": str(run_dir), "evaluation": result.evaluation, "seconds": round(result.seconds)},
                     indent=2, default=str))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hil.export.agilenn import export_agilenn

    if args.test_limit is not None and args.test_limit < 1:
        print("hil export: --test-limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if (args.run_dir is None) == (args.from_model is None):
        print("hil export: give exactly one of --run-dir (a training run) and --from-model (an export)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.from_model is not None:
        return _export_16x8(args)
    if args.activations != "int8":
        print("hil export: --activations int16 re-quantizes an existing export: export the run first, then "
              "hil export --from-model models/NAME --activations int16 --out models/NAME-a16", file=sys.stderr)
        return EXIT_USAGE
    limits = _read_limits(args)
    if isinstance(limits, int):
        return limits
    out = Path(args.out)
    card = export_agilenn(Path(args.run_dir), out, name=args.name or out.name, test_limit=args.test_limit,
                          limits=limits, limits_source=None if args.limits is None else args.limits.as_posix())
    acc, dev = card["accuracy"], card["device"]
    lo, hi = acc["combined_int8_ci95"]
    print(f"{out}: combined int8 {acc['combined_int8']:.4f} (95% CI {lo:.4f}..{hi:.4f}) on {acc['samples']} test "
          f"images, float {acc['combined_float']:.4f}, local {acc['local_only']:.4f}, remote {acc['remote_only']:.4f}; "
          f"skewness {card['skewness']:.3f}; payload {card['payload_bits']} bits; device weights "
          f"{dev['weights_bytes']} B, arena {dev['arena_bytes']} B, {dev['macs']:,} MACs")
    return 0


def _read_limits(args: argparse.Namespace) -> dict | None | int:
    """--limits FILE.json as a dict (None without it), or EXIT_USAGE after saying what is wrong with it."""
    import json

    if args.limits is None:
        return None
    try:
        limits = json.loads(args.limits.read_text())
    except (OSError, ValueError) as exc:
        print(f"hil export: --limits {args.limits}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(limits, dict):
        print(f"hil export: --limits {args.limits} must hold a JSON object", file=sys.stderr)
        return EXIT_USAGE
    return limits


def _export_16x8(args: argparse.Namespace) -> int:
    import json

    from hil.datasets import load_dataset
    from hil.export.agilenn16 import export_agilenn_16x8

    if args.activations != "int16":
        print("hil export: --from-model re-quantizes an export's device part; only --activations int16 is "
              "implemented (the int8 device part is what `hil export --run-dir` writes)", file=sys.stderr)
        return EXIT_USAGE
    limits = _read_limits(args)
    if isinstance(limits, int):
        return limits
    source = Path(args.from_model)
    card_path = source / "card.json"
    if not card_path.is_file():
        print(f"hil export: {source} has no card.json: not a model directory written by hil export", file=sys.stderr)
        return EXIT_USAGE
    spec = args.data or json.loads(card_path.read_text()).get("dataset_spec")
    if not spec:
        print(f"hil export: {card_path} names no data set; give --data", file=sys.stderr)
        return EXIT_USAGE
    dataset = load_dataset(spec, allow_download=False)
    out = Path(args.out)
    card = export_agilenn_16x8(source, out, dataset, name=args.name, test_limit=args.test_limit, limits=limits,
                               limits_source=None if args.limits is None else args.limits.as_posix())
    acc, dev = card["accuracy"], card["device"]
    lo, hi = acc["combined_int8_ci95"]
    print(f"{out}: combined 16x8 {acc['combined_int8']:.4f} (95% CI {lo:.4f}..{hi:.4f}) on {acc['samples']} test "
          f"images, float {acc['combined_float']:.4f}, agreement with float {acc['int8_float_agreement']:.4f}, "
          f"codes differing {acc['code_mismatch']:.4%}; device weights {dev['weights_bytes']} B, arena "
          f"{dev['arena_bytes']} B, {dev['macs']:,} MACs")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    import json

    from hil.export.finetune import FinetuneConfig, finetune_remote

    overrides = parse_overrides(args.set)
    try:
        config = FinetuneConfig(**overrides)
    except TypeError as exc:
        print(f"hil finetune: --set: {exc}", file=sys.stderr)
        return EXIT_USAGE
    record = finetune_remote(Path(args.run_dir), config, progress=not args.quiet)
    snap = record.get("weights_snap")
    steps = ([snap["before_snap"]] if snap else []) + [record["before"], record["after"]]
    print(json.dumps({"before_snap": steps[0] if snap else None, "before": record["before"],
                      "after": record["after"], "seconds": record["seconds"]}, indent=2))
    what = "joint -> int8-grid weights -> fine-tuned" if snap else "before -> after"
    print(f"{args.run_dir}: int8/float agreement "
          + " -> ".join(f"{s['int8_float_agreement']:.4f}" for s in steps)
          + ", combined int8 " + " -> ".join(f"{s['combined_int8']:.4f}" for s in steps)
          + f" ({what}) on {steps[-1]['samples']} test images; "
          f"export with: hil export --run-dir {args.run_dir} --out models/NAME")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from hil.export.cards import scan_models

    rows = scan_models(args.dir)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        header = ("model", "kind", "top-1", "payload bits", "weights B", "arena B", "MACs")
        table = [header] + [
            (r.directory, r.kind or "?",
             "-" if r.accuracy is None else f"{r.accuracy:.4f}"
             + (" float" if r.accuracy_key == "top1" else " 16x8" if r.activations == "int16" else " int8"),
             "-" if r.payload_bits is None else f"{r.payload_bits:,}",
             *("-" if v is None else f"{v:,}" for v in (r.weights_bytes, r.arena_bytes, r.macs)))
            for r in rows if r.ok
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        for row in table:
            cells = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            print("  ".join(cells))
        for r in rows:
            if not r.ok:
                print(f"{r.directory}: card does not check out: {r.problem}", file=sys.stderr)
        print("top-1: on the card's test set, with the int8 (16x8: int16 activations) device part (float: no device "
              "network); payload: bits "
              "per inference before lossless compression (edge_only: after its codec)", file=sys.stderr)
    bad = sum(not r.ok for r in rows)
    print(f"{len(rows)} model cards in {args.dir}, {len(rows) - bad} check out"
          + (f", {bad} do not" if bad else ""), file=sys.stderr)
    return EXIT_USAGE if bad or not rows else 0


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train AgileNN (resumes from the run directory's checkpoints)")
    p.add_argument("--run-dir", required=True, help="where checkpoints, metrics and trained parts go")
    p.add_argument("--preset", choices=("cpu", "gpu", "auto"), default="auto",
                   help="schedule: cpu (~90 min on 2 cores), gpu (long), auto (gpu when TensorFlow sees one)")
    p.add_argument("--data", help="data set: 'cifar10' (keras download), a .npz, or an image folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a TrainConfig field (JSON value), e.g. --set joint_epochs=30")
    p.add_argument("--max-epochs", type=positive_int, help="stop after this many epochs in this call (resume later)")
    p.add_argument("--refit-reference", type=int, metavar="EPOCHS",
                   help="on a finished run: train the reference alone on the final features for EPOCHS epochs, "
                   "then re-evaluate (skewness against the refitted reference); the device part is unchanged")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="export a finished AgileNN run into a model directory (int8 + C + card), "
                       "or re-quantize an export's device part as 16x8 (--from-model, --activations int16)")
    p.add_argument("--run-dir", help="the finished training run (hil train --run-dir)")
    p.add_argument("--from-model", help="an AgileNN model directory whose device part to re-quantize")
    p.add_argument("--activations", choices=("int8", "int16"), default="int8",
                   help="device activations: int8, or int16 with int8 weights (TFLite 16x8; with --from-model)")
    p.add_argument("--data", help="--from-model: data set for calibration and evaluation (default: the card's)")
    p.add_argument("--out", required=True, help="model directory to write, e.g. models/agilenn-cifar10")
    p.add_argument("--name", help="model name (default: the directory name)")
    p.add_argument("--test-limit", type=int, help="evaluate on the first N test images only (default: all)")
    p.add_argument("--limits", type=Path, help="JSON: what kept the model from its targets (into the card)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the model directories with their card's numbers; exit 2 if a card "
                       "does not match its files")
    p.add_argument("--dir", type=Path, default=paths.MODELS, help="where the model directories are")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("finetune", help="put a finished run's device weights on the int8 grid and fine-tune its "
                       "Remote NN on the int8 device part's codes (resumable; then hil export)")
    p.add_argument("--run-dir", required=True, help="the finished training run (hil train --run-dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a FinetuneConfig field (JSON value), e.g. --set epochs=6 or "
                   "--set snap_weights=false (leave the device part alone)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)
