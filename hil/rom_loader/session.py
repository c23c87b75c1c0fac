"""The chip's side of the conversation: the ESP32-S3 ROM loader, the flasher stub once esptool started it, and
the quiet of a chip that left the loader to run code.

Session.handle() takes one SLIP frame and answers it through a FrameIO. The chip starts in the ROM loader
(Mode.ROM: 4 status bytes). MEM_END at the entry point of esptool's stub switches it to Mode.STUB (2 status
bytes, "OHAI" greeting, the stub-only commands); FLASH_END asking for a reboot takes the stub back to the ROM
loader, as a soft reset does on the chip. The ROM leaving the loader (FLASH_END, MEM_END into other code)
is Mode.APP: nothing answers until the chip is reset (a new connection, or RomLoader.reset()).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from hil.rom_loader import slip
from hil.rom_loader.chip import ChipIdentity, Registers
from hil.rom_loader.flash import SECTOR_SIZE, FlashImage, size_name
from hil.rom_loader.protocol import (
    ROM_ONLY,
    ROM_SYNC_VALUE,
    STUB_GREETING,
    STUB_ONLY,
    SYNC_DATA,
    SYNC_REPLIES,
    CommandError,
    Failure,
    Op,
    PacketError,
    Request,
    response,
)
from hil.rom_loader.ram import KnownStub, RamDownload, known_stubs
from hil.rom_loader.transport import WRITE_TIMEOUT_S, Link
from hil.rom_loader.writer import FlashDownload

log = logging.getLogger("hil.rom_loader")

ROM_READ_BLOCK = 64  # READ_FLASH_SLOW's fixed reply size
READ_ACK_TIMEOUT_S = 10.0  # the stub's READ_FLASH waits this long for the client's acknowledgement
MAX_FAILURES_KEPT = 50


class Mode(Enum):
    ROM = "rom"
    STUB = "stub"
    APP = "app"  # left the loader: running (pretend) user code, deaf to the loader protocol


@dataclass
class LoaderStats:
    """Counters over the loader's lifetime (all connections). RomLoader.stats() hands out copies."""

    connections: int = 0
    disconnects_mid_write: int = 0  # clients gone while a flash download was open
    commands: Counter[str] = field(default_factory=Counter)  # by command name, failures included
    failures: list[tuple[str, str]] = field(default_factory=list)  # (command, reason), the last 50
    checksum_errors: int = 0
    flash_data_packets: int = 0  # FLASH_DATA / FLASH_DEFL_DATA blocks accepted (not counting resends)
    bytes_written: int = 0  # bytes programmed into the flash image
    bytes_erased: int = 0
    stub_uploads: int = 0  # times esptool's flasher stub was loaded and started
    stub_version: str | None = None  # "1" legacy, "2" esp-flasher-stub: the last one started
    stub_running: bool = False
    mode: str = Mode.ROM.value
    last_md5: tuple[int, int, str] | None = None  # (offset, size, hex digest) of the last SPI_FLASH_MD5
    baud: int = 115200  # as last set by CHANGE_BAUDRATE (paces the link when the loader is asked to)
    ignored_frames: int = 0  # frames that got no answer (in Mode.APP, or not a request)

    def copy(self) -> LoaderStats:
        return replace(self, commands=Counter(self.commands), failures=list(self.failures))


ROM_BAUD = 115200


class UartPace:
    """The time a UART at `baud()` needs for the bytes that crossed it (10 bits a byte: start, 8 data, stop).
    A socket or pty moves data at memory speed; pacing makes a transfer take as long as on a real serial line, so
    that what esptool's MD5 skip saves, or a higher --baud, shows in the flashing time as it would on a board."""

    def __init__(self, baud: Callable[[], int]) -> None:
        self.baud = baud
        self._free_at = 0.0  # when the line is idle again

    def wait(self, nbytes: int) -> None:
        if nbytes <= 0:
            return
        now = time.monotonic()
        self._free_at = max(now, self._free_at) + nbytes * 10 / max(self.baud(), 1)
        delay = self._free_at - now
        if delay > 0:
            time.sleep(delay)


