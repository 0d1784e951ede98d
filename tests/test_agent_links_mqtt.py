"""MQTT link against a real Mosquitto (shipped ACL, per-device passwords), a real Agent with
SQLite and scripted RL1 devices using paho with their own credentials."""
from __future__ import annotations

import asyncio
import re
import sqlite3

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.links import start_links, stop_links
from protocol import messages as m
from protocol.session import DEVICE, Session
from tests.agent_links_support import (AGENT_USER, Broker, MqttDevice, ScriptedDevice,
                                       mosquitto_missing, rating_rows, write_links_config)
from tests.agent_support import case_body, fast_tuning, running_agent, wait_for
from tests.conftest import require

PASSWORDS = {AGENT_USER: "agent-test-pw", "1002": "dev-1002-test-pw", "1003": "dev-1003-test-pw"}


class _Rig:
    def __init__(self, tmp_path, **link_opts) -> None:
        require(mosquitto_missing())
        self.tmp = tmp_path
        self.broker = Broker(tmp_path, PASSWORDS)
        self.cfg, self.keys = write_links_config(
            tmp_path, mqtt_devices=(1002, 1003), broker_port=self.broker.port,
            agent_password=PASSWORDS[AGENT_USER])
        self.db = tmp_path / "agent.db"
        self.link_opts = link_opts
        self.devices: list[MqttDevice] = []

    async def __aenter__(self):
        self.broker.start()
        self.h = await running_agent(self.cfg, fast_tuning()).__aenter__()
        self.agent = self.h.agent
        self.links = await start_links(self.agent, self.h.config, **self.link_opts)
        self.link = self.links[0]
        await wait_for(lambda: self.link.connected, 10)
        return self

    async def device(self, did: int) -> ScriptedDevice:
        dev = ScriptedDevice(did, self.keys[did])
        self.devices.append(MqttDevice(dev, self.broker.port, PASSWORDS[str(did)]))
        dev.start()
        await wait_for(lambda: dev.established, 10)
        return dev

    async def __aexit__(self, *exc):
        for d in self.devices:
            await d.device.stop()
            d.close()
        await stop_links(self.links)
        await self.h.__aexit__(*exc)
        self.broker.kill()


def _agent_pubacks(log: str) -> set[int]:
    return {int(x) for x in re.findall(r"Received PUBACK from hcp-agent-T01 \(Mid: (\d+)", log)}


def _up_mids(log: str) -> list[int]:
    return [int(x) for x in re.findall(
        r"Sending PUBLISH to hcp-agent-T01 \(d\d, q1, r0, m(\d+), 'hcp/v1/T01/\d+/up'", log)]


