"""One test per MUST of SPEC.md §4 (messages) that no vector or other test covered, each through
the receiver's whole accept path (`Session.open`) with correctly signed frames, so only the rule
under test can refuse them. The handshake rules also have vectors (both runtimes)."""
from __future__ import annotations

import struct

import pytest

from protocol import frame as fr, messages as m
from protocol.auth import Hmac, hello_key
from protocol.errors import ProtocolError
from protocol.session import AGENT, DEVICE, Session

KEY = bytes(range(0x20, 0x40))
DEV = 4242
HELLO = {"fw": b"\x00\x02\x00", "boot": 3, "uptime": 9, "cat_version": 1, "low": 5,
         "next_rseq": 8, "status": 0}


def _pair() -> tuple[Session, Session]:
    dev, ag = Session(DEV, KEY, DEVICE), Session(DEV, KEY, AGENT)
    dev.adopt(b"d" * 8, b"a" * 8)
    ag.adopt(b"d" * 8, b"a" * 8)
    return dev, ag


def _refused(rx: Session, data: bytes) -> str:
    with pytest.raises(ProtocolError) as e:
        rx.open(data)
    return e.value.reason


def _signed(sender: Session, type: int, payload: bytes) -> bytes:
    """A frame with exactly this payload, signed with the sender's session key."""
    sender.tx_seq += 1
    flags = fr.FLAG_DOWN if sender.role == AGENT else 0
    return fr.build(type, flags, DEV, sender.tx_seq, payload, sender._key)


# ---- §4: a payload shorter than the listed fields MUST be rejected (bad_payload) ----------

SHORT = {   # type -> a valid payload of that type; each is cut by one byte below
    m.RECORDS: m.encode(m.RECORDS, {"low": 1, "records": [m.Record(1, 1, 0, 1, 1)]}),
    m.STATUS: m.encode(m.STATUS, {"status": 0, "ui_state": 0, "boot": 1, "uptime": 1, "low": 1,
                                  "next_rseq": 1, "unacked": 0, "capacity": 9,
                                  "cat_version": 1, "last_error": 0}),
    m.DACK: m.encode(m.DACK, {"seq": 1, "bitmap": 0}),
    m.ERROR: m.encode(m.ERROR, {"code": 4, "ref_seq": 1}),
    m.ACK: m.encode(m.ACK, {"cum": 1, "sack": bytes(16)}),
    m.INVITE: m.encode(m.INVITE, {"invite_id": 9, "lifetime": 60, "staff_no": "A1",
                                  "name_w": 8, "name_h": 2, "name_bitmap": b"\x01\x02"}),
    m.CANCEL: m.encode(m.CANCEL, {"invite_id": 9}),
    m.TIME: m.encode(m.TIME, {"time": 1795000000}),
    m.CONFIG: struct.pack(">HBBHI", 2, 0, 1, 0, 0),
}


@pytest.mark.parametrize("type", sorted(SHORT), ids=lambda t: m.NAMES[t])
def test_short_payload_is_bad_payload(type):
    dev, ag = _pair()
    sender, rx = (dev, ag) if type in m.UPLINK else (ag, dev)
    whole = SHORT[type]
    rx.open(_signed(sender, type, whole))             # the full payload is accepted
    assert _refused(rx, _signed(sender, type, whole[:-1])) == "bad_payload"


def test_short_handshake_payloads_are_bad_payload():
    dev, ag = Session(DEV, KEY, DEVICE), Session(DEV, KEY, AGENT)
    full = m.encode(m.HELLO, dict(HELLO, nonce=b"n" * 8, hello_ctr=1))
    k_hello = Hmac(hello_key(KEY))
    assert _refused(ag, fr.build(m.HELLO, 0, DEV, 0, full[:-1], k_hello)) == "bad_payload"
    assert not ag.established and ag.hello_floor == 0
    ag.open(fr.build(m.HELLO, 0, DEV, 0, full, k_hello))
    dev.nonce_device = b"n" * 8
    ack = m.encode(m.HELLO_ACK, {"nonce": b"a" * 8, "time": 1, "cum": 0, "window": 1,
                                 "cat_version": 1})
    ag.hello_ack(b"a" * 8, {"time": 1, "cum": 0, "window": 1, "cat_version": 1})
    assert _refused(dev, fr.build(m.HELLO_ACK, fr.FLAG_DOWN, DEV, 0, ack[:-1], ag._key)) \
        == "bad_payload"


# ---- §4.1: records with a level outside 1..5, reserved flags, or unpacked reasons ----------

def _record_bytes(level: int = 4, flags: int = 0, reasons: tuple[int, int, int] = (201, 0, 0)
                  ) -> bytes:
    return struct.pack(">IIIHBBHHH", 7, 1795000000, 0, 1, level, flags, *reasons)


