"""The soak: many inferences over a link with injected faults (hil.transport.faults), every accepted result
compared with a clean reference, every outcome handed to the caller (who journals it) as soon as it is known.

    faults = Faults("flip=0.01,drop=0.001,reset=0.0001,seed=1")
    dut = open_dut(model, DutOptions(target="host", faults=faults))
    pool = input_pool(dut.info.inputs, 32, seed=0)
    reference = clean_reference(dut, pool, faults)          # the same device, faults paused
    result = Soak(dut, reference, pool, SoakOptions(inferences=10_000), faults).run(on_outcome=journal)
    print(result.summary_line())    # soak 10000 done, 0 wrong, 0 lost, 412 retries, 3 restarts

Words, as the summary uses them:
* accepted: the client returned a result without an error (its CRCs held, its reply had the request's seq);
* wrong: accepted, but its outputs' CRC-32s differ from the reference's for that input;
* lost: no attempt of the inference was accepted within `attempts` whole attempts (each with the client's own
  resends of single frames);
* retries: frames the client sent again (timeouts, corrupt replies, ERROR BAD_CRC) plus whole inferences done
  again after the client gave up on one;
* restarts: the device restarted by the soak (Dut.restart), after it died (a reset fault kills an emulated
  device), crashed, or failed `restart_after` attempts in a row.

An attempt always carries the whole inference (its inputs and the run): a device that restarted lost the inputs
it was given, and a model that overwrites its inputs (model.json input_preserved false) needs them again anyway.
Inputs travel inside INFER_DIGEST while one frame of them gets through often enough; at higher byte fault rates
they go ahead in LOAD_INPUT chunks small enough that one survives about every other time (`chunk_for`), each
resent up to CHUNKED_RESENDS times. Either way a link that garbles a good share of the bytes costs many frames per
inference: the synthetic model's 27,648-byte input at 1.2% of bytes faulted is 1,317 chunks of 21 bytes, and
about a sixth of its frames are lost outright (a faulted header, a dropped byte) and cost a reply wait each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hil.errors import DeviceError, UsageError
from hil.transport.client import INPUT_CONSUMED_MESSAGE, DeviceCrashed
from hil.transport.faults import FaultCounts, Faults
from hil.transport.frame import (
    LOAD_HEADER_SIZE,
    OVERHEAD,
    ErrorCode,
    FrameType,
    ProtocolError,
    TensorSpec,
    parse_digest_reply,
    tensor_digest,
)

if TYPE_CHECKING:
    from hil.dut import Dut

log = logging.getLogger("hil.soak")

REFERENCE_SCHEMA = "hil-soak-reference/1"
REFERENCE_NAME = "soak-reference.json"
DIGEST_REPLY_FIXED = 20  # INFER_DIGEST reply payload before its CRC-32s (PROTOCOL.md "INFER_DIGEST result")
LOAD_REPLY_PAYLOAD = 9  # LOAD_INPUT reply: u8 index, u32 offset, u32 bytes written
MIN_CHUNK = 16
# Inputs stay inside INFER_DIGEST while request and reply together get through at least this often.
INLINE_MIN_SUCCESS = 0.25
# The reply wait of a first attempt, unless given: this many times the median of ECHO_PROBES clean round trips of
# a small frame, at least MIN_REPLY_S. A lost frame costs one wait, so it is kept short (the host device answers in
# about 1 ms); a wait that was too short costs one resend, whose duplicate reply the client discards by its seq,
# and the backoff below. The median, not the maximum: one hiccup of a loaded machine must not set every wait.
REPLY_WAIT_FACTOR = 10.0
MIN_REPLY_S = 0.02
ECHO_PROBES = 16
ECHO_BYTES = 64
# Each further whole attempt of an inference waits twice as long as the one before, up to 2^BACKOFF_STEPS times:
# a host that was descheduled for a while (a loaded machine) does not lose inferences to waits that fit the usual.
BACKOFF_STEPS = 6
# The INFER_DIGEST reply wait: the reply wait plus this many times the median clean inference (a round trip with
# the inputs).
INFER_WAIT_FACTOR = 3.0
RESTART_TRIES = 3
# Resends of one frame before the client gives up on it, when the inputs go in chunks: an inference is hundreds of
# chunks that each get through about half the time, and one chunk given up on costs the whole inference's attempt.
CHUNKED_RESENDS = 30
CHUNKED_RELOADS = 8  # loads of the inputs per attempt while INFER_DIGEST's replies are lost ("input overwritten")


class SoakError(UsageError):
    """Soak options or a reference file that cannot be used."""


class SoakAborted(DeviceError):
    """The device could not be brought back: the soak stopped with `result` as far as it got."""

    def __init__(self, message: str, result: SoakResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SoakOptions:
    inferences: int = 1000
    pool: int = 32  # distinct seeded inputs, cycled over the inferences
    seed: int = 0  # of the input pool
    attempts: int = 8  # whole attempts of one inference before it counts as lost
    reply_timeout_s: float | None = None  # a first attempt's; None: from clean round trips (REPLY_WAIT_FACTOR)
    chunk: int | None = None  # LOAD_INPUT data bytes per frame; None: chunk_for(); 0: inputs inside INFER_DIGEST
    restart_after: int = 3  # failed attempts in a row after which a device that seems alive is restarted anyway

    def __post_init__(self) -> None:
        for name, low in (("inferences", 1), ("pool", 1), ("attempts", 1), ("restart_after", 1), ("seed", 0)):
            if getattr(self, name) < low:
                raise SoakError(f"--{name.replace('_', '-')} must be at least {low}, not {getattr(self, name)}")
        if self.reply_timeout_s is not None and not 0.0 < self.reply_timeout_s <= 600.0:
            raise SoakError(f"--reply-timeout must be above 0 and at most 600 s, not {self.reply_timeout_s}")
        if self.chunk is not None and self.chunk != 0 and self.chunk < MIN_CHUNK:
            raise SoakError(f"--chunk must be 0 (inputs inside INFER_DIGEST) or at least {MIN_CHUNK} bytes, "
                            f"not {self.chunk}")


def chunk_for(byte_rate: float, input_bytes: int, outputs: int, rx_max: int) -> int:
    """LOAD_INPUT data bytes per frame for a link that garbles `byte_rate` of the bytes in each direction: 0 (the
    inputs inside INFER_DIGEST) while request and reply get through together at least INLINE_MIN_SUCCESS of the
    time, else chunks whose request and reply get through about half the time (at least MIN_CHUNK)."""
    if byte_rate <= 0:
        return 0
    keep = math.log1p(-min(byte_rate, 0.999999))  # log of P(a byte passes)
    inline_bytes = OVERHEAD + input_bytes + OVERHEAD + DIGEST_REPLY_FIXED + 4 * outputs
    if input_bytes <= rx_max and inline_bytes * keep >= math.log(INLINE_MIN_SUCCESS):
        return 0
    per_frame = OVERHEAD + LOAD_HEADER_SIZE + OVERHEAD + LOAD_REPLY_PAYLOAD
    chunk = int(math.log(0.5) / keep) - per_frame
    return max(MIN_CHUNK, min(chunk, rx_max - LOAD_HEADER_SIZE, input_bytes))


def input_pool(specs: Sequence[TensorSpec], size: int, seed: int) -> list[list[np.ndarray]]:
    """`size` distinct input sets, uniform over each tensor's whole integer range (as hil.check.random_inputs)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(size):
        one = []
        for spec in specs:
            info = np.iinfo(spec.dtype)
            one.append(rng.integers(info.min, info.max, size=spec.shape, endpoint=True).astype(spec.dtype))
        pool.append(one)
    return pool


