"""The `hil` command.

    hil check    --target {host,qemu,esp32s3} --images N [--model PATH] [--inputs FILE]
    hil build    --target {host,qemu} [--model PATH]
    hil compile  MODEL.tflite --out DIR
    hil info     --target ...           (HELLO: what the device runs)
    hil synth    [--out DIR]            (regenerate the random-weights stand-in model; needs TensorFlow)
    hil baseline train|export           (full_local, edge_only, partition, encoder baselines)
    hil train    --run-dir DIR [--preset cpu|gpu|auto] [--set KEY=VALUE ...]   (AgileNN; resumable)
    hil finetune --run-dir DIR [--set KEY=VALUE ...]      (Remote NN on the int8 device part's codes)
    hil models   [--dir models] [--json]                  (every model card checked, headline numbers)
    hil measure  --target ... --images N [--hil-visa RESOURCE]   (latency, energy, power; simulated analyzer
                                                                  when no resource is given)
    hil export   --run-dir DIR --out models/NAME [--name NAME] [--test-limit N] [--limits FILE]  (int8 + card)
    hil serve    [--host 127.0.0.1] [--port 0|N] [--model DIR ...]   (remote model server, hil/server/)
    hil accuracy --target ... [--images N|all] [--model DIR] [--data PATH] [--hil-server HOST:PORT]
                                        (AgileNN end to end: device == host int8, accuracy, agreement)

Exit codes: 0 success, 1 the check failed (a mismatch), 2 wrong usage or bad input, 3 the device or its
tools could not be started.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hil import paths
from hil.bench.offload import add_offload_subparser
from hil.cli_bench import add_bench_parser
from hil.cli_flash import add_flash_parsers
from hil.cli_rom_loader import add_rom_loader_parser
from hil.cli_runs import CommandRun, add_device_options, add_run_parsers
from hil.cli_soak import add_soak_parser
from hil.cli_train import add_train_parsers
from hil.cli_types import positive_float, positive_int
from hil.dut import PROVENANCE, TARGETS, DutOptions
from hil.errors import EXIT_DEVICE, EXIT_FAILED, EXIT_USAGE, HilError, error_line, exit_code_for
from hil.measure.check import check_measurements
from hil.progress import ProgressDisplay
from hil.targets.registry import MAKE_PORTS

if TYPE_CHECKING:
    from hil.accuracy.job import AccuracyResult



def _options(args: argparse.Namespace, log_dir: Path | None = None) -> DutOptions:
    return DutOptions(target=args.target, port=args.port, baud=args.baud, firmware=args.fw,
                      flash=not args.no_flash, log_dir=log_dir, timeout_s=args.timeout)


def cmd_check(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hil.check import InputSpec, file_inputs, random_inputs, run_check, write_report
    from hil.dut import open_dut
    from hil.model.artifacts import resolve_model
    from hil.model.reference import TflmReference

    console = Console(stderr=True, soft_wrap=True)
    if args.images < 1:
        console.print("[red]--images must be at least 1[/]")
        return EXIT_USAGE
    model = resolve_model(args.model)
    reference = TflmReference(model.tflite_bytes)
    with CommandRun(args, "check", model) as run, open_dut(model, _options(args, run.recorder.logs_dir)) as dut:
        run.device(dut.info, target=args.target, firmware=getattr(dut.target, "firmware", None))
        specs = [InputSpec(tuple(t.shape), t.scale, t.zero_point, t.dtype) for t in dut.info.inputs]
        inputs = (file_inputs(args.inputs, specs, args.images) if args.inputs
                  else random_inputs(specs, args.images, seed=args.seed))
        console.print(f"model {model.name} (sha256 {model.sha256[:16]}) on {args.target}: {PROVENANCE[args.target]}")
        with ProgressDisplay(f"check {args.target}", args.images, counter="mismatched", quiet=args.quiet) as shown:

            def on_image(index: int, ok: bool) -> None:
                run.image(index, ok)
                shown.advance(count=not ok)

            result = run_check(dut, reference, inputs, args.images, on_image=on_image,
                               full_outputs=getattr(args, "full_outputs", False))
        if result.fallback:
            console.print(f"[yellow]{result.fallback}[/]")
        for m in result.mismatches[:10]:
            values = ", ".join(f"[{i}] device {g} reference {w}" for i, g, w in m.examples)
            console.print(f"[red]image {m.image} output {m.output}: {m.differing_values} values differ "
                          f"(max |diff| {m.max_abs_diff}){': ' + values if values else ''}{m.note}[/]")
        console.print(f"{result.mode} mode: {result.wire_bytes_per_image:,.0f} bytes on the wire per inference "
                      f"(inputs {result.input_bytes:,}), {result.images / max(result.wall_s, 1e-9):,.1f} images/s"
                      + (f", outputs read back for {result.readbacks} mismatched images" if result.readbacks else ""))
        run.artifact(write_report(result, run.run_dir), "hil check's per-image results")
        for m in check_measurements(result):
            run.measurement(m)
        if result.cycles:
            mean_cycles = sum(result.cycles) / len(result.cycles)
            console.print(f"mean {mean_cycles:,.0f} cycles per inference ({result.clock_hz / 1e6:g} MHz counter, "
                          f"{args.target}: see provenance above); {result.wall_s:.1f} s wall")
        code = run.done(0 if result.ok else EXIT_FAILED, "" if result.ok else result.summary_line())
        print(result.summary_line())
        return code


def cmd_build(args: argparse.Namespace) -> int:
    from hil.firmware import build_firmware
    from hil.model.artifacts import resolve_model

    model = resolve_model(args.model)
    for target in args.target or list(MAKE_PORTS):
        if target not in MAKE_PORTS:
            print(f"hil build: '{target}' is built with ESP-IDF, see device_fw/ports/esp32s3/README.md",
                  file=sys.stderr)
            return EXIT_USAGE
        path = build_firmware(target, model.c_dir, crash_test=args.crash_test)
        if not args.quiet:
            print(f"{target}: {path}")
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from hil.model.compiler import compile_tflite

    src = Path(args.tflite)
    if not src.is_file():
        print(f"hil compile: '{src}' does not exist", file=sys.stderr)
        return EXIT_USAGE
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "model.tflite").resolve() != src.resolve():
        shutil.copyfile(src, args.out / "model.tflite")
    compiled = compile_tflite(args.out / "model.tflite", args.out, name=args.name or args.out.name)
    print(f"{args.out / 'hil_model.c'}: arena {compiled.arena_bytes} B, weights {compiled.weights_bytes} B, "
          f"{compiled.macs:,} MACs")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from hil.dut import open_dut
    from hil.model.artifacts import resolve_model

    with open_dut(resolve_model(args.model), _options(args)) as dut:
        info = dut.info
        rows = [
            ("port", f"{info.port} ({PROVENANCE[args.target]})"),
            ("firmware", f"{info.firmware_version}, build {info.build_id}, protocol v{info.protocol_version}"),
            ("model", f"{info.model_name}, sha256 {info.model_sha256}"),
            ("arena", f"{info.arena_bytes:,} bytes"),
            ("cycle counter", f"{info.clock_hz / 1e6:g} MHz" + (", deterministic" if info.cycles_deterministic
                                                                 else "")),
            ("max request", f"{info.rx_max:,} bytes"),
            ("kernels", info.kernels or "not reported (firmware without the INFO kernels field)"),
        ]
        for kind, tensors in (("input", info.inputs), ("output", info.outputs)):
            for i, t in enumerate(tensors):
                rows.append((f"{kind} {i}", f"{t.dtype} {tuple(t.shape)}, scale {t.scale:.6g}, "
                                            f"zero point {t.zero_point}, {t.size:,} bytes"))
        for key, value in rows:
            print(f"{key:>14}: {value}")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from hil.model.synthetic import write_synthetic_model

    write_synthetic_model(args.out)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hil", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log protocol traffic and tool output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="run N inputs through the device and TFLite Micro; exit 0 only if bit-exact")
    add_device_options(p)
    p.add_argument("--images", type=int, default=200, help="number of inputs to run")
    p.add_argument("--inputs", type=Path, help=".npy/.npz of int8 tensors or uint8 images (default: random)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--full-outputs", action="store_true", help="read every output back (INFER) instead of comparing "
                   "a CRC-32 per output (INFER_DIGEST, the default; outputs are read back only on a mismatch)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("build", help="build the firmware for the emulated ports")
    p.add_argument("--target", action="append", choices=TARGETS, help="host and/or qemu (default: every target "
                                                                     "built with make)")
    p.add_argument("--model", type=Path, default=None, help="model directory or .tflite")
    p.add_argument("--crash-test", action="store_true",
                   help="the test variant with a debug request that crashes on purpose (panic detection tests)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("compile", help="compile a full-integer int8 .tflite into C for the firmware")
    p.add_argument("tflite", help="the .tflite file")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--name", help="model name reported by the firmware (default: the directory name)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("info", help="ask the device what it runs (HELLO)")
    add_device_options(p)
    p.set_defaults(func=cmd_info)

    add_train_parsers(sub)  # hil train, export, finetune, models: hil/cli_train.py

    from hil.cli_baseline import add_baseline_parser

    add_baseline_parser(sub)

    p = sub.add_parser("synth", help="regenerate the random-weights stand-in model (needs TensorFlow)")
    p.add_argument("--out", type=Path, default=paths.SYNTHETIC_MODEL)
    p.set_defaults(func=cmd_synth)

    _add_measure_parser(sub)  # hil measure (power analyzer); defined below
    _add_serve_parser(sub)  # hil serve (remote model server); defined below
    _add_accuracy_parser(sub)  # hil accuracy (end-to-end accuracy checks); defined below
    add_run_parsers(sub)  # hil run, report, compare, runs, history: hil/cli_runs.py
    add_rom_loader_parser(sub)  # hil rom-loader: the emulated ESP32-S3 ROM serial loader (hil/rom_loader/)
    add_flash_parsers(sub)  # hil flash: esptool writes a build to a board or an emulated device (hil/cli_flash.py)
    add_soak_parser(sub)  # hil soak: inferences over a link with injected faults (hil/cli_soak.py)
    add_offload_subparser(add_bench_parser(sub))  # hil bench runtime|harness (hil/cli_bench.py) and offload
    return parser


# ---------------------------------------------------------------------------------------------------------------
# hil measure: latency and energy through a power analyzer (hil.instruments, hil.measure)
# ---------------------------------------------------------------------------------------------------------------


def _add_measure_parser(sub: argparse._SubParsersAction) -> None:
    from hil.measure.link import LINKS

    p = sub.add_parser("measure", help="latency, energy and power per inference through a power analyzer "
                                       "(the simulated N6705C unless --hil-visa names an instrument)")
    add_device_options(p)
    p.add_argument("--images", type=int, default=20, help="inferences to measure")
    p.add_argument("--hil-visa", "--visa", dest="visa", metavar="RESOURCE",
                   help="VISA resource of the analyzer, e.g. TCPIP0::192.0.2.10::inst0::INSTR (default: simulated)")
    p.add_argument("--hil-analyzer", "--analyzer", dest="analyzer", metavar="DRIVER",
                   help="n6705c, ngm202 or k2280s (default: picked from *IDN?)")
    p.add_argument("--channel", type=positive_int, default=1, help="analyzer channel that powers the DUT")
    p.add_argument("--mode", choices=("window", "span"), default="window",
                   help="window: energy per marker window; span: first to last edge / N (MLPerf Tiny)")
    p.add_argument("--subtract-idle", action="store_true",
                   help="subtract the idle power (measured between inferences) from each inference")
    p.add_argument("--idle-power-mw", type=float,
                   help="subtract this configured idle power instead of the measured one (implies --subtract-idle)")
    p.add_argument("--link", action="append", choices=tuple(LINKS), dest="links",
                   help="offload link model(s) to report (default: all)")
    p.add_argument("--payload-bytes", type=int, help="offload payload (default: the model's remote_* outputs)")
    p.add_argument("--sample-interval", type=positive_float, default=20.48e-6,
                   help="digitizer sample interval, seconds")
    p.add_argument("--trigger", choices=("external", "software"), default="external",
                   help="external: the DUT's marker pin starts the capture; software: *TRG before the run")
    p.add_argument("--trigger-pin", type=positive_int, default=1, help="analyzer digital pin wired to the marker GPIO")
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and of the simulated analyzer's noise")
    p.set_defaults(func=cmd_measure)


def cmd_measure(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hil.measure.link import LINKS
    from hil.measure.run import MeasureOptions, run_measure, write_report
    from hil.model.artifacts import resolve_model

    console = Console(stderr=True, soft_wrap=True)
    if args.images < 1:
        console.print("[red]--images must be at least 1[/]")
        return EXIT_USAGE
    options = MeasureOptions(
        images=args.images, seed=args.seed, mode=args.mode,
        subtract_idle=args.subtract_idle or args.idle_power_mw is not None,
        idle_power_w=None if args.idle_power_mw is None else args.idle_power_mw / 1e3,
        links=tuple(args.links or LINKS), payload_bytes=args.payload_bytes, sample_interval_s=args.sample_interval,
        trigger=args.trigger, trigger_pin=args.trigger_pin,
    )
    model = resolve_model(args.model)
    console.print(f"model {model.name} on {args.target}: {PROVENANCE[args.target]}; analyzer: "
                  f"{args.visa or 'simulated N6705C (ESP32-S3 datasheet power model)'}")
    with CommandRun(args, "measure", model) as run:
        report = run_measure(model, _options(args, run.recorder.logs_dir), options, visa=args.visa,
                             driver=args.analyzer, channel=args.channel, timeout_s=args.timeout,
                             on_open=lambda handle, dut: _record_bench(run, args, handle, dut))
        for m in report.measurements:
            console.print(f"  {m.name:>26} {m.value:12.4f} {m.unit:<8} {m.provenance}")
            run.measurement(m)
        for note in report.notes:
            console.print(f"[yellow]note: {note}[/]")
        if report.trace_plot is not None:
            run.data("power_trace", report.trace_plot)
        run.artifact(write_report(report, run.run_dir), "hil measure's report (windows, capture, notes)")
        code = run.done(0 if report.ok else EXIT_FAILED, "" if report.ok else report.summary_line())
        print(report.summary_line())
        return code


def _record_bench(run: CommandRun, args: argparse.Namespace, handle, dut) -> None:  # noqa: ANN001
    """What the measure run used: the device (HELLO) and the analyzer (*IDN?)."""
    run.device(dut.info, target=args.target, firmware=getattr(dut.target, "firmware", None))
    analyzer = handle.analyzer
    run.recorder.instrument(idn=str(analyzer.identity), driver=analyzer.driver_name,
                            resource=analyzer.session.resource_name, simulated=handle.is_simulated,
                            detail=handle.detail)


# ---------------------------------------------------------------------------------------------------------------
# hil serve: the remote model server (hil.server, hil/server/PROTOCOL.md)
# ---------------------------------------------------------------------------------------------------------------


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from hil.server.protocol import DEFAULT_MAX_BODY

    p = sub.add_parser("serve", help="serve Remote NNs over TCP (hil/server/PROTOCOL.md) until SIGINT/SIGTERM")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; the server has no authentication)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one, printed)")
    p.add_argument("--model", action="append", type=Path, dest="models", metavar="DIR",
                   help="model directory with model.tflite, agilenn.json and remote.keras; repeat for more "
                        "(default: every such directory under models/)")
    p.add_argument("--max-connections", type=positive_int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--max-body", type=positive_int, default=DEFAULT_MAX_BODY,
                   help=f"largest request body in bytes (default {DEFAULT_MAX_BODY})")
    p.add_argument("--frame-timeout", type=positive_float, default=10.0,
                   help="seconds a started request may take to arrive (default 10)")
    p.add_argument("--idle-timeout", type=positive_float, default=60.0,
                   help="seconds an idle connection is kept (default 60)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from hil.server import ServerConfig, has_remote_model, serve_models

    dirs = args.models or sorted(d for d in paths.MODELS.iterdir() if d.is_dir() and has_remote_model(d))
    if not dirs:
        print("hil serve: no model directory under models/ has agilenn.json and remote.keras (an AgileNN export); "
              "pass --model DIR", file=sys.stderr)
        return EXIT_USAGE
    config = ServerConfig(host=args.host, port=args.port, max_body=args.max_body,
                          max_connections=args.max_connections, frame_timeout_s=args.frame_timeout,
                          idle_timeout_s=args.idle_timeout)
    stop = threading.Event()
    # Handlers instead of KeyboardInterrupt: SIGTERM (a service manager, the test harness) and SIGINT both end
    # the wait below, and the server closes its connections before the process exits with 0.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = serve_models(dirs, config)  # loads and warms up every model
        try:
            if stop.is_set():
                return 0
            server.start()
            host, port = server.address
            names = ", ".join(m.spec.name for m in server.models.values())
            print(f"serving {names} on {host}:{port}", flush=True)
            while not stop.wait(0.5):
                if not server.alive:
                    print("hil serve: the server thread stopped", file=sys.stderr)
                    return EXIT_DEVICE
        finally:
            server.close()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0



# ---------------------------------------------------------------------------------------------------------------
# hil accuracy: AgileNN end to end (hil.accuracy, hil/accuracy/README.md)
# ---------------------------------------------------------------------------------------------------------------


def _images_arg(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a whole number nor 'all'") from None
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def _server_arg(text: str) -> tuple[str, int]:
    from hil.server.client import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_accuracy_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("accuracy", help="AgileNN end to end: device offload step == host int8 on every image, "
                                        "remote logits from the server, accuracy and agreement with the float "
                                        "pipeline; exit 1 when the device differs from the host int8 execution")
    add_device_options(p)
    p.add_argument("--images", type=_images_arg, default=None, metavar="N|all",
                   help="N: the first N images of the committed subset (fixtures/cifar10/, 500 images, all of "
                        "them by default), or the first N test images of --data (also when N > 500); all: the "
                        "whole test set of --data")
    p.add_argument("--data", type=Path, default=None,
                   help="data set for --images all or with N (default for all: ../shared/datasets/cifar10/"
                        "cifar10.npz)")
    p.add_argument("--hil-server", "--server", dest="server", type=_server_arg, metavar="HOST:PORT",
                   help="a running remote model server (hil serve); default: one started in this process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_accuracy)


def cmd_accuracy(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hil.accuracy.job import AccuracyError, AgileSpec, FloatPipeline, HostInt8, write_report
    from hil.accuracy.subset import SubsetError, select_images
    from hil.model.artifacts import resolve_model

    console = Console(stderr=True, soft_wrap=True)
    model = resolve_model(args.model)
    try:
        spec = AgileSpec.load(model.tflite_path.parent)
        images = select_images(args.images, args.data)
        host = HostInt8(spec)
    except (AccuracyError, SubsetError) as exc:
        print(f"hil accuracy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    notes: list[str] = []
    try:
        float_pipeline: FloatPipeline | None = FloatPipeline.load(spec)
    except AccuracyError as exc:  # an old export: everything but the agreement can still be checked
        float_pipeline = None
        notes.append(f"no float pipeline: {exc}")
        console.print(f"[yellow]note: {exc}[/]")
    console.print(f"model {model.name} (sha256 {model.sha256[:16]}) on {args.target}: {PROVENANCE[args.target]}")
    console.print(f"images: {images.source}")
    with CommandRun(args, "accuracy", model) as run:
        try:
            result = _accuracy_on_device(args, run, model, spec, host, images, float_pipeline, notes, console)
        except (HilError, OSError) as exc:  # OSError: a pty or process the device target could not open
            print(f"hil accuracy: {error_line(exc)}", file=sys.stderr)
            code = exc.exit_code if isinstance(exc, HilError) else EXIT_DEVICE
            return run.done(code, error_line(exc))
        if isinstance(result, int):
            return run.done(result, "the server does not serve this model")
        for m in result.mismatches[:10]:
            console.print(f"[red]image {m.image} (test index {m.test_index}): {'; '.join(m.problems)}[/]")
        if float_pipeline is not None:
            console.print(f"float pipeline: device part from {float_pipeline.origin}; float accuracy "
                          f"{result.float_accuracy:.3f}")
        cycles = ", ".join(f"{k} {v:,.0f}" for k, v in result.median_cycles().items())
        console.print(f"median cycles per image: {cycles} ({result.clock_hz / 1e6:g} MHz counter; "
                      f"{result.provenance})")
        console.print(f"{result.wall_s:.1f} s for {result.images} images")
        for m in result.measurements():
            run.measurement(m)
        run.data("confusion_matrix", result.confusion())
        run.artifact(write_report(result, run.run_dir), "hil accuracy's per-image results")
        code = run.done(0 if result.ok else EXIT_FAILED, "" if result.ok else result.summary_line())
        print(result.summary_line())
        return code


def _accuracy_on_device(args: argparse.Namespace, run: CommandRun, model, spec, host, images,  # noqa: ANN001
                        float_pipeline, notes: list[str], console) -> AccuracyResult | int:  # noqa: ANN001
    """The server (in-process unless --hil-server), the device, and the job; an exit code when the server does
    not serve the model."""
    import contextlib

    from hil.accuracy.job import ServerModel, run_accuracy
    from hil.dut import open_dut
    from hil.server.client import RemoteClient

    with contextlib.ExitStack() as stack:
        if args.server is None:
            from hil.server.remote_model import RemoteModel
            from hil.server.service import RemoteServer, ServerConfig

            server = RemoteServer([RemoteModel.load(spec.model_dir)], ServerConfig(host="127.0.0.1", port=0))
            stack.callback(server.close)
            address = server.start().address
        else:
            address = args.server
        client = stack.enter_context(RemoteClient(*address, timeout=args.timeout))
        served = client.info().model(model.sha256)
        if served is None:
            print(f"hil accuracy: the server at {address[0]}:{address[1]} does not serve {model.name} "
                  f"(model.tflite sha256 {model.sha256[:16]})", file=sys.stderr)
            return EXIT_DEVICE
        console.print(f"remote model: {served.name} on {address[0]}:{address[1]}"
                      + (" (in-process)" if args.server is None else ""))
        dut = stack.enter_context(open_dut(model, _options(args, run.recorder.logs_dir)))
        run.device(dut.info, target=args.target, firmware=getattr(dut.target, "firmware", None))
        with ProgressDisplay(f"accuracy {args.target}", len(images), counter="!= host int8",
                             quiet=args.quiet) as shown:

            def on_image(index: int, ok: bool) -> None:
                run.image(index, ok)
                shown.advance(count=not ok)

            return run_accuracy(dut, ServerModel(client, model.sha256), host, images,
                                float_pipeline=float_pipeline, on_image=on_image, notes=notes)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line instead of a traceback; -v shows the traceback
        if args.verbose:
            raise
        print(f"hil {args.command}: {error_line(exc)}", file=sys.stderr)
        return exit_code_for(exc)


if __name__ == "__main__":
    sys.exit(main())
