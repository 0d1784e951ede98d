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
* `await agent.device_hello_floor(device_id, key_fp)`, `await agent.record_hellos(device_id,
  ctr=..., accepted=..., replays=..., limited=..., bursts=...)` — the HELLO counter floor and
  HELLO counts (edge_agent/device_hellos.py, SPEC §5.3).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

import sqlite_utils

from . import binding, device_hellos, intake_audit, invitations, queries, queue_events
from .alerts import AlertDispatcher, MqttPublisher, RobotTargets
from .cases import CaseInput, case_row, validate_case
from .catalogue import ReasonBook
from .clients import ClientRegistry
from .config import Config
from .intake_auth import MAX_SKEW_S, Gate
from .privacy import Sealer
from .store import Writer, connect
from .upstream import Uploader, jobs as upstream_jobs

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
        if config.alerts.wecom_webhook:
            targets.append("wecom")
        if config.alerts.dingtalk_webhook:
            targets.append("dingtalk")
        # reason codes -> names for alerts and the console (config validated the catalogue)
        self.reasons = ReasonBook.from_file(config.catalogue_path)
        self.ctx = binding.BindContext(
            hall_code=config.hall.hall_code,
            device_windows={d.id: d.window for d in config.devices},
            binding_window_s=config.binding_window_s, alert_targets=tuple(targets),
            window_names={w.id: w.name for w in config.windows},
            reasons=self.reasons,
            console_url=config.console.public_url if config.console else None,
            unsolicited={w.id: w.unsolicited for w in config.windows},
            reference_max_age_s=config.reference_max_age_s)
        # authenticated intake: the clients of hall.toml (reloaded when it changes)
        self.gate = Gate(ClientRegistry(config))
        self.uploader = Uploader(config, self.tuning, self.writer, self.reader, self.sealer)
        mqtt = None
        if config.alerts.mqtt_topic and config.broker is not None:
            b = config.broker
            mqtt = MqttPublisher(b.host, b.port, b.username, b.password, b.tls,
                                 client_id=f"hcp-agent-{config.hall.hall_code}-alerts")
        self.alerts = AlertDispatcher(self.writer, self.reader, config.alerts.webhook_url,
                                      config.alerts.mqtt_topic, mqtt,
                                      retry_base_s=self.tuning.alert_retry_base_s,
                                      timeout_s=config.upstream.timeout_s,
                                      robots=RobotTargets(config.alerts.wecom_webhook,
                                                          config.alerts.dingtalk_webhook,
                                                          config.alerts.dingtalk_secret))
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open storage (migrating), register configured devices, start uploader and alerts."""
        await self.writer.start()
        self._reader = connect(self.config.storage)
        devices = [(d.id, d.window, d.role) for d in self.config.devices]

        def op(db):
            for did, window, role in devices:
                db.execute("INSERT INTO devices(device_id, window, role) VALUES (?, ?, ?)"
                           " ON CONFLICT(device_id) DO UPDATE SET window = excluded.window,"
                           " role = excluded.role", (did, window, role))
            # a restart means no link is up yet; say so where the console shows the reason
            db.execute("UPDATE devices SET online = 0, info = json_set(info, '$.offline_reason',"
                       " 'agent_restart')")
        await self.writer.write(op)
        for client_id, sig, at in intake_audit.recent_signatures(
                self._reader, time.time() - 2 * MAX_SKEW_S):
            self.gate.remember(client_id, sig, at)     # no replay across a restart
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
        if any(getattr(r, "ref", None) for r in recs):
            self._spawn(self._withdraw_rated_invitations())
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

    async def device_hello_floor(self, device_id: int, key_fp: str) -> int:
        """The highest HELLO counter accepted from a device under the key `key_fp` (0, and
        reset, when the stored one belongs to another key)."""
        return await self.writer.write(lambda db: device_hellos.load_floor(db, device_id, key_fp))

    async def record_hellos(self, device_id: int, **counts: int) -> int:
        """Durably raise a device's HELLO floor and add HELLO counts; returns the floor."""
        return await self.writer.write(lambda db: device_hellos.record(db, device_id, **counts))

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
            if is_online:
                merged.pop("offline_reason", None)
            if "session" in clean:     # only a HELLO reports the session count
                merged["hello_at"] = now
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
            "SELECT i.invite_id, i.expires_at, COALESCE(c.staff_id, t.staff_id, ''),"
            " COALESCE(c.staff_name, t.staff_name, '') FROM invitations i"
            " LEFT JOIN cases c ON c.id = i.case_id LEFT JOIN tickets t ON t.id = i.ticket_id"
            " WHERE i.device_id = ? AND i.state = 'waiting'"
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

    async def deliver_invite(self, device_id: int, invite_id: int, superseded: list[int],
                             staff_id: str, staff_name: str) -> str:
        """Send a stored invitation (after its COMMIT), cancelling the ones it superseded."""
        if superseded:
            await self._cancel(device_id, superseded)
        return await self._send_invite(device_id, invite_id, self.config.invite_lifetime_s,
                                       staff_id, staff_name)

    async def _withdraw_rated_invitations(self) -> None:
        """CANCEL invitations whose case (or ticket) was rated in the waiting area meanwhile
        (binding marks them 'cancelling'); the device would otherwise still ask for a rating
        that could only be kept as already rated."""
        rows = self.reader().execute("SELECT invite_id, device_id FROM invitations WHERE state"
                                     " = 'cancelling'").fetchall()
        for invite_id, device_id in rows:
            if device_id is not None:
                await self._cancel(device_id, [invite_id])
        if rows:
            ids = [r[0] for r in rows]
            await self.writer.write(lambda db: db.execute(
                "UPDATE invitations SET state = 'cancelled' WHERE state = 'cancelling' AND"
                f" invite_id IN ({','.join('?' * len(ids))})", ids))

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

    async def intake_case(self, body: Any, admitted: Any = None) -> tuple[int, dict]:
        """Handle a `POST /v1/cases` body: (HTTP status, JSON reply). Idempotent on projectNo.
        `admitted` (intake_auth.Admitted) names the client: it must be allowed the case's window,
        and the report is audited — in the case's own transaction when it is stored."""
        client = admitted.client if admitted is not None else None
        case, errors = validate_case(body, {w.id for w in self.config.windows})
        if case is None:
            return await self._audited(admitted, body, 422, "invalid", {
                "error": "invalid_case", "message": "案件数据有误 invalid case data",
                "fields": errors})
        if client is not None and not client.may_report(case.window):
            return await self._audited(admitted, body, 403, "window_not_allowed", {
                "error": "window_not_allowed", "message": "该客户端无权上报此窗口 this client may "
                "not report for this window (hall.toml clients.windows)",
                "fields": [{"field": "window", "error": "not allowed for this client"}]})
        now = time.time()
        created, invite_id, device_id, superseded = await self._store_case(case, now, admitted)
        if not created:
            return await self._audited(admitted, body, 200, "duplicate", {
                "created": False, **queries.case_state(self.reader(), case.project_no)})
        if invite_id is not None and device_id is not None:
            await self.deliver_invite(device_id, invite_id, superseded, case.staff_id,
                                      case.staff_name)
        log.info("case received", extra={"projectNo": case.project_no, "window": case.window,
                                         "inviteId": invite_id})
        return 201, {"created": True, **queries.case_state(self.reader(), case.project_no)}

    async def _audited(self, admitted: Any, body: Any, status: int, outcome: str, reply: dict
                       ) -> tuple[int, dict]:
        """Audit a report that stored no case (invalid, not allowed, duplicate); return it."""
        if admitted is not None:
            ref = body.get("projectNo") if isinstance(body, dict) else None
            await self.writer.write(lambda db: intake_audit.record(
                db, admitted.client.id, "cases", status, outcome,
                ref if isinstance(ref, str) else None, admitted.signature, admitted.remote))
        return status, reply

    async def _store_case(self, case: CaseInput, now: float, admitted: Any = None):
        row = case_row(case, self.sealer, now)
        if admitted is not None:
            row["client_id"] = admitted.client.id
        devices = self.config.window_devices(case.window)
        device_id = devices[0].id if devices else None
        lifetime = self.config.invite_lifetime_s
        ctx = self.ctx
        needs_service = self.uploader.profile.needs_service

        def op(db):
            if db.execute("SELECT 1 FROM cases WHERE project_no = ?",
                          (case.project_no,)).fetchone():
                return False, None, device_id, [], [], []
            case_id = db["cases"].insert(row).last_pk
            if admitted is not None:
                intake_audit.record(db, admitted.client.id, "cases", 201, "created",
                                    case.project_no, admitted.signature, admitted.remote, now)
            if needs_service:   # the province wants the case's service record before its rating
                upstream_jobs.add_service(db, case_id, now)
            # its queue ticket, and ratings that waited for this case (scanned in the waiting
            # area, or answering the ticket's service): evidence first, invitation only if needed
            ev_q, ev_a, no_invite = queue_events.link_case(db, ctx, case_id, case.ticket, now)
            if no_invite:
                return True, None, device_id, [], ev_q, ev_a
            invite_id, superseded, late_q, late_a = invitations.open_invitation(
                db, ctx, device_id, case_id, None, lifetime, now)
            queued, alerted = binding.bind_late(db, ctx, case_id, now)
            return (True, invite_id, device_id, superseded, ev_q + late_q + queued,
                    ev_a + late_a + alerted)

        created, invite_id, dev, superseded, queued, alerted = await self.writer.write(op)
        if queued or (created and needs_service):
            self.uploader.wake()
        if alerted:
            self.alerts.wake()
        return created, invite_id, dev, superseded
