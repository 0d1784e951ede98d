"""The firmware under the real MicroPython runtime: the citizen-flow traces, a lossy link run
with the test agent, and 1,000 presses measuring the heap (printed: run pytest with -s, or read
the captured output)."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FILES = {f"/lib/{n}": (HERE / n).read_text()
         for n in ("fw_traces.py", "fw_agent.py", "fw_rig.py", "fw_memrun.py")}
PACKAGES = ("protocol", "firmware")
pytestmark = pytest.mark.timeout(120)


def test_flow_traces_micropython(micropython):
    out = micropython.run(
        "import os\nos.mkdir('/fwt')\nimport fw_traces\n"
        "print('traces', len(fw_traces.run_all('/fwt')))\n",
        packages=PACKAGES, files=FILES)
    assert "traces 16" in out


def test_lossy_link_micropython(micropython):
    out = micropython.run(
        "import os\nos.mkdir('/rig')\n"
        "from fw_rig import Rig\nfrom fw_agent import Faults\n"
        "bad = Faults(loss=0.2, dup=0.1, reorder=0.3, corrupt=0.05)\n"
        "rig = Rig('/rig', up=bad, down=bad, seed=5)\n"
        "for i in range(15):\n"
        "    if i % 2 == 0:\n"
        "        rig.agent.invite(300 + i)\n"
        "        rig.run(300)\n"
        "    rig.rate(1 + i % 3)\n"
        "    rig.run(900)\n"
        "    if i == 7:\n"
        "        rig.reboot()\n"
        "n = rig.journalled()\n"
        "rig.run_until(lambda: rig.app.journal.unacked() == 0 and len(rig.agent.stored) == n)\n"
        "assert sorted(rig.agent.stored) == list(range(1, n + 1))\n"
        "assert all(c == 1 for c in rig.agent.stored.values())\n"
        "print('exactly once', n)\n",
        packages=PACKAGES, files=FILES)
    assert "exactly once 15" in out


def test_hello_counter_survives_a_power_cut_micropython(micropython):
    out = micropython.run(
        "import os\nos.mkdir('/hc')\n"
        "from fw_rig import Rig, hello_after_reboot\n"
        "print('HELLO', *hello_after_reboot(Rig('/hc')))\n",
        packages=PACKAGES, files=FILES)
    first, second, sent = (int(x) for x in out.split("HELLO", 1)[1].split()[:3])
    assert second > first and sent == 1


def test_thousand_presses_heap_micropython(micropython):
    out = micropython.run(
        "import os\nos.mkdir('/mem')\nimport fw_memrun\n"
        "r = await fw_memrun.run('/mem', 1000)\n"
        "for k in sorted(r):\n    print('heap', k, r[k])\n",
        packages=PACKAGES, files=FILES, timeout=110, heap=1024 * 1024)
    stats = {}
    for line in out.splitlines():
        if line.startswith("heap "):
            _, k, v = line.split()
            stats[k] = int(v)
    print("\nMicroPython 1,000-press run (bytes):", stats)
    assert stats["stored_once"] == 1000 and stats["presses"] == 1000
    assert stats["device_heap"] <= 48 * 1024, stats     # app state + growth over the run
    # a press allocates nothing; opening a new segment file (twice in 1,000 presses) does
    assert stats["press_alloc_avg"] == 0 and stats["presses_allocating"] <= 2, stats
