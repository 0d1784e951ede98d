"""Past one agent process: two halls' agents as two processes on one Mosquitto, with the shipped
many-halls ACL (edge_agent/deploy/mosquitto/acl.halls.example). Each agent owns its hall's
devices through its hall's topics (a device's frames always reach the one process that holds its
RL1 session), its own persistent session, database and broker user. Killing one agent between
receipt and commit leaves the other hall draining; the killed hall loses and duplicates nothing
when its agent comes back."""
from __future__ import annotations

import asyncio
import sqlite3
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.agent_links_support import (ACL_FILE, AgentProcess, Broker, MqttDevice,
                                       ScriptedDevice, mosquitto_missing, rating_rows,
                                       shipped_limits, write_links_config)
from tests.agent_support import wait_for
from tests.conftest import require

HALLS = {"T01": (1101, 1102), "T02": (1201, 1202)}
BACKLOG = 150
ACL = ACL_FILE.parent / "acl.halls.example"


def _password(user: str) -> str:
    return f"{user}-test-pw"


class _Listener:
    """A paho client with an agent's credentials subscribed to every hall: what it may read."""

    def __init__(self, port: int, user: str) -> None:
        self.topics: set[str] = set()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{user}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(user, _password(user))
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("hcp/v1/#", qos=0)
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.on_message = lambda cl, u, msg: self.topics.add(msg.topic)
        c.connect("127.0.0.1", port)
        c.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_two_halls_two_agent_processes_one_broker(tmp_path):
    require(mosquitto_missing())
    users = {f"hcp-agent-{hall}": _password(f"hcp-agent-{hall}") for hall in HALLS}
    users.update({str(d): _password(str(d)) for devs in HALLS.values() for d in devs})
    broker = Broker(tmp_path, users, acl=ACL, conf_lines=shipped_limits())
    broker.start()

    async def scenario():
        cfgs, keys, dbs = {}, {}, {}
        for hall, devs in HALLS.items():
            d = tmp_path / hall
            d.mkdir()
            cfgs[hall], k = write_links_config(
                d, mqtt_devices=devs, broker_port=broker.port, hall=hall,
                agent_user=f"hcp-agent-{hall}", agent_password=_password(f"hcp-agent-{hall}"))
            keys.update(k)
            dbs[hall] = d / "agent.db"
        agents = {hall: AgentProcess(cfgs[hall]) for hall in HALLS}
        devices: list[ScriptedDevice] = []
        transports: list[MqttDevice] = []
        blocker = None
        try:
            for a in agents.values():
                await wait_for(lambda: a.saw("ready"), 30)
                await wait_for(lambda: a.saw("mqtt connected"), 10)
            # whatever it subscribes to, hall T02's agent user reads no device of hall T01
            listener = _Listener(broker.port, "hcp-agent-T02")
            for hall, devs in HALLS.items():
                for did in devs:
                    dev = ScriptedDevice(did, keys[did])
                    for i in range(BACKLOG):
                        dev.press(1 + i % 5)
                    devices.append(dev)
                    transports.append(MqttDevice(dev, broker.port, _password(str(did)),
                                                 hall=hall))
            t01 = [d for d in devices if d.device_id in HALLS["T01"]]
            t02 = [d for d in devices if d.device_id in HALLS["T02"]]
            for dev in t01:      # a HELLO is answered only after its counter is stored (§4.2)
                dev.paused = True
            for dev in devices:
                dev.start()
            await wait_for(lambda: all(d.established for d in t01), 10)
            # hall T01's agent can receive but not commit; then it is killed
            blocker = sqlite3.connect(str(dbs["T01"]), timeout=10, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            for dev in t01:
                dev.paused = False
            await wait_for(lambda: sum(a.saw("records received") for a in [agents["T01"]]), 10)
            agents["T01"].kill9()
            # the other hall drains completely meanwhile
            await wait_for(lambda: all(not d.journal for d in t02), 30)
            for did in HALLS["T02"]:
                assert rating_rows(dbs["T02"], did) == list(range(1, BACKLOG + 1))
            assert all(d.journal for d in t01)          # never acked: still journaled
            blocker.execute("ROLLBACK")
            blocker.close()
            blocker = None
            agents["T01b"] = AgentProcess(cfgs["T01"])
            await wait_for(lambda: all(not d.journal for d in t01), 60)
            for hall, devs in HALLS.items():
                conn = sqlite3.connect(str(dbs[hall]))
                try:
                    rows = conn.execute("SELECT device_id, COUNT(*), COUNT(DISTINCT rseq)"
                                        " FROM ratings GROUP BY device_id").fetchall()
                finally:
                    conn.close()
                # exactly its own devices, every record once
                assert sorted(rows) == [(did, BACKLOG, BACKLOG) for did in devs], (hall, rows)
            assert any(t.startswith("hcp/v1/T02/1201/") for t in listener.topics)
            # (every user may read every hall's retained agent/state: online/offline only)
            assert not [t for t in listener.topics
                        if t.startswith("hcp/v1/T01/") and t != "hcp/v1/T01/agent/state"]
            listener.close()
        finally:
            if blocker is not None:
                blocker.execute("ROLLBACK")
                blocker.close()
            for dev in devices:
                await dev.stop()
            for t in transports:
                t.close()
            for a in agents.values():
                a.stop()
    try:
        asyncio.run(scenario())
    finally:
        broker.kill()
