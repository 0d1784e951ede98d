"""Who may report cases and queue events, and how they prove it: request signing (HMAC-SHA256)
for the clients configured in hall.toml ([[clients]]), checked before anything is stored.

The scheme (edge_agent/README.md "Authenticated intake" has a worked example):

    X-HCP-Client:    the client id from hall.toml
    X-HCP-Timestamp: Unix time in milliseconds when the request was signed
    X-HCP-Signature: hex HMAC-SHA256(client key, string_to_sign)

    string_to_sign = "HCP1-HMAC-SHA256" LF METHOD LF path-with-query LF timestamp LF
                     hex(SHA-256(body))

Why HMAC and not a bearer token: the agent serves plain HTTP on the hall LAN (TLS there would
need a certificate authority per hall that nobody maintains). A bearer token crosses the LAN on
every request, so anyone who sees one request can report cases for ever; an HMAC signature
proves the key without sending it, covers the body (a report cannot be altered on the way),
and goes stale with its timestamp (±MAX_SKEW_S). Within that window the agent remembers every
signature it accepted — in memory, and in the intake_audit table so a restart does not forget
them — and refuses a second use: a captured request cannot be replayed.

Every check refuses before storing: 413 (body over MAX_BODY), 415 (not application/json in
UTF-8), 403 (a browser: an Origin header; the API sends no CORS headers), 401 (missing, unknown
or wrong credentials, stale or replayed timestamp), 429 (the client's rate limit). Error bodies
name the rule, never the body's content.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .config import Client

log = logging.getLogger("edge_agent.intake")

SCHEME = "HCP1-HMAC-SHA256"
HEADER_CLIENT = "X-HCP-Client"
HEADER_TIMESTAMP = "X-HCP-Timestamp"
HEADER_SIGNATURE = "X-HCP-Signature"
# How far a request's timestamp may be from the agent's clock. Hall hosts keep time by NTP;
# five minutes also covers a business system whose clock is a little off.
MAX_SKEW_S = 300
# A case report is under 2 KB and a queue event under 1 KB: 16 KiB leaves room and bounds what
# an unauthenticated request can make the agent read.
MAX_BODY = 16 * 1024
# Refusals are logged at most this often per (reason, claimed client): a flood fills no disk.
LOG_EVERY_S = 60.0


def string_to_sign(method: str, path: str, timestamp: str, body: bytes) -> bytes:
    """The bytes a client signs (see the module docstring)."""
    return "\n".join((SCHEME, method.upper(), path, timestamp,
                      hashlib.sha256(body).hexdigest())).encode("ascii")


def sign(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the request under the client's key."""
    return hmac.new(key, string_to_sign(method, path, timestamp, body), hashlib.sha256).hexdigest()


def signed_headers(client_id: str, key: bytes, method: str, path: str, body: bytes,
                   now: float | None = None) -> dict[str, str]:
    """The headers a client sends with `body` (JSON bytes) to `path`."""
    ts = str(int((time.time() if now is None else now) * 1000))
    return {"Content-Type": "application/json; charset=utf-8", HEADER_CLIENT: client_id,
            HEADER_TIMESTAMP: ts, HEADER_SIGNATURE: sign(key, method, path, ts, body)}