def test_records_flow_and_puback_follows_commit(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            dev = await r.device(1002)
            await wait_for(lambda: r.h.q("SELECT online FROM devices WHERE device_id = 1002")
                           == [(1,)], 5)
            dev.press(1)
            await wait_for(lambda: not dev.journal, 10)
            assert rating_rows(r.db, 1002) == [1]
            # now hold the write lock: the frame arrives, nothing commits, nothing is acked
            blocker = sqlite3.connect(str(r.db), timeout=10, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            session = r.link.sessions[1002]
            dev.press(4)
            await wait_for(lambda: session.pending_ingests > 0, 10)
            mids = _up_mids(r.broker.log())
            assert mids, r.broker.log()[-2000:]
            pending_mid = mids[-1]
            assert pending_mid not in _agent_pubacks(r.broker.log())   # no PUBACK before COMMIT
            assert dev.cum == 1 and 2 in dev.journal                      # no RL1 ACK either
            blocker.execute("ROLLBACK")
            blocker.close()
            await wait_for(lambda: not dev.journal, 10)
            await wait_for(lambda: pending_mid in _agent_pubacks(r.broker.log()), 10)
            assert rating_rows(r.db, 1002) == [1, 2]
    asyncio.run(scenario())


def test_frame_for_another_device_and_unknown_devices_are_rejected(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            dev = await r.device(1002)
            transport = r.devices[0]
            # a correctly built frame of device 1003, published on 1002's own up topic
            other = Session(1003, r.keys[1003], DEVICE)
            other.adopt(b"\x01" * 8, b"\x02" * 8)
            frame = other.seal(m.RECORDS, {"low": 1, "records": [m.Record(1, 1, 0, 1, 1, 8)]})[1]
            transport.publish_raw(transport.up, frame)
            await wait_for(lambda: r.agent.rejected.get("wrong_device") == 1, 10)
            # replay of a genuine frame on the right topic: counted, stored once
            dev.press(3)
            await wait_for(lambda: not dev.journal, 10)
            records_frames = [f for f in dev.sent_frames if f[2] == m.RECORDS]
            transport.publish_raw(transport.up, records_frames[-1])
            await wait_for(lambda: r.agent.rejected.get("replay") == 1, 10)
            assert rating_rows(r.db, 1002) == [1]
            assert rating_rows(r.db, 1003) == []
    asyncio.run(scenario())


def test_broker_restart_loses_and_duplicates_nothing(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            dev = await r.device(1002)
            for i in range(20):
                dev.press(1 + i % 5)
            await wait_for(lambda: dev.cum >= 5, 10)
            connects = r.link.connects
            r.broker.kill()      # SIGKILL: in-flight messages and sessions are gone
            for i in range(20):
                dev.press(1 + i % 5)
            await wait_for(lambda: not r.link.connected, 10)
            r.broker.start()     # same port
            await wait_for(lambda: r.link.connects > connects, 15)
            for i in range(10):
                dev.press(2)
            await wait_for(lambda: not dev.journal, 20)
            rows = rating_rows(r.db, 1002)
            assert rows == list(range(1, 51))
            total = r.h.q("SELECT COUNT(*), COUNT(DISTINCT rseq) FROM ratings")
            assert total == [(50, 50)]
    asyncio.run(scenario())


def _broker_outstanding_max(log: str) -> int:
    """The most QoS 1 messages the broker had sent the agent without its PUBACK, from its log."""
    out = peak = 0
    for line in log.splitlines():
        if re.search(r"Sending PUBLISH to hcp-agent-T01 \(d\d, q1", line):
            out += 1
            peak = max(peak, out)
        elif "Received PUBACK from hcp-agent-T01" in line:
            out -= 1
    return peak


def test_receive_maximum_holds_by_construction_and_loses_nothing(tmp_path):
    """With the store blocked the agent holds at most Receive Maximum messages even though
    Mosquitto 2.0.11 sends more (it refills a whole quota when the oldest in-flight message is
    acked): the agent stops reading, TCP keeps the rest at the broker. Nothing is dropped, and
    everything arrives once the store is back."""
    async def scenario():
        async with _Rig(tmp_path, receive_maximum=2) as r:
            dev = await r.device(1002)
            blocker = sqlite3.connect(str(r.db), timeout=10, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            for _ in range(8):
                dev.press(1)
                n = len(dev.sent_frames)
                await wait_for(lambda: len(dev.sent_frames) > n, 5)   # one frame per press
            await asyncio.sleep(1.0)
            assert r.link.held_max <= 2
            assert rating_rows(r.db, 1002) == []
            blocker.execute("ROLLBACK")
            blocker.close()
            await wait_for(lambda: not dev.journal, 20)
            assert rating_rows(r.db, 1002) == list(range(1, 9))
            assert r.h.q("SELECT COUNT(*), COUNT(DISTINCT rseq) FROM ratings") == [(8, 8)]
            # the broker did send past R (its bug); the agent never held more than R
            assert _broker_outstanding_max(r.broker.log()) > 2, r.broker.log()[-3000:]
            assert r.link.held_max <= 2 and r.link.paused > 0
            assert r.link.connects == 1 and "mqtt_queue_full" not in r.agent.rejected
    asyncio.run(scenario())


def test_store_stalled_past_keepalive_reconnects_and_loses_nothing(tmp_path):
    """Held messages stop all reading, the broker's PINGRESP too: after the keepalive paho drops
    the connection, reconnects, and the broker redelivers what was never acked. Exactly once."""
    async def scenario():
        async with _Rig(tmp_path, receive_maximum=2, keepalive=1) as r:
            dev = await r.device(1002)
            blocker = sqlite3.connect(str(r.db), timeout=30, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            for _ in range(6):
                dev.press(2)
                n = len(dev.sent_frames)
                await wait_for(lambda: len(dev.sent_frames) > n, 5)
            await wait_for(lambda: r.link.connects >= 2, 15)
            assert rating_rows(r.db, 1002) == []
            blocker.execute("ROLLBACK")
            blocker.close()
            await wait_for(lambda: not dev.journal, 30)
            assert rating_rows(r.db, 1002) == list(range(1, 7))
            assert r.h.q("SELECT COUNT(*), COUNT(DISTINCT rseq) FROM ratings") == [(6, 6)]
            assert r.link.held_max <= 2
    asyncio.run(scenario())


def test_invite_over_mqtt_and_device_state(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            dev = await r.device(1003)
            status, body = await r.h.post_case(case_body("TEST-MQTT-0001", window="A02", n=3))
            assert status == 201, body
            await wait_for(lambda: len(dev.invites) == 1, 10)
            await wait_for(lambda: r.h.q("SELECT state FROM invitations") == [("sent",)], 10)
            # HELLO_ACK (first downlink) went QoS 0, the INVITE QoS 1 (SPEC §9)
            downs = re.findall(r"Received PUBLISH from hcp-agent-T01 \(d\d, q(\d), r\d, m\d+, "
                               r"'hcp/v1/T01/1003/down'", r.broker.log())
            assert downs[0] == "0" and "1" in downs, downs
            # the device goes away: its retained state says offline -> the agent marks it
            r.devices[0].client.publish(r.devices[0].state, b"offline", qos=1, retain=True)
            await wait_for(lambda: r.h.q("SELECT online FROM devices WHERE device_id = 1003")
                           == [(0,)], 10)
    asyncio.run(scenario())


def test_agent_state_is_retained_online(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            got = []
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-watch-1002",
                            protocol=mqtt.MQTTv5)
            c.username_pw_set("1002", PASSWORDS["1002"])
            c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("hcp/v1/T01/agent/state", 1)
            c.on_message = lambda cl, u, msg: got.append(bytes(msg.payload))
            c.connect("127.0.0.1", r.broker.port)
            c.loop_start()
            try:
                await wait_for(lambda: got, 10)
                assert got[0].startswith(b"online ")
            finally:
                c.disconnect()
                c.loop_stop()
    asyncio.run(scenario())


def test_replayed_hello_over_mqtt_is_refused_and_not_answered(tmp_path):
    """SPEC §5.3 over the broker: 100 copies of the device's recorded HELLO (published with its
    own credentials, the only way past the ACL) cost no downlink frame and no session."""
    async def scenario():
        async with _Rig(tmp_path) as r:
            dev = await r.device(1002)
            session = r.link.sessions[1002]
            await wait_for(lambda: session.confirmed, 5)
            captured = [f for f in dev.sent_frames if f[2] == m.HELLO][-1]
            out, acks = session.stats["frames_out"], dev.hello_acks
            mqtt_dev = r.devices[0]
            for _ in range(100):
                mqtt_dev.publish_raw(mqtt_dev.up, captured)
            await wait_for(lambda: r.agent.rejected.get("replay") == 100, 15)
            await asyncio.sleep(0.5)
            assert session.stats["frames_out"] == out and dev.hello_acks == acks
            assert dev.errors == [] and session.hellos == 1
            dev.press(3)
            await wait_for(lambda: not dev.journal, 10)
            assert rating_rows(r.db, 1002) == [1]
    asyncio.run(scenario())


def test_hellos_held_by_the_broker_during_an_outage_let_the_device_in_at_once(tmp_path):
    """The agent's links stop; the device keeps saying HELLO (a fresh counter each time) and
    the broker holds them for the agent's persistent session. When the agent is back they all
    arrive at once: the newest is answered (the device listens for no other), the stale ones
    are neither answered nor charged to the token bucket."""
    async def scenario():
        async with _Rig(tmp_path, hello_rate=(3, 3600.0)) as r:
            dev = await r.device(1002)
            await wait_for(lambda: r.link.sessions[1002].confirmed, 5)
            await stop_links(r.links)
            for _ in range(12):
                dev.say_hello()
            await asyncio.sleep(0.5)
            r.links = await start_links(r.agent, r.h.config, hello_rate=(3, 3600.0))
            r.link = r.links[0]
            session = r.link.sessions[1002]
            await wait_for(lambda: dev.hello_acks == 2 and session.confirmed, 15)
            assert session.guard.counts["limited"] == 0, session.guard.counts
            dev.press(2)
            await wait_for(lambda: not dev.journal, 10)
            assert rating_rows(r.db, 1002) == [1]
    asyncio.run(scenario())
