"""RL1 for one device on the agent side, shared by the serial and the MQTT link.

A link hands every frame it receives to `DeviceSession.feed(frame, received_at)` and gives the
session a non-blocking `send(frame) -> bool` to reach the device. The session does the rest:

* HELLO -> HELLO_ACK (agent time, cumulative ack, window 128, catalogue version); the record
  window resumes from the cumulative ack, which survives agent restarts (persisted per device).
  The protocol refuses a HELLO whose counter is not above the floor (a replay: counted, never
  answered); a fresh one passes the per-device token bucket (`hello_guard.py`; over it: counted,
  not answered), its counter is stored durably, and only then is it answered. HELLO_ACK is the
  only answer: the catalogue, the selective ACK and every queued command wait until the device's
  first frame under the new session key ("confirmed"), which a replayer cannot make (SPEC §5.3).
* RECORDS -> `note_low`, `offer`, `await agent.ingest(new)`, `committed`, then ACK. Nothing is
  acknowledged before ingest returned (= COMMIT). If ingest fails: `abandon` and ERROR busy; the
  device keeps the records and resends them.
* DACK completes downlink commands; STATUS goes to `agent.device_seen`; device ERRORs are logged.
* INVITE / CANCEL go through `DownlinkSender`: resent in new frames until DACKed.
* A rejected frame is counted with `agent.count_rejected(reason)` and answered only where the
  spec asks for it: unsigned ERROR no_session (so the device says HELLO again, e.g. after an agent
  restart), unsigned ERROR bad_mac for a HELLO that failed authentication (key mismatch), signed
  ERROR bad_payload inside a session. Answers are rate-limited per device.

`feed` returns an awaitable that completes when the frame is fully handled (records committed and
acked, or refused). The MQTT link sends its PUBACK only then.
"""
from __future__ import annotations

import asyncio
import logging
import os
import string
import time
from typing import Any, Awaitable, Callable

from protocol import frame as fr
from protocol import messages as m
from protocol.arq import DEFAULT_WINDOW, DownlinkSender, RecordReceiver
from protocol.errors import BAD_MAC, BAD_PAYLOAD, NO_SESSION, REPLAY, ProtocolError
from protocol.session import AGENT, Session

from ..device_hellos import key_fingerprint
from .catalogue_push import CataloguePush
from .hello_guard import HELLO_BURST, HELLO_RATE, HelloGuard
from .name_bitmap import render_name
from .waits import wait_event

log = logging.getLogger("edge_agent.links.session")

Send = Callable[[bytes], bool]

_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")
CANCEL_KEEP_S = 300.0     # a CANCEL nobody DACKs is dropped after this long
CONFIG_KEEP_S = 3600.0    # catalogue chunks: resent until DACKed, for up to an hour a session
TIME_EVERY_S = 3600.0     # a TIME frame this often keeps device clocks within a few seconds
HELLO_COUNTS_FLUSH_S = 1.0   # refused-HELLO counts reach the database in batches this often
# a session is live while authenticated frames keep coming (the device sends STATUS every 60 s)
SESSION_LIVE_S = 90.0
# A device's cumulative ack is written at most this often while it advances: once per frame
# would add a write per RECORDS frame to every backlog drain. A cum left behind by a crash costs
# nothing: `load` rebuilds the window from the rseqs stored above it (A-6 is about restarts).
PERSIST_EVERY_S = 1.0


def now_ms() -> int:
    """Monotonic milliseconds (the ARQ state machines take `now` from the caller)."""
    return int(time.monotonic() * 1000)


def _done() -> asyncio.Future:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


class DeviceOffline(ConnectionError):
    """The device has no RL1 session on a working link now (the agent retries when it returns)."""


class _Command:
    __slots__ = ("type", "fields", "key", "expires", "waiters")

    def __init__(self, type: int, fields: dict, key: tuple, expires: float) -> None:
        self.type, self.fields, self.key, self.expires = type, fields, key, expires
        self.waiters: list[asyncio.Future] = []


class RateLimit:
    """At most one event per `interval` seconds per key (bounded memory)."""

    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        self.interval, self.max_keys = interval, max_keys
        self._last: dict[Any, float] = {}

    def allow(self, key: Any) -> bool:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = now
        return True


