"""`hil rom-loader`: an emulated ESP32-S3 ROM serial loader that esptool can flash (hil/rom_loader/).

    hil rom-loader --flash-image flash.bin [--flash-size 8MB] [--listen 127.0.0.1:0 | --pty]

The first line on stdout is the serial URL to give esptool (socket://127.0.0.1:PORT or /dev/pts/N); it then
serves until SIGINT or SIGTERM, and prints what it did on stderr when it stops. Neither transport carries
DTR/RTS: esptool skips its reset on socket:// by itself, and on a pty its reset attempts fail harmlessly
(one warning); every new client finds the chip reset into the ROM loader.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from hil.errors import EXIT_DEVICE, EXIT_USAGE


def _listen_arg(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:0 (0: a free port)")
    return host.strip("[]") or "127.0.0.1", int(port)


def _flash_size_arg(text: str) -> int:
    from hil.rom_loader.flash import parse_flash_size

    try:
        return parse_flash_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_rom_loader_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "rom-loader",
        help="emulate an ESP32-S3 in its ROM serial loader for esptool (prints the serial URL first)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--flash-image", type=Path, required=True,
                   help="file holding the flash contents (created erased, all 0xFF, when missing)")
    p.add_argument("--flash-size", type=_flash_size_arg, default="8MB", metavar="{4MB,8MB,16MB}",
                   help="flash size; an existing image must have exactly this size (default 8MB)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--listen", type=_listen_arg, default=("127.0.0.1", 0), metavar="HOST:PORT",
                       help="TCP address for esptool --port socket://HOST:PORT (default 127.0.0.1:0, a free port)")
    where.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal (/dev/pts/N) instead")
    p.add_argument("--keep-state", action="store_true",
                   help="do not reset the chip into the ROM loader when a new client connects")
    p.add_argument("--no-pace", action="store_true",
                   help="move data at memory speed instead of at the UART's pace for the session's baud rate")
    p.set_defaults(func=cmd_rom_loader)
    return p


def cmd_rom_loader(args: argparse.Namespace) -> int:
    from hil.rom_loader import FlashImageError, RomLoader

    host, port = args.listen
    loader = RomLoader(args.flash_image, args.flash_size, transport="pty" if args.pty else "socket",
                       host=host, port=port, reset_on_connect=not args.keep_state,
                       pace_uart=not args.no_pace)
    try:
        url = loader.start()
    except FlashImageError as e:
        print(f"hil rom-loader: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"hil rom-loader: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return EXIT_DEVICE
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(url, flush=True)
        print(f"ESP32-S3 ROM loader: flash {args.flash_image} ({args.flash_size >> 20} MB); "
              f"stop with Ctrl-C or SIGTERM", file=sys.stderr, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        loader.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = loader.stats()
    print(f"hil rom-loader: {s.connections} connection(s), {sum(s.commands.values())} commands, "
          f"{s.bytes_written} bytes written, flasher stub started {s.stub_uploads} time(s)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hil.cli_rom_loader ...`, until `hil rom-loader` is registered in hil/cli.py."""
    parser = argparse.ArgumentParser(prog="hil")
    add_rom_loader_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
