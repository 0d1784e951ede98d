"""The client side of authenticated intake: what a business or queue system does to report to
the agent — sign the JSON body (edge_agent/intake_auth.py) and POST it. The simulator's staff
and queue system and the tests use this; a real business system does the same in its own
language (edge_agent/README.md has the string to sign and a worked example).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from .intake_auth import signed_headers

CASES = "/v1/cases"
QUEUE_EVENTS = "/v1/queue/events"


def read_key(path: str | Path) -> bytes:
    """A client key file (64 hex digits) as bytes."""
    return bytes.fromhex(Path(path).read_text(encoding="ascii").strip())


class IntakeClient:
    """Posts signed reports for one configured client. `session` may be shared; without one
    a session is opened per call."""

    def __init__(self, base_url: str, client_id: str, key: bytes,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._key = key
        self.session = session

    def __repr__(self) -> str:
        return f"IntakeClient({self.base_url!r}, {self.client_id!r})"

    def encode(self, path: str, body: Any) -> tuple[bytes, dict[str, str]]:
        """(body bytes, headers) for a POST of `body` to `path`."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        return data, signed_headers(self.client_id, self._key, "POST", path, data)

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        """POST `body` signed; returns (HTTP status, parsed JSON reply or text)."""
        data, headers = self.encode(path, body)
        if self.session is not None:
            return await self._send(self.session, path, data, headers)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            return await self._send(s, path, data, headers)

    async def _send(self, s: aiohttp.ClientSession, path: str, data: bytes,
                    headers: dict[str, str]) -> tuple[int, Any]:
        async with s.post(self.base_url + path, data=data, headers=headers) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text)
            except ValueError:
                return r.status, text

    async def post_case(self, body: dict) -> tuple[int, Any]:
        """Report a finished case (`POST /v1/cases`)."""
        return await self.post(CASES, body)

    async def post_event(self, event: dict) -> tuple[int, Any]:
        """Report a queue event (`POST /v1/queue/events`)."""
        return await self.post(QUEUE_EVENTS, event)
