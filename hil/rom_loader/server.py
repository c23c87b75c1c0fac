"""RomLoader: an emulated ESP32-S3 in its ROM serial loader, served to one client at a time on a background
thread, over TCP (esptool --port socket://127.0.0.1:PORT) or a pseudo-terminal (--port /dev/pts/N).

    with RomLoader("flash.bin", flash_size="8MB") as loader:      # or transport="pty"
        subprocess.run([sys.executable, "-m", "esptool", "--port", loader.url, "write-flash", "0x0", "app.bin"])
        assert loader.stats().flash_data_packets > 0

Every new client finds the chip freshly reset into the ROM loader (reset_on_connect=True, the default),
which is what esptool's reset sequence achieves on a board: neither transport has DTR/RTS lines to drive.
A client that disconnects in the middle of a write leaves what was written in the image; the loader then
waits for the next client. stop() returns within a few hundred milliseconds whatever the client is doing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from hil.errors import UsageError
from hil.rom_loader.chip import ChipIdentity
from hil.rom_loader.flash import DEFAULT_FLASH_SIZE, FlashImage, parse_flash_size
from hil.rom_loader.session import FrameIO, LoaderStats, Mode, Session, UartPace
from hil.rom_loader.transport import Link, LinkClosed, Port, PtyPort, SocketPort

log = logging.getLogger("hil.rom_loader")

POLL_S = 0.1  # how often the server thread looks at the stop flag
TRANSPORTS = ("socket", "pty")


class RomLoader:
    """An emulated ESP32-S3 ROM loader whose flash is the file `flash_image`.

    transport: "socket" (listen on host:port; port 0 picks a free one) or "pty".
    reset_on_connect: each new client finds the chip reset into the ROM loader (False keeps the state, e.g. a
        running stub, across connections, like a serial bridge that does not reset the chip).
    idle_timeout_s: drop a client that sends nothing for this long (None: never; a serial port never does).
    """

    def __init__(
        self,
        flash_image: Path | str,
        flash_size: int | str = DEFAULT_FLASH_SIZE,
        *,
        transport: str = "socket",
        host: str = "127.0.0.1",
        port: int = 0,
        identity: ChipIdentity | None = None,
        reset_on_connect: bool = True,
        idle_timeout_s: float | None = None,
        pace_uart: bool = False,
    ) -> None:
        if transport not in TRANSPORTS:
            raise UsageError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        self.flash_image = Path(flash_image)
        self.pace_uart = pace_uart  # transfers take as long as on a UART at the session's baud rate
        self.flash_size = parse_flash_size(flash_size)
        self.transport = transport
        self.host = host
        self.port = port
        self.identity = identity or ChipIdentity()
        self.reset_on_connect = reset_on_connect
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._stats = LoaderStats()
        self._stop = threading.Event()
        self._reset_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._port: Port | None = None
        self._flash: FlashImage | None = None
        self._session: Session | None = None
        self._link: Link | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """What to pass to esptool --port: socket://127.0.0.1:PORT or /dev/pts/N."""
        if self._url is None:
            raise RuntimeError("the ROM loader is not running: call start() first")
        return self._url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> str:
        """Opens the flash image and the port, starts serving; returns the URL.

        Raises FlashImageError (bad image file) or OSError (the address is taken)."""
        if self._thread is not None:
            return self.url
        flash = FlashImage(self.flash_image, self.flash_size)
        try:
            port: Port = SocketPort(self.host, self.port) if self.transport == "socket" else PtyPort()
        except OSError:
            flash.close()
            raise
        self._flash, self._port, self._url = flash, port, port.url
        self._session = Session(flash, self.identity, self._stats, self._lock)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve_forever, name=f"rom-loader {port.url}", daemon=True)
        self._thread.start()
        log.info("ESP32-S3 ROM loader on %s, flash %s (%d bytes)", port.url, self.flash_image, self.flash_size)
        return port.url

    def stop(self, timeout: float = 5.0) -> None:
        """Stops serving, closes the port and the flash image (everything written is in the file)."""
        self._stop.set()
        link = self._link
        if link is not None:
            link.close()  # wakes a server thread blocked in a write to a client that stopped reading
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the ROM loader thread did not stop within %.1f s", timeout)
        if self._port is not None:
            self._port.close()
        if self._flash is not None:
            self._flash.close()
        self._thread = self._port = self._flash = self._session = None

    def reset(self) -> None:
        """Resets the chip into the ROM loader before the next command (stub, RAM, open download gone)."""
        self._reset_requested.set()

    def stats(self) -> LoaderStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats.copy()

    @property
    def mode(self) -> Mode:
        return Mode(self.stats().mode)

    def read_flash(self, offset: int, length: int) -> bytes:
        """The flash contents, as the emulated chip holds them now."""
        if self._flash is None:
            with FlashImage(self.flash_image, self.flash_size) as flash:
                return flash.read(offset, length)
        return self._flash.read(offset, length)

    def __enter__(self) -> RomLoader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the server thread ----------------------------------------------------------------------------------

    def _serve_forever(self) -> None:
        assert self._port is not None and self._session is not None
        while not self._stop.is_set():
            try:
                link = self._port.accept(POLL_S)
            except Exception:  # never let the thread die: log it and keep accepting
                log.exception("accepting a client failed")
                self._stop.wait(POLL_S)
                continue
            if link is not None:
                self._serve(link, self._session)

    def _serve(self, link: Link, session: Session) -> None:
        self._link = link
        with self._lock:
            self._stats.connections += 1
        if self.reset_on_connect or self._reset_requested.is_set():
            self._reset_requested.clear()
            session.reset()
        log.info("client connected: %s", link.description)
        pace = UartPace(lambda: self._stats.baud) if self.pace_uart else None
        io = FrameIO(link, self._stop, POLL_S, pace)
        idle = 0.0
        try:
            while not self._stop.is_set():
                if self._reset_requested.is_set():
                    self._reset_requested.clear()
                    session.reset()
                frame = io.next_frame(POLL_S)
                if frame is None:
                    if self._port is not None and self._port.pending():
                        # Like ser2net's kickolduser: a client that keeps the connection open without talking
                        # (esptool leaves its port open when it fails in-process) must not lock others out.
                        log.info("a new client takes over from %s", link.description)
                        break
                    idle += POLL_S
                    if self.idle_timeout_s is not None and idle >= self.idle_timeout_s:
                        log.info("dropping %s: idle for %.0f s", link.description, idle)
                        break
                    continue
                idle = 0.0
                session.handle(frame, io)
        except LinkClosed as e:
            download = session.download
            mid_write = download is not None and download.next_seq > 0 and not download.complete
            log.info("client gone (%s)%s", e, " in the middle of a flash write" if mid_write else "")
            if mid_write:
                with self._lock:
                    self._stats.disconnects_mid_write += 1
        except Exception:
            log.exception("the ROM loader failed while serving %s; waiting for the next client", link.description)
        finally:
            self._link = None
            link.close()
