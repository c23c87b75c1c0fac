"""`hil flash`: flash a build with esptool, to a board or to an emulated target's flash image.

    hil flash --target {host,qemu,esp32s3} [--fw BUILD_DIR] [--port URL] [--flash-image FILE] [--model PATH]
              [--baud 921600] [--before MODE] [--after MODE] [--reflash] [--erase-all] [--no-stub] [--merged FILE]

esp32s3: flashes the ESP-IDF build directory --fw to the board on --port. host, qemu: flashes the emulated build
(--fw, else the build of --model, made now if needed) into the target's flash image (--flash-image, else
<build cache>/flash/<target>-flash.bin) through an emulated ESP32-S3 ROM loader started on it (or the loader
already serving at --port), then boots the target from the image and checks that its HELLO matches the flashed
app (--no-boot skips that). Regions whose MD5 already matches are skipped (esptool write-flash --skip-flashed;
--reflash writes them anyway). Then the merged image (esptool merge-bin) is written, by default to
<build dir>/merged.bin; the last line gives its sha256.

Exit codes: 0 flashed (and booted), 1 the booted device does not report what was flashed, 2 wrong usage,
3 flashing or booting failed.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from hil.cli_types import positive_float, positive_int
from hil.errors import EXIT_DEVICE, EXIT_FAILED, EXIT_USAGE, DeviceError

EXIT_MISMATCH = EXIT_FAILED


def _choices(name: str) -> tuple[str, ...]:
    from hil.firmware.flashimage import flasher

    return flasher.BEFORE_CHOICES if name == "before" else flasher.AFTER_CHOICES


def add_flash_parsers(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `hil flash` on the `hil` command's subparsers."""
    from hil.firmware.flashimage.flasher import DEFAULT_FLASH_BAUD, FLASH_TIMEOUT_S
    from hil.targets.registry import TARGETS

    p = sub.add_parser("flash", help="flash a build with esptool to a board, or to an emulated target's flash image "
                                     "(then boot it and check HELLO); prints the merged image's sha256",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=TARGETS, default="qemu", help="device to flash (default qemu)")
    p.add_argument("--fw", type=Path, help="build directory with flasher_args.json (esp32s3: the ESP-IDF build; "
                                           "host/qemu: default the build of --model)")
    p.add_argument("--model", type=Path, default=None, help="host/qemu without --fw: the model to build")
    p.add_argument("--port", help="esp32s3: serial port or URL; host/qemu: an emulated ROM loader already serving "
                                  "(hil rom-loader), instead of one started here on --flash-image")
    p.add_argument("--flash-image", type=Path, help="host/qemu: the flash image file (default "
                                                    "<build cache>/flash/<target>-flash.bin)")
    p.add_argument("--baud", type=positive_int, default=DEFAULT_FLASH_BAUD, help="esptool baud rate (default 921600)")
    p.add_argument("--before", choices=_choices("before"), help="esptool --before (default: the build's, "
                                                                "default-reset)")
    p.add_argument("--after", choices=_choices("after"), help="esptool --after (default: the build's, hard-reset)")
    p.add_argument("--reflash", action="store_true", help="write every region, even those already in flash")
    p.add_argument("--erase-all", action="store_true", help="erase the whole flash first")
    p.add_argument("--no-stub", action="store_true", help="talk to the ROM loader only (no flasher stub)")
    p.add_argument("--merged", type=Path, help="where the merged image goes (default <build dir>/merged.bin)")
    p.add_argument("--no-boot", action="store_true", help="host/qemu: do not boot the target after flashing")
    p.add_argument("--timeout", type=positive_float, default=FLASH_TIMEOUT_S,
                   help="seconds esptool may take (default 180)")
    p.add_argument("--reply-timeout", type=positive_float, default=10.0, help="seconds to wait for HELLO after booting")
    p.set_defaults(func=cmd_flash)
    return p


def cmd_flash(args: argparse.Namespace) -> int:
    from hil.firmware.flashimage.flasher import Flasher, FlashSettings

    try:
        settings = FlashSettings(baud=args.baud, before=args.before, after=args.after, reflash=args.reflash,
                                 erase_all=args.erase_all, stub=False if args.no_stub else None,
                                 timeout_s=args.timeout)
    except ValueError as exc:
        print(f"hil flash: {exc}", file=sys.stderr)
        return EXIT_USAGE
    flasher = Flasher(args.target, settings, port=args.port, flash_image=args.flash_image,
                      model_dir=_model_dir(args.model) if args.model else None, build=args.fw, merged=args.merged)
    if not flasher.emulated and (args.port is None or args.fw is None):
        print(f"hil flash: the {args.target} target needs --port (the board's serial port) and --fw (its ESP-IDF "
              f"build directory)", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _port_lock(args.port if not flasher.emulated else None):
            build = flasher.build_dir()
            where = (f"the board on {args.port}" if not flasher.emulated else
                     f"flash image {flasher.image} via " + (args.port or "an emulated ESP32-S3 ROM loader"))
            print(f"hil flash {args.target}: {build} -> {where} at {settings.baud} baud", flush=True)
            result = flasher.flash(build)
    except (DeviceError, RuntimeError, OSError) as exc:  # esptool, the ROM loader, a busy port, a failed build
        print(f"hil flash: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    for region in result.regions:
        print(f"  {region.describe()}")
    print(result.summary())
    if result.loader_stats is not None:
        s = result.loader_stats
        print(f"emulated ROM loader: {s.flash_data_packets} FLASH_DATA packets, {s.bytes_written:,} bytes written")
    code = 0
    if flasher.emulated and not args.no_boot:
        if args.port is not None and args.flash_image is None:
            print(f"not booting {args.target}: the image behind {args.port} is unknown here; pass --flash-image FILE "
                  f"(the one that loader serves) to boot it")
        else:
            code = _boot(args.target, flasher.image, args.reply_timeout)
    print(f"merged image {result.merged_image} sha256 {result.merged_sha256}")
    return code


def _model_dir(model: Path) -> Path:
    from hil.model.artifacts import resolve_model

    return resolve_model(model).c_dir


def _port_lock(port: str | None) -> contextlib.AbstractContextManager[object]:
    if port is None:
        return contextlib.nullcontext()
    from hil.dut import acquire_port_lock

    return acquire_port_lock(port)


def _boot(target_name: str, image: Path, reply_timeout: float) -> int:
    """Boots the emulated target from `image` and compares its HELLO with the flashed app."""
    from hil.targets import get_target
    from hil.targets.base import TargetError

    try:
        target = get_target(target_name, flash_image=image)
        with target:
            client = target.open_client(timeout=reply_timeout)  # type: ignore[attr-defined]
            try:
                info = client.hello()
            finally:
                client.close()
    except (TargetError, OSError) as exc:
        print(f"hil flash: booting {target_name} from {image}: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    expected = target.expected_app  # type: ignore[attr-defined]
    problem = expected.mismatch(info, target_name)
    if problem:
        print(f"hil flash: {problem}", file=sys.stderr)
        return EXIT_MISMATCH
    print(f"booted {target_name} from {image}: HELLO build id {info.build_id!r}, model {info.model_name!r} sha256 "
          f"{info.model_sha256}: matches the flashed app")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hil.cli_flash flash ...`, until `hil flash` is registered in hil/cli.py."""
    parser = argparse.ArgumentParser(prog="hil")
    add_flash_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
