"""The outbox uploader: sends bound ratings to the province until the province confirms.

* Woken on every commit that adds a job (`wake()`), so an upload starts at once when healthy;
  a slow timer (≤ 5 s) also picks up jobs another process (the CLI's `outbox retry`) released.
* One request in flight; single record per request, `Idempotency-Key` = the rating's global id.
* A transient failure (transport, timeout, 5xx, 408, unreadable reply) backs the WHOLE uploader
  off exponentially with full jitter — the upstream is sick, not the job. 429 pauses for
  Retry-After (at least). After `breaker_threshold` consecutive transient failures the circuit
  opens for `breaker_cooldown_s`; then a single probe decides.
* A permanent rejection parks the job with the upstream's reason; `outbox retry` releases it.
* A job is marked done only after the upstream confirmed; nothing is dropped by age or count.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from . import profiles
from .privacy import Sealer, scrub

log = logging.getLogger("edge_agent.uploader")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class UploadSettings:
    profile: str
    url: str
    auth: str
    token: str | None
    app_id: str | None
    app_secret: str | None
    timeout_s: float
    data_source: str
    service_number: str
    area_name: str
    hall_area_code: str
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 60.0


def upload_url(url: str, profile: str) -> str:
    """The configured URL, or the profile's default path if the URL names only the host."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return url.rstrip("/") + profiles.DEFAULT_PATHS[profile]
    return url


