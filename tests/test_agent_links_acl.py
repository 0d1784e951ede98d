"""The shipped broker ACL (edge_agent/deploy/mosquitto/acl) enforces topic isolation when a real
Mosquitto runs with it: a device user can neither read another device's downlink nor publish on
another device's uplink/state; the agent user can use the whole tree."""
from __future__ import annotations

import socket
import subprocess
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.agent_links_support import (ACL_FILE, AGENT_USER, MOSQUITTO, MOSQUITTO_PASSWD, Broker,
                                       free_port, mosquitto_missing)
from tests.conftest import require

PASSWORDS = {AGENT_USER: "agent-test-pw", "1002": "dev-1002-test-pw", "1003": "dev-1003-test-pw"}
T = "hcp/v1/T01/"


class Client:
    """A paho v5 client that records messages and SUBACK reason codes."""

    def __init__(self, port: int, user: str, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.subacks: dict[int, list] = {}
        self.pubacks: dict[int, object] = {}
        self.connected = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-test-{user}",
                        protocol=mqtt.MQTTv5)
        c.username_pw_set(user, PASSWORDS[user] if password is None else password)
        c.on_connect = lambda cl, u, f, rc, p: setattr(self, "connected", rc)
        c.on_message = lambda cl, u, msg: self.messages.append((msg.topic, bytes(msg.payload)))
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subacks.__setitem__(mid, rcs)
        c.on_publish = lambda cl, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c = c
        c.connect("127.0.0.1", port)
        c.loop_start()
        wait(lambda: self.connected is not None)

    def subscribe(self, topic: str) -> list:
        _, mid = self.c.subscribe(topic, qos=1)
        wait(lambda: mid in self.subacks)
        return self.subacks[mid]

    def publish(self, topic: str, payload: bytes):
        info = self.c.publish(topic, payload, qos=1)
        wait(lambda: info.mid in self.pubacks)
        return self.pubacks[info.mid]

    def got(self, topic: str, payload: bytes) -> bool:
        return (topic, payload) in self.messages

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait(pred, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %s s" % timeout)
        time.sleep(0.01)


@pytest.fixture
def broker(tmp_path):
    require(mosquitto_missing())
    b = Broker(tmp_path, PASSWORDS)
    b.start()
    yield b
    b.kill()


def test_device_cannot_use_another_devices_topics(broker):
    agent = Client(broker.port, AGENT_USER)
    d2 = Client(broker.port, "1002")
    d3 = Client(broker.port, "1003")
    try:
        assert not agent.connected.is_failure and not d2.connected.is_failure
        for topic in (T + "+/up", T + "+/state"):
            assert not agent.subscribe(topic)[0].is_failure
        assert not d3.subscribe(T + "1003/down")[0].is_failure
        assert not d2.subscribe(T + "1002/down")[0].is_failure
        # Mosquitto 2.0 may grant a subscription and apply the ACL at delivery: whatever the
        # SUBACK says, nothing of another device's downlink or uplink may arrive
        for topic in (T + "1002/down", T + "1002/up", T + "#", "#"):
            d3.subscribe(topic)
        agent.publish(T + "1002/down", b"for-1002")
        d2.publish(T + "1002/up", b"up-of-1002")
        agent.publish(T + "1003/down", b"for-1003")
        wait(lambda: d3.got(T + "1003/down", b"for-1003"))
        wait(lambda: d2.got(T + "1002/down", b"for-1002"))
        wait(lambda: agent.got(T + "1002/up", b"up-of-1002"))
        # the broker is single-threaded: a marker sent now reaches d3 after anything queued
        agent.publish(T + "1003/down", b"marker")
        wait(lambda: d3.got(T + "1003/down", b"marker"))
        assert [t for t, _ in d3.messages if "/1002/" in t] == []
        # publishing on another device's up/state is dropped; its own goes through (same
        # connection, so if the forged one were delivered it would have arrived first)
        d3.publish(T + "1002/up", b"forged-up")
        d3.publish(T + "1002/state", b"offline")
        d3.publish(T + "1003/up", b"own-up")
        wait(lambda: agent.got(T + "1003/up", b"own-up"))
        assert not agent.got(T + "1002/up", b"forged-up")
        assert not agent.got(T + "1002/state", b"offline")
        # a device may not impersonate the agent's state either
        rc = d3.publish(T + "agent/state", b"offline")
        assert rc.is_failure
    finally:
        for c in (agent, d2, d3):
            c.close()


def test_wrong_password_and_anonymous_are_refused(broker):
    bad = Client(broker.port, "1002", password="not-the-password")
    try:
        assert bad.connected.is_failure
    finally:
        bad.close()


def test_shipped_broker_conf_is_valid_for_mosquitto(tmp_path):
    """hcp-broker.conf, with its paths pointed into tmp_path, starts Mosquitto and enforces
    passwords (the same check `mosquitto -c` does at deployment)."""
    require(mosquitto_missing())
    port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run([MOSQUITTO_PASSWD, "-c", "-b", str(passwd), AGENT_USER,
                    PASSWORDS[AGENT_USER]], check=True, capture_output=True)
    text = (ACL_FILE.parent / "hcp-broker.conf").read_text()
    text = (text.replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace("/etc/mosquitto/hcp-passwd", str(passwd))
            .replace("/etc/mosquitto/hcp-acl", str(ACL_FILE))
            .replace("/var/lib/mosquitto/", str(tmp_path) + "/"))
    conf = tmp_path / "broker.conf"
    conf.write_text("user root\n" + text)
    proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        def listening():
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False
        wait(listening)
        ok = Client(port, AGENT_USER)
        bad = Client(port, "1002")          # not in this password file
        try:
            assert not ok.connected.is_failure
            assert bad.connected.is_failure
        finally:
            ok.close()
            bad.close()
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
