"""Auth scheme `none`: the province trusts the network path (a government private line)."""
from __future__ import annotations


class NoAuth:
    """Adds nothing."""

    def headers(self, body: bytes) -> dict[str, str]:
        return {}
