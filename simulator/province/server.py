"""The reference province as an aiohttp application, started in-process or in a thread.

Request pipeline for the profile's upload path, in this order (each step may answer and stop):

1. outage window active → 503 + Retry-After (counted ``fault:outage``)
2. over the rate limit → 429 + Retry-After (``fault:rate_limited``)
3. latency, then the body is read and the random faults drawn
4. fail → 500 (``fault:fail``); timeout → hold, then 504 (``fault:timeout``); nothing stored
5. authentication, Idempotency-Key, Content-Type, parsing, validation → rejection in the
   profile's reply shape (``rejected:<reason>``)
6. store: accepted / duplicate (success) / idempotency_conflict / duplicate_assessment
7. drop → the connection is closed without a reply, after the record is committed
   (``fault:drop``)

``sd-epoint-json`` also takes the case's service record (``POST /rest/addEvaluateService``) and
answers the reason-tag table (``POST /rest/getEvalDetail``); its ratings need the service record
first. ``national-sm2`` has its own pipeline after step 4 (national.py): the envelope, then one
result per record of the batch.

Test endpoints (no authentication): ``GET /_health``, ``GET /_stats``, ``GET /_records``
(ID numbers and names masked; the SQLite file holds them in full).
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from . import fields as F
from . import idcodes, national
from .auth import Authenticator
from .faults import FaultPlan, retry_after
from .fields import Rejection
from .national import Envelope, EnvelopeError, NationalKeys
from .profiles import NATIONAL, SD, Profile, Reply, get_profile, parse_sd
from .service import (DUPLICATE_RATING, DUPLICATE_SERVICE, NO_SERVICE, TagTable, check_prefix,
                      validate_service)
from .signing import HEADER_IDEMPOTENCY
from .store import Store

log = logging.getLogger("simulator.province")

_KEY_RE = re.compile(r"[!-~]{1,128}")
SD_SERVICE_PATH = "/rest/addEvaluateService"
SD_CATALOGUE_PATH = "/rest/getEvalDetail"
_MAX_BODY = 256 * 1024

STORE_KEY = web.AppKey("store", Store)
STATE_KEY = web.AppKey("state", object)


@dataclass
class ServerConfig:
    """Everything `hcp province serve` can set; defaults are a fault-free, open server."""

    profile: str = "gbt39046-json"
    db: str | Path = "province.sqlite3"
    host: str = "127.0.0.1"
    port: int = 0
    auth: str = "none"
    token: str | None = None
    app_id: str | None = None
    secret: str | None = None
    sign_alg: str = "sha256"
    auth_window_s: int = 300
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    drop_response_rate: float = 0.0
    latency_ms: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)
    rate_limit: int = 0
    seed: int | None = None
    hold_s: float = 30.0
    province_prefix: str | None = None      # sd: case numbers must carry it ("37")
    catalogue: str | Path | None = None     # reason tags served per grade (placeholder default)
    national: NationalKeys | None = None    # national-sm2: the envelope's keys and settings
    echo_values: bool = False               # national-sm2: messages repeat the refused value


class _State:
    """Per-app objects the handlers share."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.profile: Profile = get_profile(config.profile)
        self.auth = Authenticator(config.auth, token=config.token, app_id=config.app_id,
                                  secret=config.secret, sign_alg=config.sign_alg,
                                  window_s=config.auth_window_s)
        self.faults = FaultPlan(fail_rate=config.fail_rate, timeout_rate=config.timeout_rate,
                                drop_response_rate=config.drop_response_rate,
                                latency_ms=config.latency_ms, outages=tuple(config.outages),
                                rate_limit=config.rate_limit, seed=config.seed,
                                hold_s=config.hold_s)
        self.store = Store(config.db)
        self.tags = TagTable.load(config.catalogue)
        self.envelope: Envelope | None = None
        if config.profile == NATIONAL:
            if config.national is None:
                raise ValueError("national-sm2 needs the envelope keys: --app-mark, --app-word, "
                                 "--sm2-key (the platform's private key) and "
                                 "--sm2-hall-public-key")
            self.envelope = Envelope(config.national)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(status=status, headers=headers,
                        text=json.dumps(body, ensure_ascii=False),
                        content_type="application/json", charset="utf-8")


