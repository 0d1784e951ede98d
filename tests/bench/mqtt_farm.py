"""The device side of the MQTT ingest bench: many RL1 evaluators in one process.

    python -m tests.bench.mqtt_farm   (reads one JSON job on stdin, see `main`)

Each device is the device end of RL1 as the firmware runs it, minus the flash: a
`protocol.session.Session(DEVICE)` and a `protocol.arq.RecordSender` over the firmware's own MQTT
link (`firmware.links.mqtt_link.MqttLink` with the umqtt-like `MQTTClient`: MQTT 3.1.1, clean
session, QoS 1 up, at most MAX_INFLIGHT un-PUBACKed publishes, a frame beyond that dropped for
RL1 to resend). Its journal is a backlog of `backlog` records already written; a record is freed
only by the agent's ACK (cumulative or selective), exactly like the journal's ack cursor.

All devices share one selector loop (a real evaluator has its own CPU; here one process stands in
for all of them, event-driven so the farm is not the bottleneck it measures).

Two modes:

* `rl1`: every device says HELLO, drains its backlog with the RL1 window against the agent, and is
  done when the agent acknowledged every record. Reports when the last device was done and how
  often each record was sent (`resent`: records sent more than once).
* `bare`: the same devices publish the same records in the same RECORDS frames (10 a frame,
  sealed in a session of their own), as fast as MAX_INFLIGHT lets them, without waiting for RL1:
  what a subscriber that does nothing but receive is offered.

Protocol on stdin/stdout: the job (one JSON line) -> `ready` once every device is connected ->
the parent writes `go` -> one JSON line with the result.
"""
from __future__ import annotations

import json
import os
import selectors
import sys
import time

from firmware.links.mqtt_link import MAX_INFLIGHT, MqttLink
from protocol import messages as m
from protocol.arq import RecordSender
from protocol.errors import ProtocolError
from protocol.frame import FLAG_MORE
from protocol.session import DEVICE, Session

TICK_S = 0.02            # how often timers (RTO, HELLO retry, MQTT retry/keepalive) are checked
HELLO_RETRY_MS = 2000    # the firmware's hello_timeout_ms
T0 = 1795000000          # record times (synthetic)


def now_ms() -> int:
    return int(time.monotonic() * 1000)


class FarmDevice:
    """One evaluator: RL1 session + record window + firmware MQTT link, backlog in memory."""

    def __init__(self, did: int, key: bytes, password: str, hall: str, port: int,
                 backlog: int) -> None:
        self.did = did
        self.session = Session(did, key, DEVICE)
        self.sender = RecordSender()
        self.link = MqttLink(hall, did, "127.0.0.1", port, boot=1, user=str(did),
                             password=password, keepalive=60)
        self.backlog = backlog
        self.acked = 0                       # the journal's ack cursor
        self.sends = bytearray(backlog + 1)  # times each rseq was sent (saturates at 255)
        self.state = "down"
        self.hello_at = 0
        self.hellos = 0
        self.frames = 0
        self.next_check = 0                  # ms: earliest time a timer may be due
        self.done_at: float | None = None
        self.next_bare = 1                   # bare mode: next rseq to publish

    def record(self, rseq: int) -> m.Record:
        return m.Record(rseq, T0 + rseq, 0, 1, 1 + rseq % 5, m.REC_UNSOLICITED, ())

    # -- RL1 --------------------------------------------------------------------------------
    def hello(self, now: int) -> None:
        self.hellos += 1
        self.state = "hello"
        self.hello_at = now
        self.link.send(self.session.hello(os.urandom(8), {
            "fw": b"\x00\x01\x00", "boot": 1, "uptime": 5, "cat_version": 1,
            "low": self.acked + 1, "next_rseq": self.backlog + 1,
            "status": m.ST_CLOCK_SYNCED}))

    def on_frame(self, data: bytes, now: int) -> None:
        try:
            f, t, fields = self.session.open(data)
        except ProtocolError:
            return
        if t == m.HELLO_ACK:
            self.state = "up"
            self.sender.reset(fields["cum"], fields["window"])
            self._free(fields["cum"])
        elif t == m.ACK:
            self._free(self.sender.on_ack(fields["cum"], fields["sack"], now))
        elif t == m.ERROR and f.mac is None and fields["code"] in (m.E_NO_SESSION, m.E_BAD_MAC):
            self.hello(now)

    def _free(self, cum: int) -> None:
        if cum > self.acked:
            self.acked = min(cum, self.backlog)
        if self.acked >= self.backlog and self.done_at is None:
            self.done_at = time.monotonic()

    def pump(self, now: int) -> None:
        """Send what the record window allows now (what the firmware's Uplink.step does)."""
        if self.state == "hello":
            if now - self.hello_at >= HELLO_RETRY_MS:
                self.hello(now)
            self.next_check = self.hello_at + HELLO_RETRY_MS
            return
        if self.state != "up":
            return
        low, head = self.acked + 1, self.backlog
        for batch in self.sender.poll(now, low, head):
            for r in batch:
                if self.sends[r] < 255:
                    self.sends[r] += 1
            flags = FLAG_MORE if self.sender.more_pending(head) else 0
            self.link.send(self.session.seal(m.RECORDS, {
                "low": low, "records": [self.record(r) for r in batch]}, flags)[1])
            self.frames += 1
        due = self.sender.next_due()
        self.next_check = due if due is not None else now + 1000

    # -- bare -------------------------------------------------------------------------------
    def publish_more(self) -> None:
        """Bare mode: the backlog's RECORDS frames (10 records each, sealed as they are sent, as
        in a first drain), as many as the MQTT client's in-flight limit allows."""
        c = self.link.client
        per = self.sender.per_frame
        while self.next_bare <= self.backlog and len(c.inflight) < MAX_INFLIGHT:
            start = self.next_bare
            rs = range(start, min(start + per, self.backlog + 1))
            self.next_bare = rs[-1] + 1
            c.publish(self.link.up_topic, self.session.seal(m.RECORDS, {
                "low": start, "records": [self.record(r) for r in rs]})[1], qos=1)
            for r in rs:
                self.sends[r] += 1
            self.frames += 1
        if self.next_bare > self.backlog and not c.inflight and self.done_at is None:
            self.done_at = time.monotonic()


