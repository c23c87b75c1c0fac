"""A simulated Keysight N6705C (with an N6781A SMU) behind a SCPI socket on 127.0.0.1.

The same drivers that talk to a bench open it as `TCPIP0::127.0.0.1::<port>::SOCKET` through pyvisa-py, so CI runs
the real command sequence, binary block parsing, timeouts and error handling. pyvisa-sim cannot do this: it
matches fixed strings, keeps no acquisition state and sends no binary blocks.

What it speaks (short or long SCPI forms, any case):

    *IDN? *RST *CLS *OPC? *OPC *WAI *ESR? *STB? *TRG       SYST:ERR?  SYST:CHAN:MOD? (@n)  SYST:VERS?
    FORM[:DATA] ASC|REAL   FORM:BORD NORM|SWAP
    SENS:FUNC:CURR|VOLT ON|OFF,(@n)   SENS:CURR[:DC]:RANG[:UPP] <A>,(@n)   SENS:CURR:RANG:AUTO ON|OFF,(@n)
    SENS:SWE:TINT <s>,(@n)   SENS:SWE:TINT:RES RES20|RES40,(@n)   SENS:SWE:POIN <n>,(@n)
    SENS:SWE:OFFS:POIN <n>,(@n)      (and their queries, which take only the channel list)
    TRIG:ACQ:SOUR BUS|EXT|PIN<1-7>|CURR<1-4>|VOLT<1-4>|TRAN<1-4>,(@n) (level/transient sources: INIT:ACQ -221)
    TRIG:ACQ (@n)   INIT:ACQ (@n)   ABOR:ACQ (@n)
    FETC:ARR:CURR? (@n)   FETC:ARR:VOLT? (@n)   MEAS:ARR:CURR? (@n)   MEAS:CURR? (@n)   MEAS:VOLT? (@n)
    DIG:PIN<1-7>:FUNC <f>   DIG:PIN<1-7>:POL POS|NEG
    SENS:ELOG:FUNC:CURR|VOLT[:MINM] ON|OFF,(@n)   SENS:ELOG:PER <s>,(@n)   TRIG:ELOG:SOUR BUS|IMM,(@n)
    INIT:ELOG (@n)   TRIG:ELOG (@n)   FETC:ELOG? <records>,(@n)   ABOR:ELOG (@n)

State: an acquisition is armed by INIT:ACQ and triggered by *TRG / TRIG:ACQ (source BUS) or by the DUT's first
marker rising edge after INIT (source EXT or PIN<n>, the pin configured as trigger input). FETC answers once the
capture is complete: the DUT idles while the host waits, so the simulated time line is advanced to the capture's
end. Samples come from `DutActivity` (windows from the device's cycle counts) through `PowerModel` (ESP32-S3
datasheet currents), with noise from a fixed seed per acquisition.

Program messages (IEEE 488.2 section 7, SCPI-99 section 6.2), the common subset:
- A line is one program message; `;` separates its message units, which run in order, commands and queries mixed.
- All the replies of one message form ONE response message: the answers joined by `;`, one newline at the end
  (488.2 8.4.1), e.g. `*IDN?;*OPC?` -> `Keysight...,D.03.05-hil-sim;1`. A message without a successful query sends
  nothing. A query that fails leaves its answer out (its error is in the queue); the others still answer.
- Header paths: a leading `:` starts at the root, and so does the first unit of every message. After `;` a header
  without a leading colon continues at the path of the previous header (its nodes minus the last), as the N6705
  guide describes: `SENS:SWE:TINT 1e-4,(@1);POIN 100,(@1)` sets SENS:SWE:POIN, while
  `SENS:SWE:POIN? (@1);SENS:SWE:TINT? (@1)` asks for SENS:SWE:SENS:SWE:TINT, an undefined header (-113); write
  `;:SENS:SWE:TINT? (@1)` for a new root. Common commands (`*...`) neither need nor change the path. Optional nodes
  count only where they were sent (`FORM REAL;BORD NORM` is -113, `FORM:DATA REAL;BORD NORM` is FORM:BORD).
- Parameters follow the header after white space and are separated by commas; more of them than the command takes
  is -108, and a second token without a comma (`MEAS:CURR? (@1) extra`) is -103 (see `_check_params`).
- Not modelled: suffix units (`1 mA`), `MIN|MAX` in queries, `*OPC` status bits, -4xx query errors.

Errors go to the SCPI error queue (-113 undefined header, -222 data out of range, -211 trigger ignored, ...); a
query that fails gets no reply, as on the instrument, and the client's timeout plus SYST:ERR? says why. One
sim-only courtesy: FETC of an acquisition that can never complete (never triggered) queues -230 instead of hanging.

Bounded: lines up to 64 KiB, 512 Ki points per acquisition, 30 queued errors, 4 clients; every socket operation
has a timeout, and stop() joins every thread.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hil.instruments.simulated.dut_activity import DutActivity
from hil.instruments.simulated.power_model import ESP32S3_240MHZ, PowerModel

log = logging.getLogger("hil.instruments.sim")

MAX_POINTS = 524_288
TINT_GRID_S = 5.12e-6  # the digitizer's finest step (N678xA, one function); coarser steps are multiples
TINT_MAX_S = 40_000.0
CURRENT_RANGES_A = (10e-6, 1e-3, 0.1, 3.06)  # N6781A measurement ranges
ELOG_PERIOD_MIN_S = 102.4e-6
ELOG_PERIOD_MAX_S = 60.0
ELOG_MAX_RECORDS_PER_FETCH = 1_000_000
MAX_ERRORS = 30
MAX_LINE = 64 * 1024
CHANNELS = (1, 2, 3, 4)
PINS = range(1, 8)
PIN_FUNCTIONS = ("DIO", "DINP", "TOUT", "TINP", "FAUL", "INH", "ONC", "OFFC")


class ScpiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code},\"{message}\"")
        self.code = code
        self.message = message


def _undefined() -> ScpiError:
    return ScpiError(-113, "Undefined header")


# ---------------------------------------------------------------------------------------------- SCPI parsing


def compile_header(spec: str) -> re.Pattern[str]:
    """'SENSe:CURRent[:DC]:RANGe[:UPPer]' -> a regex accepting SENS or SENSE, CURR or CURRENT, ..., optional
    nodes, an optional leading colon, any case. 'PIN#' takes a numeric suffix (captured)."""
    if spec.startswith("*"):
        return re.compile(re.escape(spec) + "$", re.IGNORECASE)
    regex = "^:?"
    first = True
    for optional, node in re.findall(r"(\[:)?([A-Za-z#]+)\]?", spec):
        numbered = node.endswith("#")
        node = node.rstrip("#")
        short = "".join(c for c in node if c.isupper()) or node.upper()
        alt = f"(?:{node.upper()}|{short})" if short != node.upper() else node.upper()
        if numbered:
            alt += r"(\d*)"
        piece = alt if first else ":" + alt
        regex += f"(?:{piece})?" if optional else piece
        first = False
    return re.compile(regex + "$", re.IGNORECASE)


def split_top(text: str, sep: str) -> list[str]:
    """Splits on `sep` outside quotes and parentheses."""
    parts, depth, quote, cur = [], 0, "", []
    for c in text:
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(c)
    parts.append("".join(cur))
    return parts


def parse_channels(arg: str) -> list[int]:
    """'(@1)', '(@1,3)', '(@1:3)' -> channel numbers."""
    m = re.fullmatch(r"\(\s*@([\d,:\s]+)\)", arg.strip())
    if not m:
        raise ScpiError(-104, "Data type error; expected a channel list like (@1)")
    channels: list[int] = []
    for part in m.group(1).split(","):
        lo, _, hi = part.strip().partition(":")
        channels.extend(range(int(lo), int(hi or lo) + 1))
    for ch in channels:
        if ch not in CHANNELS:
            raise ScpiError(-222, f"Data out of range; no channel {ch}")
    return channels


def parse_bool(arg: str) -> bool:
    value = arg.strip().upper()
    if value in ("ON", "1"):
        return True
    if value in ("OFF", "0"):
        return False
    raise ScpiError(-224, "Illegal parameter value")


def parse_number(arg: str, lo: float, hi: float) -> float:
    value = arg.strip().upper()
    if value in ("MIN", "MINIMUM"):
        return lo
    if value in ("MAX", "MAXIMUM"):
        return hi
    try:
        number = float(value)
    except ValueError:
        raise ScpiError(-104, "Data type error") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise ScpiError(-222, "Data out of range")
    return number


def ieee_block(payload: bytes) -> bytes:
    """IEEE 488.2 definite-length block: #<digits of length><length><payload>."""
    length = str(len(payload))
    return f"#{len(length)}{length}".encode() + payload


