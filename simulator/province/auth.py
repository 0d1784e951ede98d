"""Authentication of uploads: none, a static token header, or a signed request (HMAC).

Signed requests (see `signing`): the app id must match, the timestamp must be within
`window_s` (300 s) of server time, the nonce must not have been used by that app id within the
window (replays are refused), and the signature must verify. The nonce is consumed only by a
correctly signed request, so garbage cannot burn a client's future nonces.
"""
from __future__ import annotations

import hmac
import re
import time
from typing import Mapping

from . import signing
from .fields import Rejection

AUTH_MODES = ("none", "token", "hmac")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _fail(reason: str, message: str) -> Rejection:
    return Rejection(reason, message, kind="auth")


class Authenticator:
    """Checks one request's headers (and body, for signatures) against the configured mode."""

    def __init__(self, mode: str = "none", *, token: str | None = None,
                 app_id: str | None = None, secret: str | None = None,
                 sign_alg: str = "sha256", window_s: int = 300) -> None:
        if mode not in AUTH_MODES:
            raise ValueError(f"unknown auth mode {mode!r}; use one of {AUTH_MODES}")
        if mode == "token" and not token:
            raise ValueError("auth=token needs a token (--token)")
        if mode == "hmac" and not (app_id and secret):
            raise ValueError("auth=hmac needs an app id and a secret (--app-id, --secret)")
        if sign_alg not in signing.SIGN_ALGS:
            raise ValueError(f"unknown signature algorithm {sign_alg!r}")
        self.mode = mode
        self._token = token or ""
        self._app_id = app_id or ""
        self._secret = secret or ""
        self._alg = sign_alg
        self._window = window_s
        self._nonces: dict[tuple[str, str], float] = {}  # (app id, nonce) -> forget after

    def check(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
        """Raise a Rejection (kind 'auth') unless the request is authentic."""
        if self.mode == "none":
            return
        if self.mode == "token":
            given = headers.get(signing.HEADER_TOKEN, "")
            if not hmac.compare_digest(given.encode(), self._token.encode()):
                raise _fail("auth_failed", f"缺少或错误的 {signing.HEADER_TOKEN} "
                                           f"(missing or wrong {signing.HEADER_TOKEN}; check the "
                                           "token configured for this province)")
            return
        self._check_signed(headers, body, time.time() if now is None else now)

    def _check_signed(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        app_id = headers.get(signing.HEADER_APP_ID, "")
        if not hmac.compare_digest(app_id.encode(), self._app_id.encode()):
            raise _fail("auth_failed", f"缺少或未知的 {signing.HEADER_APP_ID} "
                                       f"(missing or unknown {signing.HEADER_APP_ID})")
        ts_text = headers.get(signing.HEADER_TIMESTAMP, "")
        if not (ts_text.isascii() and ts_text.isdigit() and len(ts_text) <= 12):
            raise _fail("bad_timestamp", f"{signing.HEADER_TIMESTAMP} 须为unix秒 "
                                         f"({signing.HEADER_TIMESTAMP} must be unix seconds)")
        if abs(int(ts_text) - now) > self._window:
            raise _fail("stale_timestamp", f"时间戳与服务器时间相差超过{self._window}秒，请校准时钟 "
                                           f"(timestamp more than {self._window} s from server "
                                           "time; sync the clock)")
        nonce = headers.get(signing.HEADER_NONCE, "")
        if not _NONCE_RE.fullmatch(nonce):
            raise _fail("bad_nonce", f"{signing.HEADER_NONCE} 须为8–64位字母数字 "
                                     f"({signing.HEADER_NONCE} must be 8-64 of [A-Za-z0-9_-])")
        signature = headers.get(signing.HEADER_SIGNATURE, "")
        if not signature or not signing.verify(signature, self._secret, app_id, ts_text, nonce,
                                               body, self._alg):
            raise _fail("bad_signature", f"签名错误 (bad {signing.HEADER_SIGNATURE}; check the "
                                         "secret and that the exact body bytes are signed)")
        self._forget_old(now)
        key = (app_id, nonce)
        until = self._nonces.get(key)
        if until is not None and until >= now:
            raise _fail("replayed_nonce", f"{signing.HEADER_NONCE} 已使用过（重放）"
                                          "(nonce already used; every attempt needs a new one)")
        self._nonces[key] = now + 2 * self._window

    def _forget_old(self, now: float) -> None:
        if len(self._nonces) < 1024:
            return
        for key in [k for k, until in self._nonces.items() if until < now]:
            del self._nonces[key]
