"""Auth scheme `sm2`: the national transport envelope (profile `national-sm2`).

    {"txnBodyCom": {"appMark": M, "time": T, "sign": S, "params": {"evaluate": [C]}},
     "txnCommCom": {}}

T is Beijing time `yyyyMMddHHmmss`; S is our SM2 signature over the UTF-8 string T + M + W (W =
appWord, the platform's application secret, which itself is never sent); C is the JSON array of
records encrypted to the platform's SM2 public key. The settings the public code does not show
(ciphertext order and text encoding, signature format, signer ID) come from `[upstream.sm2]`.

The signed text changes once a second, so one signature serves every request of that second.
"""
from __future__ import annotations

import time

from .. import sm2 as _sm2
from ..profiles.base import cst

TIME_FORMAT = "%Y%m%d%H%M%S"


class Sm2Envelope:
    """Seals record arrays into the envelope; holds the keys (never logged, never repr'd)."""

    def __init__(self, app_mark: str, app_word: str, private_hex: str, platform_public_hex: str,
                 *, order: str = "C1C3C2", encoding: str = "hex", signature_format: str = "der",
                 signer_id: str = _sm2.DEFAULT_SIGNER_ID) -> None:
        if encoding not in _sm2.ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}")
        self.app_mark = app_mark
        self._word = app_word
        self._signer = _sm2.Signer(private_hex, signer_id, signature_format)
        self._encryptor = _sm2.Encryptor(platform_public_hex, order)
        self._encoding = encoding
        self._signed: tuple[str, str] = ("", "")

    def __repr__(self) -> str:
        return f"Sm2Envelope(appMark={self.app_mark!r})"

    def headers(self, body: bytes) -> dict[str, str]:
        return {}

    def sign(self, when: str) -> str:
        """The `sign` field for envelope time `when` (cached for the second)."""
        if self._signed[0] != when:
            raw = self._signer.sign((when + self.app_mark + self._word).encode("utf-8"))
            self._signed = (when, _sm2.encode(raw, self._encoding))
        return self._signed[1]

    def seal(self, params: dict, now: float | None = None) -> dict:
        """The whole request object for `params` (already holding the encrypted parts)."""
        when = cst(time.time() if now is None else now, TIME_FORMAT)
        return {"txnBodyCom": {"appMark": self.app_mark, "time": when, "sign": self.sign(when),
                               "params": params},
                "txnCommCom": {}}

    def encrypt(self, plaintext: bytes) -> str:
        """One ciphertext in the configured order and text encoding."""
        return _sm2.encode(self._encryptor.encrypt(plaintext), self._encoding)
