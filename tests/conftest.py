"""Shared fixtures. Anything that needs an outside program (node, mosquitto) skips with the
reason when it is missing, except in CI where `make test` installs them and a skip would hide a
gap: there (CI=true) a missing tool fails the test instead."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))   # MicroPython-compatible test helpers import flat


def require(reason: str | None) -> None:
    """Skip (or fail under CI) when `reason` says a tool is missing."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must install it: see Makefile)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def micropython():
    """The MicroPython runtime runner (tests/mpy_runtime.py), skipped if unavailable."""
    from tests import mpy_runtime
    require(mpy_runtime.available())
    return mpy_runtime


@pytest.fixture(scope="session")
def micropython_unix():
    """MicroPython's unix port (tests/mpy_unix.py: littlefs, sockets, processes), skipped if
    unavailable. Same run(code, packages=..., files=...) call as the `micropython` fixture."""
    from tests import mpy_unix
    require(mpy_unix.available())
    return mpy_unix
