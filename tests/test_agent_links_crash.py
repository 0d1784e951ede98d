"""`kill -9` of the agent process between receipt and commit loses nothing: the frame reached the
agent (its log says so), SQLite was held locked so the commit could not happen, the process is
killed, a new one starts, and the device — which was never acked — resends. Over MQTT (the
broker redelivers the un-PUBACKed message too) and over a serial pty."""
from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.agent_links_support import (AGENT_USER, AgentProcess, Broker, MqttDevice, PtyPort,
                                       ScriptedDevice, mosquitto_missing, rating_rows,
                                       write_links_config)
from tests.agent_support import wait_for
from tests.conftest import require

PASSWORDS = {AGENT_USER: "agent-test-pw", "1002": "dev-1002-test-pw"}


@pytest.mark.parametrize("link", ["mqtt", "serial"])
def test_kill_9_between_receipt_and_commit_loses_nothing(tmp_path, link):
    async def scenario():
        broker = None
        port = None
        if link == "mqtt":
            require(mosquitto_missing())
            broker = Broker(tmp_path, PASSWORDS)
            broker.start()
            cfg, keys = write_links_config(tmp_path, mqtt_devices=(1002,),
                                           broker_port=broker.port,
                                           agent_password=PASSWORDS[AGENT_USER])
            did = 1002
        else:
            link_path = tmp_path / "ttyEVAL1001"
            cfg, keys = write_links_config(tmp_path, serial_port=link_path)
            did = 1001
        db = tmp_path / "agent.db"
        dev = ScriptedDevice(did, keys[did])
        procs = [AgentProcess(cfg)]
        transport = None
        try:
            await wait_for(lambda: procs[-1].saw("ready"), 30)
            if link == "mqtt":
                transport = MqttDevice(dev, broker.port, PASSWORDS[str(did)])
            else:
                port = PtyPort(link_path)
                port.plug(dev)
                await wait_for(lambda: procs[-1].saw("serial port open"), 10)
                dev.say_hello()
            dev.start()
            await wait_for(lambda: dev.established, 10)
            dev.press(1)
            await wait_for(lambda: not dev.journal, 10)
            assert rating_rows(db, did) == [1]

            blocker = sqlite3.connect(str(db), timeout=10, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")      # the agent can receive, not commit
            received = sum("records received" in line for line in procs[-1].lines)
            dev.press(2)
            dev.press(5)
            await wait_for(lambda: sum("records received" in line
                                       for line in list(procs[-1].lines)) > received, 10)
            procs[-1].kill9()
            assert rating_rows(db, did) == [1]
            assert set(dev.journal) == {2, 3}       # never acked, so still journaled
            blocker.execute("ROLLBACK")
            blocker.close()

            procs.append(AgentProcess(cfg))
            await wait_for(lambda: procs[-1].saw("ready"), 30)
            await wait_for(lambda: not dev.journal, 20)
            assert rating_rows(db, did) == [1, 2, 3]
            conn = sqlite3.connect(str(db))
            assert conn.execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 3
            conn.close()
        finally:
            await dev.stop()
            if transport is not None:
                transport.close()
            for p in procs:
                p.stop()
            if port is not None:
                port.unplug()
            if broker is not None:
                broker.kill()
    asyncio.run(scenario())
