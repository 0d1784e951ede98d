"""Device keys: one 32-byte RL1 key per device, in the file the hall config names (`key_file`).

Accepted file contents: exactly 32 raw bytes, or 64 hex digits (surrounding whitespace ignored),
so a key made with `openssl rand -hex 32 > 1001.key` works as well as a binary one written by the
provisioning tool. Errors name the file and what is wrong, never the key material.
"""
from __future__ import annotations

import re

from protocol.auth import KEY_LEN


class DeviceKeyError(Exception):
    """A device key file is missing or malformed (message is safe to log)."""


def load_device_key(path: str) -> bytes:
    """Read a device key file; raise DeviceKeyError naming the problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as exc:
        raise DeviceKeyError(f"无法读取设备密钥 cannot read device key file {path!r}: "
                        f"{exc.strerror or exc}") from None
    # 32 bytes that are all hex digits are a 16-byte key written as hex, not a raw key
    if len(raw) == KEY_LEN and not re.fullmatch(rb"[0-9a-fA-F]+", raw):
        return raw
    text = raw.strip()
    if re.fullmatch(rb"[0-9a-fA-F]{64}", text):
        return bytes.fromhex(text.decode())
    raise DeviceKeyError(f"设备密钥格式错误 device key file {path!r} must hold 32 bytes or 64 hex "
                    f"digits (got {len(raw)} bytes); re-provision the device")
