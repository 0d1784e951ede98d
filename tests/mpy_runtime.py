"""Run code under the real MicroPython runtime (WebAssembly build from npm, driven by Node).

The runtime is pinned in package.json and installed by `make test` (`npm ci`). Its gaps, which
tests must respect: no `machine`, no sockets, no `asyncio.run` (use top-level `await`), and an
in-memory filesystem rather than littlefs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "tests" / "mpy" / "run.mjs"
RUNTIME = ROOT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPythonError(AssertionError):
    """The code raised under MicroPython; the message carries its output and traceback."""


def available() -> str | None:
    """None when the runtime can be used, else the reason it can't (for pytest.skip)."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not RUNTIME.exists():
        return "MicroPython runtime missing: run `npm ci` (make test does)"
    return None


def run(code: str, packages: tuple[str, ...] = ("protocol",), files: dict[str, str] | None = None,
        heap: int = 8 * 1024 * 1024, timeout: float = 120.0, root: Path = ROOT) -> str:
    """Run `code` under MicroPython with `packages` of `root` importable from /lib (`root`: the
    repository, or a firmware build folder of .mpy files from tools/firmware_build.py).

    Returns stdout. Raises MicroPythonError (with stdout and stderr) when the code raises.
    """
    job = {
        "dirs": {str(Path(root) / p): f"/lib/{p}" for p in packages},
        "files": files or {},
        "code": code,
        "heap": heap,
    }
    proc = subprocess.run(["node", str(RUNNER)], input=json.dumps(job), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, env=dict(os.environ))
    if proc.returncode != 0:
        raise MicroPythonError(f"MicroPython run failed (exit {proc.returncode})\n"
                               f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc.stdout
