"""Console sessions, CSRF tokens and login throttling.

* Session: a random 256-bit token in an HttpOnly, SameSite=Strict cookie; the database keeps
  only its SHA-256, so a copy of the database opens no session. Sessions end after
  `console.session_hours`, on logout, and when the account is disabled or its password changed.
* CSRF: every form carries the session's own token (`csrf` field or `X-CSRF-Token` header),
  compared in constant time; the login form, which has no session yet, uses a double-submit
  cookie. SameSite=Strict is the second line.
* Throttling: `LOGIN_FAILURES` failed logins within `LOGIN_WINDOW_S` for one user name (or
  `LOGIN_FAILURES_PER_ADDRESS` from one address) block further attempts until the window has
  passed. Kept in memory: a
  restart forgets it, which an attacker cannot trigger from the console.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque

import sqlite_utils
from aiohttp import web

SESSION_COOKIE = "hcp_console"
LOGIN_COOKIE = "hcp_login"
LOGIN_FAILURES = 5          # per user name
LOGIN_FAILURES_PER_ADDRESS = 20   # per client address: a hall office may share one NAT address
LOGIN_WINDOW_S = 15 * 60


USER_KEY = web.RequestKey("user", dict)   # the logged-in user of a request (or None)


class Denied(Exception):
    """A row-level permission refusal (e.g. another window's 差评); shown as a 403 page."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str | None, b: str | None) -> bool:
    """Constant-time comparison of two tokens (False if either is missing)."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def create_session(db: sqlite_utils.Database, user_id: int, hours: float,
                   now: float | None = None) -> tuple[str, str]:
    """A new session for a verified user: (cookie token, CSRF token). Expired ones go."""
    now = time.time() if now is None else now
    token, csrf = new_token(), new_token()
    db.execute("DELETE FROM console_sessions WHERE expires_at < ?", (now,))
    db.execute("INSERT INTO console_sessions(token_hash, user_id, csrf, created_at, expires_at)"
               " VALUES (?, ?, ?, ?, ?)", (token_hash(token), user_id, csrf, now,
                                           now + hours * 3600))
    return token, csrf


def session_user(db: sqlite_utils.Database, token: str | None, now: float | None = None
                 ) -> dict | None:
    """The enabled user behind a session cookie, with the session's CSRF token; else None."""
    if not token:
        return None
    row = db.execute(
        "SELECT u.id, u.username, u.display_name, u.role, u.window, u.staff_id, s.csrf,"
        " s.token_hash FROM console_sessions s JOIN console_users u ON u.id = s.user_id"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND u.disabled = 0",
        (token_hash(token), time.time() if now is None else now)).fetchone()
    if row is None:
        return None
    return {"id": row[0], "username": row[1], "displayName": row[2], "role": row[3],
            "window": row[4], "staffId": row[5], "csrf": row[6], "session": row[7]}


def end_session(db: sqlite_utils.Database, token: str) -> None:
    db.execute("DELETE FROM console_sessions WHERE token_hash = ?", (token_hash(token),))


class Throttle:
    """Failed-login counter per key (user name, client address), sliding window."""

    def __init__(self, limit: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S,
                 address_limit: int = LOGIN_FAILURES_PER_ADDRESS) -> None:
        self.limit, self.window_s, self.address_limit = limit, window_s, address_limit
        self._fails: dict[str, deque] = {}

    def _recent(self, key: str, now: float) -> deque:
        q = self._fails.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def blocked_for(self, keys: list[str], now: float | None = None) -> float:
        """Seconds until any of these keys may try again (0 = not blocked)."""
        now = time.time() if now is None else now
        wait = 0.0
        for key in keys:
            q = self._recent(key, now)
            if len(q) >= (self.address_limit if key.startswith("ip:") else self.limit):
                wait = max(wait, q[0] + self.window_s - now)
        return wait

    def failed(self, keys: list[str], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for key in keys:
            self._recent(key, now).append(now)
        if len(self._fails) > 10000:    # bound memory against a spray of user names
            for k in [k for k, q in self._fails.items() if not q][:5000]:
                del self._fails[k]

    def succeeded(self, username_key: str) -> None:
        self._fails.pop(username_key, None)
