"""Serial: from an evaluator's boot to its first committed rating, with the agent already running.

A real `Agent` (production `Tuning`, SQLite with WAL and synchronous=FULL) and its serial link with
production defaults, on a pseudo-terminal behind a symlink (as /dev/serial/by-id/... names a USB
port); the device side is RL1's (tests/agent_links_support.ScriptedDevice: Session +
RecordSender) holding a backlog of BACKLOG records. A boot is a USB port that re-enumerates: the
old pty pair is torn down, a new one appears behind the same symlink, and the device says HELLO
at once, as the firmware does when its link starts — before the agent has opened the new port.
Timed from the new port's appearance to the device holding an ACK for its first backlog record
(the ACK follows the COMMIT). Baseline, same run: a press on the established session, from the
press to its ACK. BOOTS boots; median and worst.
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path

from edge_agent.agent import Agent, Tuning
from edge_agent.config import load_config
from edge_agent.links import start_links, stop_links
from edge_agent.logs import setup_logging
from protocol.arq import RecordSender
from protocol.session import DEVICE, Session
from tests.agent_links_support import PtyPort, ScriptedDevice, write_links_config

BOOTS = 7
BACKLOG = 30
TIMEOUT_S = 10.0


async def _until(pred, what: str) -> float:
    deadline = time.monotonic() + TIMEOUT_S
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"serial boot bench: {what} not within {TIMEOUT_S} s")
        await asyncio.sleep(0.002)
    return time.monotonic()


async def _run(tmp: Path) -> dict:
    link_path = tmp / "ttyEVAL1001"
    cfg, keys = write_links_config(tmp, serial_port=link_path)
    log_file = open(tmp / "agent.log", "w", encoding="utf-8")
    handler = setup_logging("info", log_file)      # production logging, to a file
    agent = Agent(load_config(cfg), Tuning())
    await agent.start()
    links: list = []
    port = PtyPort(link_path)
    dev = ScriptedDevice(1001, keys[1001])
    boots: list[float] = []
    presses: list[float] = []
    hellos = 0
    try:
        links = await start_links(agent, agent.config)
        for boot in range(1, BOOTS + 1):
            for i in range(BACKLOG):
                dev.press(1 + i % 5)
            first = dev.cum + 1
            await dev.stop()
            port.unplug()                 # the device reboots: its USB port goes away
            await asyncio.sleep(0.3)
            dev.session = Session(1001, keys[1001], DEVICE)   # RAM is gone, the journal stays
            dev.sender = RecordSender()
            dev.boot = boot
            hellos0 = dev.hellos
            t0 = time.monotonic()
            port.plug(dev)                # ... and comes back behind the same symlink
            dev.link_up()                 # HELLO at once
            dev.start()
            t1 = await _until(lambda: dev.cum >= first, "first ACK after boot")
            boots.append(t1 - t0)
            hellos += dev.hellos - hellos0
            await _until(lambda: not dev.journal, "backlog drained")
            dev.press(2)                  # baseline: a live press on the running session
            target = dev.next_rseq - 1
            t2 = time.monotonic()
            t3 = await _until(lambda: dev.cum >= target, "ACK of a live press")
            presses.append(t3 - t2)
        stored = agent.reader().execute(
            "SELECT COUNT(*), COUNT(DISTINCT rseq) FROM ratings").fetchone()
        if stored != ((BACKLOG + 1) * BOOTS,) * 2:
            raise AssertionError(f"serial boot bench: stored {stored}")
    finally:
        await dev.stop()
        await stop_links(links)
        await agent.stop()
        port.unplug()
        logging.getLogger("edge_agent").removeHandler(handler)
        log_file.close()
    return {"boots": boots, "presses": presses, "hellos": hellos}


def report() -> str:
    """Run BOOTS boots (≈ 5 s) and format the figures."""
    with tempfile.TemporaryDirectory(prefix="hcp-serial-boot-") as name:
        r = asyncio.run(_run(Path(name)))
    base = statistics.median(r["presses"])
    med, worst = statistics.median(r["boots"]), max(r["boots"])
    return "\n".join([
        f"Serial boot: agent running, the evaluator's USB port re-enumerates and it says HELLO at "
        f"once ({BOOTS} boots, {BACKLOG} records waiting)",
        f"  {'baseline: live press to its ACK, session up':<48} {base * 1000:7.1f} ms  1.00x",
        f"  {'boot (port appears) to first ACK':<48} {med * 1000:7.1f} ms  {med / base:5.1f}x  "
        f"(worst {worst * 1000:.0f} ms; {r['hellos']} HELLOs for {BOOTS} boots)",
        f"first_commit_s={worst:.2f}",
    ])


if __name__ == "__main__":
    print(report())
