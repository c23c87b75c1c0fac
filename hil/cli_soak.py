"""`hil soak`: N inferences over a link with injected faults, each accepted result compared with a clean reference
(hil/soak.py; the faults: hil/transport/faults.py).

    hil soak --target host --inferences 10000 --faults flip=0.01,drop=0.001,garbage=0.001,stall=0.0005,reset=0.0001
    hil soak --target qemu --inferences 500 --faults flip=2e-5,reset=0.002,seed=3
    hil soak --target host --reference reports/runs/<run>   # compare with the clean reference an earlier soak saved

The last line is the verdict, e.g. `soak 10000 done, 0 wrong, 0 lost, 412 retries, 3 restarts`. Exit status 0 when
no result was wrong or lost, 1 when one was, 2 for a bad option or fault spec, 3 when the device could not be
started or brought back. Every decided inference is journaled at once (the run directory, as `hil check` leaves).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rich.console import Console

from hil.cli_runs import CommandRun, add_device_options
from hil.cli_types import non_negative_int, positive_float, positive_int
from hil.dut import EMULATED_TARGETS, PROVENANCE, DutOptions
from hil.errors import EXIT_FAILED
from hil.measure.measurement import Measurement, Provenance
from hil.progress import ProgressDisplay
from hil.soak import (
    INFER_WAIT_FACTOR,
    MIN_REPLY_S,
    REFERENCE_NAME,
    REPLY_WAIT_FACTOR,
    Outcome,
    Reference,
    Soak,
    SoakAborted,
    SoakOptions,
    SoakResult,
    clean_reference,
    input_pool,
)
from hil.transport.faults import ALLOWED, Faults, FaultSpec

PROGRESS_EVERY = 500  # inferences between the journal's running totals (each inference has its own record too)
DEFAULT_POOL = 32


def add_soak_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soak", help="N inferences over a link with injected faults, each accepted result compared "
                                    "with a clean reference; exit 1 if any was wrong or lost",
                       description="Runs N inferences with link faults injected beneath the protocol (--faults), "
                                   "compares every accepted result with a clean reference run of the same inputs, "
                                   "and journals every outcome as it is decided. The fault spec's " + ALLOWED + ".")
    add_device_options(p, timeout_help="seconds to wait for each reply while the device starts (HELLO; default 10)")
    p.add_argument("--inferences", type=positive_int, default=1000, help="inferences to run (default 1000)")
    p.add_argument("--faults", default="none", metavar="SPEC",
                   help="faults to inject, e.g. flip=0.01,drop=0.001,garbage=0.001,stall=0.0005,reset=0.0001,seed=7 "
                        "(per byte: flip, drop, garbage; per request written: stall, reset; default none)")
    p.add_argument("--pool", type=positive_int, default=None,
                   help=f"distinct seeded inputs, cycled over the inferences (default {DEFAULT_POOL}, or the "
                        f"reference's)")
    p.add_argument("--seed", type=non_negative_int, default=None, help="seed of the input pool (default 0, or the "
                                                                       "reference's)")
    p.add_argument("--attempts", type=positive_int, default=SoakOptions.attempts,
                   help=f"whole attempts of one inference before it counts as lost (default {SoakOptions.attempts})")
    p.add_argument("--reply-timeout", type=positive_float, default=None,
                   help=f"seconds to wait for each reply during the soak before sending again (default "
                        f"{REPLY_WAIT_FACTOR:g}x the median of a few clean ECHOs, at least {MIN_REPLY_S:g} s; "
                        f"INFER_DIGEST also gets {INFER_WAIT_FACTOR:g}x the median clean inference; each further "
                        f"attempt of an inference waits twice as long)")
    p.add_argument("--chunk", type=non_negative_int, default=None,
                   help="LOAD_INPUT data bytes per frame (default: chosen from the byte fault rates; 0: the inputs "
                        "inside INFER_DIGEST)")
    p.add_argument("--restart-after", type=positive_int, default=SoakOptions.restart_after,
                   help=f"failed attempts in a row after which the device is restarted even though it seems alive "
                        f"(default {SoakOptions.restart_after})")
    p.add_argument("--reference", type=Path, metavar="RUN_OR_FILE",
                   help=f"compare with the clean reference an earlier soak saved ({REFERENCE_NAME} in its run "
                        f"directory) instead of a clean run now")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_soak)


def cmd_soak(args: argparse.Namespace) -> int:
    from hil.dut import open_dut
    from hil.model.artifacts import resolve_model

    console = Console(stderr=True, soft_wrap=True)
    spec = FaultSpec.parse(args.faults)  # FaultSpecError: exit 2, before anything starts
    stored = Reference.load(args.reference) if args.reference else None
    options = SoakOptions(
        inferences=args.inferences,
        pool=args.pool if args.pool is not None else stored.pool_size if stored else DEFAULT_POOL,
        seed=args.seed if args.seed is not None else stored.pool_seed if stored else 0,
        attempts=args.attempts, reply_timeout_s=args.reply_timeout, chunk=args.chunk,
        restart_after=args.restart_after,
    )
    model = resolve_model(args.model)
    faults = Faults(spec) if spec.active else None
    with CommandRun(args, "soak", model) as run:
        dut_options = DutOptions(target=args.target, port=args.port, baud=args.baud, firmware=args.fw,
                                 flash=not args.no_flash, log_dir=run.recorder.logs_dir, timeout_s=args.timeout,
                                 faults=faults)
        with open_dut(model, dut_options) as dut:
            run.device(dut.info, target=args.target, firmware=getattr(dut.target, "firmware", None))
            console.print(f"model {model.name} (sha256 {model.sha256[:16]}) on {args.target}: "
                          f"{PROVENANCE[args.target]}")
            pool = input_pool(dut.info.inputs, options.pool, options.seed)
            # A clean run of the pool in any case: the reference (or, with --reference, how this device compares
            # with the stored one), and the median inference, which adds to the inference's reply wait.
            clean = clean_reference(dut, pool, faults, target=args.target, seed=options.seed)
            run.artifact(clean.save(run.run_dir / REFERENCE_NAME), "the soak's clean reference (CRC-32s)")
            reference = clean
            if stored is not None:
                reference = dataclasses.replace(stored, median_s=clean.median_s)
                _compare_references(stored, clean, model.name, model.sha256, console)
            soak = Soak(dut, reference, pool, options, faults, target=args.target)
            console.print(f"faults: {spec}; reference: {reference.source}; {soak.result.mode}; reply wait "
                          f"{soak.reply_wait_s:.3g} s ({soak.infer_wait_s:.3g} s for the inference)")
            run.data("soak_setup", {"faults": str(spec), "reference": reference.source, "mode": soak.result.mode,
                                    "chunk": soak.chunk, "options": dataclasses.asdict(options),
                                    "reply_wait_s": soak.reply_wait_s, "infer_wait_s": soak.infer_wait_s})
            result = _run(soak, run, args, console)
        _report(result, faults, console)
        for m in soak_measurements(result):
            run.measurement(m)
        path = run.run_dir / "soak.json"
        path.write_text(json.dumps(result.to_json(), indent=1) + "\n")
        run.artifact(path, "hil soak's counts (faults per kind and direction, wrong and lost examples)")
        code = run.done(0 if result.ok else EXIT_FAILED, "" if result.ok else result.summary_line())
        print(result.summary_line())
        return code


def _compare_references(stored: Reference, clean: Reference, model: str, sha256: str, console: Console) -> None:
    if stored.model_sha256 != sha256:
        console.print(f"[yellow]note: the reference was made with model {stored.model_name} (sha256 "
                      f"{stored.model_sha256[:16]}), this device runs {model} (sha256 {sha256[:16]}): every "
                      f"difference counts as wrong[/]")
    differ = sum(a != b for a, b in zip(stored.digests, clean.digests, strict=False))
    if differ:
        console.print(f"[yellow]note: this device's clean run differs from the stored reference on {differ} of "
                      f"{clean.pool_size} pool inputs[/]")


def _run(soak: Soak, run: CommandRun, args: argparse.Namespace, console: Console) -> SoakResult:
    with ProgressDisplay(f"soak {args.target}", args.inferences, counter="wrong or lost",
                         quiet=args.quiet) as shown:

        def on_outcome(outcome: Outcome, so_far: SoakResult) -> None:
            run.data("soak", outcome.to_json())  # on disk before the next inference starts
            if (outcome.index + 1) % PROGRESS_EVERY == 0 or outcome.status != "ok":
                run.data("soak_progress", _totals(so_far))
            shown.advance(count=int(outcome.status != "ok"))

        try:
            return soak.run(on_outcome)
        except SoakAborted as exc:
            run.data("soak_progress", _totals(exc.result))
            console.print(f"[red]{exc}[/]")
            print(exc.result.summary_line())
            raise


def _totals(result: SoakResult) -> dict[str, object]:
    return {"done": result.inferences, "wrong": result.wrong, "lost": result.lost, "resends": result.resends,
            "redone": result.redone, "restarts": result.restarts, "faults": result.faults.as_dict(),
            "wall_s": round(result.wall_s, 3)}


def _report(result: SoakResult, faults: Faults | None, console: Console) -> None:
    if faults is not None:
        console.print(f"faults injected: {faults.describe()}")
    per = result.wall_s / max(result.inferences, 1)
    console.print(f"{result.accepted} accepted; retries: {result.resends} frames sent again, {result.redone} whole "
                  f"inferences redone; {result.restarts} restarts; {result.inferences} inferences in "
                  f"{result.wall_s:.1f} s ({per * 1e3:.2f} ms each)")
    for example in result.wrong_examples[:5]:
        got, want = (" ".join(f"{d:08x}" for d in example.get(k) or []) for k in ("got", "want"))
        console.print(f"[red]wrong: inference {example['index']} (pool input {example['pool_index']}): CRC-32s "
                      f"{got}, the reference's {want}[/]")
    for example in result.lost_examples[:5]:
        console.print(f"[red]lost: inference {example['index']} after {example['attempts']} attempts: "
                      f"{example.get('error', '')}[/]")


def soak_measurements(result: SoakResult) -> list[Measurement]:
    kind: Provenance = "emulated" if result.target in EMULATED_TARGETS else "measured"
    where = f"{result.target}, faults {result.spec}; {result.mode}"
    return [
        Measurement("soak_inferences", result.inferences, "inferences", kind, where),
        Measurement("soak_wrong", result.wrong, "inferences", kind,
                    f"accepted but unlike the reference ({result.reference})", low=0, high=0),
        Measurement("soak_lost", result.lost, "inferences", kind, "no attempt accepted", low=0, high=0),
        Measurement("soak_retries", result.retries, "retries", kind,
                    f"{result.resends} frames sent again + {result.redone} inferences redone"),
        Measurement("soak_restarts", result.restarts, "restarts", kind, "device restarted by the soak"),
        Measurement("soak_faults_injected", result.faults.total, "faults", kind,
                    ", ".join(f"{k} {v}" for k, v in result.faults.as_dict().items())),
        Measurement("soak_wall_s_per_inference", result.wall_s / max(result.inferences, 1), "s", kind,
                    "host wall-clock per inference, retries and restarts included"),
    ]