def _fault(state: _State, kind: str, status: int, message: str,
           headers: dict[str, str] | None = None) -> web.Response:
    state.store.count(f"fault:{kind}")
    log.info("fault %s -> HTTP %d", kind, status)
    return _json(status, {"error": kind, "message": message},
                 {**(headers or {}), "X-Fault": kind})


def _reply(reply: Reply, result: str, reason: str | None = None) -> web.Response:
    headers = {"X-Result": result}
    if reason:
        headers["X-Reject-Reason"] = reason
    return _json(reply.status, reply.body, headers)


def _check_content_type(request: web.Request, profile: Profile) -> None:
    charset = (request.charset or "utf-8").lower().replace("-", "")
    if request.content_type != profile.content_type:
        raise Rejection("bad_content_type", f"Content-Type 应为 {profile.content_type} "
                                            f"(Content-Type must be {profile.content_type})")
    if charset != "utf8":
        raise Rejection("bad_encoding", "字符集须为UTF-8 (charset must be UTF-8)")


def _check_key(request: web.Request) -> str:
    key = request.headers.get(HEADER_IDEMPOTENCY)
    if key is None or not key.strip():
        raise Rejection("missing_idempotency_key",
                        f"缺少 {HEADER_IDEMPOTENCY} 请求头（评价的全局编号）"
                        f"(missing {HEADER_IDEMPOTENCY} header: the rating's global id)")
    if not _KEY_RE.fullmatch(key):
        raise Rejection("bad_idempotency_key", f"{HEADER_IDEMPOTENCY} 须为1–128位可见ASCII字符 "
                                               "(1-128 printable ASCII characters, no spaces)")
    return key


async def _gate(request: web.Request) -> tuple[web.StreamResponse | None, Any, bytes]:
    """Steps 1–4 of the pipeline: (fault response or None, the fault draw, the body)."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    faults = state.faults
    remaining = faults.outage_remaining()
    if remaining > 0:
        return _fault(state, "outage", 503, "省平台维护中，请稍后重试 (province unavailable, retry later)",
                      {"Retry-After": retry_after(remaining)}), None, b""
    if faults.rate_limited():
        return _fault(state, "rate_limited", 429, "请求过于频繁 (too many requests)",
                      {"Retry-After": retry_after(1.0)}), None, b""
    if faults.latency_s:
        await asyncio.sleep(faults.latency_s)
    body = await request.read()
    draw = faults.draw()
    if draw.fail:
        return _fault(state, "fail", 500, "省平台内部错误 (injected server error)"), draw, body
    if draw.timeout:
        state.store.count("fault:timeout")
        log.info("fault timeout: holding %.1f s", faults.hold_s)
        # The client normally gives up first; aiohttp then cancels this handler.
        await asyncio.sleep(faults.hold_s)
        return _json(504, {"error": "timeout", "message": "处理超时 (injected timeout)"},
                     {"X-Fault": "timeout"}), draw, body
    return None, draw, body


def _dropped(state: _State, request: web.Request, what: str) -> web.Response:
    """Step 7: the record is stored; the client never hears so."""
    state.store.count("fault:drop")
    log.info("fault drop: %s stored, closing the connection without a reply", what)
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=200)  # never written: the transport is gone


async def handle_upload(request: web.Request) -> web.StreamResponse:
    """POST of one rating under the configured profile (pipeline in the module docstring)."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    profile, store = state.profile, state.store
    fault, draw, body = await _gate(request)
    if fault is not None:
        return fault

    try:
        state.auth.check(request.headers, body)
        key = _check_key(request)
        _check_content_type(request, profile)
        fields = profile.parse(body)
        rating = profile.validate(fields, time.time())
        if profile.name == SD:
            check_prefix(rating.project_no, "projectno", state.config.province_prefix)
            if not store.has_service(rating.project_no, rating.service_number or 0):
                raise Rejection("no_service", NO_SERVICE)
        outcome = store.accept(key, profile.name, rating)
        if outcome == "duplicate_assessment":
            platform = f"{DUPLICATE_RATING} " if profile.name == SD else ""
            raise Rejection("duplicate_assessment",
                            f"{platform}办件 {rating.project_no} 第{rating.assess_number}次评价已存在"
                            f"（一次一评）(case already rated for assessNumber "
                            f"{rating.assess_number})", kind="conflict")
        if outcome == "idempotency_conflict":
            raise Rejection("idempotency_conflict",
                            f"{HEADER_IDEMPOTENCY} 已用于内容不同的评价 (same key was accepted "
                            "with different content; retries must resend the same rating)",
                            kind="conflict")
    except Rejection as rej:
        store.count(f"rejected:{rej.reason}")
        log.info("rejected %s", rej.reason)
        return _reply(profile.reject(rej), "rejected", rej.reason)

    log.info("%s key=%s project=%s#%d level=%d", outcome, key, rating.project_no,
             rating.assess_number, rating.gb_level)
    if draw.drop:
        return _dropped(state, request, key)
    return _reply(profile.success(outcome, key), outcome)