def unknown_device_error(device_id: int) -> bytes:
    """Unsigned ERROR unknown_device for a device id the agent has no key for (SPEC §5.4)."""
    return fr.build(m.ERROR, fr.FLAG_DOWN, device_id, 0,
                    m.encode(m.ERROR, {"code": m.E_UNKNOWN_DEVICE, "ref_seq": 0}))


def _status_error(status: int) -> str | None:
    problems = []
    if status & m.ST_JOURNAL_FULL:
        problems.append("journal_full")
    if status & m.ST_JOURNAL_CORRUPT:
        problems.append("journal_corrupt")
    if status & m.ST_MAINTENANCE:
        problems.append("maintenance")
    return ",".join(problems) or None


def _staff_no(text: str) -> str:
    """The INVITE staff number: printable ASCII, at most 16 bytes (SPEC §4.8)."""
    clean = "".join(c if c in _PRINTABLE else "?" for c in (text or ""))
    return clean[:m.MAX_STAFF_NO]


class DeviceSession:
    """Agent-side RL1 state for one device: handshake, record window, downlink commands."""

    def __init__(self, agent: Any, device_id: int, key: bytes, send: Send, *, link: str,
                 window: int = DEFAULT_WINDOW, catalogue: CataloguePush | None = None,
                 reply_interval_s: float = 1.0, tick_s: float = 0.05,
                 hello_burst: tuple[int, float] = HELLO_BURST,
                 hello_rate: tuple[int, float] = HELLO_RATE) -> None:
        self.agent = agent
        self.device_id = device_id
        self.link = link
        self.window = window
        self.catalogue = catalogue
        self._time_sent = 0.0
        self.session = Session(device_id, key, AGENT)
        self.receiver = RecordReceiver(0)
        self.downlink = DownlinkSender()
        self._send = send
        self.link_up = False
        self.online = False
        self.confirmed = False     # the device has sent a frame under the current session key
        self._last_auth = 0.0      # monotonic time of the last frame under the session key
        self.hellos = 0            # sessions answered since the agent started
        self.guard = HelloGuard(hello_rate, hello_burst)
        self._key_fp = key_fingerprint(key)
        self._hello_info: dict = {}
        self._hello_cat: int | None = None
        self._hello_flush: asyncio.Task | None = None
        self._replay_log = RateLimit(10.0)
        self.pending_ingests = 0
        self._ack_due = False
        self.stats = {"frames_in": 0, "frames_out": 0, "rejected": 0, "records_new": 0,
                      "records_dup": 0, "acks": 0, "busy": 0, "send_failed": 0}
        self._commands: dict[tuple, int] = {}       # (kind, invite_id) -> downlink item id
        self._cmds: dict[int, _Command] = {}        # downlink item id -> command (until DACK)
        self._persisted = 0
        self._persist_task: asyncio.Task | None = None
        self._persist_now = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._replies = RateLimit(reply_interval_s)
        self._tick_s = tick_s
        self._wake = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._firmware: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def hello_bursts(self) -> int:
        return self.guard.counts["bursts"]

    async def load(self) -> None:
        """Resume the record window from storage: persisted cum + rseqs stored above it; and
        the HELLO counter floor of this device's key (reset when the key changed)."""
        self.session.hello_floor = await self.agent.device_hello_floor(self.device_id,
                                                                       self._key_fp)
        cum = await self.agent.device_cum_ack(self.device_id)
        self.receiver = RecordReceiver(cum)
        above = await self.agent.stored_rseqs_after(self.device_id, cum)
        if above:
            self.receiver.committed(above)
        self._persisted = cum
        self._schedule_persist()

    def start(self) -> None:
        """Start the downlink retransmission timer (call from the event loop)."""
        if self._timer is None:
            self._timer = asyncio.create_task(self._run_timer(),
                                              name=f"rl1-downlink-{self.device_id}")

    async def stop(self) -> None:
        """Stop the timer, let running ingests finish (they only ever ack after COMMIT)."""
        if self._timer is not None:
            self._timer.cancel()
            try:
                await self._timer
            except asyncio.CancelledError:
                pass
            self._timer = None
        if self._hello_flush is not None and not self._hello_flush.done():
            self._hello_flush.cancel()
        await self._flush_hello_counts()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._persist_now.set()
        self._schedule_persist()
        if self._persist_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._persist_task), 5)
            except Exception:
                pass

    # ------------------------------------------------------------------ link events

    def link_changed(self, up: bool, reason: str = "link_down") -> None:
        """The link to this device came up or went down (port opened/closed, broker state)."""
        self.link_up = up
        if up:
            self._wake.set()
        else:
            self.set_offline(reason)

    def set_offline(self, reason: str = "link_down") -> None:
        """The device is gone (link lost, MQTT state "offline"); commands wait for its return.
        `reason` ("kind: detail") is what the console shows for the offline device."""
        if self.online:
            self.online = False
            self._spawn(self._seen({"online": False, "link": self.link,
                                    "offline_reason": reason}))

    # ------------------------------------------------------------------ receiving

    def feed(self, data: bytes, received_at: float | None = None) -> Awaitable[None]:
        """Handle one received frame. Returns an awaitable done when the frame is fully handled."""
        received_at = time.time() if received_at is None else received_at
        self.stats["frames_in"] += 1
        try:
            f, t, fields = self.session.open(data)
        except ProtocolError as exc:
            self._rejected(exc, data)
            return _done()
        if t == m.HELLO:
            return self._on_hello(fields)
        if f.mac is None:   # an unsigned ERROR: information only (SPEC §5.4)
            log.info("device error (unsigned)", extra={
                "deviceId": self.device_id, "code": m.ERROR_NAMES.get(fields["code"], "?")})
            return _done()
        self._last_auth = time.monotonic()
        seen = None
        if not self.confirmed:
            seen = self._confirm()
        elif not self.online:
            self.online = True
            seen = self._spawn(self._seen({"online": True, "link": self.link}))
        if t == m.RECORDS or t == m.RECORDS_REF:    # RECORDS_REF: scanned (SPEC §4.12)
            return self._on_records(f, fields, received_at)
        if t == m.DACK:
            for item_id in self.downlink.on_dack(fields["seq"], fields["bitmap"], now_ms()):
                self._completed(item_id)
            self._wake.set()
            return seen or _done()
        if t == m.STATUS:
            return self._spawn(self._seen({
                "online": True, "link": self.link, "boot": fields["boot"],
                "clock": bool(fields["status"] & m.ST_CLOCK_SYNCED),
                "backlog": fields["unacked"], "error": _status_error(fields["status"]),
                "journal_full": bool(fields["status"] & m.ST_JOURNAL_FULL)}))
        if t == m.ERROR:
            log.warning("device error", extra={"deviceId": self.device_id,
                                               "code": m.ERROR_NAMES.get(fields["code"], "?"),
                                               "refSeq": fields["ref_seq"]})
            if fields["code"] == m.E_BAD_CONFIG and self.catalogue is not None:
                self._push_catalogue()     # the device threw its chunks away: send them again
            return seen or _done()
        return seen or _done()

    def _rejected(self, exc: ProtocolError, data: bytes) -> None:
        reason = exc.reason
        self.stats["rejected"] += 1
        self.agent.count_rejected(reason)
        log.debug("frame rejected", extra={"deviceId": self.device_id, "reason": reason,
                                           "link": self.link})
        ftype = data[2] if len(data) > 2 else None
        flags = data[1] if len(data) > 1 else 0
        if ftype == m.HELLO and reason == REPLAY:
            self._hello_replayed(exc)     # never answered: an answer is what a replayer wants
        elif reason == NO_SESSION and (flags & fr.FLAG_SIGNED):
            # e.g. the agent restarted: tell the device to say HELLO again
            if self._replies.allow(NO_SESSION):
                self._write(self.session.error_frame(m.E_NO_SESSION))
        elif reason == BAD_MAC and ftype == m.HELLO:
            # a HELLO with the wrong key: the device was reprovisioned, or this is not it. Not
            # while the device talks to us in a live session: then it is not the device's HELLO,
            # and the unsigned ERROR would only make the device start over.
            if not self._live() and self._replies.allow(BAD_MAC):
                self._write(self._unsigned_error(m.E_BAD_MAC))
        elif reason == BAD_PAYLOAD and self.session.established and len(data) >= 12:
            if self._replies.allow(BAD_PAYLOAD):
                ref = int.from_bytes(data[8:12], "big")
                self._write(self.session.error_frame(m.E_BAD_PAYLOAD, ref))

    def _unsigned_error(self, code: int) -> bytes:
        return fr.build(m.ERROR, fr.FLAG_DOWN, self.device_id, 0,
                        m.encode(m.ERROR, {"code": code, "ref_seq": 0}))

    def _live(self) -> bool:
        """True while the device talks to us in a confirmed session."""
        return self.confirmed and time.monotonic() - self._last_auth < SESSION_LIVE_S

    def _hello_replayed(self, exc: ProtocolError) -> None:
        """SPEC §5.3: a HELLO whose counter is not above the floor. Counted (database, metric,
        `hcp agent devices`), logged now and then, alerted once per period in a burst."""
        burst = self.guard.replayed()
        self._schedule_hello_flush()
        if self._replay_log.allow("replay"):
            log.warning("replayed HELLO refused (not answered)", extra={
                "deviceId": self.device_id, "link": self.link, "detail": exc.detail,
                "replays": self.guard.counts["replayed"]})
        if burst:
            self._spawn(self._alert("hello_replay", {
                "replays": self.guard.recent_replays, "periodS": self.guard.burst_period,
                "link": self.link,
                "message": "评价器握手帧被重放，已拒绝；请检查线路或网络是否被接入他人设备 "
                           "recorded HELLO frames of this device are being sent again (refused): "
                           "check the cable / network for a foreign device"}))

    def _schedule_hello_flush(self) -> None:
        if self._hello_flush is None or self._hello_flush.done():
            self._hello_flush = asyncio.get_running_loop().create_task(self._hello_flush_later())

    async def _hello_flush_later(self) -> None:
        await asyncio.sleep(HELLO_COUNTS_FLUSH_S)    # a flood becomes one write a second
        await self._flush_hello_counts()

    async def _flush_hello_counts(self) -> None:
        pending = self.guard.take_pending()
        if not any(pending.values()):
            return
        try:
            await self.agent.record_hellos(self.device_id, **pending)
        except Exception as exc:
            self.guard.give_back(pending)
            log.warning("HELLO counts not stored", extra={"deviceId": self.device_id,
                                                          "reason": type(exc).__name__})

    async def _alert(self, kind: str, details: dict) -> None:
        try:
            await self.agent.device_alert(self.device_id, kind, details)
        except Exception as exc:   # the log line above already says it; storage is failing
            log.error("device alert not stored", extra={"deviceId": self.device_id,
                                                        "kind": kind,
                                                        "reason": type(exc).__name__})

    def _on_hello(self, fields: dict) -> Awaitable[None]:
        # the protocol accepted it: authentic, seq 0, counter above the floor. The device has
        # left its old session; queued commands go again in the new one.
        self.confirmed = False
        self.downlink.reset()
        return self._spawn(self._answer_hello(fields))

    def _superseded(self, fields: dict) -> bool:
        """A newer HELLO of the device came in (several arrive at once after an outage: the
        broker or the line held them): only the newest is answered, and only it is charged."""
        return self.session.nonce_device != fields["nonce"] or self.session.established

    async def _store_hello(self, ctr: int, accepted: int) -> bool:
        """Persist the HELLO counter floor (and pending counts) before answering: after an
        agent restart this HELLO must still be a replay."""
        pending = self.guard.take_pending()
        try:
            await self.agent.record_hellos(self.device_id, ctr=ctr, accepted=accepted, **pending)
            return True
        except Exception as exc:
            self.guard.give_back(pending)
            log.warning("HELLO counter not stored (storage failing): answered anyway; until it "
                        "is stored, an agent restart would accept this HELLO once more",
                        extra={"deviceId": self.device_id, "reason": type(exc).__name__})
            return False

    async def _answer_hello(self, fields: dict) -> None:
        if self._superseded(fields):
            return                    # the newer HELLO's task stores the floor and answers
        if not self.guard.admit():
            if self._replay_log.allow("limited"):
                log.warning("HELLO over the rate limit, not answered", extra={
                    "deviceId": self.device_id, "link": self.link,
                    "limited": self.guard.counts["limited"]})
            await self._store_hello(fields["hello_ctr"], 0)
            return
        await self._store_hello(fields["hello_ctr"], 1)
        if self._superseded(fields):
            return
        self.hellos += 1
        if self.guard.session_burst():
            log.warning("device HELLO burst: it keeps starting sessions (reboots, link drops)",
                        extra={"deviceId": self.device_id, "hellos": self.guard.recent_sessions,
                               "periodS": self.guard.burst_period, "link": self.link})
            self._spawn(self._alert("hello_burst", {
                "hellos": self.guard.recent_sessions, "periodS": self.guard.burst_period,
                "link": self.link,
                "message": "评价器频繁重新连接（反复重启或线路不稳），请检查设备与线路 "
                           "device keeps starting new sessions: check power, cable and network"}))
        # A-1 applies to HELLO too: the journal holds nothing un-acked below `low`
        self.receiver.note_low(fields["low"])
        cum = self.receiver.cum
        cat = self.catalogue.version if self.catalogue is not None else fields["cat_version"]
        ack = self.session.hello_ack(os.urandom(8), {
            "time": int(time.time()), "cum": cum, "window": self.window, "cat_version": cat})
        self._write(ack)     # the only answer until the device confirms the session
        self._time_sent = time.monotonic()     # HELLO_ACK carried the time
        self._hello_cat = fields["cat_version"]
        self._schedule_persist()
        fw = fields["fw"]
        self._firmware = "%d.%d.%d" % (fw[0], fw[1], fw[2])
        log.info("device session", extra={
            "deviceId": self.device_id, "link": self.link, "firmware": self._firmware,
            "boot": fields["boot"], "cum": cum, "low": fields["low"],
            "nextRseq": fields["next_rseq"], "hellos": self.hellos,
            "helloCounter": fields["hello_ctr"]})
        self._hello_info = {
            "online": True, "link": self.link, "firmware": self._firmware,
            "boot": fields["boot"], "clock": bool(fields["status"] & m.ST_CLOCK_SYNCED),
            "backlog": max(0, fields["next_rseq"] - fields["low"]), "session": self.hellos,
            "error": _status_error(fields["status"]),
            "journal_full": bool(fields["status"] & m.ST_JOURNAL_FULL)}

    def _confirm(self) -> asyncio.Task:
        """The device's first frame under the new session key: only the device can make it, so
        the session is real. Now the agent sends what goes beyond HELLO_ACK (SPEC §5.3)."""
        self.confirmed = True
        self.online = True
        _, sack = self.receiver.ack()
        if any(sack):   # committed records above cum: say so before the device resends them
            self._send_ack()
        if self.catalogue is not None and self._hello_cat is not None \
                and self._hello_cat != self.catalogue.version:
            self._push_catalogue()
        self._wake.set()
        info = self._hello_info or {"online": True, "link": self.link}
        self._hello_info = {}
        return self._spawn(self._seen(info))

    def _on_records(self, f: fr.Frame, fields: dict, received_at: float) -> Awaitable[None]:
        self.receiver.note_low(fields["low"])
        records = fields["records"]
        new, dup = self.receiver.offer([r.rseq for r in records])
        self.stats["records_dup"] += len(dup)
        if not new:
            # duplicates or only `low`: ack the current state again
            self._send_ack()
            self._schedule_persist()
            return _done()
        wanted = set(new)
        store = {}
        for r in records:
            if r.rseq in wanted and r.rseq not in store:
                store[r.rseq] = r
        log.debug("records received", extra={"deviceId": self.device_id, "count": len(store),
                                              "seq": f.seq, "link": self.link})
        return self._spawn(self._ingest(list(store.values()), new, f.seq, received_at))

    async def _ingest(self, records: list, new: list[int], seq: int, received_at: float) -> None:
        self.pending_ingests += 1
        try:
            result = await self.agent.ingest(self.device_id, records, received_at)
        except asyncio.CancelledError:
            self.receiver.abandon(new)
            raise
        except Exception as exc:
            # nothing committed, nothing acked; the device keeps the records and resends
            self.receiver.abandon(new)
            self.stats["busy"] += 1
            log.warning("records not stored", extra={"deviceId": self.device_id,
                                                      "reason": type(exc).__name__,
                                                      "count": len(new)})
            if self.session.established:
                self._write(self.session.error_frame(m.E_BUSY, seq))
            return
        finally:
            self.pending_ingests -= 1
        stored = result.all
        missing = set(new) - set(stored)
        if missing:   # should not happen; never ack what ingest did not report as stored
            self.receiver.abandon(sorted(missing))
        self.receiver.committed(stored)
        self.stats["records_new"] += len(result.new)
        self._send_ack()
        self._schedule_persist()

    def _send_ack(self) -> None:
        """ACK the receiver's state — once for everything that happened in this turn of the
        event loop: a group commit completes many frames of a device at once, and one ACK
        (cumulative + selective) covers them all."""
        if not self._ack_due:
            self._ack_due = True
            asyncio.get_running_loop().call_soon(self._flush_ack)

    def _flush_ack(self) -> None:
        self._ack_due = False
        if not self.session.established:
            return
        cum, sack = self.receiver.ack()
        self.stats["acks"] += 1
        self._write(self.session.seal(m.ACK, {"cum": cum, "sack": sack})[1])

    # ------------------------------------------------------------------ cum persistence

    def _schedule_persist(self) -> None:
        if self.receiver.cum > self._persisted and (
                self._persist_task is None or self._persist_task.done()):
            self._persist_task = asyncio.get_running_loop().create_task(self._persist())

    async def _persist(self) -> None:
        # one write in flight per device, at most one per PERSIST_EVERY_S (stop: at once);
        # loops while the cum moved on meanwhile
        while self.receiver.cum > self._persisted:
            await wait_event(self._persist_now, PERSIST_EVERY_S)
            cum = self.receiver.cum
            try:
                self._persisted = await self.agent.set_device_cum_ack(self.device_id, cum)
            except Exception as exc:
                log.warning("cum ack not persisted", extra={"deviceId": self.device_id,
                                                            "reason": type(exc).__name__})
                return

    # ------------------------------------------------------------------ downlink

    @property
    def reachable(self) -> bool:
        """True when a command sent now can reach the device."""
        return self.link_up and self.online and self.session.established and self.confirmed

    async def send_invite(self, invite_id: int, lifetime_s: int, staff_no: str,
                          staff_name: str) -> None:
        """Queue an INVITE and wait until the device DACKs it (raise DeviceOffline if it can't
        be reached now). Only the staff number and the rendered staff name go to the device."""
        if not self.reachable:
            raise DeviceOffline(f"设备离线 device {self.device_id} has no session")
        w, h, bitmap = render_name(staff_name)
        lifetime = max(1, min(int(lifetime_s), 0xFFFF))
        fields = {"invite_id": int(invite_id), "lifetime": lifetime,
                  "staff_no": _staff_no(staff_no), "name_w": w, "name_h": h,
                  "name_bitmap": bitmap}
        await self._command(("invite", int(invite_id)), m.INVITE, fields, float(lifetime))

    async def send_cancel(self, invite_id: int) -> None:
        """Queue a CANCEL and wait for its DACK (raise DeviceOffline if unreachable now)."""
        if not self.reachable:
            raise DeviceOffline(f"设备离线 device {self.device_id} has no session")
        await self._command(("cancel", int(invite_id)), m.CANCEL,
                            {"invite_id": int(invite_id)}, CANCEL_KEEP_S)

    def set_catalogue(self, catalogue: CataloguePush) -> None:
        """A new catalogue version: push it now if the device is online, else at its HELLO."""
        self.catalogue = catalogue
        if self.online:
            self._push_catalogue()

    def _push_catalogue(self) -> None:
        """Queue every CONFIG chunk (not awaited: the device installs when all have arrived)."""
        cat = self.catalogue
        for chunk in cat.chunks:
            self._enqueue(("config", cat.version, chunk["index"]), m.CONFIG, chunk,
                          CONFIG_KEEP_S)
        log.info("catalogue queued", extra={"deviceId": self.device_id, "version": cat.version,
                                            "chunks": len(cat.chunks)})

    async def _command(self, key: tuple, type: int, fields: dict, keep_s: float) -> None:
        await self._enqueue(key, type, fields, keep_s)

    def _enqueue(self, key: tuple, type: int, fields: dict, keep_s: float) -> asyncio.Future:
        """Queue a downlink command once per key; the future resolves on its DACK."""
        item_id = self._commands.get(key)
        cmd = self._cmds.get(item_id) if item_id is not None else None
        if cmd is None:   # idempotent: an INVITE already queued is not queued twice
            cmd = _Command(type, fields, key, time.monotonic() + keep_s)
            item_id = self.downlink.push(cmd)
            self._commands[key] = item_id
            self._cmds[item_id] = cmd
        fut = asyncio.get_running_loop().create_future()
        cmd.waiters.append(fut)
        self._pump()
        return fut

    def _completed(self, item_id: int) -> None:
        cmd = self._cmds.pop(item_id, None)
        if cmd is None:
            return
        if self._commands.get(cmd.key) == item_id:
            del self._commands[cmd.key]
        for fut in cmd.waiters:
            if not fut.done():
                fut.set_result(None)

    def _pump(self) -> None:
        if not (self.link_up and self.session.established and self.confirmed):
            return
        now = now_ms()
        mono = time.monotonic()
        for item_id in self.downlink.poll(now):
            cmd = self.downlink.items.get(item_id)
            if cmd is None:
                continue
            if mono >= cmd.expires:
                self._drop(item_id, cmd)
                continue
            if cmd.type == m.TIME:              # the time as of this frame, not of the queueing
                cmd.fields = {"time": int(time.time())}
            seq, data = self.session.seal(cmd.type, cmd.fields)
            self._write(data)
            self.downlink.sent(item_id, seq, now)

    def _drop(self, item_id: int, cmd: _Command) -> None:
        self.downlink.drop(item_id)
        self._cmds.pop(item_id, None)
        if self._commands.get(cmd.key) == item_id:
            del self._commands[cmd.key]
        for fut in cmd.waiters:
            if not fut.done():
                fut.set_exception(DeviceOffline(f"设备未确认 device {self.device_id} did not "
                                                "acknowledge the command in time"))
                fut.exception()   # mark retrieved: the caller may have stopped waiting
        log.warning("downlink command dropped", extra={"deviceId": self.device_id,
                                                       "kind": cmd.key[0]})

    async def _run_timer(self) -> None:
        while True:
            # idle: still wake now and then for the periodic TIME
            await wait_event(self._wake, self._tick_s if self.downlink.pending() else 60.0)
            self._wake.clear()
            try:
                if self.reachable and time.monotonic() - self._time_sent >= TIME_EVERY_S:
                    self._time_sent = time.monotonic()     # keep device clocks from drifting
                    self._enqueue(("time",), m.TIME, {"time": int(time.time())}, TIME_EVERY_S)
                self._pump()
            except Exception:
                log.exception("downlink pump failed", extra={"deviceId": self.device_id})

    # ------------------------------------------------------------------ helpers

    def _write(self, data: bytes) -> None:
        ok = False
        try:
            ok = self._send(data)
        except Exception as exc:
            log.debug("send failed", extra={"deviceId": self.device_id,
                                            "reason": type(exc).__name__})
        if ok:
            self.stats["frames_out"] += 1
        else:
            self.stats["send_failed"] += 1

    async def _seen(self, info: dict) -> None:
        try:
            await self.agent.device_seen(self.device_id, info)
        except Exception as exc:
            log.warning("device state not stored", extra={"deviceId": self.device_id,
                                                          "reason": type(exc).__name__})

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
