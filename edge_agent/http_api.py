"""The agent's HTTP API (aiohttp): case intake, case state, status, health, metrics, OpenAPI.

Bind it to the hall LAN only (config `agent.listen`); it has no authentication of its own.
Error bodies name the fields and rules, never the submitted values.
"""
from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from . import metrics, queries

AGENT_KEY = web.AppKey("agent", object)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


async def post_case(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    try:
        body = await request.json(loads=json.loads)
    except (ValueError, UnicodeDecodeError):
        return _json({"error": "invalid_json", "message": "请求体不是合法 JSON body is not valid "
                      "JSON (UTF-8)", "fields": [{"field": "(body)", "error": "invalid JSON"}]},
                     422)
    status, reply = await agent.intake_case(body)
    return _json(reply, status)


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

OPENAPI: dict = {
    "openapi": "3.1.0",
    "info": {"title": "好差评 hall edge agent", "version": "1",
             "description": "Case intake from the window business system, and agent state. "
                            "Rater data is accepted here and never returned unmasked."},
    "paths": {
        "/v1/cases": {"post": {
            "summary": "报告已办结办件 report a case; invites the window's evaluator",
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
                        "content": {"application/json": {"schema": _ERR}}}}}},
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
    "components": {"schemas": {
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
                           "description": "1 待办理, 2 办理中, 3 已完结"}}},
        "CaseState": {"type": "object", "properties": {
            "created": {"type": "boolean"}, "projectNo": _STR, "window": _STR,
            "rated": {"type": "boolean"},
            "applicant": {"type": "object", "description": "masked: 张*, 3714**********1234"},
            "rating": {"type": ["object", "null"]},
            "invitations": {"type": "array", "items": {"type": "object"}}}},
    }},
}
