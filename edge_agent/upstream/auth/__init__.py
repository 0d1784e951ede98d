"""Auth schemes, one module each: `none`, `token` (static header), `hmac` (signed request) and
`sm2` (the national envelope: SM2 signature and encryption). `make_auth(upstream)` builds the
configured one; every scheme object has `headers(body) -> dict`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ...config import Upstream

SCHEMES = ("none", "token", "hmac", "sm2")


def make_auth(up: "Upstream") -> Any:
    """The auth scheme object for the configuration (validated by config.py before)."""
    if up.auth == "token":
        from .token import TokenAuth
        return TokenAuth(up.token or "")
    if up.auth == "hmac":
        from .hmac import HmacAuth
        return HmacAuth(up.app_id or "", up.app_secret or "", up.sign_alg)
    if up.auth == "sm2":
        from .sm2 import Sm2Envelope
        return Sm2Envelope(up.app_mark or "", up.app_word or "", up.sm2_private_key or "",
                           up.sm2_platform_public_key or "", order=up.sm2_cipher_order,
                           encoding=up.sm2_cipher_encoding,
                           signature_format=up.sm2_signature_format,
                           signer_id=up.sm2_signer_id)
    from .none import NoAuth
    return NoAuth()