class Refused(Exception):
    """A request refused before anything was stored: HTTP status, reason code, message."""

    def __init__(self, status: int, reason: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.message = status, reason, message
        self.headers = headers or {}
        # set when the refusal came after authentication: the report is audited then
        self.client: Client | None = None
        self.signature = ""

    def response(self) -> web.Response:
        return web.json_response({"error": self.reason, "message": self.message},
                                 status=self.status, headers=self.headers,
                                 dumps=lambda d: json.dumps(d, ensure_ascii=False))


@dataclass
class Admitted:
    """An authenticated request: who sent it, its parsed JSON body, and its signature."""
    client: Client
    body: Any
    signature: str
    remote: str | None


class TokenBucket:
    """`rate_per_min` requests a minute, bursts up to a sixth of that (at least 10)."""

    def __init__(self, rate_per_min: int) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = max(10.0, rate_per_min / 6.0)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a request may go now, else the seconds until one may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Gate:
    """Checks every intake request; keeps the replay memory, rate limits and refusal counts.

    `clients` is a callable giving the current client with an id (or None), so the clients can
    be reloaded while the agent runs (edge_agent/clients.py).
    """

    def __init__(self, clients: Any) -> None:
        self._client = clients
        self._seen: dict[tuple[str, str], float] = {}     # (client, signature) -> forget after
        self._buckets: dict[str, TokenBucket] = {}
        self._logged: dict[tuple[str, str], float] = {}
        self.refused: dict[str, int] = {}                 # reason -> count (metrics)
        self.reports: dict[tuple[str, str, int], int] = {}  # (client, endpoint, status) -> n

    def note(self, client_id: str, endpoint: str, status: int) -> None:
        """Count an authenticated report by its answer (metrics)."""
        k = (client_id, endpoint, status)
        self.reports[k] = self.reports.get(k, 0) + 1

    def remember(self, client_id: str, signature: str, at: float) -> None:
        """A signature used at `at` (from the audit table at start-up)."""
        self._seen[(client_id, signature)] = at + 2 * MAX_SKEW_S

    async def admit(self, request: web.Request, kind: str) -> Admitted:
        """Return the admitted request, or raise Refused (nothing has been stored)."""
        try:
            return await self._admit(request, kind)
        except Refused as r:
            self._count(r, request)
            raise

    async def _admit(self, request: web.Request, kind: str) -> Admitted:
        if request.headers.get("Origin") is not None:
            raise Refused(403, "browser_not_allowed", "不接受浏览器跨站请求 requests from web "
                          "pages are not accepted: report from the business/queue system")
        length = request.content_length
        if length is not None and length > MAX_BODY:
            raise Refused(413, "body_too_large", f"请求体过大 body over {MAX_BODY} bytes")
        ctype = request.content_type
        charset = (request.charset or "utf-8").lower()
        if ctype != "application/json" or charset not in ("utf-8", "utf8"):
            raise Refused(415, "unsupported_media_type", "只接受 JSON use Content-Type: "
                          "application/json (UTF-8)")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, "body_too_large", f"请求体过大 body over {MAX_BODY} bytes") from None
        if len(body) > MAX_BODY:
            raise Refused(413, "body_too_large", f"请求体过大 body over {MAX_BODY} bytes")
        client_id = request.headers.get(HEADER_CLIENT, "")
        ts = request.headers.get(HEADER_TIMESTAMP, "")
        sig = request.headers.get(HEADER_SIGNATURE, "")
        if not client_id or not ts or not sig:
            raise Refused(401, "missing_credentials", f"缺少认证头 send {HEADER_CLIENT}, "
                          f"{HEADER_TIMESTAMP} and {HEADER_SIGNATURE} (edge_agent/README.md)")
        client = self._client(client_id)
        if client is None:
            raise Refused(401, "unknown_client", "未登记的客户端 client id not configured: "
                          "add it with `hcp agent client add`")
        now = time.time()
        try:
            ms = int(ts)
        except ValueError:
            raise Refused(401, "bad_timestamp", f"{HEADER_TIMESTAMP} must be Unix time in "
                          "milliseconds") from None
        if abs(now - ms / 1000.0) > MAX_SKEW_S:
            raise Refused(401, "stale_timestamp", f"时间戳超出 ±{MAX_SKEW_S} 秒 timestamp "
                          f"more than {MAX_SKEW_S} s from the agent's clock: sign each request "
                          "when sending it, and keep the clock synchronised (NTP)")
        want = sign(client.key, request.method, request.raw_path, ts, body)
        # bytes: compare_digest refuses non-ASCII str, and a header may hold anything
        if not hmac.compare_digest(want.encode(), sig.strip().lower().encode("utf-8", "replace")):
            raise Refused(401, "bad_signature", "签名不符 signature does not match this client's "
                          "key (check the key, the path and that the body is sent unchanged)")
        self._forget_expired(now)
        seen_key = (client.id, want)
        if seen_key in self._seen:
            raise Refused(401, "replayed", "重放的请求 this signed request was already used: "
                          "sign a retry again (new timestamp)")
        self._seen[seen_key] = ms / 1000.0 + 2 * MAX_SKEW_S
        try:
            return self._authenticated(request, kind, client, want, body)
        except Refused as r:
            r.client, r.signature = client, want
            raise

    def _authenticated(self, request: web.Request, kind: str, client: Client, want: str,
                       body: bytes) -> Admitted:
        if client.kind != kind:
            raise Refused(403, "wrong_endpoint", f"客户端类型为 {client.kind} this client is a "
                          f"{client.kind} system and may not post here")
        bucket = self._buckets.get(client.id)
        if bucket is None or bucket.rate * 60 != client.rate_per_min:
            bucket = self._buckets[client.id] = TokenBucket(client.rate_per_min)
        wait = bucket.take()
        if wait > 0:
            raise Refused(429, "rate_limited", f"超过速率限制 over {client.rate_per_min} "
                          "requests a minute; retry later",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Refused(422, "invalid_json", "请求体不是合法 JSON body is not valid JSON "
                          "(UTF-8)") from None
        return Admitted(client=client, body=parsed, signature=want, remote=request.remote)

    def _forget_expired(self, now: float) -> None:
        if len(self._seen) < 1024:
            return
        for k in [k for k, until in self._seen.items() if until < now]:
            del self._seen[k]

    def _count(self, r: Refused, request: web.Request) -> None:
        self.refused[r.reason] = self.refused.get(r.reason, 0) + 1
        claimed = "".join(c for c in request.headers.get(HEADER_CLIENT, "")[:64]
                          if c.isalnum() or c in "._-")
        key = (r.reason, claimed)
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            if len(self._logged) > 4096:
                self._logged.clear()
            self._logged[key] = now
            log.warning("intake refused", extra={"reason": r.reason, "status": r.status,
                                                 "client": claimed or None,
                                                 "path": request.path,
                                                 "remote": request.remote})
