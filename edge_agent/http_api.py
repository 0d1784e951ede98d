"""The agent's HTTP API (aiohttp): case intake, queue events, case state, status, health,
metrics, OpenAPI.

Bind it to the hall LAN only (config `agent.listen`). The two writing endpoints — case intake
and queue events — take only signed requests from the clients configured in hall.toml
(edge_agent/intake_auth.py); the read-only views carry no rater data in the clear. No route sends
CORS headers, so no web page can use the API from a browser. Error bodies name the fields and
rules, never the submitted values.
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from . import intake_audit, metrics, queries, queue_events
from .intake_auth import Refused

AGENT_KEY = web.AppKey("agent", object)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def _admit(request: web.Request, kind: str, endpoint: str):
    """The authenticated request, or the refusal to answer (audited when it came after the
    client was authenticated: a 403 for the wrong endpoint, a 422 for a body that is no JSON)."""
    agent = request.app[AGENT_KEY]
    try:
        return await agent.gate.admit(request, kind), None
    except Refused as r:
        if r.client is not None:
            agent.gate.note(r.client.id, endpoint, r.status)
            if r.status != 429:      # a flood is counted, not written
                await agent.writer.write(lambda db: intake_audit.record(
                    db, r.client.id, endpoint, r.status, r.reason, None, r.signature,
                    request.remote))
        return None, r.response()


async def post_case(request: web.Request) -> web.Response:
    admitted, refusal = await _admit(request, "business", "cases")
    if refusal is not None:
        return refusal
    agent = request.app[AGENT_KEY]
    status, reply = await agent.intake_case(admitted.body, admitted)
    agent.gate.note(admitted.client.id, "cases", status)
    return _json(reply, status)


async def post_queue_event(request: web.Request) -> web.Response:
    admitted, refusal = await _admit(request, "queue", "queue")
    if refusal is not None:
        return refusal
    agent = request.app[AGENT_KEY]
    status, reply = await queue_events.intake_event(agent, admitted)
    agent.gate.note(admitted.client.id, "queue", status)
    return _json(reply, status)


async def get_signals(request: web.Request) -> web.Response:
    try:
        hours = float(request.query.get("hours", "24"))
    except ValueError:
        hours = -1
    if not 0 < hours <= 24 * 366:
        return _json({"error": "invalid_query", "message": "hours 应为 0..8784 hours must be "
                      "0..8784"}, 422)
    now = time.time()
    return _json(queries.press_signals(request.app[AGENT_KEY].reader(), now - hours * 3600,
                                       now))


async def get_case(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    state = queries.case_state(agent.reader(), request.match_info["project_no"])
    if state is None:
        return _json({"error": "not_found", "message": "无此办件 no such projectNo"}, 404)
    return _json(state)


async def get_status(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    return _json(live_status(agent))


def live_status(agent: Any) -> dict:
    """Database status plus what only the running process knows (breaker, uptime)."""
    cfg = agent.config
    data = queries.status(agent.reader(), {"name": cfg.hall.name, "hallCode": cfg.hall.hall_code,
                                           "areaCode": cfg.hall.area_code})
    data["upstream"] = {"profile": cfg.upstream.profile, "breaker": agent.uploader.breaker,
                        "consecutiveFailures": agent.uploader.consecutive_failures,
                        "lastError": agent.uploader.last_error,
                        "pausedForS": round(max(0.0, agent.uploader.pause_until - time.time()), 1)}
    data["uptimeS"] = round(time.time() - agent.started_at, 1)
    data["framesRejected"] = dict(agent.rejected)
    return data


async def get_devices(request: web.Request) -> web.Response:
    return _json(queries.devices(request.app[AGENT_KEY].reader()))


async def get_unbound(request: web.Request) -> web.Response:
    return _json(queries.unbound_ratings(request.app[AGENT_KEY].reader()))


async def healthz(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    try:
        agent.reader().execute("SELECT 1").fetchone()
        ok = agent.writer.running
    except Exception:
        ok = False
    return _json({"ok": ok}, 200 if ok else 503)


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(text=metrics.render(request.app[AGENT_KEY]),
                        content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Format": "prometheus-0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return _json(OPENAPI)


def make_app(agent: Any) -> web.Application:
    """The aiohttp application for a started agent."""
    app = web.Application(client_max_size=64 * 1024)
    app[AGENT_KEY] = agent
    app.router.add_post("/v1/cases", post_case)
    app.router.add_post("/v1/queue/events", post_queue_event)
    app.router.add_get("/v1/ratings/signals", get_signals)
    app.router.add_get("/v1/cases/{project_no}", get_case)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/devices", get_devices)
    app.router.add_get("/v1/ratings/unbound", get_unbound)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/openapi.json", openapi)
    return app


_STR = {"type": "string"}
_ERR = {"type": "object", "properties": {
    "error": _STR, "message": _STR,
    "fields": {"type": "array", "items": {"type": "object", "properties": {
        "field": _STR, "error": _STR}}}}}

_REFUSALS = {
    "401": {"description": "missing, unknown or wrong credentials, stale or replayed timestamp "
                           "(`error` says which); nothing stored",
            "content": {"application/json": {"schema": _ERR}}},
    "403": {"description": "the client may not report for this window (`window_not_allowed`), "
                           "is of the other kind (`wrong_endpoint`), or the request comes from a "
                           "web page (`browser_not_allowed`)",
            "content": {"application/json": {"schema": _ERR}}},
    "413": {"description": "body over 16 KiB"},
    "415": {"description": "not `application/json` in UTF-8"},
    "429": {"description": "over the client's `rate_per_min`; see Retry-After"},
}
_SIGNED = [{"hcpClient": [], "hcpTimestamp": [], "hcpSignature": []}]

OPENAPI: dict = {
    "openapi": "3.1.0",
    "info": {"title": "好差评 hall edge agent", "version": "1",
             "description": "Case intake from the window business system, queue events from the "
                            "queue system, and agent state. Both writing endpoints take only "
                            "requests signed by a client configured in hall.toml: HMAC-SHA256 "
                            "of \"HCP1-HMAC-SHA256\\nPOST\\n{path}\\n{X-HCP-Timestamp}\\n"
                            "{hex SHA-256 of the body}\" under the client's key, in hex "
                            "(edge_agent/README.md). Rater data is accepted here and never "
                            "returned unmasked."},
    "paths": {
        "/v1/cases": {"post": {
            "summary": "报告已办结办件 report a case; invites the window's evaluator",
            "security": _SIGNED,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Case"}}}},
            "responses": {
                "201": {"description": "created; invitation sent or waiting",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/CaseState"}}}},
                "200": {"description": "projectNo already known (idempotent); nothing changed",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/CaseState"}}}},
                "422": {"description": "invalid; `fields` names every bad field",
                        "content": {"application/json": {"schema": _ERR}}},
                **_REFUSALS}}},
        "/v1/queue/events": {"post": {
            "summary": "排队叫号事件 a queue-system event: ticket issued, called to a window, "
                       "service started, finished, no-show",
            "description": "A `called` then `finished` at the same window opens that window's "
                           "service for the ticket: its evaluator is invited (unless the case "
                           "report naming the ticket already invited it), and the rating binds "
                           "through the ticket to the case a report names. Idempotent on "
                           "(client, eventId).",
            "security": _SIGNED,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/QueueEvent"},
                "example": {"eventId": "QS-20261121-000123", "type": "called",
                            "ticket": "20261121A023", "at": "2026-11-21 10:02:11",
                            "window": "A01", "staff": {"id": "S001", "name": "测试员甲"}}}}},
            "responses": {
                "201": {"description": "stored", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/QueueEventResult"}}}},
                "200": {"description": "eventId already stored for this client; nothing "
                                       "changed", "content": {"application/json": {
                                           "schema": {"$ref":
                                                      "#/components/schemas/QueueEventResult"}}}},
                "422": {"description": "invalid; `fields` names every bad field",
                        "content": {"application/json": {"schema": _ERR}}},
                **_REFUSALS}}},
        "/v1/ratings/signals": {"get": {
            "summary": "误用信号 unsolicited and too-fast presses per window and staff member",
            "parameters": [{"name": "hours", "in": "query", "required": False,
                            "schema": {"type": "number", "default": 24}}],
            "responses": {"200": {"description": "rates over the period"}}}},
        "/v1/cases/{projectNo}": {"get": {
            "summary": "办件评价状态 rating state of a case (applicant masked)",
            "parameters": [{"name": "projectNo", "in": "path", "required": True,
                            "schema": _STR}],
            "responses": {"200": {"description": "state", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/CaseState"}}}},
                "404": {"description": "unknown projectNo"}}}},
        "/v1/status": {"get": {"summary": "agent status", "responses": {
            "200": {"description": "status"}}}},
        "/v1/devices": {"get": {"summary": "evaluators and their link state", "responses": {
            "200": {"description": "devices"}}}},
        "/v1/ratings/unbound": {"get": {"summary": "ratings kept without a case", "responses": {
            "200": {"description": "ratings"}}}},
        "/healthz": {"get": {"summary": "liveness (storage readable, writer running)",
                             "responses": {"200": {"description": "ok"},
                                           "503": {"description": "unhealthy"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format"}}}},
    },
    "components": {"securitySchemes": {
        "hcpClient": {"type": "apiKey", "in": "header", "name": "X-HCP-Client",
                      "description": "client id from hall.toml [[clients]]"},
        "hcpTimestamp": {"type": "apiKey", "in": "header", "name": "X-HCP-Timestamp",
                         "description": "Unix time in ms when signed; ±300 s; never reused"},
        "hcpSignature": {"type": "apiKey", "in": "header", "name": "X-HCP-Signature",
                         "description": "hex HMAC-SHA256 over method, path, timestamp and "
                                        "the body's SHA-256"}},
                   "schemas": {
        "Case": {"type": "object", "required": [
            "window", "projectNo", "taskCode", "taskName", "deptCode", "deptName", "areaCode",
            "staff", "applicant", "acceptedAt", "promiseType", "status"],
            "properties": {
                "window": {"type": "string", "description": "window id from hall.toml"},
                "projectNo": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,50}$",
                              "description": "办件编号; the idempotency key of intake"},
                "taskCode": {"type": "string", "pattern": "^[0-9A-Za-z-]{1,64}$"},
                "taskName": {"type": "string", "maxLength": 200},
                "deptCode": {"type": "string", "description": "18-character 统一社会信用代码"},
                "deptName": {"type": "string", "maxLength": 100},
                "areaCode": {"type": "string", "pattern": "^(\\d{6}|\\d{9}|\\d{12})$"},
                "staff": {"type": "object", "required": ["id", "name"], "properties": {
                    "id": {"type": "string", "maxLength": 32},
                    "name": {"type": "string", "maxLength": 30}}},
                "applicant": {"type": "object", "required": ["name", "certType", "certNo",
                                                             "userProp"], "properties": {
                    "name": {"type": "string", "maxLength": 30},
                    "certType": {"type": "string", "enum": ["111", "414", "511", "516", "001",
                                                            "099"],
                                 "description": "111 居民身份证, 001 统一社会信用代码, ..."},
                    "certNo": {"type": "string", "maxLength": 32},
                    "phone": {"type": "string"},
                    "userProp": {"type": "integer", "enum": [1, 2],
                                 "description": "1 个人, 2 法人"}}},
                "acceptedAt": {"type": "string", "description":
                               "'YYYY-MM-DD HH:MM:SS' (China time) or ISO 8601 with offset"},
                "finishedAt": {"type": "string", "description": "required when status = 3"},
                "promiseType": {"type": "integer", "enum": [1, 2],
                                "description": "1 承诺件, 2 即办件"},
                "status": {"type": "integer", "enum": [1, 2, 3],
                           "description": "1 待办理, 2 办理中, 3 已完结"},
                "ticket": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,64}$",
                           "description": "the queue ticket's code (what its QR holds), when "
                                          "the case was served under one"}}},
        "QueueEvent": {"type": "object", "required": ["eventId", "type", "ticket", "at"],
                       "properties": {
                           "eventId": {"type": "string", "pattern": "^[0-9A-Za-z_.:-]{1,64}$",
                                       "description": "unique per client: the idempotency key"},
                           "type": {"type": "string", "enum": ["issued", "called", "started",
                                                               "finished", "no_show"]},
                           "ticket": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,64}$",
                                      "description": "the ticket's code as its QR holds it"},
                           "at": {"type": "string", "description": "'YYYY-MM-DD HH:MM:SS' "
                                  "(China time) or ISO 8601 with offset"},
                           "window": {"type": "string", "description": "required for called, "
                                      "started, finished, no_show"},
                           "staff": {"type": "object", "required": ["id", "name"],
                                     "description": "required for called",
                                     "properties": {"id": {"type": "string", "maxLength": 32},
                                                    "name": {"type": "string",
                                                             "maxLength": 30}}}}},
        "QueueEventResult": {"type": "object", "properties": {
            "created": {"type": "boolean"}, "eventId": _STR, "ticket": _STR,
            "state": {"type": "string", "enum": ["issued", "called", "serving", "finished",
                                                 "no_show"]},
            "serviceOpened": {"type": "boolean"},
            "note": {"type": ["string", "null"], "description": "why a finish opened no "
                     "service: not_called_here, already_invited, already_rated, no_device"},
            "inviteId": {"type": ["integer", "null"]}}},
        "CaseState": {"type": "object", "properties": {
            "created": {"type": "boolean"}, "projectNo": _STR, "window": _STR,
            "rated": {"type": "boolean"},
            "applicant": {"type": "object", "description": "masked: 张*, 3714**********1234"},
            "rating": {"type": ["object", "null"]},
            "invitations": {"type": "array", "items": {"type": "object"}}}},
    }},
}
