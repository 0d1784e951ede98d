"""The MQTT link: every MQTT device of the hall through one paho-mqtt 2.x client.

Topics (SPEC.md §9): subscribe `hcp/v1/{hall}/+/up` (one RL1 frame per message) and
`hcp/v1/{hall}/+/state` (retained `online {boot}` / `offline`); publish downlink frames to
`hcp/v1/{hall}/{dev}/down` with QoS 1; keep `hcp/v1/{hall}/agent/state` retained as
`online {start time}` with last will `offline`.

Delivery guarantees:

* Persistent session: a stable client id (`hcp-agent-{hall}`), MQTT v5 `clean_start=False` and a
  session expiry, so QoS 1 messages published while the agent is down wait at the broker.
* `manual_ack=True`: the PUBACK for an `up` message is sent only after the session finished with
  it — for RECORDS that is after `agent.ingest` returned (COMMIT). A crash before that leaves the
  message un-acked and the broker redelivers it.
* paho callbacks run on paho's thread and only hand events to the event loop
  (`loop.call_soon_threadsafe`) where they go into a queue. Back-pressure is MQTT v5 flow
  control: we advertise Receive Maximum R and send a PUBACK only after the message was handled,
  so a conforming broker has at most R QoS 1 messages of ours outstanding and keeps the rest on
  its side. Brokers do over-send: Mosquitto 2.0.11 (Debian's) sends two messages for one PUBACK
  now and then and resends every in-flight message on session resume regardless of R.
* Overflow policy: the queue takes up to `queue_limit` messages (default 4 R). A message beyond
  that is dropped, counted (`dropped`) and acked — never left un-acked, because an un-acked
  message keeps its slot of the broker's quota until a reconnect, and refusing by reconnecting
  makes such a broker resend even more (it livelocked in tests). Dropping a frame is safe: RL1
  sits above MQTT, the device deletes a record only after the agent's RL1 ACK, which is sent
  after the record's commit, so a dropped RECORDS frame is simply retransmitted.
* On every (re)connection messages still queued from the previous connection are discarded:
  they were never acked, so the broker redelivers them (or, if it lost the session, the device
  resends the records it has no RL1 ACK for); handling both copies would only count replays.
* A PUBACK is only sent on the connection that delivered the message (message ids are per
  connection); after a reconnect the broker redelivers instead.
* The device id in a frame must equal the one in the topic (`wrong_device` otherwise).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .device_session import DeviceOffline, DeviceSession, RateLimit, unknown_device_error

log = logging.getLogger("edge_agent.links.mqtt")

SESSION_EXPIRY_S = 7 * 24 * 3600   # the broker keeps our subscriptions and queue this long


class MqttLink:
    """All MQTT devices of one hall. Also their gateway for INVITE/CANCEL."""

    kind = "mqtt"

    def __init__(self, agent: Any, hall: str, host: str, port: int, devices: dict[int, bytes],
                 username: str | None = None, password: str | None = None, tls: bool = False,
                 client_id: str | None = None, receive_maximum: int = 256,
                 max_processing: int = 64, queue_limit: int | None = None,
                 keepalive: int = 30,
                 **session_opts: Any) -> None:
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
        self.queue_limit = queue_limit or 4 * receive_maximum
        self.max_processing = max_processing     # frames handled concurrently
        self.sessions: dict[int, DeviceSession] = {
            did: DeviceSession(agent, did, key, self._sender(did), link="mqtt", **session_opts)
            for did, key in devices.items()}
        self.connected = False
        self.generation = 0           # bumped on every (re)connection
        self.connects = 0
        self.over_receive_maximum = 0   # QoS 1 messages the broker sent beyond R (its fault)
        self.dropped = 0                # messages dropped (and acked) with the queue full
        self._held = 0                  # QoS 1 messages of this connection not yet acked
        self.started_at = int(time.time())
        self._queue: asyncio.Queue | None = None
        self._sem: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: mqtt.Client | None = None
        self._consumer: asyncio.Task | None = None
        self._unknown = RateLimit(1.0)
        self._processing: set[asyncio.Future] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every device's record window, connect (in the background, retrying forever)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()   # bounded by flow control, see module doc
        self._sem = asyncio.Semaphore(self.max_processing)
        for s in self.sessions.values():
            await s.load()
            s.start()
        self._consumer = asyncio.create_task(self._consume(), name="mqtt-consumer")
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        if self.username:
            c.username_pw_set(self.username, self.password)
        if self.tls:
            c.tls_set()
        c.will_set(self.prefix + "agent/state", b"offline", qos=1, retain=True)
        c.max_queued_messages_set(1000)   # downlink waiting for a connection: bounded
        c.reconnect_delay_set(1, 8)
        c.on_connect = self._cb_connect
        c.on_disconnect = self._cb_disconnect
        c.on_message = self._cb_message
        c.on_subscribe = self._cb_subscribe
        self._client = c
        c.connect_async(self.host, self.port, keepalive=self.keepalive, clean_start=False,
                        properties=self._connect_props())
        c.loop_start()
        log.info("mqtt link starting", extra={"host": self.host, "port": self.port,
                                              "clientId": self.client_id,
                                              "devices": sorted(self.sessions)})

    async def stop(self) -> None:
        """Say `offline`, disconnect, finish frames being processed (acks after their commit)."""
        c = self._client
        if self._consumer is not None:
            self._consumer.cancel()
            try:
                await self._consumer
            except asyncio.CancelledError:
                pass
        if self._processing:
            await asyncio.wait(list(self._processing), timeout=5)
        for s in self.sessions.values():
            await s.stop()
        if c is not None:
            if self.connected:
                info = c.publish(self.prefix + "agent/state", b"offline", qos=1, retain=True)
                try:
                    await asyncio.get_running_loop().run_in_executor(
                        None, info.wait_for_publish, 2.0)
                except Exception:
                    pass
            c.disconnect()
            await asyncio.get_running_loop().run_in_executor(None, c.loop_stop)
            self._client = None

    def _connect_props(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self.receive_maximum
        return props

    # ------------------------------------------------------------------ paho thread: enqueue only

    def _cb_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._post(("connect", not reason_code.is_failure, str(reason_code),
                    bool(getattr(flags, "session_present", False))))

    def _cb_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._post(("disconnect", str(reason_code)))

    def _cb_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self._post(("subscribed", [str(rc) for rc in reason_codes
                                   if getattr(rc, "is_failure", False)]))

    def _cb_message(self, client, userdata, msg) -> None:
        self._post(("message", msg.topic, bytes(msg.payload), msg.mid, msg.qos, msg.retain,
                    time.time()))

    def _post(self, event: tuple) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_event, event)
            except RuntimeError:   # loop shutting down
                pass

    # ------------------------------------------------------------------ event loop side

    def _on_event(self, event: tuple) -> None:
        kind = event[0]
        if kind == "message":
            item = (self.generation,) + event[1:]
            qos = event[4]
            if qos > 0:
                self._held += 1
                if self._held > self.receive_maximum:
                    self.over_receive_maximum += 1
                    if self.over_receive_maximum == 1:
                        log.warning("mqtt broker sent more than our Receive Maximum (taken "
                                    "anyway, up to queue_limit)",
                                    extra={"receiveMaximum": self.receive_maximum})
            if self._queue.qsize() >= self.queue_limit:
                self.dropped += 1
                self.agent.count_rejected("mqtt_queue_full")   # /metrics frames rejected
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("mqtt queue full: frame dropped and acked (RL1 resends its "
                                "records)", extra={"queueLimit": self.queue_limit,
                                                   "dropped": self.dropped})
                self._ack(self.generation, event[3], qos)
                return
            self._queue.put_nowait(item)
            return
        if kind in ("connect", "disconnect"):
            self._new_generation()
        if kind == "connect":
            ok, reason, session_present = event[1:]
            if not ok:
                log.warning("mqtt connect refused", extra={"reason": reason})
                return
            self.connects += 1
            self.connected = True
            c = self._client
            # subscribe every time: the broker may have lost our session (restart without
            # persistence); re-subscribing an existing subscription is harmless
            c.subscribe([(self.prefix + "+/up", 1), (self.prefix + "+/state", 1)])
            c.publish(self.prefix + "agent/state", f"online {self.started_at}".encode(), qos=1,
                      retain=True)
            for s in self.sessions.values():
                s.link_changed(True)
            log.info("mqtt connected", extra={"host": self.host, "port": self.port,
                                              "sessionPresent": session_present,
                                              "connects": self.connects})
        elif kind == "disconnect":
            if self.connected:
                log.warning("mqtt disconnected", extra={"reason": event[1]})
            self.connected = False
            for s in self.sessions.values():
                s.link_up = False   # devices may still be online at the broker; no state change
        elif kind == "subscribed":
            if event[1]:
                log.error("mqtt subscription refused (check the broker ACL for the agent user)",
                          extra={"reasons": event[1]})

    async def _consume(self) -> None:
        while True:
            gen, topic, payload, mid, qos, retain, received_at = await self._queue.get()
            try:
                await self._handle(gen, topic, payload, mid, qos, retain, received_at)
            except Exception:
                log.exception("mqtt message handling failed", extra={"topic": topic})
                self._ack(gen, mid, qos)

    def _new_generation(self) -> None:
        """A connection ended or began: message ids and the broker's count start afresh."""
        self.generation += 1
        self._held = 0
        stale = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            stale += 1
        if stale:
            log.info("mqtt: dropped messages of the previous connection (the broker redelivers)",
                     extra={"messages": stale})

    async def _handle(self, gen: int, topic: str, payload: bytes, mid: int, qos: int,
                      retain: bool, received_at: float) -> None:
        parts = topic[len(self.prefix):].split("/") if topic.startswith(self.prefix) else []
        if len(parts) != 2 or parts[0] == "agent":
            self._ack(gen, mid, qos)
            return
        dev, leaf = parts
        did = int(dev) if dev.isdigit() else None
        session = self.sessions.get(did) if did is not None else None
        if leaf == "state":
            if session is not None:
                text = payload.decode("ascii", "replace").strip()
                if text.startswith("offline"):
                    session.set_offline("mqtt_offline")
                log.info("device state", extra={"deviceId": did, "state": text[:40]})
            self._ack(gen, mid, qos)
            return
        if leaf != "up":
            self._ack(gen, mid, qos)
            return
        if session is None:
            # a device id without a key here: count it, tell it once in a while, ack
            self.agent.count_rejected("unknown_device")
            if did is not None and did < 2 ** 32 and self._unknown.allow(did):
                self._publish(did, unknown_device_error(did))
            self._ack(gen, mid, qos)
            return
        # the topic's session checks the frame's device id (SPEC §8 #8: `wrong_device`)
        await self._sem.acquire()
        try:
            done = asyncio.ensure_future(session.feed(payload, received_at))
        except BaseException:
            self._sem.release()
            raise
        self._processing.add(done)

        def finished(fut: asyncio.Future) -> None:
            self._processing.discard(fut)
            self._sem.release()
            if not fut.cancelled() and fut.exception() is not None:
                log.error("frame handling failed", extra={"deviceId": did,
                                                          "reason": type(fut.exception()).__name__})
            if not fut.cancelled():
                self._ack(gen, mid, qos)   # after ingest returned: the records are committed
        done.add_done_callback(finished)

    def _ack(self, gen: int, mid: int, qos: int) -> None:
        # message ids belong to one connection: after a reconnect the broker redelivers instead
        if qos == 0 or gen != self.generation:
            return
        self._held -= 1
        if self.connected and self._client is not None:
            self._client.ack(mid, qos)

    # ------------------------------------------------------------------ sending

    def _sender(self, device_id: int):
        def send(frame: bytes) -> bool:
            return self._publish(device_id, frame)
        return send

    def _publish(self, device_id: int, frame: bytes) -> bool:
        c = self._client
        if c is None:
            return False
        info = c.publish(f"{self.prefix}{device_id}/down", frame, qos=1)
        # NO_CONN: paho keeps QoS 1 messages and sends them after reconnecting
        return info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)

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