class FrameIO:
    """SLIP frames over a link; stops waiting as soon as `stop` is set; paced like a UART when `pace` is given."""

    def __init__(self, link: Link, stop: threading.Event, poll_s: float = 0.1, pace: UartPace | None = None) -> None:
        self.link = link
        self.stop = stop
        self.poll_s = poll_s
        self.pace = pace
        self.decoder = slip.SlipDecoder()
        self._frames: deque[bytes] = deque()

    def next_frame(self, timeout: float) -> bytes | None:
        """The next complete frame, or None after `timeout` seconds (or once the loader is stopping)."""
        deadline = time.monotonic() + timeout
        while not self._frames:
            remaining = deadline - time.monotonic()
            if self.stop.is_set() or remaining <= 0:
                return None
            data = self.link.read(min(self.poll_s, remaining))
            if self.pace is not None:
                self.pace.wait(len(data))
            self._frames.extend(self.decoder.feed(data))
        return self._frames.popleft()

    def send(self, packet: bytes) -> None:
        data = slip.encode(packet)
        if self.pace is not None:
            self.pace.wait(len(data))
        self.link.write(data, WRITE_TIMEOUT_S)


@dataclass
class Reply:
    value: int = 0
    data: bytes = b""
    then: Callable[[FrameIO], None] | None = None  # runs after the response went out
    count: int = 1  # SYNC: the ROM answers eight times


