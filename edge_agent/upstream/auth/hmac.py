"""Auth scheme `hmac`: a signed request (app id, timestamp, nonce, HMAC over them and the body).

The signed message is the UTF-8 app id, the decimal unix timestamp, the nonce and the exact body
bytes, each joined by one newline; the signature is the lower-case hex HMAC under the shared
secret, SHA-256 by default or SM3 (`upstream.sign_alg = "sm3"`, OpenSSL's SM3 via hashlib).
Headers: X-App-Id, X-Timestamp, X-Nonce (fresh for every attempt), X-Signature.

Written for the agent alone; the reference server checks signatures with its own code.
"""
from __future__ import annotations

import hmac as _hmac
import secrets
import time

ALGS = ("sha256", "sm3")


class HmacAuth:
    """Signs each request body."""

    def __init__(self, app_id: str, secret: str, alg: str = "sha256") -> None:
        if alg not in ALGS:
            raise ValueError(f"unknown signature algorithm {alg!r}; one of {', '.join(ALGS)}")
        self._app_id = app_id
        self._secret = secret.encode("utf-8")
        self._alg = alg

    def signature(self, timestamp: int, nonce: str, body: bytes) -> str:
        """Hex HMAC of app id, timestamp, nonce and body."""
        message = b"\n".join((self._app_id.encode("utf-8"), str(timestamp).encode("ascii"),
                              nonce.encode("ascii"), body))
        return _hmac.new(self._secret, message, self._alg).hexdigest()

    def headers(self, body: bytes) -> dict[str, str]:
        ts = int(time.time())
        nonce = secrets.token_hex(16)
        return {"X-App-Id": self._app_id, "X-Timestamp": str(ts), "X-Nonce": nonce,
                "X-Signature": self.signature(ts, nonce, body)}