class Histogram:
    """A Prometheus-style cumulative histogram."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1


class Uploader:
    """Drains the outbox. `agent` supplies the writer, the reader and the sealer."""

    def __init__(self, settings: UploadSettings, writer: Any, reader_factory: Any,
                 sealer: Sealer) -> None:
        self.s = settings
        self.url = upload_url(settings.url, settings.profile)
        self._writer = writer
        self._reader_factory = reader_factory
        self._sealer = sealer
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None
        self.consecutive_failures = 0
        self.pause_until = 0.0
        self.breaker = "closed"  # closed | open | half-open
        self.latency = Histogram(LATENCY_BUCKETS)
        self.results: dict[str, int] = {"done": 0, "retry": 0, "park": 0}
        self.last_error: str | None = None

    def wake(self) -> None:
        """A job was committed (or released): look now."""
        self._wake.set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.s.timeout_s))
        self._task = asyncio.create_task(self._run(), name="uploader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ loop

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but return early when woken (the flag is cleared before each look, so a commit
        that lands while we query is never missed)."""
        try:
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        while True:
            try:
                now = time.time()
                if now < self.pause_until:
                    # backing off or circuit open: wake-ups do not shorten a pause
                    await asyncio.sleep(min(self.pause_until - now, 5.0))
                    continue
                if self.breaker == "open":
                    self.breaker = "half-open"
                self._wake.clear()
                job = self._next_job(now)
                if job is None:
                    await self._sleep(min(5.0, self._next_due(now) - now))
                    continue
                await self._attempt(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the uploader alive; the job stays pending
                log.exception("uploader loop error")
                await asyncio.sleep(1.0)

    def _next_job(self, now: float) -> dict | None:
        db = self._reader_factory()
        row = db.execute(
            "SELECT o.id, o.global_id, o.attempts, r.level, r.assess_time, r.assess_number,"
            " r.reasons, r.flags, r.case_id FROM outbox o JOIN ratings r ON r.id = o.rating_id"
            " WHERE o.state = 'pending' AND o.next_at <= ? ORDER BY o.next_at, o.id LIMIT 1",
            (now,)).fetchone()
        if row is None:
            return None
        keys = ("id", "global_id", "attempts", "level", "assess_time", "assess_number",
                "reasons", "flags", "case_id")
        job = dict(zip(keys, row))
        cur = db.execute("SELECT * FROM cases WHERE id = ?", (job["case_id"],))
        names = [d[0] for d in cur.description]
        job["case"] = dict(zip(names, cur.fetchone()))
        return job

    def _next_due(self, now: float) -> float:
        row = self._reader_factory().execute(
            "SELECT MIN(next_at) FROM outbox WHERE state = 'pending'").fetchone()
        return row[0] if row and row[0] is not None else now + 5.0

    def _request(self, job: dict) -> tuple[bytes, dict[str, str]]:
        case = job["case"]
        # the only place rater data is opened: straight into the request body
        applicant = self._sealer.open(case["applicant_sealed"], case["project_no"])
        u = profiles.UploadInput(
            global_id=job["global_id"], level=job["level"], assess_time=job["assess_time"],
            assess_number=job["assess_number"] or 1, reasons=json.loads(job["reasons"]),
            flags=job["flags"], case=case, applicant=applicant,
            hall_area_code=self.s.hall_area_code, area_name=self.s.area_name,
            data_source=self.s.data_source, service_number=self.s.service_number)
        body = profiles.build_body(self.s.profile, u)
        headers = {"Content-Type": profiles.CONTENT_TYPES[self.s.profile] + "; charset=utf-8",
                   "Idempotency-Key": job["global_id"]}
        if self.s.auth == "token":
            from simulator.province.signing import HEADER_TOKEN
            headers[HEADER_TOKEN] = self.s.token or ""
        elif self.s.auth == "hmac":
            # the shared signing module: the reference server verifies with the same code
            from simulator.province.signing import auth_headers
            headers.update(auth_headers(self.s.app_id or "", self.s.app_secret or "", body))
        return body, headers

    async def _attempt(self, job: dict) -> None:
        try:
            body, headers = self._request(job)
        except Exception as exc:  # e.g. wrong privacy key: a fix is needed, not a retry storm
            await self._finish(job, profiles.Outcome("park", f"cannot_build_request: {exc}"))
            return
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                reply = await resp.read()
                outcome = profiles.classify(self.s.profile, resp.status, reply,
                                            resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            outcome = profiles.Outcome("retry", "timeout")
        except aiohttp.ClientError as exc:
            outcome = profiles.Outcome("retry", f"transport: {type(exc).__name__}")
        self.latency.observe(time.monotonic() - started)
        await self._finish(job, outcome)

    def _backoff_for(self, n: int) -> float:
        ceiling = min(self.s.retry_cap_s, self.s.retry_base_s * (2 ** min(n - 1, 30)))
        return random.uniform(ceiling / 2, ceiling)  # jitter: retries of many halls spread out

    async def _finish(self, job: dict, outcome: profiles.Outcome) -> None:
        now = time.time()
        # an upstream may echo what it refused; what we keep and show must not carry rater data
        outcome = profiles.Outcome(outcome.kind, scrub(outcome.reason), outcome.retry_after)
        self.results[outcome.kind] = self.results.get(outcome.kind, 0) + 1
        job_id = job["id"]
        if outcome.kind == "done":
            self.consecutive_failures = 0
            self.breaker = "closed"
            self.last_error = None

            def op(db):
                db.execute("UPDATE outbox SET state = 'done', done_at = ?, attempts = attempts + 1,"
                           " last_attempt_at = ?, upstream_reply = ?, last_error = NULL"
                           " WHERE id = ?", (now, now, outcome.reason[:200], job_id))
            await self._writer.write(op)
            log.info("uploaded", extra={"ratingId": job["global_id"], "reply": outcome.reason})
            return
        if outcome.kind == "park":
            # the upstream answered, so it is alive: a rejection does not trip the breaker
            self.consecutive_failures = 0
            self.breaker = "closed"

            def op(db):
                db.execute("UPDATE outbox SET state = 'parked', attempts = attempts + 1,"
                           " last_attempt_at = ?, last_error = ? WHERE id = ?",
                           (now, outcome.reason[:500], job_id))
            await self._writer.write(op)
            log.warning("upload rejected, parked", extra={"ratingId": job["global_id"],
                                                          "reason": outcome.reason[:500]})
            return
        # transient
        self.last_error = outcome.reason
        if outcome.reason == "http_429":
            # throttled, not sick: wait what the upstream asks, and keep the breaker out of it
            delay = outcome.retry_after if outcome.retry_after is not None else \
                self._backoff_for(max(1, self.consecutive_failures + 1))
            if self.breaker == "half-open":
                self.breaker = "closed"
        else:
            self.consecutive_failures += 1
            delay = self._backoff_for(self.consecutive_failures)
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            if self.breaker == "half-open" or \
                    self.consecutive_failures >= self.s.breaker_threshold:
                self.breaker = "open"
                delay = max(delay, self.s.breaker_cooldown_s)
        self.pause_until = now + delay

        def op(db):
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ?,"
                       " next_at = ?, last_error = ? WHERE id = ?",
                       (now, now + delay, outcome.reason[:500], job_id))
        await self._writer.write(op)
        log.warning("upload failed, will retry", extra={
            "ratingId": job["global_id"], "reason": outcome.reason, "retryIn": round(delay, 3),
            "breaker": self.breaker})
