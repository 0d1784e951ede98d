"""HMAC-SHA256 (RFC 2104 over FIPS 180-4 SHA-256), key derivation and constant-time compare.

Written out rather than imported because MicroPython's ports do not ship `hmac`; the result is
checked against RFC 4231 in the tests. MicroPython's sha256 objects have no copy(), so the padded
keys are cached instead of the hash states.
"""

import hashlib

MAC_LEN = 8          # truncated tag length on the wire (bytes)
KEY_LEN = 32         # device key length (bytes)
NONCE_LEN = 8

_HELLO_LABEL = b"RL1 hello"
_SESSION_LABEL = b"RL1 session"


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key + bytes(64 - len(key))
    return bytes([b ^ 0x36 for b in key]), bytes([b ^ 0x5C for b in key])


class Hmac:
    """A reusable HMAC-SHA256 key: pads computed once, digest() per message."""

    def __init__(self, key):
        self._ipad, self._opad = _pads(key)

    def digest(self, *parts):
        """HMAC-SHA256 over the concatenation of `parts` (32 bytes)."""
        inner = hashlib.sha256(self._ipad)
        for p in parts:
            inner.update(p)
        outer = hashlib.sha256(self._opad)
        outer.update(inner.digest())
        return outer.digest()


def hmac_sha256(key, msg):
    """HMAC-SHA256(key, msg), 32 bytes."""
    return Hmac(key).digest(msg)


def equal(a, b):
    """Compare two byte strings in time independent of where they differ."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


def hello_key(device_key):
    """Key for HELLO frames: HMAC(K_dev, "RL1 hello"). Separate from the device key so the
    device key itself never keys a MAC on the wire."""
    return hmac_sha256(device_key, _HELLO_LABEL)


def session_key(device_key, nonce_device, nonce_agent, device_id):
    """K_s = HMAC(K_dev, "RL1 session" || nonce_device || nonce_agent || device_id as u32 BE)."""
    return hmac_sha256(device_key, _SESSION_LABEL + bytes(nonce_device) + bytes(nonce_agent)
                       + device_id.to_bytes(4, "big"))
