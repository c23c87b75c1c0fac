"""The project's error kinds, one base class each, and the exit status `hil` gives for each (README "Exit codes").

Every error the project raises derives from one of these, so a caller can tell a mistyped option from a device
that stopped answering without parsing messages:

    UsageError       2   the command line, a configuration file or an input file is wrong: fix it and rerun
    DeviceError      3   the device, its link or its tools (flasher, emulator, firmware build) failed
    InstrumentError  4   the power analyzer or its VISA connection failed
    ServerError      5   the remote server (hil serve) refused, dropped or answered wrongly
    ModelError       6   a model, training run or export is missing, stale or inconsistent

Exit status 1 means the run completed and something failed its check (a test, a bit-exactness check, a
regression); 130 an interrupt; 70 an error of no kind, which is a bug in the project (rerun with -v for the
traceback and report it).

This module imports nothing from the project, so every layer can use it.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEVICE = 3
EXIT_INSTRUMENT = 4
EXIT_SERVER = 5
EXIT_MODEL = 6
EXIT_INTERNAL = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130


class HilError(Exception):
    """Base of every error the project raises on purpose. `kind` names it in messages; `exit_code` is `hil`'s."""

    kind = "internal"
    exit_code = EXIT_INTERNAL


class UsageError(HilError, ValueError):
    """Bad input from the user: an option, a configuration value, an input file. A ValueError, as before."""

    kind = "usage"
    exit_code = EXIT_USAGE


class DeviceError(HilError):
    """The device under test, its link, or the tools that build, flash and start it."""

    kind = "device"
    exit_code = EXIT_DEVICE


class InstrumentError(HilError):
    """A measuring instrument (power analyzer) or its connection."""

    kind = "instrument"
    exit_code = EXIT_INSTRUMENT


class ServerError(HilError):
    """The remote-inference server: unreachable, dropped the connection, timed out, or answered with an error."""

    kind = "server"
    exit_code = EXIT_SERVER


class ModelError(HilError):
    """A model directory, training run or export that is missing, stale or inconsistent."""

    kind = "model"
    exit_code = EXIT_MODEL


KINDS: tuple[type[HilError], ...] = (UsageError, DeviceError, InstrumentError, ServerError, ModelError)


def exit_code_for(exc: BaseException) -> int:
    """`hil`'s documented exit status for an error no command caught."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, HilError):
        return exc.exit_code
    return EXIT_INTERNAL


def error_line(exc: BaseException) -> str:
    """One line for a user: the kind and the message, or for an error of no kind its type (a bug)."""
    if isinstance(exc, HilError):
        return f"{exc.kind} error: {exc}"
    return f"internal error: {type(exc).__name__}: {exc} (a bug in hil: rerun with -v for the traceback)"


def kind_of(exc: BaseException) -> str:
    """The error's kind for messages: 'usage', 'device', ..., or 'internal' for an error of no kind."""
    return exc.kind if isinstance(exc, HilError) else "internal"