def _check_params(args: list[str], limit: int) -> None:
    """Trailing junk after a header's parameters is a command error (-100 class), reported as a 488.2 parser
    meets it, left to right; the unit does not run, so a query sends no answer.
    - A parameter beyond the `limit` the command takes (`*IDN? junk`, `MEAS:CURR? (@1),2`): -108 "Parameter not
      allowed", which the 488.2/SCPI error list defines as "more parameters were received than expected for the
      header". Not -113: the header is defined, and the white space after it starts the parameter list.
    - A complete parameter followed by white space and more text without a comma (`MEAS:CURR? (@1) extra`): -103
      "Invalid separator", "the parser was expecting a separator and encountered an illegal character": after a
      parameter only `,`, `;` or the terminator may follow."""
    for i, arg in enumerate(args):
        if i >= limit:
            raise ScpiError(-108, "Parameter not allowed")
        if len([t for t in split_top(arg.replace("\t", " "), " ") if t]) > 1:
            raise ScpiError(-103, "Invalid separator")


# ---------------------------------------------------------------------------------------------- instrument state


@dataclass
class Acquisition:
    number: int
    armed_at: float
    source: str
    trigger_at: float | None = None
    data: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Elog:
    curr: bool = True
    volt: bool = True
    curr_minmax: bool = False
    volt_minmax: bool = False
    period_s: float = 0.1
    source: str = "IMM"
    state: str = "idle"  # idle | initiated | running | stopped
    start_s: float = 0.0
    end_s: float = 0.0
    consumed: int = 0
    number: int = 0