def run(job: dict) -> dict:
    port, hall, backlog, mode = job["port"], job["hall"], job["backlog"], job["mode"]
    devices = [FarmDevice(int(did), bytes.fromhex(d["key"]), d["password"], hall, port, backlog)
               for did, d in job["devices"].items()]
    sel = selectors.DefaultSelector()
    for d in devices:
        d.link.connect()
        sel.register(d.link.client.sock, selectors.EVENT_READ, d)
    for d in devices:                     # SUBACKs, the retained agent state
        d.link.poll()
    if mode == "bare":
        for d in devices:               # a session of its own (no agent to say HELLO to)
            d.session.adopt(os.urandom(8), os.urandom(8))
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return {"error": "no go"}
    t_go = time.monotonic()
    cpu0 = time.process_time()
    now = now_ms()
    for d in devices:
        if mode == "rl1":
            d.hello(now)
        else:
            d.publish_more()
    def service(d: FarmDevice) -> None:
        now = now_ms()
        for data in d.link.poll():        # also the MQTT QoS 1 retry and keepalive
            d.on_frame(data, now)
        if mode == "rl1":
            d.pump(now)
        else:
            d.publish_more()
        if d.done_at is not None:
            pending.discard(d)

    pending = {d for d in devices if d.done_at is None}
    next_tick = time.monotonic() + TICK_S
    deadline = t_go + job.get("timeout_s", 300)
    while pending:
        timeout = max(0.0, next_tick - time.monotonic())
        for key, _ in sel.select(timeout):
            service(key.data)
        t = time.monotonic()
        if t >= next_tick:
            next_tick = t + TICK_S
            now = now_ms()
            for d in list(pending):
                if mode == "bare" or now >= d.next_check or d.link.client.inflight:
                    service(d)
            if t > deadline:
                break
    t_end = max((d.done_at or time.monotonic()) for d in devices)
    cpu_s = time.process_time() - cpu0
    records = backlog * len(devices)
    resent = sum(sum(1 for c in d.sends[1:] if c > 1) for d in devices)
    out = {
        "t_go": t_go, "t_end": t_end, "records": records, "cpu_s": cpu_s,
        "unfinished": sum(1 for d in devices if d.done_at is None),
        "frames": sum(d.frames for d in devices),
        "records_sent": sum(sum(d.sends) for d in devices),
        "resent_records": resent,
        "rl1_retransmitted": sum(d.sender.retransmitted for d in devices),
        "hellos": sum(d.hellos for d in devices),
        "link_dropped": sum(d.link.dropped for d in devices),
        "mqtt_resent": sum(d.link.client.resent for d in devices),
        "rto_ms": sorted(d.sender.rto.value for d in devices)[len(devices) // 2],
        "srtt_ms": sorted(d.sender.rto.srtt for d in devices)[len(devices) // 2],
    }
    for d in devices:
        try:
            d.link.shutdown()
        except OSError:
            pass
    return out


def main() -> None:
    job = json.loads(sys.stdin.readline())
    print(json.dumps(run(job)), flush=True)


if __name__ == "__main__":
    main()