def pool_sha256(pool: Sequence[Sequence[np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for inputs in pool:
        for array in inputs:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class Reference:
    """The expected CRC-32 of every output for each input of the pool, and where they came from."""

    digests: list[tuple[int, ...]]
    source: str  # says how the reference was made, for the output and the journal
    model_name: str
    model_sha256: str
    target: str
    pool_seed: int
    pool_size: int
    pool_sha256: str
    median_s: float = 0.0  # the median clean inference, round trip (0 from a file)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["digests"] = [list(d) for d in self.digests]
        return {"schema": REFERENCE_SCHEMA, **data}

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Reference:
        """A reference an earlier soak saved (REFERENCE_NAME in its run directory, or that directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / REFERENCE_NAME
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SoakError(f"--reference {path}: cannot read it ({exc})") from None
        if not isinstance(data, dict) or data.get("schema") != REFERENCE_SCHEMA:
            raise SoakError(f"--reference {path}: not a soak reference ({REFERENCE_SCHEMA}); a soak's run directory "
                            f"has one as {REFERENCE_NAME}")
        try:
            return cls(digests=[tuple(int(v) for v in d) for d in data["digests"]],
                       source=f"file {path} ({data['source']})", model_name=data["model_name"],
                       model_sha256=data["model_sha256"], target=data["target"], pool_seed=int(data["pool_seed"]),
                       pool_size=int(data["pool_size"]), pool_sha256=data["pool_sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SoakError(f"--reference {path}: malformed ({type(exc).__name__}: {exc})") from None

    def check_pool(self, pool: Sequence[Sequence[np.ndarray]]) -> None:
        """The pool must be the one the reference was made from (same seed, size and bytes)."""
        if len(pool) != self.pool_size or len(self.digests) != self.pool_size or pool_sha256(pool) != self.pool_sha256:
            raise SoakError(f"the reference was made from another input pool ({self.pool_size} inputs, seed "
                            f"{self.pool_seed}, sha256 {self.pool_sha256[:16]}): pass --pool {self.pool_size} --seed "
                            f"{self.pool_seed} and a model with the same input shapes")


def _digests(dut: Dut, inputs: Sequence[np.ndarray], chunk: int) -> tuple[int, ...]:
    """One inference's CRC-32 per output: INFER_DIGEST, or full outputs on firmware without it."""
    client = dut.client
    info = dut.info
    if info.supports_digest and chunk:
        return _chunked_digests(dut, inputs, chunk)
    load = {"max_chunk": chunk} if chunk else {}
    if info.supports_digest:
        return tuple(client.start_infer_digest(inputs, **load).wait().digests)
    result = client.start_infer(inputs, **load).wait()
    return tuple(tensor_digest(out, spec) for out, spec in zip(result.outputs, info.outputs, strict=True))


def _chunked_digests(dut: Dut, inputs: Sequence[np.ndarray], chunk: int) -> tuple[int, ...]:
    """LOAD_INPUT in chunks, then an empty INFER_DIGEST. Its reply lost, the resend of a model that overwrites its
    inputs is refused ("input overwritten"): the inputs go again, in chunks. (The client's own reload after that
    refusal sends each input in one frame, which at the rates that call for chunks would never get through.)"""
    client = dut.client
    for _ in range(CHUNKED_RELOADS):
        for i, array in enumerate(inputs):
            client.load_input(i, array, max_chunk=chunk)
        try:
            frame = client.request(FrameType.INFER_DIGEST, b"", timeout=client.infer_timeout)
        except DeviceError as exc:  # the client's ERROR reply carries the code and the device's message
            if not (getattr(exc, "code", None) == ErrorCode.BAD_REQUEST
                    and str(getattr(exc, "message", "")).startswith(INPUT_CONSUMED_MESSAGE)):
                raise
            continue
        digests = parse_digest_reply(frame.payload).digests
        if len(digests) != len(dut.info.outputs):
            raise ProtocolError(f"INFER_DIGEST reported {len(digests)} outputs, INFO {len(dut.info.outputs)}")
        return tuple(digests)
    raise ProtocolError(f"INFER_DIGEST refused {CHUNKED_RELOADS} times after the inputs were loaded: "
                        f"'{INPUT_CONSUMED_MESSAGE}'")


def clean_reference(dut: Dut, pool: Sequence[Sequence[np.ndarray]], faults: Faults | None, *, target: str,
                    seed: int) -> Reference:
    """Every input of the pool once through the same device with the faults paused: the expected CRC-32s."""
    digests, times = [], []
    with faults.paused() if faults is not None else _nothing():
        for inputs in pool:
            started = time.monotonic()
            digests.append(_digests(dut, inputs, 0))
            times.append(time.monotonic() - started)
    how = "INFER_DIGEST" if dut.info.supports_digest else "INFER, outputs read back"
    return Reference(digests=digests, model_name=dut.model.name, model_sha256=dut.model.sha256, target=target,
                     source=f"clean run of the {len(pool)}-input pool on {target}, faults paused ({how}, CRC-32 per "
                            f"output)",
                     pool_seed=seed, pool_size=len(pool), pool_sha256=pool_sha256(pool),
                     median_s=float(np.median(times)))


def _median_echo(dut: Dut, faults: Faults | None) -> float:
    """The median of ECHO_PROBES clean round trips of a small frame (faults paused)."""
    times = []
    with faults.paused() if faults is not None else _nothing():
        for i in range(ECHO_PROBES):
            started = time.monotonic()
            dut.client.echo(bytes([i]) * ECHO_BYTES)
            times.append(time.monotonic() - started)
    return float(np.median(times))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@dataclass
class Outcome:
    """One inference of the soak: 'ok', 'wrong' or 'lost', after how many whole attempts."""

    index: int
    pool_index: int
    status: str
    attempts: int
    error: str = ""  # the last failed attempt's error, for a lost inference (or one that needed several)
    got: list[int] | None = None  # a wrong result's CRC-32s, with the reference's
    want: list[int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass
class SoakResult:
    target: str
    model: str
    spec: str
    reference: str
    mode: str  # how inputs travel: inside INFER_DIGEST, or LOAD_INPUT chunks of N bytes
    inferences: int = 0  # done (decided: ok, wrong or lost)
    wrong: int = 0
    lost: int = 0
    resends: int = 0  # frames the client sent again
    redone: int = 0  # whole inferences attempted again after the client gave up on one
    restarts: int = 0
    faults: FaultCounts = field(default_factory=FaultCounts)
    faults_sent: FaultCounts = field(default_factory=FaultCounts)
    faults_received: FaultCounts = field(default_factory=FaultCounts)
    wall_s: float = 0.0
    wrong_examples: list[dict[str, Any]] = field(default_factory=list)
    lost_examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.inferences - self.lost

    @property
    def retries(self) -> int:
        return self.resends + self.redone

    @property
    def ok(self) -> bool:
        return self.inferences > 0 and self.wrong == 0 and self.lost == 0

    def summary_line(self) -> str:
        return (f"soak {self.inferences} done, {self.wrong} wrong, {self.lost} lost, {self.retries} retries, "
                f"{self.restarts} restarts")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(accepted=self.accepted, retries=self.retries, ok=self.ok, summary=self.summary_line())
        return data


EXAMPLES = 20  # wrong and lost inferences kept in the result (each one is journaled anyway)


class Soak:
    """Runs the soak on an open Dut whose link has `faults` beneath it (DutOptions.faults)."""

    def __init__(self, dut: Dut, reference: Reference, pool: Sequence[Sequence[np.ndarray]], options: SoakOptions,
                 faults: Faults | None, *, target: str) -> None:
        reference.check_pool(pool)
        self.dut, self.reference, self.pool, self.options, self.faults = dut, reference, pool, options, faults
        info = dut.info
        rate = faults.spec.byte_rate if faults is not None else 0.0
        self.chunk = (options.chunk if options.chunk is not None
                      else chunk_for(rate, info.input_bytes, len(info.outputs), info.rx_max))
        if self.chunk == 0 and info.input_bytes > info.rx_max:
            self.chunk = info.rx_max - LOAD_HEADER_SIZE  # the client loads inputs beyond rx_max in chunks anyway
        self.reply_wait_s = options.reply_timeout_s or max(MIN_REPLY_S, REPLY_WAIT_FACTOR * _median_echo(dut, faults))
        self.infer_wait_s = self.reply_wait_s + INFER_WAIT_FACTOR * reference.median_s
        verb = "INFER_DIGEST" if info.supports_digest else "INFER"
        mode = (f"inputs inside {verb}" if self.chunk == 0 else
                f"inputs in LOAD_INPUT chunks of {self.chunk} bytes, then {verb}")
        self.result = SoakResult(target=target, model=dut.model.name, spec=str(faults.spec) if faults else "none",
                                 reference=reference.source, mode=mode)
        self._resends_before = 0  # resends of the clients that restarts replaced
        self._resends_start = dut.client.resends  # the clean reference's, not the soak's
        self._configure_client(1)

    def _configure_client(self, attempt: int) -> None:
        """The reply waits of this attempt on the current client (a restart brings a new one)."""
        client = self.dut.client
        scale = 2 ** min(attempt - 1, BACKOFF_STEPS)
        client.timeout = self.reply_wait_s * scale
        client.infer_timeout = self.infer_wait_s * scale
        if self.chunk:
            client.retries = max(client.retries, CHUNKED_RESENDS)

    def run(self, on_outcome: Callable[[Outcome, SoakResult], None] | None = None) -> SoakResult:
        """All the inferences; `on_outcome` sees each as soon as it is decided (and the counts so far)."""
        result = self.result
        started = time.monotonic()
        try:
            for index in range(self.options.inferences):
                outcome = self._one(index)
                result.inferences += 1
                if outcome.status == "wrong":
                    result.wrong += 1
                    if len(result.wrong_examples) < EXAMPLES:
                        result.wrong_examples.append(outcome.to_json())
                elif outcome.status == "lost":
                    result.lost += 1
                    if len(result.lost_examples) < EXAMPLES:
                        result.lost_examples.append(outcome.to_json())
                self._update(started)
                if on_outcome is not None:
                    on_outcome(outcome, result)
        finally:
            self._update(started)
        return result

    def _update(self, started: float) -> None:
        result = self.result
        result.resends = self._resends_before + self.dut.client.resends - self._resends_start
        if self.faults is not None:
            result.faults, result.faults_sent, result.faults_received = (
                self.faults.counts, FaultCounts(**self.faults.sent.as_dict()),
                FaultCounts(**self.faults.received.as_dict()))
        result.wall_s = time.monotonic() - started

    def _one(self, index: int) -> Outcome:
        pool_index = index % len(self.pool)
        inputs, want = self.pool[pool_index], self.reference.digests[pool_index]
        failed_in_a_row = 0
        error = ""
        for attempt in range(1, self.options.attempts + 1):
            if attempt > 1:
                self.result.redone += 1
            self._configure_client(attempt)
            try:
                got = _digests(self.dut, inputs, self.chunk)
            except DeviceError as exc:  # link failures and timeouts, crashes, ERROR replies, malformed replies
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                failed_in_a_row += 1
                if self._needs_restart(exc, failed_in_a_row):
                    self._restart(error)
                    failed_in_a_row = 0
                continue
            if got == tuple(want):
                return Outcome(index, pool_index, "ok", attempt, error)
            log.warning("inference %d (pool input %d): CRC-32s %s, the reference's %s", index, pool_index,
                        [f"{d:08x}" for d in got], [f"{d:08x}" for d in want])
            return Outcome(index, pool_index, "wrong", attempt, error, list(got), list(want))
        return Outcome(index, pool_index, "lost", self.options.attempts, error)

    def _needs_restart(self, exc: DeviceError, failed_in_a_row: int) -> bool:
        return (isinstance(exc, DeviceCrashed) or not self.dut.is_alive()
                or failed_in_a_row >= self.options.restart_after)

    def _restart(self, why: str) -> None:
        """Dut.restart (the device started again, HELLO and the model check, then the faults attached again)."""
        self._resends_before += self.dut.client.resends - self._resends_start
        self._resends_start = 0
        problem: Exception | None = None
        for _ in range(RESTART_TRIES):
            try:
                self.dut.restart()
            except DeviceError as exc:
                problem = exc
                continue
            self.result.restarts += 1
            log.info("restarted the device (%s)", why)
            return
        self._resends_start = self.dut.client.resends
        raise SoakAborted(f"the {self.result.target} device did not come back after {RESTART_TRIES} restarts "
                          f"(after: {why}): {problem}", self.result)
