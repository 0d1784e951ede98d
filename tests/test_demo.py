"""`hcp demo` runs end to end on a real pty and loses nothing."""
from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from simulator import demo


def test_demo_protocol_over_pty_loses_nothing():
    counts = demo.run(presses=8, seed=3, console=Console(file=io.StringIO()))
    assert counts["presses"] == 8 and counts["stored"] == 8 and counts["lost"] == 0
    assert counts["rejected"] >= 1        # the injected line noise was seen and dropped


def test_hcp_demo_command_exits_zero():
    proc = subprocess.run([sys.executable, "-m", "tools.hcp", "demo", "--presses", "4"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "lost" in proc.stdout
