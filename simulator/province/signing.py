"""Request signing for provinces that want signed uploads (the `hmac` auth mode).

The reference server's side only: the edge agent signs with its own, separately written code
(edge_agent/upstream/auth/hmac.py), so a mistake in either cannot cancel itself out. Tests also
use `auth_headers` to play a client.

The signed message is the UTF-8 app id, the decimal unix timestamp, the nonce and the exact body
bytes, joined by a single newline each::

    app_id + "\\n" + timestamp + "\\n" + nonce + "\\n" + body

and the signature is the lower-case hex HMAC of that message under the shared secret, with
SHA-256 (default) or SM3 (GB/T 32905, some provinces require it; computed by the pinned
`cryptography` package, not a home-made hash).

Headers carrying it: `X-App-Id`, `X-Timestamp`, `X-Nonce`, `X-Signature`.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER_APP_ID = "X-App-Id"
HEADER_TIMESTAMP = "X-Timestamp"
HEADER_NONCE = "X-Nonce"
HEADER_SIGNATURE = "X-Signature"
HEADER_TOKEN = "X-Auth-Token"
HEADER_IDEMPOTENCY = "Idempotency-Key"

SIGN_ALGS = ("sha256", "sm3")


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def signing_message(app_id: str, timestamp: int | str, nonce: str, body: bytes) -> bytes:
    """Return the exact bytes that are signed (see the module docstring)."""
    return b"\n".join((_as_bytes(app_id), str(timestamp).encode("ascii"), _as_bytes(nonce),
                       bytes(body)))


def sign(secret: str | bytes, app_id: str, timestamp: int | str, nonce: str, body: bytes,
         alg: str = "sha256") -> str:
    """Hex HMAC (SHA-256 or SM3) of app_id, timestamp, nonce and body under `secret`."""
    key = _as_bytes(secret)
    message = signing_message(app_id, timestamp, nonce, body)
    if alg == "sha256":
        return hmac.new(key, message, hashlib.sha256).hexdigest()
    if alg == "sm3":
        # cryptography's SM3 comes from OpenSSL; hashlib only has it on some builds.
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives import hmac as c_hmac
        mac = c_hmac.HMAC(key, hashes.SM3())
        mac.update(message)
        return mac.finalize().hex()
    raise ValueError(f"unknown signature algorithm {alg!r}; use one of {SIGN_ALGS}")


def verify(signature: str, secret: str | bytes, app_id: str, timestamp: int | str, nonce: str,
           body: bytes, alg: str = "sha256") -> bool:
    """True if `signature` (hex, any case) is the right one; constant-time comparison."""
    expected = sign(secret, app_id, timestamp, nonce, body, alg)
    return hmac.compare_digest(expected, signature.strip().lower())


def new_nonce() -> str:
    """A fresh random nonce (32 hex characters); use one per attempt, never reuse on retry."""
    return secrets.token_hex(16)


def auth_headers(app_id: str, secret: str | bytes, body: bytes, *, timestamp: int | None = None,
                 nonce: str | None = None, alg: str = "sha256") -> dict[str, str]:
    """The four signing headers for one request attempt with this body."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    nonce = new_nonce() if nonce is None else nonce
    return {
        HEADER_APP_ID: app_id,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: sign(secret, app_id, ts, nonce, body, alg),
    }
