"""The journal's file layer with a power switch: real files on the host disk, and a cut that can
land at any journal write, flush, rename or remove — including in the middle of a write.

`firmware/journal.py` does all its file access through an `fs` object (firmware/fsio.py); the
virtual device hands it a `CutFs`. Files are opened unbuffered, so what a write put on disk is
exactly what survives: nothing is held in a Python buffer that a later garbage collection could
flush after the "power" went off. `arm(n)` cuts at the n-th journal operation from now; a cut
during a write leaves a random prefix of that write on disk (a torn record), then raises
`PowerCut` — a BaseException, so no `except OSError` in the firmware swallows it — and every
later operation raises it too, until the device boots with a fresh `CutFs`.
"""
from __future__ import annotations

import os
import random
from typing import Any

from firmware import fsio


class PowerCut(BaseException):
    """The power went off in the middle of a journal operation."""


class _CutFile:
    """An unbuffered file whose writes and flushes pass the power switch."""

    def __init__(self, fs: "CutFs", f: Any, path: str) -> None:
        self._fs = fs
        self._f = f
        self.path = path

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self._fs.tick("write", self.path):
            keep = self._fs.rng.randrange(0, len(data) + 1)   # 0..all bytes reach the disk
            if keep:
                self._f.write(data[:keep])
            self._fs.die()
        return self._f.write(data)

    def readinto(self, buf: Any) -> int:
        self._fs.alive()
        return self._f.readinto(buf)

    def read(self, n: int = -1) -> bytes:
        self._fs.alive()
        return self._f.read(n)

    def seek(self, off: int, whence: int = 0) -> int:
        self._fs.alive()
        return self._f.seek(off, whence)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        # closing after a cut is what the reboot does for the dead app: harmless, no data
        self._f.close()


class CutFs(fsio.OsFs):
    """OsFs with a power switch (see the module docstring)."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(fsync=False)
        self.rng = random.Random(seed)
        self.countdown = -1      # operations until the cut; -1 = not armed
        self.dead = False
        self.cut_op = ""         # which operation the cut landed in
        self.records_only = False   # count only operations on segment files (the press path)
        self._open: list[_CutFile] = []

    def arm(self, ops: int, records_only: bool = False) -> None:
        """Cut the power at the `ops`-th journal operation from now (1 = the next one); with
        `records_only`, count only writes/flushes of record segments (a press being stored)."""
        self.countdown = max(1, ops)
        self.records_only = records_only

    def alive(self) -> None:
        if self.dead:
            raise PowerCut()

    def tick(self, op: str, path: str = "") -> bool:
        """Count one operation; True when the power goes off in it."""
        self.alive()
        if self.records_only and not path.endswith(".seg"):
            return False
        if self.countdown > 0:
            self.countdown -= 1
            if self.countdown == 0:
                self.cut_op = op + (" " + path.rsplit("/", 1)[-1] if path else "")
                return True
        return False

    def die(self) -> None:
        self.dead = True
        raise PowerCut()

    def close_all(self) -> None:
        """Release the file handles of a dead app (nothing more reaches the disk)."""
        for f in self._open:
            try:
                f.close()
            except OSError:
                pass
        self._open = []

    # -- the fsio interface ------------------------------------------------------------------
    def open(self, path: str, mode: str) -> _CutFile:
        self.alive()
        if ("w" in mode or "+" in mode) and self.tick("create", path):
            self.die()
        f = _CutFile(self, open(path, mode, buffering=0), path)
        self._open.append(f)
        if len(self._open) > 64:       # closed handles of older segments
            self._open = [x for x in self._open if not x._f.closed]
        return f

    def flush(self, f: Any) -> None:
        if self.tick("flush", getattr(f, "path", "")):
            self.die()
        f.flush()

    def listdir(self, path: str) -> list[str]:
        self.alive()
        return os.listdir(path)

    def mkdir(self, path: str) -> None:
        if self.tick("mkdir"):
            self.die()
        os.mkdir(path)

    def rename(self, src: str, dst: str) -> None:
        if self.tick("rename"):
            self.die()
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        if self.tick("remove"):
            self.die()
        os.remove(path)
