"""Rater data protection: masking for display and AES-GCM sealing for storage.

Rater name, ID number and phone are sealed with the hall's key (from the config, never the DB)
before they reach SQLite; only masked forms are stored in the clear. The uploader is the only
place that opens a sealed blob, and only to build the province request body.
"""
from __future__ import annotations

import json
import logging
import os
import re

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_SEAL_VERSION = b"\x01"


def mask_cert(cert: str | None) -> str:
    """`37140219000101999X` -> `3714**********999X`; short numbers keep at most the last 4."""
    if not cert:
        return ""
    n = len(cert)
    if n >= 12:
        return cert[:4] + "*" * (n - 8) + cert[-4:]
    if n > 4:
        return "*" * (n - 4) + cert[-4:]
    return "*" * n


def mask_phone(phone: str | None) -> str:
    """`13800000000` -> `138****0000`."""
    if not phone:
        return ""
    n = len(phone)
    if n >= 8:
        return phone[:3] + "*" * (n - 7) + phone[-4:]
    return "*" * n


def mask_name(name: str | None) -> str:
    """`张三丰` -> `张**`: keep the first character only."""
    if not name:
        return ""
    return name[0] + "*" * (len(name) - 1)


class Sealer:
    """AES-256-GCM with a random 96-bit nonce; the associated data binds a blob to its row."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("privacy key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, obj: dict, aad: str) -> bytes:
        """Encrypt a JSON-able dict; `aad` (e.g. the projectNo) must be given again to open it."""
        nonce = os.urandom(12)
        plain = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, plain, aad.encode("utf-8"))

    def open(self, blob: bytes, aad: str) -> dict:
        """Decrypt a sealed blob; raises ValueError if the key or the row does not match."""
        if not blob or blob[:1] != _SEAL_VERSION:
            raise ValueError("unknown sealed-data version")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], aad.encode("utf-8"))
        except Exception:
            # InvalidTag carries no detail; say what to check instead
            raise ValueError("cannot open sealed rater data: wrong privacy key or tampered row"
                             ) from None
        return json.loads(plain)


# A last line of defence for logs: anything shaped like a PRC ID number or a mobile number is
# masked even if a bug passes one to a log call.
_ID_RE = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
_PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")


def scrub(text: str) -> str:
    """Mask ID-number- and phone-shaped substrings."""
    text = _ID_RE.sub(lambda m: m.group(1)[:4] + "*" * 10 + m.group(2), text)
    return _PHONE_RE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


class ScrubFilter(logging.Filter):
    """Logging filter that applies `scrub` to the rendered message."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True
