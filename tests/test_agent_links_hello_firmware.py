"""Issue 17 end to end: the real firmware (simulator VirtualDevice: firmware.app.App on the host
board) on a real pty, the real agent (Agent + serial link, SQLite, with a catalogue to push).
A wiretap on the line records the device's HELLO; 100 copies of it are sent to the agent in
half a second. Before issue 17 that cost ~920 downlink frames and ~100 re-handshakes of the
device; now: no frame at all, no re-handshake, the device keeps working. The device then loses
power: its HELLO counter survives the cut, its new HELLO is accepted, the old one still is not.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from edge_agent.links import start_links, stop_links
from protocol import cobs
from protocol import messages as m
from simulator import device as vdev
from simulator.ptyport import PtyPort
from tests.agent_links_support import rating_rows, use_catalogue, write_links_config
from tests.agent_support import fast_tuning, running_agent, wait_for

pytestmark = pytest.mark.timeout(120)
DEV = 1001


class Wiretap:
    """Records what the device writes to the line (what an attacker on the cable captures)."""

    def __init__(self, port: PtyPort) -> None:
        self.decoder = cobs.StreamDecoder()
        self.frames: list[bytes] = []
        stream = port.stream
        inner = stream.write

        def write(data: bytes) -> int:
            n = inner(data)
            if n:
                self.frames += [f for f in self.decoder.feed(bytes(data[:n]))
                                if isinstance(f, bytes)]
            return n
        stream.write = write

    def hellos(self) -> list[bytes]:
        return [f for f in self.frames if f[2] == m.HELLO]


async def _run_device(d: vdev.VirtualDevice, stop: asyncio.Event) -> None:
    while not stop.is_set():
        d.step(time.monotonic())
        await asyncio.sleep(0.004)


def test_replay_flood_costs_the_real_device_nothing_and_counters_survive_power_cuts(tmp_path):
    link_path = tmp_path / "ttyEVAL1001"
    cfg, keys = write_links_config(tmp_path, serial_port=link_path)
    use_catalogue(tmp_path, cfg)
    root = tmp_path / "device"
    vdev.provision(root, DEV, keys[DEV], "T01", "serial")

    async def scenario():
        port = PtyPort(link_path)
        port.plug()
        tap = Wiretap(port)
        d = vdev.VirtualDevice(root, "A01", port, seed=3)
        d.off_s = 0.3
        stop = asyncio.Event()
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config, reopen_s=0.2)
            session = links[0].session
            runner = None
            try:
                await wait_for(lambda: links[0].is_open, 5)
                d.boot()
                runner = asyncio.create_task(_run_device(d, stop))
                # up, confirmed, and the catalogue installed (pushed after the confirmation)
                await wait_for(lambda: d.link_state == "up" and session.confirmed, 15)
                await wait_for(lambda: (root / "catalogue.bin").exists(), 20)
                # every downlink command DACKed: nothing of the live session is due
                await wait_for(lambda: not session.downlink.pending(), 10)
                await asyncio.sleep(0.5)
                captured = tap.hellos()[-1]
                up = d.app.uplink.counters
                before = {"agent_frames_out": session.stats["frames_out"],
                          "device_hellos": up["hello"], "device_sessions": up["sessions"],
                          "device_frames_in": up["frames_down"] + up["rejected"]}

                t0 = time.monotonic()
                for _ in range(10):                          # 100 copies in half a second
                    for _ in range(10):
                        port.noise(cobs.wire(captured))
                    await asyncio.sleep(0.05)
                flood_s = time.monotonic() - t0
                await wait_for(lambda: h.agent.rejected.get("replay", 0) == 100, 10)
                await asyncio.sleep(1.5)                     # anything the agent would answer
                up = d.app.uplink.counters
                after = {"agent_frames_out": session.stats["frames_out"],
                         "device_hellos": up["hello"], "device_sessions": up["sessions"],
                         "device_frames_in": up["frames_down"] + up["rejected"]}
                print(f"\n100 replayed HELLOs in {flood_s:.2f} s: agent frames out "
                      f"{after['agent_frames_out'] - before['agent_frames_out']}, device "
                      f"re-handshakes {after['device_sessions'] - before['device_sessions']}, "
                      f"frames the device received "
                      f"{after['device_frames_in'] - before['device_frames_in']}")
                assert after["agent_frames_out"] == before["agent_frames_out"]
                assert after["device_frames_in"] == before["device_frames_in"]
                assert after["device_hellos"] == before["device_hellos"]
                assert after["device_sessions"] == before["device_sessions"]
                assert session.hellos == 1 and d.link_state == "up"
                assert up["rejected"] == 0
                await wait_for(lambda: h.agent.reader().execute(
                    "SELECT hello_replays FROM devices WHERE device_id = ?",
                    (DEV,)).fetchone()[0] == 100, 5)
                # the device still takes a press end to end
                d.press(2)
                await wait_for(lambda: rating_rows(tmp_path / "agent.db", DEV) == [1], 10)

                # power cut: the counter on flash survives, the new HELLO gets in
                ctr_before = d.app.counter.last
                d.power_cut(within_ops=1, grace_s=0.05)
                await wait_for(lambda: d.boots == 2 and d.link_state == "up"
                               and session.confirmed, 15)
                assert d.app.counter.last > ctr_before
                assert session.hellos == 2 and h.agent.rejected.get("replay", 0) == 100
                # and the HELLO recorded before the cut stays a replay
                port.noise(cobs.wire(captured))
                await wait_for(lambda: h.agent.rejected.get("replay", 0) == 101, 5)
                assert session.hellos == 2 and d.app.uplink.counters["sessions"] == 1
            finally:
                stop.set()
                if runner is not None:
                    await runner
                d.shutdown()
                await stop_links(links)
        port.close()
    asyncio.run(scenario())