async def handle_sd_service(request: web.Request) -> web.StreamResponse:
    """sd-epoint-json: POST of a case's service record (before its rating)."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    profile, store = state.profile, state.store
    fault, draw, body = await _gate(request)
    if fault is not None:
        return fault
    try:
        state.auth.check(request.headers, body)
        _check_content_type(request, profile)
        fields = parse_sd(body)
        project_no, number = validate_service(fields, time.time(), state.config.province_prefix,
                                              (6, 12))
        (outcome,) = store.add_batch(SD, [(project_no, number, fields)], [])
        if outcome == "duplicate":
            raise Rejection("duplicate_service", DUPLICATE_SERVICE)
    except Rejection as rej:
        store.count(f"rejected:{rej.reason}")
        return _reply(profile.reject(rej), "rejected", rej.reason)
    if draw.drop:
        return _dropped(state, request, f"service {project_no}#{number}")
    return _reply(profile.success("accepted", ""), "accepted")


async def handle_sd_catalogue(request: web.Request) -> web.StreamResponse:
    """sd-epoint-json: the reason tags of one grade."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    body = await request.read()
    try:
        state.auth.check(request.headers, body)
        grade = str(parse_sd(body).get("grade", ""))
        if grade not in ("1", "2", "3", "4", "5"):
            raise F.bad_value("grade", "1/2/3/4/5")
    except Rejection as rej:
        return _reply(state.profile.reject(rej), "rejected", rej.reason)
    return _json(200, {"status": {"code": "200", "text": ""}, "custom": {
        "code": "1", "text": "成功", "evalDetail": state.tags.grades.get(int(grade), [])}})


