"""RL1 over MQTT: one frame per message (no COBS). Topics (SPEC §9):

    hcp/v1/{hall}/{dev}/up      device -> agent, QoS 1
    hcp/v1/{hall}/{dev}/down    agent -> device, QoS 1 (subscribed)
    hcp/v1/{hall}/{dev}/state   retained "online {boot}"; last will: retained "offline"

Clean session: downlink frames queued while the device was away belong to an old RL1 session
and would fail the MAC anyway; the agent resends its commands after the new HELLO. QoS 1
publishes not PUBACKed are resent by the client; a frame that can't be queued (too many in
flight) is dropped and RL1 retransmits it.
"""

from firmware.links.base import Link
from firmware.clock import ticks_ms as _ticks, ticks_diff as _diff
from firmware.links.mqtt_client import MQTTClient

MAX_INFLIGHT = 16


def topics(hall, device_id):
    """(up, down, state) topic names for a device."""
    p = "hcp/v1/%s/%d/" % (hall, device_id)
    return p + "up", p + "down", p + "state"


class MqttLink(Link):
    kind = "mqtt"

    def __init__(self, hall, device_id, host, port=1883, boot=0, user="", password="",
                 keepalive=30, client_factory=MQTTClient):
        Link.__init__(self)
        self.up_topic, self.down_topic, self.state_topic = topics(hall, device_id)
        self.client_id = "hcp-%s-%d" % (hall, device_id)
        self.host = host
        self.port = port
        self.boot = boot
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self._factory = client_factory
        self.client = None
        self._inbox = []

    def _on_msg(self, topic, msg):
        if topic == self.down_topic.encode():
            self._inbox.append(msg)

    def connect(self):
        c = self._factory(self.client_id, self.host, self.port, user=self.user,
                          password=self.password, keepalive=self.keepalive)
        c.set_callback(self._on_msg)
        c.set_last_will(self.state_topic, b"offline", retain=True, qos=1)
        self.client = c
        self._inbox = []
        try:
            c.connect(clean_session=True)
            c.subscribe(self.down_topic, qos=1)
            c.publish(self.state_topic, ("online %d" % self.boot).encode(), retain=True, qos=1)
        except OSError:
            c.close()
            self.client = None
            raise
        self.up = True

    def poll(self):
        c = self.client
        if c is None:
            raise OSError("not connected")
        c.check_msg()
        now = _ticks()
        if c.inflight:
            c.retry()
        ka = self.keepalive * 1000
        if ka:
            if _diff(now, c.last_rx) > ka + ka // 2:
                raise OSError("broker silent for 1.5 x keepalive")
            if _diff(now, c.last_tx) >= ka // 2:
                c.ping()
        if not self._inbox:
            return ()
        out = self._inbox
        self._inbox = []
        self.received += len(out)
        return out

    def send(self, frame):
        c = self.client
        if c is None:
            raise OSError("not connected")
        if len(c.inflight) >= MAX_INFLIGHT:
            self.dropped += 1
            return
        c.publish(self.up_topic, frame, qos=1)
        self.sent += 1

    def close(self):
        """Drop the connection; the broker publishes the will ("offline")."""
        self.up = False
        c = self.client
        self.client = None
        if c is not None:
            c.close()

    def shutdown(self):
        """Planned stop: say offline ourselves, then DISCONNECT cleanly."""
        c = self.client
        if c is not None:
            try:
                c.publish(self.state_topic, b"offline", retain=True, qos=1)
            except OSError:
                pass
            c.disconnect()
        self.client = None
        self.up = False