class Session:
    def __init__(self, flash: FlashImage, identity: ChipIdentity, stats: LoaderStats, lock: threading.Lock) -> None:
        self.flash = flash
        self.registers = Registers(identity, flash.size)
        self.identity = identity
        self.stats = stats
        self.lock = lock
        self.mode = Mode.ROM
        self.download: FlashDownload | None = None
        self.ram = RamDownload()
        self.flash_limit: int | None = None  # SPI_SET_PARAMS' total size
        self._handlers: dict[int, Callable[[Request], Reply]] = {
            Op.SYNC: self._sync,
            Op.READ_REG: self._read_reg,
            Op.WRITE_REG: self._write_reg,
            Op.GET_SECURITY_INFO: lambda req: Reply(data=self.identity.security_info()),
            Op.SPI_ATTACH: self._spi_attach,
            Op.SPI_SET_PARAMS: self._spi_set_params,
            Op.CHANGE_BAUDRATE: self._change_baudrate,
            Op.FLASH_BEGIN: self._flash_begin,
            Op.FLASH_DEFL_BEGIN: self._flash_begin,
            Op.FLASH_DATA: self._flash_data,
            Op.FLASH_DEFL_DATA: self._flash_data,
            Op.FLASH_END: self._flash_end,
            Op.FLASH_DEFL_END: self._flash_end,
            Op.SPI_FLASH_MD5: self._flash_md5,
            Op.MEM_BEGIN: lambda req: self._ram_op(self.ram.begin, req.words(4)),
            Op.MEM_DATA: lambda req: self._ram_op(self.ram.data, *req.data_block()),
            Op.MEM_END: self._mem_end,
            Op.READ_FLASH_SLOW: self._read_flash_slow,
            Op.READ_FLASH: self._read_flash,
            Op.ERASE_FLASH: self._erase_flash,
            Op.ERASE_REGION: self._erase_region,
        }

    @property
    def stub(self) -> bool:
        return self.mode is Mode.STUB

    def reset(self) -> None:
        """A chip reset into the ROM's download mode: RAM, registers and any open download are gone."""
        self.mode = Mode.ROM
        self.download = None
        self.ram = RamDownload()
        self.flash_limit = None
        self.registers.reset()
        with self.lock:
            self.stats.mode = self.mode.value
            self.stats.stub_running = False
            self.stats.baud = ROM_BAUD  # the ROM's UART starts at its default rate after every reset

    def handle(self, frame: bytes, io: FrameIO) -> None:
        if self.mode is Mode.APP:
            self._count_ignored()
            return
        try:
            req = Request.parse(frame)
        except PacketError as e:
            if len(frame) >= 8 and frame[0] == 0:  # a request with a wrong size field: answered as invalid
                log.debug("malformed request: %s", e)
                io.send(response(frame[1], failure=Failure.INVALID_MESSAGE, stub=self.stub))
                return
            log.debug("ignored frame: %s", e)
            self._count_ignored()
            return
        name = _op_name(req.op)
        with self.lock:
            self.stats.commands[name] += 1
        stub = self.stub
        try:
            reply = self._dispatch(req)
        except CommandError as e:
            log.debug("%s failed: %s", name, e)
            with self.lock:
                self.stats.failures = (self.stats.failures + [(name, str(e))])[-MAX_FAILURES_KEPT:]
                if e.failure is Failure.BAD_CHECKSUM:
                    self.stats.checksum_errors += 1
            io.send(response(req.op, failure=e.failure, stub=stub))
            return
        packet = response(req.op, value=reply.value, data=reply.data, stub=stub)
        for _ in range(reply.count):
            io.send(packet)
        if reply.then is not None:
            reply.then(io)

    def _dispatch(self, req: Request) -> Reply:
        handler = self._handlers.get(req.op)
        if handler is None or (req.op in STUB_ONLY and not self.stub) or (req.op in ROM_ONLY and self.stub):
            raise CommandError(Failure.UNSUPPORTED, f"command {req.op:#04x} in the {self.mode.value} loader")
        return handler(req)

    def _count_ignored(self) -> None:
        with self.lock:
            self.stats.ignored_frames += 1

    def _set_mode(self, mode: Mode, stub: KnownStub | None = None) -> None:
        self.mode = mode
        self.download = None  # whatever runs now knows nothing of a download the previous code had open
        with self.lock:
            self.stats.mode = mode.value
            self.stats.stub_running = mode is Mode.STUB
            if stub is not None:
                self.stats.stub_uploads += 1
                self.stats.stub_version = stub.version
        log.info("chip now in %s mode%s", mode.value, f" (flasher stub v{stub.version})" if stub else "")

    # --- connection and registers ---------------------------------------------------------------------------

    def _sync(self, req: Request) -> Reply:
        if req.data != SYNC_DATA:
            raise CommandError(Failure.INVALID_MESSAGE, "SYNC without the 07 07 12 20 55... pattern")
        return Reply(value=0 if self.stub else ROM_SYNC_VALUE, count=SYNC_REPLIES)

    def _read_reg(self, req: Request) -> Reply:
        (addr,) = req.words(1)
        return Reply(value=self.registers.read(addr))

    def _write_reg(self, req: Request) -> Reply:
        if not req.data or len(req.data) % 16:
            raise CommandError(Failure.INVALID_MESSAGE, f"WRITE_REG with {len(req.data)} data bytes")
        for addr, value, mask, _delay_us in struct.iter_unpack("<IIII", req.data):
            self.registers.write(addr, value, mask)
        return Reply()

    def _spi_attach(self, req: Request) -> Reply:
        req.words(1, 2)  # pin configuration (and the ROM's "is legacy" word): the flash is always attached
        return Reply()

    def _spi_set_params(self, req: Request) -> Reply:
        _fl_id, total_size, _block, sector, _page, _status_mask = req.words(6)
        if total_size == 0 or sector != SECTOR_SIZE:
            raise CommandError(Failure.INVALID_MESSAGE, f"flash size {total_size}, sector size {sector}")
        self.flash_limit = total_size
        return Reply()

    def _change_baudrate(self, req: Request) -> Reply:
        baud, _old = req.words(2)
        with self.lock:
            self.stats.baud = baud
        return Reply()

    # --- flash download -------------------------------------------------------------------------------------

    def _flash_begin(self, req: Request) -> Reply:
        compressed = req.op == Op.FLASH_DEFL_BEGIN
        self.download = None
        op = FlashDownload.begin(
            self.flash, req.words(4, 5), compressed=compressed, stub=self.stub, limit=self.flash_limit
        )
        self.download = op
        with self.lock:
            self.stats.bytes_erased += op.erased
        return Reply()

    def _flash_data(self, req: Request) -> Reply:
        seq, payload = req.data_block()
        op = self.download
        if op is None or op.compressed != (req.op == Op.FLASH_DEFL_DATA):
            raise CommandError(Failure.NOT_IN_FLASH_MODE, f"{_op_name(req.op)} without its BEGIN")
        erased = op.erased
        written = op.data(seq, payload)
        with self.lock:
            self.stats.bytes_erased += op.erased - erased
            if written is not None:
                self.stats.bytes_written += written
                self.stats.flash_data_packets += 1
        return Reply()

    def _flash_end(self, req: Request) -> Reply:
        (stay,) = req.words(1)  # 1: stay in the loader (stub) / run the app (ROM); 0: reboot
        op, self.download = self.download, None
        if self.stub:
            if op is None:
                raise CommandError(Failure.NOT_IN_FLASH_MODE, "FLASH_END without FLASH_BEGIN")
            op.finish()
            return Reply() if stay else Reply(then=lambda io: self._set_mode(Mode.ROM))
        return Reply(then=lambda io: self._set_mode(Mode.APP))

    def _flash_md5(self, req: Request) -> Reply:
        addr, size, _, _ = req.words(4)
        if not self.flash.contains(addr, size):
            raise CommandError(Failure.FLASH_READ, f"MD5 of {size} bytes at {addr:#x}: past the end of flash")
        digest = self.flash.md5(addr, size)
        with self.lock:
            self.stats.last_md5 = (addr, size, digest.hex())
        return Reply(data=digest if self.stub else digest.hex().encode())

    # --- RAM ------------------------------------------------------------------------------------------------

    def _ram_op(self, fn: Callable[..., None], *args: object) -> Reply:
        fn(*args)
        return Reply()

    def _mem_end(self, req: Request) -> Reply:
        no_exec, entry = req.words(2)
        if no_exec:
            return Reply()
        stub = self.ram.loaded_stub(entry)
        if stub is None and not known_stubs():  # no esptool to compare with: assume it is its stub
            stub = KnownStub("?", entry, 0, b"")
        if stub is None or self.stub:
            return Reply(then=lambda io: self._set_mode(Mode.APP))

        def start_stub(io: FrameIO) -> None:
            self._set_mode(Mode.STUB, stub)
            io.send(STUB_GREETING)

        return Reply(then=start_stub)

    # --- reading and erasing --------------------------------------------------------------------------------

    def _read_flash_slow(self, req: Request) -> Reply:
        addr, size = req.words(2)
        if size > ROM_READ_BLOCK:
            raise CommandError(Failure.READ_LENGTH, f"{size} bytes (at most {ROM_READ_BLOCK} per command)")
        if not self.flash.contains(addr, size):
            raise CommandError(Failure.FLASH_READ, f"{size} bytes at {addr:#x}: past the end of flash")
        return Reply(data=self.flash.read(addr, size).ljust(ROM_READ_BLOCK, b"\xff"))

    def _read_flash(self, req: Request) -> Reply:
        addr, size, block, max_unacked = req.words(4)
        if not 0 < block <= 0x10000:
            raise CommandError(Failure.BAD_BLOCKSIZE, f"block size {block}")
        if not self.flash.contains(addr, size):
            raise CommandError(Failure.FAILED, f"{size} bytes at {addr:#x}: past the {size_name(self.flash.size)}")
        return Reply(then=lambda io: self._stream_flash(io, addr, size, block, max(1, max_unacked)))

    def _stream_flash(self, io: FrameIO, addr: int, size: int, block: int, max_unacked: int) -> None:
        """The stub's READ_FLASH: data packets, at most `max_unacked` ahead of the client's acknowledgements
        (4 bytes: the total received so far), then the MD5 of the data as a 16-byte packet."""
        md5 = hashlib.md5()
        sent = acked = 0
        while acked < size:
            while sent < size and sent - acked < block * max_unacked:
                chunk = self.flash.read(addr + sent, min(block, size - sent))
                md5.update(chunk)
                io.send(chunk)
                sent += len(chunk)
            ack = io.next_frame(READ_ACK_TIMEOUT_S)
            if ack is None:
                log.warning("READ_FLASH: no acknowledgement after %d of %d bytes; abandoned", sent, size)
                return
            if len(ack) != 4:
                log.warning("READ_FLASH: %d-byte frame instead of an acknowledgement; abandoned", len(ack))
                return
            acked = struct.unpack("<I", ack)[0]
        io.send(md5.digest())

    def _erase_flash(self, req: Request) -> Reply:
        req.words(0)
        self.flash.erase(0, self.flash.size)
        with self.lock:
            self.stats.bytes_erased += self.flash.size
        return Reply()

    def _erase_region(self, req: Request) -> Reply:
        addr, size = req.words(2)
        if addr % SECTOR_SIZE or size % SECTOR_SIZE:
            raise CommandError(Failure.BAD_DATA_LEN, f"{size} bytes at {addr:#x} are not whole sectors")
        if not self.flash.contains(addr, size):
            raise CommandError(Failure.FAILED, f"{size} bytes at {addr:#x}: past the {size_name(self.flash.size)}")
        self.flash.erase(addr, size)
        with self.lock:
            self.stats.bytes_erased += size
        return Reply()


def _op_name(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"0x{op:02X}"

