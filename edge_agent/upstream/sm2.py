"""SM2 (GB/T 32918, GM/T 0003) for the national envelope: key files, signatures, encryption.

On the pinned snowland-smx package (`pysmx`): its `Sign` (with the signer ID, GM/T 0003.2 Z_A)
and its integer-Jacobian scalar multiplication `kG` (~1.5 ms; gmssl's hex-string arithmetic
needs ~4.5 ms, which capped the drain at a third of what the province takes). Encryption is
put together from `kG` because `pysmx.Encrypt` hashes with a pure-Python SM3 (35 ms for a 3 kB
batch): k from `secrets`, C1 = k·G, (x2, y2) = k·P, the GM/T 0003.4 KDF and C3 on OpenSSL's SM3
(`hashlib.new("sm3")`). C1 carries the 0x04 point prefix the standard prescribes (pysmx leaves
it out). Both are checked against the published examples of GM/T 0003.5 / GB/T 32918.5
(tests/test_upstream_sm2.py), and the reference server verifies and decrypts with a different
package (gmssl), so an encoding mistake cannot pass on both sides.

Key files: a private key is 64 hex digits or a PEM (SEC1 "EC PRIVATE KEY" / "SM2 PRIVATE KEY", or
PKCS#8 "PRIVATE KEY"); a public key is 128 hex digits (x ‖ y), 130 with a leading 04, or a PEM
"PUBLIC KEY" (parsed with pycryptodomex's DER classes). Errors name the problem, never the key
material.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets

from Cryptodome.Util.asn1 import DerBitString, DerInteger, DerObjectId, DerOctetString, \
    DerSequence
from pysmx import SM2 as _smx

ORDERS = ("C1C3C2", "C1C2C3")            # GM/T 0009 order first: the default
ENCODINGS = ("hex", "base64")
SIGNATURE_FORMATS = ("der", "raw")       # DER SEQUENCE{r, s} (GM/T 0009) or r ‖ s, 64 bytes
DEFAULT_SIGNER_ID = "1234567812345678"   # GM/T 0009 default user ID

N = _smx.sm2_N
P = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF", 16)
A = P - 3
B = int("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93", 16)
G = _smx.sm2_G
_SM2_OIDS = ("1.2.156.10197.1.301",)            # the SM2 curve
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
_HEX = re.compile(r"[0-9a-fA-F]+")


class SM2KeyError(ValueError):
    """A key file that is not an SM2 key of the expected kind."""


def sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905) digest, from OpenSSL."""
    return hashlib.new("sm3", data).digest()


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _pem_der(text: str, labels: tuple[str, ...]) -> bytes | None:
    m = re.search(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", text, re.S)
    if m is None:
        return None
    if m.group(1) not in labels:
        raise SM2KeyError(f"PEM 类型为 {m.group(1)!r}，应为 {' / '.join(labels)} "
                          f"(PEM holds a {m.group(1)}, expected {' or '.join(labels)})")
    try:
        return base64.b64decode("".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise SM2KeyError("PEM 内容不是 Base64 (PEM body is not Base64)") from None


def _curve_oid_ok(params: bytes) -> None:
    oid = DerObjectId().decode(params).value
    if oid not in _SM2_OIDS:
        raise SM2KeyError(f"密钥曲线 {oid} 不是 SM2 (key is on curve {oid}, not SM2 "
                          f"{_SM2_OIDS[0]})")


def load_private_key(text: str) -> str:
    """The private key d as 64 lower-case hex digits, from hex or PEM text."""
    text = text.strip()
    der = _pem_der(text, ("EC PRIVATE KEY", "SM2 PRIVATE KEY", "PRIVATE KEY"))
    if der is None:
        if len(text) != 64 or not _HEX.fullmatch(text):
            raise SM2KeyError("应为 64 位十六进制或 PEM (must be 64 hex digits or a PEM "
                              "private key)")
        d = int(text, 16)
    else:
        try:
            d = _private_from_der(der)
        except (ValueError, IndexError, TypeError) as exc:
            if isinstance(exc, SM2KeyError):
                raise
            raise SM2KeyError("PEM 私钥结构无法解析 (PEM private key is not a SEC1 or PKCS#8 "
                              "SM2 key)") from None
    if not 1 <= d <= N - 2:
        raise SM2KeyError("私钥超出 SM2 取值范围 (private key out of the SM2 range 1..n-2)")
    return "%064x" % d


def _private_from_der(der: bytes) -> int:
    seq = DerSequence().decode(der)
    if seq[0] == 0 and len(seq) >= 3:        # PKCS#8: version 0, algorithm, OCTET STRING
        alg = DerSequence().decode(seq[1])
        if DerObjectId().decode(alg[0]).value != _EC_PUBLIC_KEY:
            raise SM2KeyError("PKCS#8 私钥不是椭圆曲线密钥 (PKCS#8 key is not an EC key)")
        _curve_oid_ok(alg[1])
        seq = DerSequence().decode(DerOctetString().decode(seq[2]).payload)
    if seq[0] != 1:
        raise SM2KeyError("不是 SEC1 EC 私钥 (not a SEC1 EC private key)")
    return int.from_bytes(DerOctetString().decode(seq[1]).payload, "big")


def load_public_key(text: str) -> str:
    """The public key x ‖ y as 128 lower-case hex digits, from hex or PEM text."""
    text = text.strip()
    der = _pem_der(text, ("PUBLIC KEY",))
    if der is None:
        if not _HEX.fullmatch(text) or len(text) not in (128, 130) or \
                (len(text) == 130 and not text.startswith("04")):
            raise SM2KeyError("应为 128 位十六进制 (x‖y)、以 04 开头的 130 位或 PEM (must be "
                              "128 hex digits x||y, 130 starting with 04, or a PEM public key)")
        point = text[-128:]
    else:
        try:
            spki = DerSequence().decode(der)
            alg = DerSequence().decode(spki[0])
            if DerObjectId().decode(alg[0]).value != _EC_PUBLIC_KEY:
                raise SM2KeyError("公钥不是椭圆曲线密钥 (public key is not an EC key)")
            _curve_oid_ok(alg[1])
            raw = DerBitString().decode(spki[1]).value
        except SM2KeyError:
            raise
        except (ValueError, IndexError, TypeError):
            raise SM2KeyError("PEM 公钥结构无法解析 (PEM public key is not a "
                              "SubjectPublicKeyInfo)") from None
        if len(raw) != 65 or raw[0] != 4:
            raise SM2KeyError("公钥应为未压缩点 (public key must be an uncompressed point)")
        point = raw[1:].hex()
    x, y = int(point[:64], 16), int(point[64:], 16)
    if not _on_curve(x, y):
        raise SM2KeyError("公钥不在 SM2 曲线上 (public key is not a point on the SM2 curve)")
    return point.lower()


def public_from_private(d_hex: str) -> str:
    """x ‖ y of d·G (hex)."""
    return _smx.kG(int(d_hex, 16), G, 64)


def encode(data: bytes, encoding: str) -> str:
    """Bytes as text for the envelope: lower-case hex or standard Base64."""
    if encoding == "hex":
        return data.hex()
    if encoding == "base64":
        return base64.b64encode(data).decode("ascii")
    raise ValueError(f"unknown encoding {encoding!r}; one of {', '.join(ENCODINGS)}")


def _random_k() -> int:
    return secrets.randbelow(N - 1) + 1


class Signer:
    """SM2 signatures of one private key under one signer ID."""

    def __init__(self, private_hex: str, signer_id: str = DEFAULT_SIGNER_ID,
                 fmt: str = "der") -> None:
        if fmt not in SIGNATURE_FORMATS:
            raise ValueError(f"unknown signature format {fmt!r}; one of "
                             f"{', '.join(SIGNATURE_FORMATS)}")
        if len(signer_id.encode("utf-8")) * 8 >= 1 << 16:
            raise ValueError("signer ID too long (ENTL is 16 bits)")
        self.fmt = fmt
        self._d = private_hex
        self._id = signer_id

    def sign(self, message: bytes, k: int | None = None) -> bytes:
        """The signature of `message` (DER or r ‖ s); `k` only for published test vectors."""
        while True:
            kk = k if k is not None else _random_k()
            rs = _smx.Sign(message, self._d, "%064x" % kk, 64, uid=self._id)
            if rs is not None:
                break
            if k is not None:
                raise ValueError("k gives r = 0 or s = 0")
        r, s = int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big")
        if self.fmt == "raw":
            return rs
        return DerSequence([DerInteger(r), DerInteger(s)]).encode()


def _kdf(z: bytes, length: int) -> bytes:
    out = bytearray()
    counter = 1
    while len(out) < length:
        out += sm3(z + counter.to_bytes(4, "big"))
        counter += 1
    return bytes(out[:length])


class Encryptor:
    """SM2 public-key encryption to one public key (GM/T 0003.4)."""

    def __init__(self, public_hex: str, order: str = "C1C3C2") -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown ciphertext order {order!r}; one of {', '.join(ORDERS)}")
        self.order = order
        self._public = public_hex

    def encrypt(self, plaintext: bytes, k: int | None = None) -> bytes:
        """04 ‖ C1 then C3, C2 in the configured order; `k` only for published test vectors."""
        if not plaintext:
            raise ValueError("nothing to encrypt")
        while True:
            kk = k if k is not None else _random_k()
            c1 = _smx.kG(kk, G, 64)
            x2y2 = bytes.fromhex(_smx.kG(kk, self._public, 64))
            t = _kdf(x2y2, len(plaintext))
            if any(t):
                break
            if k is not None:
                raise ValueError("k gives an all-zero key stream")
        c2 = (int.from_bytes(plaintext, "big") ^ int.from_bytes(t, "big")).to_bytes(
            len(plaintext), "big")
        c3 = sm3(x2y2[:32] + plaintext + x2y2[32:])
        head = b"\x04" + bytes.fromhex(c1)
        return head + (c3 + c2 if self.order == "C1C3C2" else c2 + c3)
