"""The firmware's MQTT link (its own MQTT 3.1.1 client) against a real Mosquitto broker, with
the agent side on paho-mqtt: frames both ways, retained online state, last will on a dropped
connection, reconnection, and every record stored exactly once."""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from conftest import require
from firmware.app import App
from firmware.board.sim import SimBoard
from firmware.config import Config
from firmware.links.mqtt_client import MQTTClient
from firmware.links.mqtt_link import topics
from fw_agent import AgentEnd
from fw_rig import DEV, KEY, WALL

MOSQUITTO = "/usr/sbin/mosquitto"
HALL = "H370100"
pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def broker(tmp_path):
    require(None if os.path.exists(MOSQUITTO) else
            "mosquitto not installed (apt-get install mosquitto)")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise AssertionError("mosquitto did not start: " + proc.stdout.read().decode())
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(5)


class PahoAgent:
    """The agent's MQTT side: paho-mqtt 2.x, callbacks only enqueue."""

    def __init__(self, port: int):
        self.up, self.down, self.state = topics(HALL, DEV)
        self.frames: queue.Queue = queue.Queue()
        self.states: queue.Queue = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="agent-test")
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.subscribe([(self.up, 1), (self.state, 1)])
        self.c.loop_start()

    def _msg(self, client, userdata, msg):
        (self.states if msg.topic == self.state else self.frames).put(bytes(msg.payload))

    def publish(self, frame: bytes) -> None:
        self.c.publish(self.down, frame, qos=1)

    def wait_state(self, want: str, limit: float = 10.0) -> str:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                s = self.states.get(timeout=0.1).decode()
            except queue.Empty:
                continue
            if s == want:
                return s
        raise AssertionError(f"state {want!r} never published")

    def stop(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def make_app(tmp_path: Path, port: int) -> App:
    cfg = Config({"device_id": DEV, "hall": HALL, "link": "mqtt",
                  "mqtt": {"host": "127.0.0.1", "port": port, "keepalive": 10},
                  "catalogue_path": str(tmp_path / "cat.bin"), "flow": {"thanks_s": 0}})
    return App(SimBoard(None, str(tmp_path / "j")), cfg, KEY, phrases={})


def spin(app: App, agent: AgentEnd, pa: PahoAgent, seconds: float, until=None) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        now = app.clock.now()
        app.step(now)
        while True:
            try:
                agent.feed_frame(now, pa.frames.get_nowait())
            except queue.Empty:
                break
        agent.step(now)
        if until is not None and until():
            return True
        time.sleep(0.002)
    return until is None


def test_mqtt_client_roundtrip_and_will(broker):
    """Our client alone: QoS 1 publish acked, subscription delivered, will on a dropped link."""
    got: list = []
    sub = MQTTClient("t-sub", "127.0.0.1", broker)
    sub.set_callback(lambda t, m: got.append((t, m)))
    sub.connect()
    sub.subscribe("t/#", qos=1)
    pub = MQTTClient("t-pub", "127.0.0.1", broker)
    pub.set_last_will("t/will", b"gone", retain=True, qos=1)
    pub.connect()
    pub.publish("t/a", b"\x00\x01frame", qos=1)
    end = time.monotonic() + 5
    while time.monotonic() < end and (pub.inflight or len(got) < 1):
        pub.check_msg()
        sub.check_msg()
        time.sleep(0.01)
    assert not pub.inflight and (b"t/a", b"\x00\x01frame") in got
    pub.close()                                  # no DISCONNECT: the broker sends the will
    end = time.monotonic() + 5
    while time.monotonic() < end and (b"t/will", b"gone") not in got:
        sub.check_msg()
        time.sleep(0.01)
    assert (b"t/will", b"gone") in got
    sub.disconnect()


def press(app: App, agent: AgentEnd, pa: PahoAgent, button: int) -> None:
    """A citizen's press: held and released 150 ms each, and each phase lasts until the
    debouncer saw it — a CI stall of this process (the device) cannot shorten a press in
    device time (see test_firmware_link.test_pty_lossy_exactly_once)."""
    bit = 1 << (button - 1)
    app.board.press(button)
    spin(app, agent, pa, 0.15)
    assert spin(app, agent, pa, 10, lambda: app.debouncer.held() & bit)
    app.board.release(button)
    spin(app, agent, pa, 0.15)
    assert spin(app, agent, pa, 10, lambda: not app.debouncer.held() & bit)


def test_device_over_mosquitto_exactly_once(broker, tmp_path):
    pa = PahoAgent(broker)
    t0 = time.monotonic()
    agent = AgentEnd(DEV, KEY, send_frame=pa.publish, seed=3,
                     time_fn=lambda: WALL + int(time.monotonic() - t0))
    app = make_app(tmp_path, broker)
    try:
        assert spin(app, agent, pa, 10, lambda: app.uplink.established)
        pa.wait_state("online 1")
        agent.invite(42, staff_no="B12")
        assert spin(app, agent, pa, 5, lambda: app.display.screen == "invite")
        spin(app, agent, pa, 0.4)
        for i in range(12):
            press(app, agent, pa, 1 + i % 3)
        assert app.journal.next_rseq - 1 == 12
        assert spin(app, agent, pa, 10, lambda: len(agent.stored) == 12
                    and app.journal.unacked() == 0)
        assert agent.records[1].invite_id == 42 and agent.dacked >= 1
        # the connection drops without DISCONNECT: the broker says offline, the device comes back
        app.uplink.link.client.sock.close()
        pa.wait_state("offline")
        for i in range(5):
            press(app, agent, pa, 2)
        assert app.journal.next_rseq - 1 == 17
        assert spin(app, agent, pa, 20, lambda: len(agent.stored) == 17
                    and app.journal.unacked() == 0)
        pa.wait_state("online 1")
        assert sorted(agent.stored) == list(range(1, 18))
        assert all(c == 1 for c in agent.stored.values())
        assert app.uplink.counters["link_failures"] >= 1
    finally:
        app.uplink.link.close()
        pa.stop()
