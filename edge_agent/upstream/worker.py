"""The outbox worker: sends service records and ratings to the province until it confirms.

* Woken by every commit that adds a job (`wake()`); a slow timer (≤ 5 s) picks up jobs another
  process (`hcp agent outbox retry`) released.
* Up to `upstream.max_in_flight` requests at once (default 4), each carrying up to
  `upstream.batch_size` records where the profile takes batches (national-sm2: 20). Service
  records go first; a rating goes once its case's service record is confirmed.
* A reply settles each record by its own result, and a batch's states are committed in one
  transaction. A record is done only when the province confirmed it (or said it already has it:
  counted as a duplicate, never sent again).
* A transient failure (transport, timeout, 5xx, 408, unreadable reply) backs the WHOLE worker
  off exponentially with full jitter — the upstream is sick, not the job. 429 pauses for
  Retry-After (at least). After `breaker_threshold` consecutive transient failures the circuit
  opens for `breaker_cooldown_s`; then a single probe decides.
* A permanent rejection parks the record with the province's reason (rater data masked); a
  request we cannot build (wrong key, undecryptable applicant) parks too — a fix is needed, not
  a retry storm.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from ..privacy import Sealer, mask_cert, mask_name, mask_phone, scrub
from . import jobs as J
from .auth import make_auth
from .catalogue import Catalogues, CatalogueSync, latest, store_op
from .profiles.base import RATING, SERVICE, BuildContext, Job, Outcome
from .registry import get_profile

if TYPE_CHECKING:
    from ..agent import Tuning
    from ..config import Config

log = logging.getLogger("edge_agent.upstream")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def endpoint(config: "Config", kind: str) -> str:
    """The URL of one of the profile's endpoints: `upstream.url` is the base (a URL that already
    ends with the rating path is taken as that endpoint), `upstream.<kind>_path` overrides."""
    up = config.upstream
    profile = get_profile(up.profile)
    rating_path = up.paths.get(RATING, profile.paths[RATING])
    base = up.url.rstrip("/")
    if urlsplit(base).path.endswith(rating_path):
        base = base[: -len(rating_path)]
    return base + up.paths.get(kind, profile.paths[kind])


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

    def __init__(self, config: "Config", tuning: "Tuning", writer: Any, reader_factory: Any,
                 sealer: Sealer) -> None:
        self.config = config
        self.up = config.upstream
        self.tuning = tuning
        self.profile = get_profile(self.up.profile)
        self.auth = make_auth(self.up)
        self.catalogues = Catalogues()
        self.ctx = BuildContext(config, self.catalogues.reasons, self.auth)
        self.urls = {kind: endpoint(config, kind) for kind in self.profile.paths}
        self.batch = self.profile.batch_limit(self.up)
        self._writer = writer
        self._reader_factory = reader_factory
        self._sealer = sealer
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sync_task: asyncio.Task | None = None
        self._sends: set[asyncio.Task] = set()
        self._requests = 0      # requests on the wire (a batch being settled no longer counts)
        self._busy: dict[str, set[int]] = {RATING: set(), SERVICE: set()}
        self._session: aiohttp.ClientSession | None = None
        self.sync: CatalogueSync | None = None
        if self.profile.fetches_catalogue and self.up.catalogue_fetch:
            self.sync = CatalogueSync(self.profile, self.urls["catalogue"], self.ctx, writer,
                                      self.catalogues, self.up.catalogue_refresh_s,
                                      self.up.timeout_s)
        self.consecutive_failures = 0
        self.pause_until = 0.0
        self.breaker = "closed"  # closed | open | half-open
        self.latency = Histogram(LATENCY_BUCKETS)
        self.results: dict[str, int] = {"done": 0, "duplicate": 0, "retry": 0, "park": 0,
                                        "repush": 0}
        self.last_error: str | None = None

    def wake(self) -> None:
        """A job was committed (or released): look now."""
        self._wake.set()

    async def start(self) -> None:
        """Queue missing service records, load the catalogues, start sending (and fetching)."""
        now = time.time()
        if self.profile.needs_service:
            queued = await self._writer.write(lambda db: J.ensure_services(db, now))
            if queued:
                log.info("service records queued for waiting ratings", extra={"count": queued})
        await self._load_catalogues(now)
        limit = max(self.up.max_in_flight + 2, 8)
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.up.timeout_s),
            connector=aiohttp.TCPConnector(limit=limit, limit_per_host=limit))
        self._task = asyncio.create_task(self._run(), name="uploader")
        if self.sync is not None:
            self._sync_task = asyncio.create_task(self.sync.run(self._session),
                                                  name="catalogue-sync")

    async def _load_catalogues(self, now: float) -> None:
        file_cat = None
        if self.config.catalogue_path:
            import json
            try:
                with open(self.config.catalogue_path, encoding="utf-8") as f:
                    file_cat = await self._writer.write(store_op(json.load(f), "file", now))
            except (OSError, ValueError) as exc:
                log.error("catalogue file not recorded for uploads", extra={
                    "path": self.config.catalogue_path, "reason": str(exc)})
        db = self._reader_factory()
        self.catalogues.load(db)
        fetched = latest(db, "platform") if self.sync is not None else None
        self.catalogues.current = fetched or file_cat

    async def stop(self) -> None:
        for task in [self._task, self._sync_task, *self._sends]:
            if task is not None:
                task.cancel()
        for task in [self._task, self._sync_task, *self._sends]:
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._sync_task = None
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

    def _slots(self) -> int:
        if self.breaker != "closed":
            return 1    # half-open: one probe decides
        return self.up.max_in_flight

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
                if self._requests >= self._slots():
                    await self._sleep(5.0)        # a finished request wakes us
                    continue
                batch = self._next_batch(now)
                if batch is None and self.profile.needs_service and \
                        J.blocked(self._reader_factory()):
                    # bound after its service record was refused: park it visibly, same reason
                    await self._writer.write(lambda db: J.park_blocked(db, now))
                    continue
                if batch is None:
                    if self._sends:
                        await self._sleep(5.0)
                    else:
                        db = self._reader_factory()
                        due = J.next_due(db, now, self.profile.needs_service)
                        await self._sleep(min(5.0, due - now))
                    continue
                kind, jobs = batch
                self._busy[kind].update(j.id for j in jobs)
                self._requests += 1
                task = asyncio.create_task(self._send(kind, jobs))
                self._sends.add(task)
                task.add_done_callback(self._sent)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the worker alive; the jobs stay pending
                log.exception("uploader loop error")
                await asyncio.sleep(1.0)

    def _sent(self, task: asyncio.Task) -> None:
        self._sends.discard(task)
        self._wake.set()

    def _next_batch(self, now: float) -> tuple[str, list[Job]] | None:
        db = self._reader_factory()
        if self.profile.needs_service:
            jobs = J.due_services(db, now, self.batch, self._busy[SERVICE])
            if jobs:
                return SERVICE, jobs
        jobs = J.due_ratings(db, now, self.batch, self._busy[RATING],
                             self.profile.needs_service)
        return (RATING, jobs) if jobs else None

    async def _send(self, kind: str, jobs: list[Job]) -> None:
        try:
            redact: list[tuple[str, str]] = []
            try:
                outcomes = await self._attempt(kind, jobs, redact)
            finally:
                # the next request may go while this batch's states commit; its jobs stay
                # busy (never picked again) until they are settled
                self._requests -= 1
                self._wake.set()
            await self._finish(kind, jobs, outcomes, redact)
        except asyncio.CancelledError:
            raise
        except Exception:   # e.g. storage trouble: the jobs stay pending and come round again
            log.exception("upload settle failed")
            await asyncio.sleep(1.0)
        finally:
            self._busy[kind].difference_update(j.id for j in jobs)

    async def _attempt(self, kind: str, jobs: list[Job], redact: list[tuple[str, str]]
                       ) -> list[Outcome]:
        """Send one batch; `redact` receives (value, masked) of the rater data it carried, so a
        reply that echoes them is kept masked (a name has no shape `scrub` could find)."""
        try:
            for job in jobs:
                # the only place rater data is opened: straight into the request body
                job.applicant = a = self._sealer.open(job.case["applicant_sealed"],
                                                      job.case["project_no"])
                for key, mask in (("certNo", mask_cert), ("phone", mask_phone),
                                  ("name", mask_name)):
                    if isinstance(a.get(key), str) and len(a[key]) >= 2:
                        redact.append((a[key], mask(a[key])))
            self.ctx.now = time.time()
            body = self.profile.body(kind, jobs, self.ctx)
            headers = {"Content-Type": self.profile.content_type + "; charset=utf-8",
                       **self.profile.headers(kind, jobs), **self.auth.headers(body)}
        except Exception as exc:  # noqa: BLE001 - a fix is needed, not a retry storm
            return [Outcome("park", f"cannot_build_request: {type(exc).__name__}: {exc}")] \
                * len(jobs)
        finally:
            for job in jobs:
                job.applicant = {}
        assert self._session is not None
        started = time.monotonic()
        try:
            async with self._session.post(self.urls[kind], data=body, headers=headers) as resp:
                reply = await resp.read()
                outcomes = self.profile.classify(kind, jobs, resp.status, reply,
                                                 resp.headers.get("Retry-After"))
        except asyncio.TimeoutError:
            outcomes = [Outcome("retry", "timeout")] * len(jobs)
        except aiohttp.ClientError as exc:
            outcomes = [Outcome("retry", f"transport: {type(exc).__name__}")] * len(jobs)
        self.latency.observe(time.monotonic() - started)
        return outcomes

    def _backoff_for(self, n: int) -> float:
        ceiling = min(self.tuning.retry_cap_s, self.tuning.retry_base_s * (2 ** min(n - 1, 30)))
        return random.uniform(ceiling / 2, ceiling)  # jitter: retries of many halls spread out

    async def _finish(self, kind: str, jobs: list[Job], outcomes: list[Outcome],
                      redact: list[tuple[str, str]] = ()) -> None:
        now = time.time()

        def clean(text: str) -> str:
            for value, masked in redact:
                text = text.replace(value, masked)
            return scrub(text)
        # an upstream may echo what it refused; what we keep and show must not carry rater data
        outcomes = [Outcome(o.kind, clean(o.reason), o.retry_after, o.duplicate)
                    for o in outcomes]
        retry = [o for o in outcomes if o.kind == "retry"]
        for o in outcomes:
            key = "duplicate" if o.duplicate else o.kind
            self.results[key] = self.results.get(key, 0) + 1
        delay = 0.0
        if len(retry) < len(outcomes):
            # the upstream answered, so it is alive: a rejection does not trip the breaker
            self.consecutive_failures = 0
            self.breaker = "closed"
            self.last_error = None
        if retry:
            delay = self._transient(retry[0])
        results = [(job, o, self.profile.upstream_ref(job, self.up)
                    if kind == RATING and o.kind == "done" else None)
                   for job, o in zip(jobs, outcomes)]
        await self._writer.write(lambda db: J.settle(db, kind, results, now, now + delay),
                                 weight=len(jobs))
        for job, o, _ in results:
            if o.kind == "done":
                log.debug("uploaded", extra={"kind": kind, "key": job.key,
                                             "duplicate": o.duplicate})
            elif o.kind in ("park", "repush"):
                log.warning("upload rejected, parked" if o.kind == "park" else
                            "province has no service record: pushing it again",
                            extra={"kind": kind, "key": job.key, "reason": o.reason[:500]})
        if retry:
            log.warning("upload failed, will retry", extra={
                "kind": kind, "records": len(retry), "reason": retry[0].reason,
                "retryIn": round(delay, 3), "breaker": self.breaker})
        done = sum(1 for o in outcomes if o.kind == "done")
        if done:
            log.info("uploaded", extra={"kind": kind, "records": done})

    def _transient(self, outcome: Outcome) -> float:
        """Back the whole worker off after a transient failure; returns the delay."""
        now = time.time()
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
                    self.consecutive_failures >= self.tuning.breaker_threshold:
                self.breaker = "open"
                delay = max(delay, self.tuning.breaker_cooldown_s)
        self.pause_until = max(self.pause_until, now + delay)
        return delay
