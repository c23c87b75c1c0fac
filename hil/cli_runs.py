"""`hil run`, `hil report`, `hil compare`, `hil runs`, `hil history`, and the run directory that `hil check`,
`hil measure` and `hil accuracy` leave (CommandRun).

    hil run --target qemu [--model M] [--bench FILE] [--against REF|reference] [-- PYTEST ARGS]
    hil report RUN_DIR                 rebuild results.json, junit.xml, metrics.txt, index.html from the journal
    hil compare RUN --against REF      metric, reference, now, delta, tolerance, verdict; exit 1 on a regression
    hil runs [--mark-reference RUN] [--prune --keep N]
    hil history [--metric NAME] [--last N]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hil import paths
from hil.cli_types import non_negative_int, positive_float, positive_int
from hil.dut import TARGETS
from hil.errors import EXIT_DEVICE, EXIT_FAILED, EXIT_USAGE, error_line, exit_code_for
from hil.measure.measurement import Measurement
from hil.model.artifacts import DeviceModel, resolve_model
from hil.report.build import COMPARISON_NAME, ReportFiles, build_report, write_json
from hil.report.compare import ToleranceTable, compare_results, comparison_lines, summary_line
from hil.report.history import collect_history
from hil.report.journal import JournalError
from hil.report.recorder import RunRecorder
from hil.report.rundir import (
    RunDirError,
    mark_latest,
    mark_reference,
    new_run_path,
    prune_runs,
    reference_of,
    resolve_run,
    run_dirs,
    run_info,
)
from hil.report.summary import load_results
from hil.transport.frame import DeviceInfo

VERDICT_STYLE = {"pass": "bold green", "fail": "bold red", "incomplete": "bold yellow", "empty": "yellow"}


def add_report_dir_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-dir", type=Path, default=None,
                   help="where runs go: <DIR>/runs/<UTC time>-<target>-<model>/ (default: reports/)")


def add_device_options(p: argparse.ArgumentParser, default_target: str = "qemu",
                       timeout_help: str = "seconds to wait for each reply") -> None:
    """The options every command that opens a device shares (hil check, info, measure, accuracy, soak)."""
    p.add_argument("--target", choices=TARGETS, default=default_target, help="device to run on")
    p.add_argument("--model", type=Path, default=None,
                   help=f"model directory or .tflite (default: {paths.DEFAULT_MODEL.relative_to(paths.PROJECT_ROOT)})")
    p.add_argument("--port", help="esp32s3: serial port or URL (socket://, rfc2217://)")
    p.add_argument("--baud", type=positive_int, default=2_000_000, help="serial baud rate (esp32s3)")
    p.add_argument("--fw", type=Path, help="prebuilt firmware (host/qemu binary, or ESP-IDF build dir)")
    p.add_argument("--no-flash", action="store_true", help="esp32s3: do not flash, use what the board runs")
    p.add_argument("--timeout", type=positive_float, default=10.0, help=timeout_help)
    add_report_dir_option(p)


def reports_of(args: argparse.Namespace) -> Path:
    return args.report_dir if getattr(args, "report_dir", None) else paths.REPORTS


def command_line() -> str:
    return " ".join(["hil", *sys.argv[1:]])


class CommandRun:
    """The run directory of one `hil check|measure|accuracy`: a single test named after the command, its
    measurements and per-image progress journaled as they are made, the report files at the end.

        with CommandRun(args, "check", model) as run:
            run.device(dut.info, firmware)
            run.measurement(...)
            return run.done(exit_code)
    """

    def __init__(self, args: argparse.Namespace, name: str, model: DeviceModel | None) -> None:
        options = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                   if k not in ("func", "command") and isinstance(v, str | int | float | bool | Path | type(None))}
        self.recorder = RunRecorder.create(reports_of(args), command=command_line(), target=args.target,
                                           model=model, options=options)
        self.test = f"hil {name}"
        self.report: ReportFiles | None = None
        self._pending: list[list[Any]] = []

    @property
    def run_dir(self) -> Path:
        return self.recorder.run_dir

    def __enter__(self) -> CommandRun:
        self.recorder.test_start(self.test)
        return self

    def device(self, info: DeviceInfo, *, target: str, firmware: Path | None) -> None:
        self.recorder.device(info, target=target, firmware=firmware)

    def measurement(self, m: Measurement) -> None:
        self.recorder.measurement(m, test=self.test)

    def data(self, name: str, value: Any, **meta: Any) -> None:
        self.recorder.data(name, value, test=self.test, **meta)

    def image(self, index: int, ok: bool, batch: int = 50) -> None:
        """One finished image; journaled in batches, so a killed run keeps all but the last few."""
        self._pending.append([index, bool(ok)])
        if len(self._pending) >= batch:
            self.flush_images()

    def flush_images(self) -> None:
        if self._pending:
            self.data("images", self._pending, fields=["index", "ok"])
            self._pending = []

    def artifact(self, path: Path, what: str) -> None:
        self.recorder.artifact(path, what)

    def done(self, exit_code: int, message: str = "") -> int:
        self.flush_images()
        outcome = "passed" if exit_code == 0 else "failed" if exit_code == EXIT_FAILED else "error"
        self.recorder.test_end(self.test, outcome, message=message)
        self.report = self.recorder.finish(exit_code)
        Console(stderr=True, soft_wrap=True).print(f"run {paths.display(self.run_dir)}: "
                                                   f"{self.report.verdict} (index.html)")
        return exit_code

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and self.report is None:  # an error the command did not turn into an exit code
            self.done(exit_code_for(exc), error_line(exc))


# ---------------------------------------------------------------------------------------------------------------
# hil run
# ---------------------------------------------------------------------------------------------------------------


def _add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the HIL suite (bit-exactness, accuracy, latency, energy) and keep the run "
                                   "in reports/runs/<UTC time>-<target>-<model>/",
                       description="Runs the HIL suite that ships with hil (hil/suite/) through pytest and leaves a "
                                   "run directory. Arguments after -- go to pytest (e.g. -- -k bit_exact -n 2).")
    p.add_argument("--target", choices=TARGETS, default="qemu", help="device under test (default qemu)")
    p.add_argument("--model", type=Path, default=None, help="model directory or .tflite (default: the project's)")
    p.add_argument("--bench", type=Path, default=None, help="bench file (fixtures/benches/*.yaml)")
    p.add_argument("--port", help="esp32s3: serial port or URL")
    p.add_argument("--fw", type=Path, help="prebuilt firmware (host/qemu binary, or ESP-IDF build dir)")
    p.add_argument("--images", help="images per bit-exact/accuracy test (N or all)")
    p.add_argument("--against", metavar="REF",
                   help="compare with a reference run at the end: a run directory, 'reference', 'latest' or a run id")
    p.add_argument("--tolerances", type=Path, help="tolerance file (default: hil/report/tolerances.yaml)")
    add_report_dir_option(p)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then arguments for pytest")
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)
    reports = reports_of(args)
    try:
        model = resolve_model(args.model)
    except (FileNotFoundError, RuntimeError) as exc:
        console.print(f"hil run: {exc}")
        return EXIT_USAGE
    against = None
    if args.against:
        try:
            against = resolve_run(args.against, reports)
        except RunDirError as exc:
            console.print(f"hil run: --against: {exc}")
            return EXIT_USAGE
    run_dir = new_run_path(reports, args.target, model.name)
    extra = list(args.pytest_args or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    cmd = [sys.executable, "-m", "pytest", str(paths.SUITE), "-p", "no:cacheprovider", "-c", os.devnull,
           "--rootdir", str(paths.SUITE), "--import-mode=importlib", "-ra",
           "--hil-target", args.target, "--hil-report-dir", str(reports), "--hil-run-dir", str(run_dir)]
    for flag, value in (("--hil-model", args.model.resolve() if args.model else None),
                        ("--hil-bench", args.bench), ("--hil-port", args.port), ("--hil-fw", args.fw),
                        ("--hil-images", args.images), ("--hil-against", against),
                        ("--hil-tolerances", args.tolerances)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.images == "all" and not any(a.startswith("--hil-test-timeout") for a in extra):
        # The whole test set on qemu takes far longer than the default per-test limit; every device exchange
        # still has its own timeout (--hil-timeout), so nothing can hang.
        cmd += ["--hil-test-timeout", "0"]
    cmd += extra
    console.print(f"hil run: {args.target}, model {model.name} (sha256 {model.sha256[:16]}); run {run_dir}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(cmd, env=env)
    previous = {s: signal.signal(s, lambda sig, _f: child.send_signal(sig)) for s in (signal.SIGTERM,)}
    try:
        code = child.wait()
    except KeyboardInterrupt:  # pytest got the same SIGINT from the terminal and is finishing its run
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if not run_dir.is_dir():
        console.print(f"hil run: pytest exited with {code} before any HIL test ran; nothing was recorded")
        return EXIT_USAGE if code in (2, 4) else EXIT_FAILED if code in (1, 5) else EXIT_DEVICE
    results = load_results(run_dir)
    if not results["complete"]:  # pytest itself was killed (SIGKILL, OOM): the report files from the journal
        build_report(run_dir)
        mark_latest(run_dir)
    _print_verdict(results, run_dir)
    comparison_file = run_dir / COMPARISON_NAME
    if comparison_file.is_file():
        print(summary_line(json.loads(comparison_file.read_text())))
    if code == 0 and results["verdict"] == "pass":
        return 0
    return {2: EXIT_USAGE, 3: EXIT_DEVICE, 4: EXIT_USAGE}.get(code, EXIT_FAILED)


def _print_verdict(results: dict[str, Any], run_dir: Path) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(results.get("counts", {}).items()))
    line = (f"{results['verdict'].upper()}: {counts or 'no tests'}; {len(results.get('metrics', []))} metrics "
            f"({results['target']['name']}: {results['target']['provenance']}); run {paths.display(run_dir)}")
    print(line)


# ---------------------------------------------------------------------------------------------------------------
# hil report, hil compare
# ---------------------------------------------------------------------------------------------------------------


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run's results.json, junit.xml, metrics.txt and index.html from its "
                                      "journal (also for a killed run, marked incomplete)")
    p.add_argument("run", nargs="?", default="latest", help="run directory, 'latest', 'reference' or a run id")
    add_report_dir_option(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        run_dir = resolve_run(args.run, reports_of(args))
        report = build_report(run_dir)
    except (RunDirError, JournalError) as exc:
        print(f"hil report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = report.results
    if results["incomplete"]:
        running = ", ".join(results["incomplete"]["running_tests"]) or "none (between tests)"
        print(f"incomplete run: no run_end record; running when it stopped: {running}", file=sys.stderr)
    for f in report.files:
        print(f"wrote {paths.display(f)}", file=sys.stderr)
    _print_verdict(results, run_dir)
    return 0


def _add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare a run with a reference run; exit 1 on a regression")
    p.add_argument("run", nargs="?", default="latest", help="run directory, 'latest' or a run id (default latest)")
    p.add_argument("--against", required=True, metavar="REF", help="reference: run directory, 'reference' or run id")
    p.add_argument("--tolerances", type=Path, help="tolerance file (default: hil/report/tolerances.yaml)")
    p.add_argument("--json", type=Path, help="also write the comparison here")
    p.add_argument("--all", action="store_true", help="show rows within tolerance too")
    add_report_dir_option(p)
    p.set_defaults(func=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    reports = reports_of(args)
    try:
        run_dir = resolve_run(args.run, reports)
        ref_dir = resolve_run(args.against, reports)
        table = ToleranceTable.load(args.tolerances)
        comparison = compare_results(load_results(run_dir), load_results(ref_dir), table)
    except (RunDirError, JournalError, ValueError) as exc:
        print(f"hil compare: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_json(run_dir / COMPARISON_NAME, comparison)
    build_report(run_dir)  # the page shows the comparison
    if args.json:
        write_json(args.json, comparison)
    print_comparison(comparison, show_ok=args.all)
    return EXIT_FAILED if comparison["verdict"] == "fail" else 0


def print_comparison(comparison: dict[str, Any], *, show_ok: bool = False) -> None:
    console = Console(soft_wrap=True)
    for note in comparison["notes"]:
        console.print(f"[yellow]note: {note}[/]")
    table = Table("metric", "reference", "now", "delta", "tolerance", "verdict",
                  title=f"{comparison['now']['run_id']} against {comparison['reference']['run_id']}")
    styles = {"regressed": "red", "missing": "red", "improved": "green", "new": "cyan", "changed": "yellow",
              "incomparable": "magenta"}
    for row in comparison_lines(comparison):
        if row[-1] == "ok" and not show_ok:
            continue
        table.add_row(*row, style=styles.get(row[-1]))
    if table.row_count:
        console.print(table)
    print(summary_line(comparison))


# ---------------------------------------------------------------------------------------------------------------
# hil runs, hil history
# ---------------------------------------------------------------------------------------------------------------


def _add_runs_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the runs; mark one as the reference; prune old ones")
    p.add_argument("--mark-reference", metavar="RUN", help="make this run the reference (reports/reference)")
    p.add_argument("--prune", action="store_true", help="remove old runs (never the reference or the latest)")
    p.add_argument("--keep", type=non_negative_int, default=30, help="with --prune: runs to keep (default 30)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    add_report_dir_option(p)
    p.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    reports = reports_of(args)
    try:
        if args.mark_reference:
            link = mark_reference(resolve_run(args.mark_reference, reports))
            print(f"reference: {link.resolve().name}", file=sys.stderr)
        if args.prune:
            for path in prune_runs(reports, args.keep):
                print(f"removed {paths.display(path)}", file=sys.stderr)
    except RunDirError as exc:
        print(f"hil runs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    infos = [run_info(p) for p in run_dirs(reports)]
    reference = reference_of(reports)
    if args.json:
        print(json.dumps([{**i.__dict__, "path": str(i.path), "reference": i.path.resolve() == reference}
                          for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no runs under {paths.display(reports / 'runs')}", file=sys.stderr)
        return 0
    table = Table("run", "started", "target", "model", "verdict", "metrics", "command")
    for i in infos:
        mark = " (reference)" if i.path.resolve() == reference else ""
        verdict = i.verdict or "no report"
        table.add_row(i.run_id + mark, i.started or "", i.target or "", i.model or "", verdict, str(i.metrics),
                      i.command or "", style=VERDICT_STYLE.get(verdict))
    Console(soft_wrap=True).print(table)
    return 0


def _add_history_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="each metric over the last runs")
    p.add_argument("--metric", help="only this metric (key or name)")
    p.add_argument("--last", type=positive_int, default=10, help="runs to show (default 10)")
    p.add_argument("--target", choices=TARGETS, help="only runs on this target")
    p.add_argument("--model", help="only runs of this model name")
    p.add_argument("--json", action="store_true", help="print the history as JSON")
    add_report_dir_option(p)
    p.set_defaults(func=cmd_history)


def cmd_history(args: argparse.Namespace) -> int:
    history = collect_history(reports_of(args), last=args.last, target=args.target, model=args.model,
                              metric=args.metric)
    if args.json:
        print(json.dumps(history, indent=2))
        return 0
    if not history["runs"]:
        print("no runs match", file=sys.stderr)
        return 0
    if args.metric and not history["metrics"]:
        print(f"hil history: no run recorded a metric '{args.metric}'", file=sys.stderr)
        return EXIT_USAGE
    table = Table("metric", "unit", *(r["run_id"][:16] for r in history["runs"]))
    for key, entry in sorted(history["metrics"].items()):
        table.add_row(key, entry["unit"], *("-" if v is None else f"{v:.5g}" for v in entry["values"]))
    Console(soft_wrap=True).print(table)
    return 0


def add_run_parsers(sub: argparse._SubParsersAction) -> None:
    _add_run_parser(sub)
    _add_report_parser(sub)
    _add_compare_parser(sub)
    _add_runs_parser(sub)
    _add_history_parser(sub)
