"""Flow control in the agent's RL1 sessions, with a real Agent (SQLite, group commit) and real
frames from a device-side protocol Session: one ACK for the frames one group commit stored, the
cumulative ack written on stop at once, and the RL1 window an MQTT link grants from its Receive
Maximum."""
from __future__ import annotations

import asyncio
import os
import time

from edge_agent.links.device_session import DeviceSession
from edge_agent.links.mqtt_link import MqttLink, mqtt_window
from protocol import messages as m
from protocol.session import DEVICE, Session
from tests.agent_links_support import rating_rows, write_links_config
from tests.agent_support import fast_tuning, rec, running_agent


class _Device:
    """The device end of one session; the agent's frames arrive in `inbox`."""

    def __init__(self, key: bytes) -> None:
        self.session = Session(1001, key, DEVICE)
        self.inbox: list[bytes] = []

    def send(self, frame: bytes) -> bool:      # the agent session's `send`
        self.inbox.append(frame)
        return True

    def received(self, type: int) -> list[dict]:
        out = []
        for frame in self.inbox:
            f, t, fields = self.session.open(frame)
            if t == type:
                out.append(fields)
        self.inbox.clear()
        return out

    def hello(self) -> bytes:
        self.hello_ctr = getattr(self, "hello_ctr", 0) + 1     # fresh for every HELLO (§4.2)
        return self.session.hello(os.urandom(8), {
            "fw": b"\x00\x01\x00", "boot": 1, "uptime": 5, "cat_version": 1, "low": 1,
            "next_rseq": 31, "status": m.ST_CLOCK_SYNCED, "hello_ctr": self.hello_ctr})

    def records(self, first: int, n: int) -> bytes:
        return self.session.seal(m.RECORDS, {
            "low": 1, "records": [rec(r) for r in range(first, first + n)]})[1]


async def _session(h, key: bytes, dev: _Device) -> DeviceSession:
    s = DeviceSession(h.agent, 1001, key, dev.send, link="serial")
    await s.load()
    await s.feed(dev.hello())
    assert dev.received(m.HELLO_ACK)
    return s


def test_one_ack_for_the_frames_one_group_commit_stored(tmp_path):
    cfg, keys = write_links_config(tmp_path, serial_port=tmp_path / "ttyEVAL1001")

    async def scenario():
        async with running_agent(cfg, fast_tuning(linger_s=0.0)) as h:
            dev = _Device(keys[1001])
            s = await _session(h, keys[1001], dev)
            commits = h.agent.writer.commits
            # three frames in one turn of the loop: their ingests share one commit
            await asyncio.gather(*[s.feed(dev.records(1 + 10 * i, 10)) for i in range(3)])
            await asyncio.sleep(0.05)
            assert h.agent.writer.commits == commits + 1
            acks = dev.received(m.ACK)
            assert [a["cum"] for a in acks] == [30]   # one ACK covers all three frames
            assert rating_rows(tmp_path / "agent.db", 1001) == list(range(1, 31))
            await s.stop()
    asyncio.run(scenario())


def test_cumulative_ack_is_written_at_stop_at_once(tmp_path):
    cfg, keys = write_links_config(tmp_path, serial_port=tmp_path / "ttyEVAL1001")

    async def scenario():
        async with running_agent(cfg) as h:
            dev = _Device(keys[1001])
            s = await _session(h, keys[1001], dev)
            await s.feed(dev.records(1, 10))
            t0 = time.monotonic()
            await s.stop()
            assert time.monotonic() - t0 < 0.9          # did not wait out the 1 s deferral
            assert h.q("SELECT cum_ack FROM devices WHERE device_id = 1001") == [(10,)]
            # and a session loaded from it resumes there
            again = DeviceSession(h.agent, 1001, keys[1001], dev.send, link="serial")
            await again.load()
            assert again.receiver.cum == 10
    asyncio.run(scenario())


def test_mqtt_window_keeps_about_receive_maximum_frames_in_flight(tmp_path):
    assert mqtt_window(256, 1) == 128          # the protocol's default window at most
    assert mqtt_window(256, 25) == 100
    assert mqtt_window(256, 200) == 10         # one full frame each: 200 frames <= 256
    assert mqtt_window(256, 2000) == 10        # never less than one full frame
    assert mqtt_window(64, 7) == 90           # whole frames: 64 * 10 // 7 = 91 -> 90
    cfg, keys = write_links_config(tmp_path, serial_port=tmp_path / "ttyEVAL1001")

    async def scenario():
        async with running_agent(cfg) as h:
            devices = {2000 + i: os.urandom(32) for i in range(200)}
            link = MqttLink(h.agent, "T01", "127.0.0.1", 1, devices, receive_maximum=256)
            assert {s.window for s in link.sessions.values()} == {10}
            # the HELLO_ACK carries it
            did = 2000
            dev = Session(did, devices[did], DEVICE)
            sent: list[bytes] = []
            s = link.sessions[did]
            s._send = lambda frame: sent.append(frame) or True
            await s.feed(dev.hello(os.urandom(8), {
                "fw": b"\x00\x01\x00", "boot": 1, "uptime": 5, "cat_version": 1, "low": 1,
                "next_rseq": 1, "status": 0, "hello_ctr": 1}))
            assert dev.open(sent[0])[2]["window"] == 10
    asyncio.run(scenario())
