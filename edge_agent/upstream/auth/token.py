"""Auth scheme `token`: a static token in the `X-Auth-Token` header of every request."""
from __future__ import annotations

HEADER = "X-Auth-Token"


class TokenAuth:
    """Adds the configured token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def headers(self, body: bytes) -> dict[str, str]:
        return {HEADER: self._token}