async def handle_national(request: web.Request) -> web.StreamResponse:
    """national-sm2: a batch of service records or ratings in the SM2 envelope."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    fault, draw, body = await _gate(request)
    if fault is not None:
        return fault
    envelope, store, now = state.envelope, state.store, time.time()
    assert envelope is not None
    try:
        records = envelope.records(envelope.open(body, now))
    except EnvelopeError as err:
        store.count(f"rejected:{err.reason}")
        log.info("envelope refused: %s", err.reason)
        return _json(200, national.refusal(err), {"X-Result": "rejected",
                                                  "X-Reject-Reason": err.reason})
    if request.path == national.SERVICE_PATH:
        results = national.take_services(store, records, now, state.config.echo_values)
    else:
        results = national.take_ratings(store, records, now, state.tags,
                                        state.config.echo_values)
    answer = national.reply(results)
    if draw.drop:
        return _dropped(state, request, f"{len(records)} records")
    return _json(200, answer, {"X-Result": "accepted" if answer["code"] == "0" else "partial"})


async def handle_national_catalogue(request: web.Request) -> web.StreamResponse:
    """national-sm2: the reason tags of one grade (signed envelope, params.grade)."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    envelope = state.envelope
    assert envelope is not None
    try:
        params = envelope.open(await request.read(), time.time())
    except EnvelopeError as err:
        return _json(200, national.refusal(err), {"X-Reject-Reason": err.reason})
    return _json(200, national.catalogue(params, state.tags))


async def handle_stats(request: web.Request) -> web.Response:
    """Counters as JSON; by_level in GB/T 39046 A.8 codes."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    return _json(200, {"profile": state.profile.name, **state.store.stats()})


async def handle_records(request: web.Request) -> web.Response:
    """Accepted records keyed by idempotency key, personal fields masked."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    records = state.store.records()
    for record in records.values():
        fields = record["fields"]
        for name in state.profile.sensitive:
            if isinstance(fields.get(name), str):
                masker = idcodes.mask_name if name in ("userName", "rater", "name") \
                    else idcodes.mask_id
                fields[name] = masker(fields[name])
    return _json(200, {"profile": state.profile.name, "count": len(records), "records": records})


async def handle_health(request: web.Request) -> web.Response:
    """Liveness and which profile/path this server speaks."""
    state: _State = request.app[STATE_KEY]  # type: ignore[assignment]
    return _json(200, {"ok": True, "profile": state.profile.name, "path": state.profile.path,
                       "auth": state.auth.mode})


def build_app(config: ServerConfig) -> web.Application:
    """The aiohttp application for `config` (opens the SQLite store)."""
    state = _State(config)
    app = web.Application(client_max_size=_MAX_BODY)
    app[STATE_KEY] = state
    if state.profile.name == NATIONAL:
        app.router.add_post(national.SERVICE_PATH, handle_national)
        app.router.add_post(national.RATING_PATH, handle_national)
        app.router.add_post(national.CATALOGUE_PATH, handle_national_catalogue)
    else:
        app.router.add_post(state.profile.path, handle_upload)
    if state.profile.name == SD:
        app.router.add_post(SD_SERVICE_PATH, handle_sd_service)
        app.router.add_post(SD_CATALOGUE_PATH, handle_sd_catalogue)
    app.router.add_get("/_stats", handle_stats)
    app.router.add_get("/_records", handle_records)
    app.router.add_get("/_health", handle_health)

    async def close_store(_app: web.Application) -> None:
        state.store.close()

    app.on_cleanup.append(close_store)
    return app


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_server(config: ServerConfig) -> tuple[web.AppRunner, str]:
    """Start listening; return the runner (call `await runner.cleanup()` to stop) and base URL."""
    app = build_app(config)
    # handler_cancellation: a client that times out on a held request frees it at once.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0,
                           access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    app[STATE_KEY].faults.restart_clock()  # type: ignore[attr-defined]
    return runner, _url(config.host, port)


class running_server:
    """Context manager: the server on its own event loop in a background thread.

    >>> with running_server(ServerConfig(profile="sd-epoint-json", db=path)) as srv:
    ...     post(srv.upload_url, ...)
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.url = ""
        self.upload_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> "running_server":
        self._thread = threading.Thread(target=self._run, name="province-server", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        if not self.url:
            raise RuntimeError("province server did not start within 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            runner, url = await start_server(self.config)
        except BaseException as exc:  # reported to __enter__ in the caller's thread
            self._error = exc
            self._ready.set()
            return
        self.url = url
        self.upload_url = url + get_profile(self.config.profile).path
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