@dataclass
class Channel:
    curr_on: bool = True
    volt_on: bool = True
    curr_range_a: float = CURRENT_RANGES_A[-1]
    curr_auto: bool = False
    tint_s: float = 20.48e-6
    tint_resolution: str = "RES20"  # SENS:SWE:TINT:RES (the sim's assumption for the *RST value)
    points: int = 1024
    offset: int = 0
    trig_source: str = "BUS"
    acq: Acquisition | None = None
    elog: Elog = field(default_factory=Elog)


Handler = Callable[[list[str], list[int]], "str | bytes | None"]


class SimulatedN6705C:
    """The instrument behind the socket: SCPI in, replies out. Usable without a socket (tests call
    `execute_line`)."""

    model = "N6705C"
    module = "N6781A"

    def __init__(
        self,
        activity: DutActivity | None = None,
        power_model: PowerModel = ESP32S3_240MHZ,
        *,
        seed: int = 0,
        dut_channel: int = 1,
        serial: str = "SIM0000001",
    ) -> None:
        self.activity = activity if activity is not None else DutActivity()
        self.power_model = power_model
        self.seed = seed
        self.dut_channel = dut_channel
        self.serial = serial
        self.lock = threading.RLock()
        self.errors: deque[str] = deque()
        self.commands_seen = 0
        self._acq_counter = 0
        self._commands: list[tuple[re.Pattern[str], bool, int, Handler]] = []
        self._register()
        self.reset()

    # ---- public ----

    def execute_line(self, line: str) -> list[bytes]:
        """Runs every message unit of one program message (one line) in order; returns the response message units
        of its queries (one per query that succeeded). `respond` joins them into the one response message."""
        replies: list[bytes] = []
        with self.lock:
            previous: list[str] = []
            for raw in split_top(line.strip(), ";"):
                command = raw.strip()
                if not command:
                    continue
                # The header ends at the first white space (488.2 7.4.1: <PROGRAM HEADER SEPARATOR>).
                header, _, rest = command.replace("\t", " ").partition(" ")
                # SCPI relative paths: "SENS:SWE:TINT 1e-5;POIN 100" -> the second is SENS:SWE:POIN.
                if not header.startswith((":", "*")) and len(previous) > 1:
                    header = ":".join(previous[:-1] + [header])
                if not header.startswith("*"):
                    previous = header.lstrip(":").rstrip("?").split(":")
                self.commands_seen += 1
                try:
                    reply = self._dispatch(header, rest)
                except ScpiError as exc:
                    self.push_error(exc.code, exc.message)
                    log.debug("sim %s: %r -> error %s", self.model, command, exc)
                    continue
                if reply is not None:
                    replies.append(reply.encode() if isinstance(reply, str) else reply)
        return replies

    def respond(self, line: str) -> bytes | None:
        """The response message to one program message: its queries' answers joined by `;`, one terminator
        (IEEE 488.2 8.4.1), or None when it holds no query that succeeded."""
        units = self.execute_line(line)
        return b";".join(units) + b"\n" if units else None

    def push_error(self, code: int, message: str) -> None:
        with self.lock:
            if len(self.errors) >= MAX_ERRORS:
                self.errors[-1] = '-350,"Queue overflow"'
                return
            self.errors.append(f'{code},"{message}"')

    def reset(self) -> None:
        with self.lock:
            self.channels = {ch: Channel() for ch in CHANNELS}
            self.form_real = False
            self.byte_order_swapped = False
            self.pins = {pin: ("DIO", "POS") for pin in PINS}

    # ---- dispatch ----

    def _dispatch(self, header: str, rest: str) -> str | bytes | None:
        is_query = header.endswith("?")
        name = header[:-1] if is_query else header
        args = [a.strip() for a in split_top(rest, ",")] if rest.strip() else []
        for pattern, query, params, handler in self._commands:
            if query != is_query:
                continue
            m = pattern.match(name)
            if m:
                _check_params(args, params)
                suffixes = [int(g) if g else 1 for g in m.groups()]
                return handler(args, suffixes)
        raise _undefined()

    def _on(self, specs: str, query: bool, handler: Handler, params: int | None = None) -> None:
        """Registers `handler` for each header in `specs`. `params`: how many parameters the command takes at
        most; by default none for common commands (`*IDN?`) and one, the channel list, for the others."""
        for spec in specs.split("|"):
            limit = params if params is not None else (0 if spec.startswith("*") else 1)
            self._commands.append((compile_header(spec), query, limit, handler))

    def _register(self) -> None:
        on = self._on
        on("*IDN", True, lambda a, s: f"Keysight Technologies,{self.model},{self.serial},D.03.05-hil-sim")
        on("*RST", False, lambda a, s: self.reset())
        on("*CLS", False, lambda a, s: self.errors.clear())
        on("*OPC", True, lambda a, s: "1")
        on("*OPC|*WAI", False, lambda a, s: None)
        on("*ESR", True, lambda a, s: "0")
        on("*STB", True, lambda a, s: "4" if self.errors else "0")  # bit 2: error/event queue not empty
        on("*TRG", False, self._bus_trigger)
        on("SYSTem:ERRor[:NEXT]", True, lambda a, s: self.errors.popleft() if self.errors else '+0,"No error"',
           params=0)
        on("SYSTem:VERSion", True, lambda a, s: "1999.0", params=0)
        on("SYSTem:CHANnel:MODel", True, lambda a, s: ",".join(self.module for _ in self._chans(a)))
        on("FORMat[:DATA]", False, self._set_format, params=2)
        on("FORMat[:DATA]", True, lambda a, s: "REAL,32" if self.form_real else "ASC,7", params=0)
        on("FORMat:BORDer", False, self._set_border)
        on("FORMat:BORDer", True, lambda a, s: "SWAP" if self.byte_order_swapped else "NORM", params=0)
        # digitizer setup: <value>,(@chanlist) to set, (@chanlist) to query
        setting = self._setting
        setting("SENSe:FUNCtion:CURRent", lambda c, v: setattr(c, "curr_on", parse_bool(v)),
                lambda c: str(int(c.curr_on)))
        setting("SENSe:FUNCtion:VOLTage", lambda c, v: setattr(c, "volt_on", parse_bool(v)),
                lambda c: str(int(c.volt_on)))
        setting("SENSe:CURRent[:DC]:RANGe[:UPPer]", self._set_range, lambda c: f"{c.curr_range_a:+.6E}")
        setting("SENSe:CURRent[:DC]:RANGe:AUTO", lambda c, v: setattr(c, "curr_auto", parse_bool(v)),
                lambda c: str(int(c.curr_auto)))
        setting("SENSe:SWEep:TINTerval", self._set_tint, lambda c: f"{c.tint_s:+.6E}")
        setting("SENSe:SWEep:TINTerval:RESolution", self._set_tint_resolution, lambda c: c.tint_resolution)
        setting("SENSe:SWEep:POINts", self._set_points, lambda c: f"{c.points:+d}")
        setting("SENSe:SWEep:OFFSet:POINts", self._set_offset, lambda c: f"{c.offset:+d}")
        setting("TRIGger:ACQuire:SOURce", self._set_trig_source, lambda c: c.trig_source)
        on("TRIGger:ACQuire[:IMMediate]", False, self._immediate_trigger)
        on("INITiate[:IMMediate]:ACQuire", False, self._init_acq)
        on("ABORt:ACQuire", False, self._abort_acq)
        on("FETCh[:SCALar]:ARRay:CURRent[:DC]", True, lambda a, s: self._fetch_array(a, "current"))
        on("FETCh[:SCALar]:ARRay:VOLTage[:DC]", True, lambda a, s: self._fetch_array(a, "voltage"))
        on("MEASure[:SCALar]:ARRay:CURRent[:DC]", True, lambda a, s: self._measure_array(a, "current"))
        on("MEASure[:SCALar]:ARRay:VOLTage[:DC]", True, lambda a, s: self._measure_array(a, "voltage"))
        on("MEASure[:SCALar]:CURRent[:DC]", True, lambda a, s: self._measure_scalar(a, "current"))
        on("MEASure[:SCALar]:VOLTage[:DC]", True, lambda a, s: self._measure_scalar(a, "voltage"))
        on("DIGital:PIN#:FUNCtion|SOURce:DIGital:PIN#:FUNCtion", False, self._set_pin_function)
        on("DIGital:PIN#:FUNCtion|SOURce:DIGital:PIN#:FUNCtion", True, lambda a, s: self._pin(s)[0], params=0)
        on("DIGital:PIN#:POLarity|SOURce:DIGital:PIN#:POLarity", False, self._set_pin_polarity)
        on("DIGital:PIN#:POLarity|SOURce:DIGital:PIN#:POLarity", True, lambda a, s: self._pin(s)[1], params=0)
        # data logger
        setting("SENSe:ELOG:FUNCtion:CURRent", lambda c, v: setattr(c.elog, "curr", parse_bool(v)))
        setting("SENSe:ELOG:FUNCtion:VOLTage", lambda c, v: setattr(c.elog, "volt", parse_bool(v)))
        setting("SENSe:ELOG:FUNCtion:CURRent:MINMax", lambda c, v: setattr(c.elog, "curr_minmax", parse_bool(v)))
        setting("SENSe:ELOG:FUNCtion:VOLTage:MINMax", lambda c, v: setattr(c.elog, "volt_minmax", parse_bool(v)))
        setting("SENSe:ELOG:PERiod", self._set_elog_period, lambda c: f"{c.elog.period_s:+.6E}")
        setting("TRIGger:ELOG:SOURce", self._set_elog_source, lambda c: c.elog.source)
        on("INITiate[:IMMediate]:ELOG", False, self._init_elog)
        on("TRIGger:ELOG[:IMMediate]", False, self._trigger_elog)
        on("FETCh:ELOG", True, self._fetch_elog, params=2)
        on("ABORt:ELOG", False, self._abort_elog)

    # ---- argument helpers ----

    def _chans(self, args: list[str]) -> list[int]:
        """The channel list argument, by default (@1)."""
        for arg in args:
            if arg.startswith("("):
                return parse_channels(arg)
        return [1]

    @staticmethod
    def _value_args(args: list[str]) -> list[str]:
        return [a for a in args if not a.startswith("(")]

    def _setting(self, spec: str, apply: Callable[[Channel, str], None],
                 read: Callable[[Channel], str] | None = None) -> None:
        """A per-channel setting: `<header> <value>,(@n)` sets it and, given `read`, `<header>? (@n)` reads it."""
        self._on(spec, False, self._setter(apply), params=2)
        if read is not None:
            self._on(spec, True, self._getter(read))

    def _setter(self, apply: Callable[[Channel, str], None]) -> Handler:
        def handler(args: list[str], _s: list[int]) -> None:
            values = self._value_args(args)
            if len(values) != 1:
                raise ScpiError(-109 if not values else -108, "Missing parameter" if not values
                                else "Parameter not allowed")
            for ch in self._chans(args):
                apply(self.channels[ch], values[0])

        return handler

    def _getter(self, read: Callable[[Channel], str]) -> Handler:
        return lambda args, _s: ",".join(read(self.channels[ch]) for ch in self._chans(args))

    def _one_channel(self, args: list[str]) -> tuple[int, Channel]:
        chans = self._chans(args)
        if len(chans) != 1:
            raise ScpiError(-221, "Settings conflict; one channel per acquisition in this simulation")
        return chans[0], self.channels[chans[0]]

    # ---- setters ----

    def _set_format(self, args: list[str], _s: list[int]) -> None:
        if not args:
            raise ScpiError(-109, "Missing parameter")
        kind = args[0].upper()
        if kind in ("ASC", "ASCII", "ASCI"):
            self.form_real = False
        elif kind == "REAL" and (len(args) == 1 or args[1] == "32"):
            self.form_real = True
        else:
            raise ScpiError(-224, "Illegal parameter value")

    def _set_border(self, args: list[str], _s: list[int]) -> None:
        kind = args[0].upper() if args else ""
        if kind in ("NORM", "NORMAL"):
            self.byte_order_swapped = False
        elif kind in ("SWAP", "SWAPPED"):
            self.byte_order_swapped = True
        else:
            raise ScpiError(-224, "Illegal parameter value")

    @staticmethod
    def _set_range(c: Channel, v: str) -> None:
        wanted = parse_number(v, 0.0, CURRENT_RANGES_A[-1])
        # SCPI range semantics: the lowest range that can measure the value given.
        c.curr_range_a = next(r for r in CURRENT_RANGES_A if r >= wanted * (1 - 1e-9))
        c.curr_auto = False

    @staticmethod
    def _set_tint(c: Channel, v: str) -> None:
        wanted = parse_number(v, TINT_GRID_S, TINT_MAX_S)
        # N6705C user's guide, "time interval": 5.12 us steps below 10.24 us (N678xA), 10.24 us steps up to
        # 20.48 us, then 20.48 us steps (RES20) or, above 40.96 us, 40.96 us steps (RES40).
        if wanted < 2 * TINT_GRID_S:
            step = TINT_GRID_S
        elif wanted <= 4 * TINT_GRID_S:
            step = 2 * TINT_GRID_S
        elif c.tint_resolution == "RES20" or wanted <= 8 * TINT_GRID_S:
            step = 4 * TINT_GRID_S
        else:
            step = 8 * TINT_GRID_S
        minimum = TINT_GRID_S * (2 if c.curr_on and c.volt_on else 1)  # two functions share the converter
        c.tint_s = max(minimum, round(wanted / step) * step)

    @staticmethod
    def _set_tint_resolution(c: Channel, v: str) -> None:
        resolution = v.strip().upper()
        if resolution not in ("RES20", "RES40"):
            raise ScpiError(-224, "Illegal parameter value")
        c.tint_resolution = resolution

    @staticmethod
    def _set_points(c: Channel, v: str) -> None:
        c.points = int(parse_number(v, 1, MAX_POINTS))
        c.offset = max(c.offset, -(c.points - 1))

    @staticmethod
    def _set_offset(c: Channel, v: str) -> None:
        c.offset = int(parse_number(v, -(c.points - 1), 2e9))

    @staticmethod
    def _set_trig_source(c: Channel, v: str) -> None:
        """BUS | EXTernal | PIN<1-7> | CURRent<1-4> | VOLTage<1-4> | TRANsient<1-4>, as in the programming guide;
        the query answers the short form."""
        source = v.strip().upper()
        m = re.fullmatch(r"(CURR|CURRENT|VOLT|VOLTAGE|TRAN|TRANSIENT)([1-4])", source)
        if source in ("BUS", "EXT", "EXTERNAL") or re.fullmatch(r"PIN[1-7]", source):
            c.trig_source = "EXT" if source.startswith("EXT") else source
        elif m:
            c.trig_source = m.group(1)[:4] + m.group(2)
        else:
            raise ScpiError(-224, "Illegal parameter value")

    def _pin(self, suffixes: list[int]) -> tuple[str, str]:
        if not suffixes or suffixes[0] not in PINS:
            raise _undefined()
        return self.pins[suffixes[0]]

    def _set_pin_function(self, args: list[str], s: list[int]) -> None:
        function, polarity = self._pin(s)
        wanted = (args[0].upper() if args else "")[:4]
        if wanted not in PIN_FUNCTIONS:
            raise ScpiError(-224, "Illegal parameter value")
        self.pins[s[0]] = (wanted, polarity)

    def _set_pin_polarity(self, args: list[str], s: list[int]) -> None:
        function, _ = self._pin(s)
        wanted = (args[0].upper() if args else "")[:3]
        if wanted not in ("POS", "NEG"):
            raise ScpiError(-224, "Illegal parameter value")
        self.pins[s[0]] = (function, wanted)

    @staticmethod
    def _set_elog_period(c: Channel, v: str) -> None:
        c.elog.period_s = parse_number(v, ELOG_PERIOD_MIN_S, ELOG_PERIOD_MAX_S)

    @staticmethod
    def _set_elog_source(c: Channel, v: str) -> None:
        source = v.strip().upper()
        if source not in ("BUS", "IMM", "IMMEDIATE"):
            raise ScpiError(-224, "Illegal parameter value; this simulation logs on BUS or IMM")
        c.elog.source = source[:3]

    # ---- digitizer ----

    def _init_acq(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            c = self.channels[ch]
            if c.acq is not None and c.acq.data is None:
                raise ScpiError(-213, "Init ignored; acquisition already initiated")
            if c.trig_source[:4] in ("CURR", "VOLT", "TRAN"):
                raise ScpiError(-221, f"Settings conflict; trigger source {c.trig_source} is not simulated (sim)")
            if c.trig_source.startswith("PIN"):
                pin = int(c.trig_source[3:])
                if self.pins[pin][0] != "TINP":
                    raise ScpiError(-221, f"Settings conflict; digital pin {pin} is not a trigger input")
            self._acq_counter += 1
            c.acq = Acquisition(self._acq_counter, self.activity.now(), c.trig_source)

    def _abort_acq(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            self.channels[ch].acq = None

    def _bus_trigger(self, _a: list[str], _s: list[int]) -> None:
        fired = False
        for c in self.channels.values():
            if c.acq is not None and c.acq.trigger_at is None and c.acq.source == "BUS":
                c.acq.trigger_at = self.activity.now()
                fired = True
            if c.elog.state == "initiated" and c.elog.source == "BUS":
                self._start_elog(c)
                fired = True
        if not fired:
            raise ScpiError(-211, "Trigger ignored")

    def _immediate_trigger(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            acq = self.channels[ch].acq
            if acq is None or acq.trigger_at is not None:
                raise ScpiError(-211, "Trigger ignored")
            acq.trigger_at = self.activity.now()

    def _capture(self, ch: int, c: Channel) -> tuple[np.ndarray, np.ndarray]:
        acq = c.acq
        if acq is None:
            raise ScpiError(-230, "Data corrupt or stale; no acquisition initiated")
        if acq.data is not None:
            return acq.data
        if acq.trigger_at is None:
            if acq.source == "BUS":
                raise ScpiError(-230, "Data corrupt or stale; acquisition waits for *TRG (sim)")
            rise = self.activity.first_rise_at_or_after(acq.armed_at)
            if rise is None:
                raise ScpiError(-230, "Data corrupt or stale; no marker edge since INIT, never triggered (sim)")
            acq.trigger_at = rise
        t_first = acq.trigger_at + c.offset * c.tint_s
        # The host is blocked in FETC and the DUT only works when asked: it idles until the capture is full.
        self.activity.advance_to(t_first + c.points * c.tint_s)
        rng = np.random.default_rng([self.seed, acq.number])
        if ch == self.dut_channel:
            duty = self.activity.duty(t_first, c.tint_s, c.points)
            current, voltage = self.power_model.render(duty, rng)
        else:
            current, voltage = np.zeros(c.points), np.zeros(c.points)
        if not c.curr_auto:  # a fixed range saturates
            current = np.clip(current, -c.curr_range_a * 1.02, c.curr_range_a * 1.02)
        acq.data = (current, voltage)
        return acq.data

    def _fetch_array(self, args: list[str], what: str) -> bytes:
        ch, c = self._one_channel(args)
        if (what == "current" and not c.curr_on) or (what == "voltage" and not c.volt_on):
            raise ScpiError(-221, f"Settings conflict; {what} was not digitized (SENS:FUNC)")
        current, voltage = self._capture(ch, c)
        return self._encode(current if what == "current" else voltage)

    def _measure_array(self, args: list[str], what: str) -> bytes:
        ch, c = self._one_channel(args)
        c.acq = None
        self._init_acq([f"(@{ch})"], [])
        assert c.acq is not None
        c.acq.trigger_at = self.activity.now()
        return self._fetch_array(args, what)

    def _measure_scalar(self, args: list[str], what: str) -> str:
        ch, c = self._one_channel(args)
        self._acq_counter += 1
        rng = np.random.default_rng([self.seed, self._acq_counter])
        n = 1024
        t_first = self.activity.now() - n * c.tint_s
        if ch != self.dut_channel:
            return "+0.000000E+00"
        current, voltage = self.power_model.render(self.activity.duty(t_first, c.tint_s, n), rng)
        return f"{float((current if what == 'current' else voltage).mean()):+.6E}"

    def _encode(self, values: np.ndarray) -> bytes:
        if self.form_real:
            order = "<" if self.byte_order_swapped else ">"
            return ieee_block(np.asarray(values, dtype=f"{order}f4").tobytes())
        return ",".join(f"{v:+.5E}" for v in values).encode()

    # ---- data logger ----

    def _init_elog(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            c = self.channels[ch]
            if c.elog.state in ("initiated", "running"):
                raise ScpiError(-213, "Init ignored; data log already running")
            if not (c.elog.curr or c.elog.volt):
                raise ScpiError(-221, "Settings conflict; no data log function enabled")
            c.elog.state = "initiated"
            if c.elog.source == "IMM":
                self._start_elog(c)

    def _start_elog(self, c: Channel) -> None:
        c.elog.state = "running"
        c.elog.start_s = self.activity.now()
        c.elog.consumed = 0
        self._acq_counter += 1
        c.elog.number = self._acq_counter

    def _trigger_elog(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            c = self.channels[ch]
            if c.elog.state != "initiated":
                raise ScpiError(-211, "Trigger ignored")
            self._start_elog(c)

    def _abort_elog(self, args: list[str], _s: list[int]) -> None:
        for ch in self._chans(args):
            e = self.channels[ch].elog
            if e.state == "running":
                e.state, e.end_s = "stopped", self.activity.now()
            elif e.state == "initiated":
                e.state = "idle"

    def _fetch_elog(self, args: list[str], _s: list[int]) -> bytes:
        values = self._value_args(args)
        if len(values) != 1:
            raise ScpiError(-109, "Missing parameter")
        wanted = int(parse_number(values[0], 1, ELOG_MAX_RECORDS_PER_FETCH))
        ch, c = self._one_channel(args)
        e = c.elog
        if e.state not in ("running", "stopped"):
            raise ScpiError(-230, "Data corrupt or stale; data log not running")
        end = e.end_s if e.state == "stopped" else self.activity.now()
        available = int((end - e.start_s) / e.period_s + 1e-9) - e.consumed
        k = max(0, min(wanted, available))
        if k == 0:
            return self._encode(np.zeros(0))
        t_first = e.start_s + (e.consumed + 0.5) * e.period_s
        rng = np.random.default_rng([self.seed, e.number, e.consumed])
        if ch == self.dut_channel:
            duty = self.activity.duty(t_first, e.period_s, k)
            # Each record averages period/grid internal samples, which shrinks the noise.
            current, voltage = self.power_model.render(duty, rng, noise_scale=math.sqrt(TINT_GRID_S / e.period_s))
        else:
            duty, current, voltage = np.zeros(k), np.zeros(k), np.zeros(k)
        m = self.power_model
        columns: list[np.ndarray] = []
        if e.curr:
            columns.append(current)
            if e.curr_minmax:
                columns += [np.where(duty < 1, m.idle_a, m.active_a), np.where(duty > 0, m.active_a, m.idle_a)]
        if e.volt:
            columns.append(voltage)
            if e.volt_minmax:
                columns += [voltage - 3 * m.voltage_noise_v, voltage + 3 * m.voltage_noise_v]
        e.consumed += k
        return self._encode(np.column_stack(columns).reshape(-1))


# ---------------------------------------------------------------------------------------------- TCP server

POLL_S = 0.05  # how often a blocked read or the accept loop looks at the stop flag


class _Handler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        owner = self.server.owner
        sock: socket.socket = self.request
        sock.settimeout(POLL_S)
        buffer = bytearray()
        discarding = False  # inside an over-long line: drop bytes up to its newline
        while not owner.stopping.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    if len(buffer) > MAX_LINE:
                        owner.instrument.push_error(-223, "Too much data")
                        buffer.clear()
                        discarding = True
                    break
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if discarding or len(line) > MAX_LINE:
                    if not discarding:
                        owner.instrument.push_error(-223, "Too much data")
                    discarding = False
                    continue
                # One program message in, at most one response message out (all its answers, `;`-joined).
                response = owner.instrument.respond(line.decode("ascii", errors="replace"))
                if response is None:
                    continue
                try:
                    sock.settimeout(owner.io_timeout_s)
                    sock.sendall(response)
                except OSError:
                    return
                finally:
                    sock.settimeout(POLL_S)


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    # Daemon threads, so a test that forgets stop() cannot keep the interpreter alive; stop() still waits for
    # every connection to finish (they poll the stop flag every POLL_S).
    daemon_threads = True
    owner: ScpiServer

    def verify_request(self, request: object, client_address: object) -> bool:
        with self.owner.clients_lock:
            if len(self.owner.clients) >= self.owner.max_clients:
                log.warning("simulated %s: refusing a connection beyond %d", self.owner.instrument.model,
                            self.owner.max_clients)
                return False
            self.owner.clients.add(id(request))
        return True

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self.owner.clients_lock:
            self.owner.clients.discard(id(request))
        super().shutdown_request(request)


class ScpiServer:
    """Serves one simulated instrument on 127.0.0.1:<port> (0: any free port). Use as a context manager."""

    def __init__(
        self,
        instrument: SimulatedN6705C,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_clients: int = 4,
        io_timeout_s: float = 10.0,
    ) -> None:
        self.instrument = instrument
        self.max_clients = max_clients
        self.io_timeout_s = io_timeout_s
        self.stopping = threading.Event()
        self.clients: set[int] = set()
        self.clients_lock = threading.Lock()
        self._server = _TcpServer((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def resource_name(self) -> str:
        host, port = self.address
        return f"TCPIP0::{host}::{port}::SOCKET"

    def start(self) -> ScpiServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": POLL_S},
                                        name=f"sim-{self.instrument.model}-{self.address[1]}", daemon=True)
        self._thread.start()
        log.info("simulated %s listening at %s", self.instrument.model, self.resource_name)
        return self

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5.0)
        self._server.server_close()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # connections notice the flag within POLL_S
            with self.clients_lock:
                if not self.clients:
                    return
            time.sleep(POLL_S / 4)
        log.warning("simulated %s: connections still open after stop()", self.instrument.model)

    def __enter__(self) -> ScpiServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
