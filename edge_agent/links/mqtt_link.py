"""The MQTT link: every MQTT device of the hall through one paho-mqtt 2.x client.

Topics (SPEC.md §9): subscribe `hcp/v1/{hall}/+/up` (one RL1 frame per message) and
`hcp/v1/{hall}/+/state` (retained `online {boot}` / `offline`); publish downlink frames to
`hcp/v1/{hall}/{dev}/down` (commands QoS 1, ACK/HELLO_ACK/ERROR QoS 0); keep
`hcp/v1/{hall}/agent/state` retained as
`online {start time}` with last will `offline`.

Delivery guarantees:

* Persistent session: a stable client id (`hcp-agent-{hall}`), MQTT v5 `clean_start=False` and a
  session expiry, so QoS 1 messages published while the agent is down wait at the broker.
* `manual_ack=True`: the PUBACK for an `up` message is sent only after the session finished with
  it — for RECORDS that is after `agent.ingest` returned (COMMIT). A crash before that leaves the
  message un-acked and the broker redelivers it.
* paho runs on the event loop (its external-loop interface: the socket is read and written by
  loop callbacks, keepalive by `loop_misc` once a second), so its callbacks are ordinary loop
  code; only the blocking TCP connect runs in a worker thread.
* Back-pressure by construction: we advertise Receive Maximum R and never hold more than R
  un-PUBACKed messages, whatever the broker does. The socket is read one packet at a time and
  not at all while R messages are held (`_GatedClient`); TCP flow control then keeps the rest at
  the broker. Relying on the broker is not enough: Mosquitto 2.0.11 (Debian's) refills its send
  quota wrongly when a message other than its newest in-flight one is acked (it sent 4 more
  messages for each PUBACK with R = 4 in our test), and resends every in-flight message on
  session resume. There is no queue of our own beyond the R held messages, so nothing is ever
  dropped for lack of room.
* Held for long (storage stalled): nothing is read, so the broker's PINGRESP is not seen either
  and paho closes the connection after the keepalive (30 s); the reconnection resumes the session
  and the broker redelivers what was never acked. Frames still being committed from the old
  connection are not acked (their message ids are gone); their redelivered copies are duplicates
  RL1 recognises (replay window, rseq) and acks.
* On every (re)connection the held count starts afresh: a PUBACK is only sent on the connection
  that delivered the message (message ids are per connection).
* The device id in a frame must equal the one in the topic (`wrong_device` otherwise).

The RL1 window granted to each MQTT device (HELLO_ACK) is sized from R (`mqtt_window`): when every
device drains a backlog at once, about R frames are in flight in all, so the broker holds little
for us and a record's round trip stays the agent's work on R frames — well inside the devices'
retransmission timeout, so they do not resend what is merely queued.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocol import messages as m
from protocol.arq import DEFAULT_WINDOW
from protocol.messages import MAX_RECORDS

from .device_session import DeviceOffline, DeviceSession, RateLimit, unknown_device_error
from .waits import wait_event

log = logging.getLogger("edge_agent.links.mqtt")

SESSION_EXPIRY_S = 7 * 24 * 3600   # the broker keeps our subscriptions and queue this long
READ_BURST = 64                    # packets read per loop callback before other work runs
RECONNECT_S = (1.0, 8.0)           # reconnect backoff: first and longest wait
DACKED = (m.INVITE, m.CANCEL, m.TIME, m.CONFIG)   # downlink commands the device DACKs


def mqtt_window(receive_maximum: int, devices: int) -> int:
    """The RL1 window (records) for each of `devices` MQTT devices: all of them draining full
    frames keep about `receive_maximum` frames in flight. At least one full frame, at most the
    protocol's default window, a whole number of frames."""
    per_device = receive_maximum * MAX_RECORDS // max(1, devices)
    return max(MAX_RECORDS, min(DEFAULT_WINDOW, per_device // MAX_RECORDS * MAX_RECORDS))


class _GatedClient(mqtt.Client):
    """paho's client whose `loop_read` stops before any packet the link has no room for.

    paho 2.2's own `loop_read` reads as many packets as we have QoS 1 messages of our own in
    flight (it ignores its argument), so it could hand us any number of PUBLISHes past R. This
    one makes the same calls one packet at a time while `room()` is true, at most `max_packets`.
    """

    room: Callable[[], bool] = staticmethod(lambda: True)
    more = False   # the last loop_read stopped at max_packets (data may be left, e.g. in TLS)

    def loop_read(self, max_packets: int = READ_BURST) -> mqtt.MQTTErrorCode:
        self.more = False
        for _ in range(max_packets):
            if not self.room():
                return mqtt.MQTT_ERR_SUCCESS
            if self._sock is None:
                return mqtt.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == mqtt.MQTT_ERR_AGAIN:
                return mqtt.MQTT_ERR_SUCCESS
        self.more = True
        return mqtt.MQTT_ERR_SUCCESS


class MqttLink:
    """All MQTT devices of one hall. Also their gateway for INVITE/CANCEL."""

    kind = "mqtt"

    def __init__(self, agent: Any, hall: str, host: str, port: int, devices: dict[int, bytes],
                 username: str | None = None, password: str | None = None, tls: bool = False,
                 client_id: str | None = None, receive_maximum: int = 256,
                 keepalive: int = 30, **session_opts: Any) -> None:
        self.agent = agent
        self.hall = hall
        self.host, self.port = host, port
        self.username, self.password, self.tls = username, password, tls
        self.client_id = client_id or f"hcp-agent-{hall}"
        self.keepalive = keepalive
        self.prefix = f"hcp/v1/{hall}/"
        if not 1 <= receive_maximum <= 65535:
            raise ValueError("receive_maximum must be 1..65535 (MQTT v5 Receive Maximum)")
        self.receive_maximum = receive_maximum
        self.window = session_opts.setdefault("window", mqtt_window(receive_maximum,
                                                                     len(devices)))
        self.sessions: dict[int, DeviceSession] = {
            did: DeviceSession(agent, did, key, self._sender(did), link="mqtt", **session_opts)
            for did, key in devices.items()}
        self.connected = False
        self.generation = 0           # bumped on every (re)connection
        self.connects = 0
        self.held_max = 0             # most un-PUBACKed messages ever held (never above R)
        self.paused = 0               # times reading stopped because R messages were held
        self._held = 0                # QoS 1 messages of this connection not yet acked
        self.started_at = int(time.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._client: _GatedClient | None = None
        self._runner: asyncio.Task | None = None
        self._fd: int | None = None
        self._reading = False
        self._writing = False
        self._closed: asyncio.Event | None = None
        self._stopping = False
        self._unknown = RateLimit(1.0)
        self._processing: set[asyncio.Future] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every device's record window, connect (in the background, retrying forever)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        for s in self.sessions.values():
            await s.load()
            s.start()
        c = _GatedClient(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                         protocol=mqtt.MQTTv5, manual_ack=True)
        c.room = self._room
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.tls:
            c.tls_set()
        c.will_set(self.prefix + "agent/state", b"offline", qos=1, retain=True)
        c.max_queued_messages_set(1000)   # downlink waiting for a connection: bounded
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_message = self._cb_message
        c.on_subscribe = self._cb_subscribe
        c.on_socket_open = lambda cl, ud, sock: self._on_loop(self._attach, sock)
        c.on_socket_close = lambda cl, ud, sock: self._on_loop(self._detach, sock)
        c.on_socket_register_write = lambda cl, ud, sock: self._on_loop(self._want_write, True)
        c.on_socket_unregister_write = lambda cl, ud, sock: self._on_loop(self._want_write,
                                                                          False)
        self._client = c
        self._runner = asyncio.create_task(self._run(), name="mqtt-link")
        log.info("mqtt link starting", extra={"host": self.host, "port": self.port,
                                              "clientId": self.client_id,
                                              "receiveMaximum": self.receive_maximum,
                                              "window": self.window,
                                              "devices": sorted(self.sessions)})

    async def stop(self) -> None:
        """Stop taking messages, finish frames being processed (acked after their commit), say
        `offline`, disconnect."""
        self._stopping = True
        self._update_reader()
        if self._processing:
            await asyncio.wait(list(self._processing), timeout=5)
        for s in self.sessions.values():
            await s.stop()
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
            self._runner = None
        c = self._client
        if c is not None:
            if self.connected:
                c.publish(self.prefix + "agent/state", b"offline", qos=1, retain=True)
                c.disconnect()          # written after the publish; paho closes the socket then
                closed = self._closed
                if closed is not None:
                    await wait_event(closed, 2.0)
            self._detach(None)
            self._client = None

    def _connect_props(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self.receive_maximum
        return props

    async def _run(self) -> None:
        """Connect, keep alive, reconnect with backoff — for as long as the link runs."""
        loop = asyncio.get_running_loop()
        c = self._client
        assert c is not None
        delay = RECONNECT_S[0]
        last_problem = None
        while True:
            self._closed = asyncio.Event()
            try:
                # the TCP (and TLS) connect blocks: not on the loop
                await loop.run_in_executor(None, lambda: c.connect(
                    self.host, self.port, keepalive=self.keepalive, clean_start=False,
                    properties=self._connect_props()))
            except Exception as exc:
                problem = f"{type(exc).__name__}: {str(exc)[:120]}"
                if problem != last_problem:
                    log.warning("mqtt broker unreachable", extra={
                        "host": self.host, "port": self.port, "reason": problem,
                        "retryS": delay})
                    last_problem = problem
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_S[1])
                continue
            last_problem = None
            connects = self.connects
            while not self._closed.is_set():
                if c.loop_misc() != mqtt.MQTT_ERR_SUCCESS:   # keepalive: PINGREQ, timeout
                    break
                await wait_event(self._closed, 1.0)
            if self.connects > connects:     # a CONNACK came: start the backoff afresh
                delay = RECONNECT_S[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    # ------------------------------------------------------------------ socket (paho callbacks)

    def _on_loop(self, fn: Callable, arg: Any) -> None:
        """paho calls the socket callbacks from the connect thread too: run them on the loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            fn(arg)
        else:
            try:
                loop.call_soon_threadsafe(fn, arg)
            except RuntimeError:   # loop shutting down
                pass

    def _attach(self, sock: Any) -> None:
        self._unregister()
        try:
            self._fd = sock.fileno()
        except OSError:
            return
        if self._fd < 0:
            self._fd = None
            return
        self._update_reader()
        if self._client is not None and self._client.want_write():
            self._want_write(True)

    def _detach(self, sock: Any) -> None:
        if self._fd is None:
            return
        self._unregister()
        if self._closed is not None:
            self._closed.set()

    def _unregister(self) -> None:
        fd = self._fd
        loop = self._loop
        if fd is not None and loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        self._fd = None
        self._reading = self._writing = False

    def _room(self) -> bool:
        """True while another PUBLISH may be read (see the module docstring)."""
        return self._held < self.receive_maximum or self._stopping

    def _update_reader(self) -> None:
        fd = self._fd
        if fd is None or self._loop is None:
            return
        want = self._room()
        if want and not self._reading:
            self._loop.add_reader(fd, self._readable)
            self._reading = True
            self._loop.call_soon(self._readable)   # bytes may wait in paho's TLS buffer
        elif not want and self._reading:
            self._loop.remove_reader(fd)
            self._reading = False
            self.paused += 1

    def _readable(self) -> None:
        c = self._client
        if c is None or self._fd is None:
            return
        c.loop_read()
        if c.more and self._room():
            self._loop.call_soon(self._readable)   # let other work run, then read on
        self._update_reader()

    def _want_write(self, on: bool) -> None:
        fd = self._fd
        if fd is None or self._loop is None or on == self._writing:
            return
        if on:
            self._loop.add_writer(fd, self._writable)
        else:
            self._loop.remove_writer(fd)
        self._writing = on

    def _writable(self) -> None:
        if self._client is not None:
            self._client.loop_write()

    # ------------------------------------------------------------------ paho callbacks (loop)

    def _cb_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._new_generation()
        if reason_code.is_failure:
            log.warning("mqtt connect refused", extra={"reason": str(reason_code)})
            return
        self.connects += 1
        self.connected = True
        # subscribe every time: the broker may have lost our session (restart without
        # persistence); re-subscribing an existing subscription is harmless
        client.subscribe([(self.prefix + "+/up", 1), (self.prefix + "+/state", 1)])
        client.publish(self.prefix + "agent/state", f"online {self.started_at}".encode(), qos=1,
                       retain=True)
        for s in self.sessions.values():
            s.link_changed(True)
        log.info("mqtt connected", extra={"host": self.host, "port": self.port,
                                          "sessionPresent": bool(getattr(flags,
                                                                         "session_present",
                                                                         False)),
                                          "connects": self.connects})

    def _cb_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._new_generation()
        if self.connected:
            log.warning("mqtt disconnected", extra={"reason": str(reason_code)})
        self.connected = False
        for s in self.sessions.values():
            s.link_up = False   # devices may still be online at the broker; no state change
        if self._closed is not None:
            self._closed.set()

    def _cb_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            log.error("mqtt subscription refused (check the broker ACL for the agent user)",
                      extra={"reasons": refused})

    def _cb_message(self, client, userdata, msg) -> None:
        gen, mid, qos = self.generation, msg.mid, msg.qos
        if self._stopping:
            return   # not acked: the broker redelivers it to the next run
        if qos > 0:
            self._held += 1
            if self._held > self.held_max:
                self.held_max = self._held
        try:
            done = self._handle(msg.topic, msg.payload, time.time())
        except Exception:
            log.exception("mqtt message handling failed")
            done = None
        if done is None or done.done():
            self._ack(gen, mid, qos)
            return
        self._processing.add(done)
        done.add_done_callback(lambda fut: self._finished(fut, gen, mid, qos))

    def _finished(self, fut: asyncio.Future, gen: int, mid: int, qos: int) -> None:
        self._processing.discard(fut)
        if fut.cancelled():
            return
        if fut.exception() is not None:
            log.error("frame handling failed", extra={"reason": type(fut.exception()).__name__})
        self._ack(gen, mid, qos)   # after ingest returned: the records are committed

    def _new_generation(self) -> None:
        """A connection ended or began: message ids and the broker's count start afresh."""
        self.generation += 1
        self._held = 0
        self._update_reader()

    def _handle(self, topic: str, payload: bytes, received_at: float) -> asyncio.Future | None:
        """Start handling one message; returns what to wait for before its PUBACK (None: ack
        now)."""
        parts = topic[len(self.prefix):].split("/") if topic.startswith(self.prefix) else []
        if len(parts) != 2 or parts[0] == "agent":
            return None
        dev, leaf = parts
        did = int(dev) if dev.isdigit() else None
        session = self.sessions.get(did) if did is not None else None
        if leaf == "state":
            if session is not None:
                text = payload.decode("ascii", "replace").strip()
                if text.startswith("offline"):
                    session.set_offline("mqtt_offline")
                log.info("device state", extra={"deviceId": did, "state": text[:40]})
            return None
        if leaf != "up":
            return None
        if session is None:
            # a device id without a key here: count it, tell it once in a while, ack
            self.agent.count_rejected("unknown_device")
            if did is not None and did < 2 ** 32 and self._unknown.allow(did):
                self._publish(did, unknown_device_error(did))
            return None
        # the topic's session checks the frame's device id (SPEC §8 #8: `wrong_device`)
        return asyncio.ensure_future(session.feed(payload, received_at))

    def _ack(self, gen: int, mid: int, qos: int) -> None:
        # message ids belong to one connection: after a reconnect the broker redelivers instead
        if qos == 0 or gen != self.generation:
            return
        self._held -= 1
        if self.connected and self._client is not None:
            self._client.ack(mid, qos)
        if not self._reading:
            self._update_reader()

    # ------------------------------------------------------------------ sending

    def _sender(self, device_id: int):
        def send(frame: bytes) -> bool:
            return self._publish(device_id, frame)
        return send

    def _publish(self, device_id: int, frame: bytes) -> bool:
        c = self._client
        if c is None:
            return False
        # SPEC §9: commands (acknowledged by DACK) go QoS 1; ACK, HELLO_ACK and ERROR go QoS 0.
        # A lost one of those costs the device a retransmission or a HELLO, which RL1 repairs
        # anyway; QoS 1 would add two PUBACKs per frame (agent, broker and device all pay) and
        # buys no store-and-forward: devices use clean sessions.
        qos = 1 if len(frame) > 2 and frame[2] in DACKED else 0
        info = c.publish(f"{self.prefix}{device_id}/down", frame, qos=qos)
        # NO_CONN: paho keeps QoS 1 messages and sends them after reconnecting
        return info.rc == mqtt.MQTT_ERR_SUCCESS or (qos and info.rc == mqtt.MQTT_ERR_NO_CONN)

    # ------------------------------------------------------------------ gateway

    async def send_invite(self, device_id: int, invite_id: int, lifetime_s: int, staff_no: str,
                          staff_name: str) -> None:
        """DeviceGateway: deliver an INVITE (waits for the device's DACK)."""
        await self._session(device_id).send_invite(invite_id, lifetime_s, staff_no, staff_name)

    async def send_cancel(self, device_id: int, invite_id: int) -> None:
        """DeviceGateway: deliver a CANCEL (waits for the device's DACK)."""
        await self._session(device_id).send_cancel(invite_id)

    def _session(self, device_id: int) -> DeviceSession:
        s = self.sessions.get(device_id)
        if s is None:
            raise DeviceOffline(f"device {device_id} is not an MQTT device of this agent")
        return s
