"""A virtual USB-serial adapter: a pseudo-terminal pair whose agent end is reached through a
stable symlink (like /dev/serial/by-id/...), so the agent's hall.toml can name it.

The virtual device holds the master end as its UART (`stream`, the read/write interface
firmware/board/sim.py expects). Unplug closes both ends: the agent's reads fail (EIO) and it
reopens the path every second; replug makes a new pair and points the same symlink at it, as
udev does for a re-enumerated adapter. While unplugged the device's UART talks to nothing: its
writes vanish and it reads nothing, as on a pulled cable. `noise()` injects line noise either way.
"""
from __future__ import annotations

import os
import tty
from pathlib import Path


class PtyStream:
    """The device's UART on the current master fd (read(n) -> bytes | None, write(b) -> int)."""

    def __init__(self, port: "PtyPort") -> None:
        self.port = port

    def read(self, n: int) -> bytes | None:
        fd = self.port.master
        if fd is None:
            return None
        try:
            return os.read(fd, n) or None
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:           # the slave side has no reader yet (EIO): nothing arrives
            return None

    def write(self, data: bytes) -> int:
        fd = self.port.master
        if fd is None:
            return len(data)      # a pulled cable: the bytes go nowhere
        try:
            return os.write(fd, data)
        except (BlockingIOError, InterruptedError):
            return 0              # the line is full: the firmware keeps the rest / drops a frame
        except OSError:
            return len(data)


class PtyPort:
    """A pty pair behind `link_path` (a symlink to the slave). See the module docstring."""

    def __init__(self, link_path: str | os.PathLike) -> None:
        self.link_path = Path(link_path)
        self.master: int | None = None
        self.slave: int | None = None
        self.plugs = 0
        self.stream = PtyStream(self)

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> None:
        """Create a new pair and (re)point the symlink at its slave, atomically."""
        if self.master is not None:
            return
        master, slave = os.openpty()
        # raw at once: with the default line discipline the slave would echo the device's own
        # frames back to it before the agent has opened (and configured) the port
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master, self.slave = master, slave
        tmp = self.link_path.with_name(self.link_path.name + ".tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self.link_path)
        self.plugs += 1

    def unplug(self) -> None:
        """Close both ends; the symlink stays (dangling), as /dev/serial/by-id does not."""
        for fd in (self.master, self.slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.master = self.slave = None

    def drain_device_side(self) -> None:
        """Discard what waits for the device (a booting UART starts with an empty buffer)."""
        while self.stream.read(4096):
            pass

    def noise(self, data: bytes, to_agent: bool = True) -> None:
        """Line noise: bytes into the agent's receiver (via the master) or the device's (via
        the slave end we hold)."""
        fd = self.master if to_agent else self.slave
        if fd is None:
            return
        try:
            os.write(fd, data)
        except OSError:
            pass

    def close(self) -> None:
        """Unplug and remove the symlink."""
        self.unplug()
        try:
            if self.link_path.is_symlink():
                self.link_path.unlink()
        except OSError:
            pass
