"""SM2 as the reference province checks it: with the gmssl package, never the agent's
snowland-smx, so a mistake on one side cannot cancel itself out on the other.

* signatures: gmssl's `CryptSM2.verify` over e = SM3(Z_A ‖ M), Z_A computed here for the
  configured signer ID (gmssl's own `verify_with_sm3` knows only the default ID); DER signatures
  are read with `cryptography`'s `decode_dss_signature`;
* decryption: C1 must be an uncompressed point (0x04 ‖ x ‖ y, as GM/T 0003.4 writes it); the
  shared point comes from gmssl's scalar multiplication; the KDF and the C3 check run on
  OpenSSL's SM3 (`hashlib`): gmssl's `decrypt` hashes in pure Python (60 ms for 3 kB) and never
  checks C3, and a province must refuse what does not decrypt. A wrong key, order or text
  encoding fails the C3 check (or the decoding) and is refused.

Key files: hex (64 digits private; 128, or 130 with 04, public) or PEM, read by the small DER
walker below.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

import secrets

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from gmssl import sm2 as _gm

_CURVE = _gm.default_ecc_table
N = int(_CURVE["n"], 16)
_P = int(_CURVE["p"], 16)
_A = int(_CURVE["a"], 16)
_B = int(_CURVE["b"], 16)
_G = _CURVE["g"]
_HEX = re.compile(r"[0-9a-fA-F]+")


def _on_curve(point: bytes) -> bool:
    x, y = int.from_bytes(point[:32], "big"), int.from_bytes(point[32:], "big")
    return x < _P and y < _P and (y * y - (x ** 3 + _A * x + _B)) % _P == 0


def _tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the DER element at `pos`."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, data[pos:pos + length], pos + length


def _children(value: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(value):
        tag, inner, pos = _tlv(value, pos)
        out.append((tag, inner))
    return out


def _pem(text: str) -> bytes | None:
    m = re.search(r"-----BEGIN [A-Z0-9 ]+-----(.*?)-----END [A-Z0-9 ]+-----", text, re.S)
    return base64.b64decode("".join(m.group(1).split())) if m else None


def load_private(text: str) -> str:
    """Private key d (hex) from hex or PEM (SEC1 or PKCS#8)."""
    text = text.strip()
    der = _pem(text)
    if der is None:
        if len(text) != 64 or not _HEX.fullmatch(text):
            raise ValueError("SM2 private key: 64 hex digits or PEM")
        return text.lower()
    items = _children(_tlv(der)[1])
    if items[0][1] == b"\x00":                      # PKCS#8 wraps the SEC1 key
        items = _children(_tlv(items[2][1])[1])
    return items[1][1].rjust(32, b"\0").hex()


def load_public(text: str) -> str:
    """Public key x ‖ y (hex) from hex or PEM (SubjectPublicKeyInfo)."""
    text = text.strip()
    der = _pem(text)
    if der is None:
        if not _HEX.fullmatch(text) or len(text) not in (128, 130):
            raise ValueError("SM2 public key: 128 hex digits (x||y), 130 with 04, or PEM")
        raw = bytes.fromhex(text[-128:])
    else:
        bits = _children(_tlv(der)[1])[1][1]
        raw = bits[2:]                               # unused-bits byte, then 04
    if len(raw) != 64 or not _on_curve(raw):
        raise ValueError("SM2 public key is not a point on the curve")
    return raw.hex()


def _curve(private_hex: str = "", public_hex: str = "") -> _gm.CryptSM2:
    c = _gm.CryptSM2(private_key=private_hex, public_key=_G)
    # gmssl strips a leading "04" with str.lstrip, which also eats an x that starts with 0 or 4
    c.public_key = public_hex
    return c


def public_of(private_hex: str) -> str:
    """x ‖ y of d·G (hex)."""
    return _curve()._kg(int(private_hex, 16), _G)


def generate_keypair() -> tuple[str, str]:
    """(private hex, public x‖y hex) for tests and the demo."""
    d = "%064x" % (secrets.randbelow(N - 2) + 1)
    return d, public_of(d)


def decode_text(text: str, encoding: str) -> bytes:
    """Envelope text → bytes; ValueError when it is not that encoding."""
    if encoding == "hex":
        if len(text) % 2 or not _HEX.fullmatch(text):
            raise ValueError("not hex")
        return bytes.fromhex(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def verify(signature: bytes, message: bytes, public_hex: str, signer_id: str,
           fmt: str) -> bool:
    """True if `signature` (DER or r‖s) is the signer's over `message` under `signer_id`."""
    try:
        if fmt == "der":
            r, s = decode_dss_signature(signature)
        else:
            if len(signature) != 64:
                return False
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    except ValueError:
        return False
    if not (0 < r < N and 0 < s < N):
        return False
    uid = signer_id.encode("utf-8")
    za = _sm3((len(uid) * 8).to_bytes(2, "big") + uid + bytes.fromhex(
        _CURVE["a"] + _CURVE["b"] + _G + public_hex))
    e = _sm3(za + message)
    return bool(_curve(public_hex=public_hex).verify("%064x%064x" % (r, s), e))


def _sm3(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def decrypt(ciphertext: bytes, private_hex: str, order: str) -> bytes | None:
    """The plaintext, or None when the ciphertext does not decrypt under this key and order."""
    if len(ciphertext) < 98 or ciphertext[0] != 4 or not _on_curve(ciphertext[1:65]):
        return None
    c1 = ciphertext[1:65]
    if order == "C1C3C2":
        c3, c2 = ciphertext[65:97], ciphertext[97:]
    else:
        c2, c3 = ciphertext[65:-32], ciphertext[-32:]
    shared = bytes.fromhex(_curve(private_hex)._kg(int(private_hex, 16), c1.hex()))
    stream, counter = bytearray(), 1
    while len(stream) < len(c2):
        stream += _sm3(shared + counter.to_bytes(4, "big"))
        counter += 1
    if not any(stream[:len(c2)]):
        return None
    plain = (int.from_bytes(c2, "big") ^ int.from_bytes(stream[:len(c2)], "big")).to_bytes(
        len(c2), "big")
    return plain if _sm3(shared[:32] + plain + shared[32:]) == c3 else None
