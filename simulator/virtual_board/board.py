"""A virtual evaluator board on a pseudo-terminal, for mpremote and other serial tools.

The pty slave (e.g. /dev/pts/7) plays the board's USB serial port. Behind the master side a
Repl speaks MicroPython's REPL protocol and runs code in the real MicroPython WebAssembly
runtime; the board's flash is a host folder.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import select
import threading
import time
import tty
from pathlib import Path
from types import TracebackType

from .repl import Repl, cooked
from .runtime import MicroPythonRuntime

log = logging.getLogger(__name__)

# How long a write may wait for a connected but non-reading peer before output is dropped
# (a UART would drop it too).
WRITE_STALL_S = 5.0


def uid_for(fs_dir: Path) -> str:
    """Default machine.unique_id(): 6 bytes fixed for a board folder (like an ESP32 MAC)."""
    return hashlib.sha256(str(Path(fs_dir).resolve()).encode()).hexdigest()[:12]


class VirtualBoard:
    """One virtual board. `start()` returns the serial port path to give to mpremote."""

    def __init__(self, fs_dir: str | os.PathLike[str], link: str | os.PathLike[str] | None = None,
                 uid: str | None = None, heap_bytes: int = 2 * 1024 * 1024) -> None:
        self.fs_dir = Path(fs_dir)
        self.link = Path(link) if link is not None else None
        self.uid = (uid or uid_for(self.fs_dir)).lower()
        if len(self.uid) != 12 or any(ch not in "0123456789abcdef" for ch in self.uid):
            raise ValueError("uid must be 12 hex digits / uid 须为 12 位十六进制")
        self.heap_bytes = heap_bytes
        self.port: str | None = None
        self._master: int | None = None
        self._connected = False
        self._write_lock = threading.Lock()
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.runtime: MicroPythonRuntime | None = None
        self.repl: Repl | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> str:
        """Open the pty, start the interpreter, run boot.py; returns the port path."""
        if self._master is not None:
            raise RuntimeError("board already started / 虚拟板已启动")
        self.fs_dir.mkdir(parents=True, exist_ok=True)
        master, slave = os.openpty()
        # Raw line discipline: no echo, no CR/LF translation, like a USB CDC port.
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        # The board doesn't hold the slave open: then reading the master gives EIO/POLLHUP
        # while no tool is connected, which is how we know output would go nowhere.
        os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        self._stop.clear()
        self.runtime = MicroPythonRuntime(self.fs_dir, self.uid, self._on_program_output,
                                          heap_bytes=self.heap_bytes)
        try:
            self.runtime.start()
        except BaseException:
            os.close(master)
            self._master = None
            self.runtime = None
            raise
        self.repl = Repl(self.runtime, self.write, self._read_board_file)
        if self.link is not None:
            self._make_link()
        self._threads = [
            threading.Thread(target=self._serial_loop, name="vboard-serial", daemon=True),
            threading.Thread(target=self._repl_loop, name="vboard-repl", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._inbox.put(b"")  # power-on: boot.py and banner, on the REPL thread
        return self.link_or_port

    @property
    def link_or_port(self) -> str:
        """The path tools should open: the stable link if one was asked for, else the pty."""
        assert self.port is not None
        return str(self.link) if self.link is not None else self.port

    def stop(self) -> None:
        """Stop threads and the interpreter (files are synced), close the pty, remove the link."""
        self._stop.set()
        self._inbox.put(None)
        if self.runtime is not None:
            self.runtime.interrupt()
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
        if self._master is not None:
            os.close(self._master)
            self._master = None
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self) -> VirtualBoard:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def stats(self) -> dict[str, int]:
        """Protocol counters (raw_paste, raw_exec, soft_reset, ...), for tests and status."""
        return dict(self.repl.stats) if self.repl is not None else {}

    def _make_link(self) -> None:
        assert self.link is not None and self.port is not None
        if self.link.is_symlink():
            self.link.unlink()  # a stale link from an earlier run
        elif self.link.exists():
            raise FileExistsError(f"--link {self.link} exists and is not a symlink / "
                                  "该路径已存在且不是符号链接，请换一个路径")
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(self.port)

    def _read_board_file(self, name: str) -> bytes | None:
        # The host folder mirrors the board's flash after every execution.
        path = self.fs_dir / name
        try:
            return path.read_bytes() if path.is_file() else None
        except OSError:
            return None

    # --- serial side ---------------------------------------------------------------------------
    def _on_program_output(self, data: bytes) -> None:
        self.write(cooked(data))

    def write(self, data: bytes) -> None:
        """Send bytes to the connected tool; dropped while nothing is connected (as a UART)."""
        with self._write_lock:
            master = self._master
            if master is None or not self._connected:
                return
            deadline = time.monotonic() + WRITE_STALL_S
            while data:
                try:
                    n = os.write(master, data)
                    data = data[n:]
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        log.warning("virtual board: peer not reading, %d bytes dropped", len(data))
                        return
                    select.select([], [master], [], 0.05)
                except OSError as e:
                    if e.errno == errno.EIO:
                        return  # the tool went away mid-write
                    raise

    def _serial_loop(self) -> None:
        poller = select.poll()
        assert self._master is not None
        master = self._master
        poller.register(master, select.POLLIN)
        while not self._stop.is_set():
            events = poller.poll(100)
            if not events:
                # POLLHUP is not reported when idle with a peer; a quiet peer is still there.
                continue
            revents = events[0][1]
            if revents & select.POLLIN:
                try:
                    data = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    self._connected = True
                    self._received(data)
                    continue
            if revents & (select.POLLHUP | select.POLLERR) or not revents & select.POLLIN:
                self._disconnected()
                time.sleep(0.05)  # nothing to read until a tool opens the port

    def _disconnected(self) -> None:
        # No flush here: a new tool may already have opened the port and sent its first bytes
        # (TCIFLUSH would eat them). Output queued for a tool that left is discarded by the next
        # opener (pyserial flushes its input on open); from now on output is dropped.
        with self._write_lock:
            self._connected = False

    def _received(self, data: bytes) -> None:
        runtime = self.runtime
        if runtime is not None and b"\x03" in data and runtime.interrupt():
            # Ctrl-C while a program runs is an interrupt, not REPL input (as on a board).
            data = data.replace(b"\x03", b"")
            if self.repl is not None:
                self.repl.stats["interrupts"] += 1
        if data:
            self._inbox.put(data)

    def _repl_loop(self) -> None:
        first = True
        while True:
            data = self._inbox.get()
            if data is None or self._stop.is_set():
                return
            assert self.repl is not None
            try:
                if first:
                    first = False
                    self.repl.power_on()
                if data:
                    self.repl.feed(data)
            except Exception:  # a board never dies from what it is sent; log and carry on
                log.exception("virtual board: REPL error")