@pytest.mark.parametrize("record,why", [
    (_record_bytes(level=0), "level 0"),
    (_record_bytes(level=6), "level 6"),
    (_record_bytes(flags=0x20), "reserved flag 0x20"),
    (_record_bytes(flags=0x80), "reserved flag 0x80"),
    (_record_bytes(reasons=(0, 201, 0)), "reason after an empty slot"),
    (_record_bytes(reasons=(201, 0, 207)), "reason after an empty slot"),
])
def test_invalid_record_is_bad_payload_and_never_mapped(record, why):
    dev, ag = _pair()
    payload = struct.pack(">BI", 1, 7) + record
    assert _refused(ag, _signed(dev, m.RECORDS, payload)) == "bad_payload", why
    # the same frame with a valid record in that place is accepted
    ok = struct.pack(">BI", 1, 7) + _record_bytes()
    assert ag.open(_signed(dev, m.RECORDS, ok))[2]["records"][0].level == 4


# ---- §4.8: invite_id MUST NOT be 0 --------------------------------------------------------

def test_invite_id_zero_is_bad_payload():
    dev, ag = _pair()
    payload = m.encode(m.INVITE, {"invite_id": 1, "lifetime": 60, "staff_no": "",
                                  "name_w": 0, "name_h": 0, "name_bitmap": b""})
    zero = b"\x00\x00\x00\x00" + payload[4:]
    assert _refused(dev, _signed(ag, m.INVITE, zero)) == "bad_payload"
    assert dev.open(_signed(ag, m.INVITE, payload))[2]["invite_id"] == 1


# ---- §4.2 / §4.3: a handshake frame's seq MUST be 0 ---------------------------------------

def test_hello_with_seq_other_than_zero_is_refused_and_changes_nothing():
    dev, ag = _pair()
    payload = m.encode(m.HELLO, dict(HELLO, nonce=b"x" * 8, hello_ctr=5))
    k_hello = Hmac(hello_key(KEY))
    assert _refused(ag, fr.build(m.HELLO, 0, DEV, 7, payload, k_hello)) == "bad_seq"
    # the established session is untouched and its frames still pass
    assert ag.established and ag.hello_floor == 0 and ag.nonce_device == b"d" * 8
    ag.open(dev.seal(m.DACK, {"seq": 0, "bitmap": 0})[1])
    ag.open(fr.build(m.HELLO, 0, DEV, 0, payload, k_hello))      # the same HELLO at seq 0
    assert ag.hello_floor == 5


def test_hello_ack_with_seq_other_than_zero_is_refused():
    dev, ag = Session(DEV, KEY, DEVICE), Session(DEV, KEY, AGENT)
    ag.open(dev.hello(b"h" * 8, dict(HELLO, hello_ctr=1)))
    good = ag.hello_ack(b"k" * 8, {"time": 1, "cum": 4, "window": 64, "cat_version": 1})
    body = bytearray(good[:-4])
    body[8:12] = (3).to_bytes(4, "big")          # seq 3; MAC recomputed with the right K_s
    end = len(body) - 8
    body[end:] = ag._key.digest(bytes(body[:end]))[:8]
    frame = bytes(body) + fr.crc32(bytes(body)).to_bytes(4, "big")
    assert _refused(dev, frame) == "bad_seq"
    assert not dev.established
    dev.open(good)
    assert dev.established


# ---- §4.2: hello_ctr MUST exceed every counter the agent accepted -------------------------

def test_hello_counter_must_grow_and_a_refused_hello_changes_nothing():
    dev, ag = Session(DEV, KEY, DEVICE), Session(DEV, KEY, AGENT)
    first = dev.hello(b"1" * 8, dict(HELLO, hello_ctr=10))
    ag.open(first)
    ack = ag.hello_ack(b"A" * 8, {"time": 1, "cum": 0, "window": 64, "cat_version": 1})
    dev.open(ack)
    ag.open(dev.seal(m.STATUS, {"status": 0, "ui_state": 0, "boot": 3, "uptime": 9, "low": 5,
                                "next_rseq": 8, "unacked": 3, "capacity": 9, "cat_version": 1,
                                "last_error": 0})[1])
    stale = Session(DEV, KEY, DEVICE).hello(b"2" * 8, dict(HELLO, hello_ctr=9))
    for data in (first, stale):     # the same HELLO again; a genuine but older one
        assert _refused(ag, data) == "replay"
        assert ag.established and ag.nonce_device == b"1" * 8 and ag.hello_floor == 10
    # the session those refusals left alone still carries traffic both ways
    ag.open(dev.seal(m.DACK, {"seq": 0, "bitmap": 0})[1])
    dev.open(ag.seal(m.TIME, {"time": 5})[1])
    # the floor is per receiver: a restarted agent that lost it would accept (hence persisted)
    assert Session(DEV, KEY, AGENT).open(first)[2]["hello_ctr"] == 10
    ag.open(dev.hello(b"3" * 8, dict(HELLO, hello_ctr=11)))
    assert ag.hello_floor == 11 and not ag.established
