"""The agent core: one object the links, the HTTP API and the CLI share.

Interfaces for the device links (serial / MQTT RL1 sessions):

* `await agent.ingest(device_id, records, received_at) -> IngestResult` — stores, binds, writes
  outbox/alert rows in ONE group-commit transaction and returns only after it COMMITTED. Ack the
  device after this returns, never before. Duplicates (same device, rseq) are stored once and come
  back in `IngestResult.duplicates` (re-ack them). If it raises, nothing was acknowledged-worthy:
  do not ack; the device resends.
* `await agent.device_cum_ack(device_id)`, `await agent.set_device_cum_ack(device_id, cum)`
  (only ever advances), `await agent.stored_rseqs_after(device_id, cum)`.
* `agent.register_gateway(gateway, device_ids=None)` — the link's `DeviceGateway`, used to send
  INVITE/CANCEL. `await agent.device_seen(device_id, info)` — status from the link (`online`,
  `firmware`, `boot`, `clock`, `backlog`, ...); going online re-sends waiting invitations.
* `agent.count_rejected(reason)` — a frame the link rejected (bad CRC, bad MAC, ...).
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import sqlite_utils

from . import binding, queries
from .alerts import AlertDispatcher, MqttPublisher
from .cases import CaseInput, case_row, validate_case
from .config import Config
from .privacy import Sealer
from .store import Writer, connect
from .uploader import Uploader, UploadSettings

log = logging.getLogger("edge_agent.agent")

# what `device_seen` keeps: scalar values only (JSON-able, shown by `devices`/status), at most
# this many keys, strings cut to 200 characters
DEVICE_INFO_MAX_KEYS = 32


def _clean_info(info: dict) -> dict:
    out: dict = {}
    for k, v in info.items():
        if len(out) >= DEVICE_INFO_MAX_KEYS:
            break
        if isinstance(v, str):
            out[str(k)[:64]] = v[:200]
        elif v is None or isinstance(v, (bool, int, float)):
            out[str(k)[:64]] = v
    return out


class DeviceGateway(Protocol):
    """What a link implements so the agent can reach its devices."""

    async def send_invite(self, device_id: int, invite_id: int, lifetime_s: int, staff_no: str,
                          staff_name: str) -> None:
        """Deliver INVITE; raise if the device cannot be reached now (it will be retried when the
        device comes online, until the invitation expires)."""

    async def send_cancel(self, device_id: int, invite_id: int) -> None:
        """Deliver CANCEL for an invitation the device may still show."""


@dataclass
class IngestResult:
    """Which rseqs were stored now (`new`) and which were already stored (`duplicates`)."""
    device_id: int
    new: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    @property
    def all(self) -> list[int]:
        """Every rseq that is durably stored — the set the link may acknowledge."""
        return sorted(set(self.new) | set(self.duplicates))


@dataclass
class Tuning:
    """Timing knobs; defaults are production values, tests shorten them."""
    linger_s: float = 0.0      # group commit forms batches during each fsync (store.py)
    max_rows: int = 1000
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 60.0
    alert_retry_base_s: float = 2.0
    invite_send_timeout_s: float = 2.0
    invite_sweep_s: float = 1.0    # how often expired invitations are closed


class Agent:
    """The hall edge agent core (storage, binding, outbox, alerts, device registry)."""

    def __init__(self, config: Config, tuning: Tuning | None = None) -> None:
        self.config = config
        self.tuning = tuning or Tuning()
        self.sealer = Sealer(config.privacy_key)
        self.writer = Writer(config.storage, self.tuning.linger_s, self.tuning.max_rows)
        self._reader: sqlite_utils.Database | None = None
        self._gateways: dict[int, DeviceGateway] = {}
        self._default_gateway: DeviceGateway | None = None
        self.rejected: dict[str, int] = {}
        self.started_at = time.time()
        targets = []
        if config.alerts.webhook_url:
            targets.append("webhook")
        if config.alerts.mqtt_topic:
            targets.append("mqtt")
        self.ctx = binding.BindContext(
            hall_code=config.hall.hall_code,
            device_windows={d.id: d.window for d in config.devices},
            binding_window_s=config.binding_window_s, alert_targets=tuple(targets),
            window_names={w.id: w.name for w in config.windows})
        up = config.upstream
        self.uploader = Uploader(UploadSettings(
            profile=up.profile, url=up.url, auth=up.auth, token=up.token, app_id=up.app_id,
            app_secret=up.app_secret, timeout_s=up.timeout_s, data_source=up.data_source,
            service_number=up.service_number, area_name=up.area_name,
            hall_area_code=config.hall.area_code, retry_base_s=self.tuning.retry_base_s,
            retry_cap_s=self.tuning.retry_cap_s, breaker_threshold=self.tuning.breaker_threshold,
            breaker_cooldown_s=self.tuning.breaker_cooldown_s), self.writer, self.reader,
            self.sealer)
        mqtt = None
        if config.alerts.mqtt_topic and config.broker is not None:
            b = config.broker
            mqtt = MqttPublisher(b.host, b.port, b.username, b.password, b.tls,
                                 client_id=f"hcp-agent-{config.hall.hall_code}-alerts")
        self.alerts = AlertDispatcher(self.writer, self.reader, config.alerts.webhook_url,
                                      config.alerts.mqtt_topic, mqtt,
                                      retry_base_s=self.tuning.alert_retry_base_s,
                                      timeout_s=up.timeout_s)
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open storage (migrating), register configured devices, start uploader and alerts."""
        await self.writer.start()
        self._reader = connect(self.config.storage)
        devices = [(d.id, d.window) for d in self.config.devices]

        def op(db):
            for did, window in devices:
                db.execute("INSERT INTO devices(device_id, window) VALUES (?, ?)"
                           " ON CONFLICT(device_id) DO UPDATE SET window = excluded.window",
                           (did, window))
            # a restart means no link is up yet
            db.execute("UPDATE devices SET online = 0")
        await self.writer.write(op)
        await self.uploader.start()
        await self.alerts.start()
        self._spawn(self._expire_invitations())
        log.info("agent started", extra={"hall": self.config.hall.hall_code,
                                         "profile": self.config.upstream.profile})

    async def stop(self) -> None:
        """Stop background work, finish queued writes, close connections."""
        for t in list(self._tasks):
            t.cancel()
        await self.uploader.stop()
        await self.alerts.stop()
        await self.writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def reader(self) -> sqlite_utils.Database:
        """The event-loop thread's read connection (WAL: reads never block the writer)."""
        assert self._reader is not None, "agent not started"
        return self._reader

    async def _expire_invitations(self) -> None:
        """Close invitations that ran out unanswered; their cases may then take an unsolicited
        press (binding.close_expired). Checked on the reader first: no empty write transactions."""
        ctx = self.ctx
        while True:
            await asyncio.sleep(self.tuning.invite_sweep_s)
            now = time.time()
            try:
                if not self.reader().execute(
                        "SELECT 1 FROM invitations WHERE state IN ('waiting', 'sent')"
                        " AND expires_at <= ? LIMIT 1", (now,)).fetchone():
                    continue
                queued, alerted = await self.writer.write(
                    lambda db: binding.close_expired(db, ctx, now))
            except Exception as exc:   # storage trouble: the next sweep tries again
                log.warning("invitation sweep failed", extra={"reason": type(exc).__name__})
                continue
            if queued:
                self.uploader.wake()
            if alerted:
                self.alerts.wake()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ device records

    async def ingest(self, device_id: int, records: list, received_at: float) -> IngestResult:
        """Store records durably; returns after COMMIT. See the module docstring."""
        ctx = self.ctx
        recs = list(records)

        def op(db):
            return binding.store_records(db, ctx, device_id, recs, received_at)
        new, dups, queued, alerted = await self.writer.write(op, weight=max(1, len(recs)))
        if queued:
            self.uploader.wake()
        if alerted:
            self.alerts.wake()
        if new:   # debug: a backlog drain stores thousands of frames a second
            log.debug("records stored", extra={"deviceId": device_id, "new": len(new),
                                              "duplicates": len(dups), "queued": len(queued)})
        return IngestResult(device_id=device_id, new=new, duplicates=dups)

    async def device_cum_ack(self, device_id: int) -> int:
        """The persisted cumulative ack of a device (0 if never set)."""
        row = self.reader().execute("SELECT cum_ack FROM devices WHERE device_id = ?",
                                    (device_id,)).fetchone()
        return int(row[0]) if row else 0

    async def set_device_cum_ack(self, device_id: int, cum_ack: int) -> int:
        """Advance (never lower) the persisted cumulative ack; returns the stored value."""
        def op(db):
            db.execute("INSERT INTO devices(device_id, cum_ack) VALUES (?, ?)"
                       " ON CONFLICT(device_id) DO UPDATE SET cum_ack = MAX(cum_ack, excluded.cum_ack)",
                       (device_id, int(cum_ack)))
            return db.execute("SELECT cum_ack FROM devices WHERE device_id = ?",
                              (device_id,)).fetchone()[0]
        return int(await self.writer.write(op))

    async def stored_rseqs_after(self, device_id: int, cum: int) -> list[int]:
        """rseqs stored for a device above `cum`, ascending (for the selective-ack bitmap)."""
        rows = self.reader().execute(
            "SELECT rseq FROM ratings WHERE device_id = ? AND rseq > ? ORDER BY rseq",
            (device_id, cum)).fetchall()
        return [r[0] for r in rows]

    def count_rejected(self, reason: str) -> None:
        """Count a frame a link rejected (exported as hcp_frames_rejected_total{reason})."""
        key = "".join(c if c.isalnum() or c in "_-" else "_" for c in str(reason))[:64] or "other"
        self.rejected[key] = self.rejected.get(key, 0) + 1

    async def device_alert(self, device_id: int, kind: str, details: dict[str, Any]) -> int:
        """Raise an operational alert about a device (e.g. `hello_burst`) to the configured
        alert targets, durably like a 差评 alert. `details` must hold no rater data.
        Returns the number of alert rows written (0 without alert targets)."""
        targets = self.ctx.alert_targets
        if not targets:
            return 0
        window = self.ctx.device_windows.get(device_id)
        now = time.time()
        body = json.dumps({
            "type": kind, "hallCode": self.ctx.hall_code, "deviceId": device_id,
            "window": window, "windowName": self.ctx.window_names.get(window or "", window),
            "time": binding.hall_time(now),
            **details}, ensure_ascii=False)

        def op(db):
            for target in targets:
                db.execute("INSERT INTO alerts(device_id, kind, target, payload, state, next_at,"
                           " created_at) VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                           (device_id, kind, target, body, now, now))
        await self.writer.write(op)
        self.alerts.wake()
        return len(targets)

    # ------------------------------------------------------------------ devices

    def register_gateway(self, gateway: DeviceGateway, device_ids: Iterable[int] | None = None
                         ) -> None:
        """Register a link's gateway for some devices, or as the default for all."""
        if device_ids is None:
            self._default_gateway = gateway
        else:
            for did in device_ids:
                self._gateways[int(did)] = gateway

    def gateway_for(self, device_id: int) -> DeviceGateway | None:
        return self._gateways.get(device_id, self._default_gateway)

    async def device_seen(self, device_id: int, info: dict) -> None:
        """Record what a link knows about a device; online -> re-send waiting invitations."""
        now = time.time()
        clean = _clean_info(info)
        online = clean.get("online")

        def op(db):
            row = db.execute("SELECT info, online FROM devices WHERE device_id = ?",
                             (device_id,)).fetchone()
            merged = json.loads(row[0]) if row else {}
            was_online = bool(row[1]) if row else False
            merged.update(clean)
            is_online = was_online if online is None else bool(online)
            db.execute("INSERT INTO devices(device_id, online, last_seen, info) VALUES (?,?,?,?)"
                       " ON CONFLICT(device_id) DO UPDATE SET online = excluded.online,"
                       " last_seen = excluded.last_seen, info = excluded.info",
                       (device_id, int(is_online), now, json.dumps(merged, ensure_ascii=False)))
            return was_online, is_online
        was, now_online = await self.writer.write(op)
        if now_online and not was:
            self._spawn(self._resend_waiting(device_id))

    async def _resend_waiting(self, device_id: int) -> None:
        now = time.time()
        rows = self.reader().execute(
            "SELECT i.invite_id, i.expires_at, c.staff_id, c.staff_name FROM invitations i"
            " JOIN cases c ON c.id = i.case_id WHERE i.device_id = ? AND i.state = 'waiting'"
            " AND i.expires_at > ? ORDER BY i.invite_id", (device_id, now)).fetchall()
        for invite_id, expires_at, staff_id, staff_name in rows:
            await self._send_invite(device_id, invite_id, int(expires_at - time.time()),
                                    staff_id, staff_name)

    async def _send_invite(self, device_id: int, invite_id: int, lifetime: int, staff_id: str,
                           staff_name: str) -> str:
        gw = self.gateway_for(device_id)
        state, error = "sent", None
        if lifetime <= 0:
            return "expired"
        if gw is None:
            state, error = "waiting", "no link registered"
        else:
            try:
                await asyncio.wait_for(gw.send_invite(device_id, invite_id, lifetime, staff_id,
                                                      staff_name),
                                       self.tuning.invite_send_timeout_s)
            except Exception as exc:  # device offline / link down: wait for it to come back
                state, error = "waiting", f"{type(exc).__name__}: {exc}"[:200]
        now = time.time()

        def op(db):
            db.execute("UPDATE invitations SET state = ?, sent_at = CASE WHEN ? = 'sent' THEN ?"
                       " ELSE sent_at END, send_error = ? WHERE invite_id = ?"
                       " AND state IN ('waiting', 'sent')",
                       (state, state, now, error, invite_id))
        await self.writer.write(op)
        return state

    async def _cancel(self, device_id: int, invite_ids: list[int]) -> None:
        gw = self.gateway_for(device_id)
        if gw is None:
            return
        for invite_id in invite_ids:
            try:
                await asyncio.wait_for(gw.send_cancel(device_id, invite_id),
                                       self.tuning.invite_send_timeout_s)
            except Exception as exc:
                log.warning("cancel not delivered", extra={"deviceId": device_id,
                                                           "inviteId": invite_id,
                                                           "reason": type(exc).__name__})

    # ------------------------------------------------------------------ cases

    async def intake_case(self, body: Any) -> tuple[int, dict]:
        """Handle a `POST /v1/cases` body: (HTTP status, JSON reply). Idempotent on projectNo."""
        case, errors = validate_case(body, {w.id for w in self.config.windows})
        if case is None:
            return 422, {"error": "invalid_case", "message": "案件数据有误 invalid case data",
                         "fields": errors}
        now = time.time()
        created, invite_id, device_id, superseded = await self._store_case(case, now)
        if not created:
            return 200, {"created": False, **queries.case_state(self.reader(), case.project_no)}
        if invite_id is not None and device_id is not None:
            if superseded:
                await self._cancel(device_id, superseded)
            await self._send_invite(device_id, invite_id, self.config.invite_lifetime_s,
                                    case.staff_id, case.staff_name)
        log.info("case received", extra={"projectNo": case.project_no, "window": case.window,
                                         "inviteId": invite_id})
        return 201, {"created": True, **queries.case_state(self.reader(), case.project_no)}

    async def _store_case(self, case: CaseInput, now: float):
        row = case_row(case, self.sealer, now)
        devices = self.config.window_devices(case.window)
        device_id = devices[0].id if devices else None
        lifetime = self.config.invite_lifetime_s
        ctx = self.ctx

        def op(db):
            if db.execute("SELECT 1 FROM cases WHERE project_no = ?",
                          (case.project_no,)).fetchone():
                return False, None, device_id, [], [], []
            case_id = db["cases"].insert(row).last_pk
            superseded = []
            if device_id is not None:
                # one invitation on a device at a time: older open ones are superseded (a press
                # that still carries one binds to its case all the same)
                open_rows = db.execute(
                    "SELECT invite_id, case_id FROM invitations WHERE device_id = ? AND state IN"
                    " ('sent', 'waiting') AND expires_at > ?", (device_id, now)).fetchall()
                superseded = [r[0] for r in open_rows]
                db.execute("UPDATE invitations SET state = 'superseded' WHERE device_id = ? AND"
                           " state IN ('sent', 'waiting')", (device_id,))
                # their cases can no longer be answered by invitation: late binding may apply
                late_q, late_a = binding.bind_cases_late(db, ctx, [r[1] for r in open_rows], now)
            else:
                late_q, late_a = [], []
            while True:
                invite_id = secrets.randbelow(2 ** 32 - 1) + 1  # u32, never 0 (= unsolicited)
                if not db.execute("SELECT 1 FROM invitations WHERE invite_id = ?",
                                  (invite_id,)).fetchone():
                    break
            db.execute("INSERT INTO invitations(invite_id, case_id, device_id, created_at,"
                       " expires_at, state) VALUES (?, ?, ?, ?, ?, 'waiting')",
                       (invite_id, case_id, device_id, now, now + lifetime))
            queued, alerted = binding.bind_late(db, ctx, case_id, now)
            return (True, invite_id, device_id, superseded, late_q + queued, late_a + alerted)

        created, invite_id, dev, superseded, queued, alerted = await self.writer.write(op)
        if queued:
            self.uploader.wake()
        if alerted:
            self.alerts.wake()
        return created, invite_id, dev, superseded
