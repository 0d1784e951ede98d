"""File access for the journal: a thin wrapper over `os` and `open`.

The journal goes through an object with this interface so tests can swap in a simulated flash
that cuts power at any write, flush or rename (tests/journal_faults.py). Runs on MicroPython
(littlefs, where `flush()` commits) and CPython (the simulator).
"""
import os

# CPython's os.rename refuses to replace an existing file on Windows; os.replace does it
# everywhere. MicroPython has only rename, which replaces atomically on littlefs.
_replace = getattr(os, "replace", os.rename)


class OsFs:
    """The real filesystem. `fsync=True` also calls os.fsync after each flush (CPython only;
    littlefs commits on flush, and MicroPython has no fsync)."""

    def __init__(self, fsync=False):
        self._fsync = fsync and hasattr(os, "fsync")

    def open(self, path, mode):
        return open(path, mode)

    def flush(self, f):
        f.flush()
        if self._fsync:
            os.fsync(f.fileno())

    def listdir(self, path):
        return os.listdir(path)

    def mkdir(self, path):
        os.mkdir(path)

    def rename(self, src, dst):
        _replace(src, dst)

    def remove(self, path):
        os.remove(path)
