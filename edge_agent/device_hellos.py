"""A device's HELLO record in the agent's database (protocol/SPEC.md §4.2, §5.3): the highest
HELLO counter accepted (the floor a new HELLO must exceed), the fingerprint of the key it belongs
to, and how many HELLOs were accepted, refused as replays or left unanswered by the rate limit.

The floor belongs to the key: when the agent starts with another key for a device (it was
re-provisioned, or retired and registered again), `load_floor` resets the floor to 0 under the
new fingerprint, in the same transaction that reads it. Old HELLOs cannot pass anyway: they fail
the MAC under the new key. Schema: migration 3 (edge_agent/schema.py).
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

FINGERPRINT_HEX = 16     # 64 bits of SHA-256: tells keys apart, reveals nothing about them


def key_fingerprint(key: bytes) -> str:
    """Fingerprint of a device key as stored with the floor (the technician tools show its first
    8 hex digits)."""
    return hashlib.sha256(key).hexdigest()[:FINGERPRINT_HEX]


def load_floor(db: Any, device_id: int, key_fp: str) -> int:
    """The floor for `device_id` under the key `key_fp`; resets it to 0 when the stored floor
    belongs to another key (or none). Run inside a write transaction."""
    row = db.execute("SELECT hello_ctr, hello_key FROM devices WHERE device_id = ?",
                     (device_id,)).fetchone()
    if row is None:
        db.execute("INSERT INTO devices(device_id, hello_key) VALUES (?, ?)", (device_id, key_fp))
        return 0
    if row[1] != key_fp:
        db.execute("UPDATE devices SET hello_ctr = 0, hello_key = ? WHERE device_id = ?",
                   (key_fp, device_id))
        return 0
    return int(row[0])


def floor_for_key(db: Any, device_id: int, key_fp: str) -> int | None:
    """Read-only: the floor stored for this device under this key, None when the agent holds
    none for that key (never seen, or it belongs to another key)."""
    cols = {r[1] for r in db.execute("PRAGMA table_info(devices)").fetchall()}
    if "hello_key" not in cols:    # no devices table yet, or a database before migration 3
        return None
    row = db.execute("SELECT hello_ctr, hello_key FROM devices WHERE device_id = ?",
                     (device_id,)).fetchone()
    if row is None or row[1] != key_fp:
        return None
    return int(row[0])


def record(db: Any, device_id: int, *, ctr: int = 0, accepted: int = 0, replays: int = 0,
           limited: int = 0, bursts: int = 0, now: float | None = None) -> int:
    """Raise the floor to `ctr` (never lowers it) and add the counts; returns the floor."""
    refused_at = (now if now is not None else time.time()) if (replays or limited) else None
    db.execute("UPDATE devices SET hello_ctr = MAX(hello_ctr, ?), hellos = hellos + ?,"
               " hello_replays = hello_replays + ?, hello_limited = hello_limited + ?,"
               " hello_bursts = hello_bursts + ?,"
               " hello_refused_at = COALESCE(?, hello_refused_at) WHERE device_id = ?",
               (int(ctr), accepted, replays, limited, bursts, refused_at, device_id))
    row = db.execute("SELECT hello_ctr FROM devices WHERE device_id = ?",
                     (device_id,)).fetchone()
    return int(row[0]) if row else 0
