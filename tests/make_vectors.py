"""Generates protocol/vectors/*.json, the RL1 test vectors. Run: .venv/bin/python -m tests.make_vectors

The vectors are committed; tests/test_protocol_vectors.py regenerates them in memory and fails
if the committed files differ, so a codec change cannot silently change the wire format.
All keys and nonces are synthetic (counting bytes), never real device material.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from protocol import cobs, frame as fr, messages as m
from protocol.auth import Hmac, hello_key
from protocol.crc32 import crc32
from protocol.session import AGENT, DEVICE, Session

OUT = Path(__file__).resolve().parent.parent / "protocol" / "vectors"
DEVICE_ID = 1001
KEY = bytes(range(0x40, 0x60))           # 32 synthetic bytes
NONCE_D = bytes.fromhex("d1d2d3d4d5d6d7d8")
NONCE_A = bytes.fromhex("a1a2a3a4a5a6a7a8")
T0 = 1795000000                           # 2026-11-18T... UTC, synthetic
HELLO_CTR = 37                            # the device's 37th HELLO under this key


def _vector(name: str, direction: str, frame: bytes, valid: bool, error: str | None = None,
            prior: list[bytes] | None = None, kind: str | None = None, wire: bytes | None = None,
            note: str = "") -> dict:
    v: dict = {
        "name": name,
        "note": note,
        "valid": valid,
        "direction": direction,
        "device_id": DEVICE_ID,
        "device_key_hex": KEY.hex(),
        "nonce_device_hex": NONCE_D.hex(),
        "nonce_agent_hex": NONCE_A.hex(),
        "message": None,
        "frame_hex": frame.hex(),
        "wire_hex": (wire if wire is not None else cobs.encode(frame) + b"\x00").hex(),
    }
    if kind:
        v["kind"] = kind
    if prior:
        v["prior_frames_hex"] = [p.hex() for p in prior]
    if valid:
        rx = Session(DEVICE_ID, KEY, AGENT if direction == "uplink" else DEVICE)
        if kind == "HELLO_ACK":
            rx.nonce_device = NONCE_D
        elif kind != "HELLO":
            rx.adopt(NONCE_D, NONCE_A)
        f, t, fields = rx.open(frame)
        v["message"] = {"device_id": f.device_id, "seq": f.seq, "flags": f.flags,
                        "fields": m.to_jsonable(t, fields)}
    else:
        v["error"] = error
    return v


def _session(role: str) -> Session:
    s = Session(DEVICE_ID, KEY, role)
    s.adopt(NONCE_D, NONCE_A)
    return s


def _recs(n: int) -> list[m.Record]:
    out = []
    for i in range(n):
        level = 1 + i % 5
        reasons: tuple[int, ...] = ()
        flags = 0
        if level == 4:
            reasons = (201, 207)
        elif level == 5:
            reasons = (103,)
            flags = m.REC_REASON_TIMEOUT if i % 2 else 0
            reasons = () if flags else reasons
        out.append(m.Record(100 + i, T0 + 60 * i, 5000 + i, 1, level, flags, reasons))
    return out


def _resign(frame: bytes, mutate) -> bytes:
    """Apply `mutate` to the bytes before the CRC and recompute the CRC (MAC left as it was)."""
    body = bytearray(frame[:-4])
    mutate(body)
    return bytes(body) + crc32(bytes(body)).to_bytes(4, "big")


def build() -> list[dict]:
    """All vectors, in a stable order."""
    vs = []
    dev = Session(DEVICE_ID, KEY, DEVICE)
    hello_fields = {"fw": bytes([0, 1, 0]), "boot": 12, "uptime": 35, "cat_version": 1,
                    "low": 100, "next_rseq": 110, "status": m.ST_CLOCK_SYNCED,
                    "hello_ctr": HELLO_CTR}
    hello = dev.hello(NONCE_D, hello_fields)
    vs.append(_vector("hello", "uplink", hello, True, kind="HELLO"))
    ag = Session(DEVICE_ID, KEY, AGENT)
    ag.open(hello)
    hack = ag.hello_ack(NONCE_A, {"time": T0, "cum": 99, "window": 128, "cat_version": 1})
    vs.append(_vector("hello_ack", "downlink", hack, True, kind="HELLO_ACK"))

    up = _session(DEVICE)
    _, f = up.seal(m.RECORDS, {"low": 100, "records": _recs(1)})
    vs.append(_vector("records_1", "uplink", f, True))
    _, f10 = up.seal(m.RECORDS, {"low": 100, "records": _recs(10)}, fr.FLAG_MORE)
    vs.append(_vector("records_10", "uplink", f10, True,
                      note="the largest RECORDS frame: 10 records, 249 bytes"))
    _, f = up.seal(m.RECORDS, {"low": 120, "records": []})
    vs.append(_vector("records_empty_low", "uplink", f, True,
                      note="no records: announces the journal's low-water mark"))
    rec_unsolicited = m.Record(121, 40, 0, 1, 2, m.REC_UNSOLICITED | m.REC_CLOCK_UNSYNCED, ())
    _, f = up.seal(m.RECORDS, {"low": 121, "records": [rec_unsolicited]}, fr.FLAG_RETX)
    vs.append(_vector("records_unsolicited_unsynced", "uplink", f, True))
    scanned = [m.Record(122, T0 + 5, 0, 1, 1, 0, (), "20261118A023"),
               m.Record(123, T0 + 70, 0, 1, 4, 0, (201,), "TEST-3714-20261118-000042")]
    refs = _session(DEVICE)      # its own session: the vectors above keep their sequence numbers
    refs.tx_seq = 70
    _, f = refs.seal(m.RECORDS_REF, {"low": 122, "records": scanned})
    vs.append(_vector("records_ref", "uplink", f, True,
                      note="waiting-area records with the scanned ticket / receipt code"))
    longest = [m.Record(124 + i, T0 + 80 + i, 0, 1, 2, 0, (), "R" * m.MAX_REF)
               for i in range(2)]
    _, f = refs.seal(m.RECORDS_REF, {"low": 124, "records": longest})
    vs.append(_vector("records_ref_longest", "uplink", f, True,
                      note="two records with 64-byte references: the most that fit a frame"))
    _, f = up.seal(m.STATUS, {"status": m.ST_CLOCK_SYNCED, "ui_state": 1, "boot": 12,
                              "uptime": 3600, "low": 100, "next_rseq": 130, "unacked": 30,
                              "capacity": 50000, "cat_version": 1, "last_error": 0})
    vs.append(_vector("status", "uplink", f, True))
    _, f = up.seal(m.DACK, {"seq": 7, "bitmap": 0b101})
    vs.append(_vector("dack", "uplink", f, True))
    _, f = up.seal(m.ERROR, {"code": m.E_BAD_CONFIG, "ref_seq": 9})
    vs.append(_vector("error_signed_uplink", "uplink", f, True))

    down = _session(AGENT)
    sack = bytearray(16)
    sack[0] = 0b00010100   # rseq cum+3 and cum+5 committed
    sack[15] = 0x80        # rseq cum+128
    _, f = down.seal(m.ACK, {"cum": 109, "sack": bytes(sack)})
    vs.append(_vector("ack", "downlink", f, True))
    bitmap = bytes([0x3C, 0x42, 0x81, 0x81, 0x42, 0x3C] * 2)  # 12x... synthetic 16x6 pattern
    _, f = down.seal(m.INVITE, {"invite_id": 5001, "lifetime": 120, "staff_no": "A0107",
                                "name_w": 16, "name_h": 6, "name_bitmap": bitmap})
    vs.append(_vector("invite", "downlink", f, True))
    _, f = down.seal(m.INVITE, {"invite_id": 5002, "lifetime": 120, "staff_no": "",
                                "name_w": 0, "name_h": 0, "name_bitmap": b""})
    vs.append(_vector("invite_no_staff", "downlink", f, True))
    _, f = down.seal(m.CANCEL, {"invite_id": 5001})
    vs.append(_vector("cancel", "downlink", f, True))
    _, f = down.seal(m.TIME, {"time": T0 + 3600})
    vs.append(_vector("time", "downlink", f, True))
    blob = bytes(range(256)) * 2
    chunk = blob[220:440]
    _, f = down.seal(m.CONFIG, {"cat_version": 2, "index": 1, "count": 3, "total": len(blob),
                                "crc": crc32(blob), "data": chunk})
    vs.append(_vector("config_chunk", "downlink", f, True))
    _, f = down.seal(m.ERROR, {"code": m.E_BUSY, "ref_seq": 0})
    vs.append(_vector("error_signed_downlink", "downlink", f, True))
    f = Session(DEVICE_ID, KEY, AGENT).error_frame(m.E_UNKNOWN_DEVICE)
    vs.append(_vector("error_unsigned_unknown_device", "downlink", f, True, kind="HELLO",
                      note="before a session: unsigned, informational only"))

    # ---- invalid ----
    base = _session(DEVICE)
    base.tx_seq = 40
    _, good = base.seal(m.RECORDS, {"low": 100, "records": _recs(2)})
    bad_crc = good[:-1] + bytes([good[-1] ^ 0x01])
    vs.append(_vector("bad_crc", "uplink", bad_crc, False, "bad_crc"))
    vs.append(_vector("bad_mac", "uplink", _resign(good, lambda b: b.__setitem__(-1, b[-1] ^ 0x80)),
                      False, "bad_mac", note="last MAC byte flipped, CRC recomputed"))
    wrong_key = Session(DEVICE_ID, bytes(32), DEVICE)
    wrong_key.adopt(NONCE_D, NONCE_A)
    vs.append(_vector("wrong_key", "uplink", wrong_key.seal(m.STATUS, {
        "status": 0, "ui_state": 0, "boot": 1, "uptime": 1, "low": 1, "next_rseq": 1,
        "unacked": 0, "capacity": 50000, "cat_version": 1, "last_error": 0})[1], False, "bad_mac"))
    trunc = good[:20]
    vs.append(_vector("truncated", "uplink", _resign(trunc + b"\0\0\0\0", lambda b: None), False,
                      "truncated", note="first 20 bytes of a RECORDS frame with a fresh CRC"))
    vs.append(_vector("too_short", "uplink", b"\x01\x02\x02", False, "truncated"))
    big = bytes([1, 0x02, m.RECORDS, 250]) + bytes(8) + bytes(250) + bytes(8)
    big = big + crc32(big).to_bytes(4, "big")
    vs.append(_vector("oversize", "uplink", big, False, "oversize",
                      wire=cobs.encode(big) + b"\x00",
                      note="274 bytes: the stream decoder discards it without buffering it"))
    vs.append(_vector("unknown_version", "uplink", _resign(good, lambda b: b.__setitem__(0, 2)),
                      False, "bad_version"))
    vs.append(_vector("reserved_flag", "uplink",
                      _resign(good, lambda b: b.__setitem__(1, b[1] | 0x40)), False, "bad_flags"))
    vs.append(_vector("unknown_type", "uplink", _resign(good, lambda b: b.__setitem__(2, 0x2A)),
                      False, "bad_type"))
    vs.append(_vector("wrong_direction", "uplink",
                      _resign(good, lambda b: b.__setitem__(2, m.INVITE)), False, "wrong_direction",
                      note="a downlink type in an uplink frame"))
    trailing = good[:-4] + b"\xEE"
    trailing = trailing + crc32(trailing).to_bytes(4, "big")
    vs.append(_vector("trailing_bytes", "uplink", trailing, False, "bad_length",
                      note="a byte after the MAC that the length field does not cover"))
    vs.append(_vector("unsigned_records", "uplink",
                      fr.build(m.RECORDS, 0, DEVICE_ID, 41, m.encode(m.RECORDS, {
                          "low": 100, "records": _recs(1)})), False, "unsigned"))
    other = Session(DEVICE_ID + 1, KEY, DEVICE)
    other.adopt(NONCE_D, NONCE_A)
    vs.append(_vector("wrong_device", "uplink", other.seal(m.DACK, {"seq": 1, "bitmap": 0})[1],
                      False, "wrong_device", note="device 1002's frame on device 1001's link"))
    vs.append(_vector("replayed_sequence", "uplink", good, False, "replay", prior=[good],
                      note="the receiver already accepted this frame (prior_frames_hex)"))
    badlvl = bytearray(m.encode(m.RECORDS, {"low": 100, "records": _recs(1)}))
    badlvl[5 + 14] = 6
    s6 = _session(DEVICE)
    s6.tx_seq = 50
    f6 = fr.build(m.RECORDS, 0, DEVICE_ID, 51, bytes(badlvl), s6._key)
    vs.append(_vector("bad_level", "uplink", f6, False, "bad_payload",
                      note="level 6 does not exist: rejected, never mapped to a level"))
    s7 = _session(DEVICE)
    s7.tx_seq = 60
    ref_payload = bytearray(m.encode(m.RECORDS_REF, {"low": 122, "records": scanned[:1]}))
    bad_ref = bytearray(ref_payload)
    bad_ref[5 + m.RECORD_LEN + 1 + 8] = 0x20          # a space inside the scanned code
    vs.append(_vector("records_ref_bad_char", "uplink",
                      fr.build(m.RECORDS_REF, 0, DEVICE_ID, 61, bytes(bad_ref), s7._key), False,
                      "bad_payload", note="a reference byte outside 0x21..0x7E"))
    invited = bytearray(ref_payload)
    invited[5 + 11] = 7                               # invite_id low byte: not 0
    vs.append(_vector("records_ref_invited", "uplink",
                      fr.build(m.RECORDS_REF, 0, DEVICE_ID, 62, bytes(invited), s7._key), False,
                      "bad_payload", note="a scanned record never carries an invitation"))
    short = bytes(ref_payload[:-3])                   # reference cut short of its length byte
    vs.append(_vector("records_ref_truncated_ref", "uplink",
                      fr.build(m.RECORDS_REF, 0, DEVICE_ID, 63, short, s7._key), False,
                      "bad_payload", note="the length byte promises more reference bytes"))
    vs.append(_vector("garbage", "uplink", b"", False, "bad_cobs",
                      wire=bytes.fromhex("ff1300"), note="line noise: a code byte past the end"))
    vs += _handshake_refusals(hello, hello_fields)
    return vs


def _handshake_refusals(hello: bytes, hello_fields: dict) -> list[dict]:
    """Handshake frames a receiver must refuse (SPEC §4.2, §4.3, §5.3)."""
    vs = []
    vs.append(_vector("hello_replayed", "uplink", hello, False, "replay", prior=[hello],
                      kind="HELLO", note="the agent accepted this HELLO before "
                      "(prior_frames_hex): a replay, refused before it touches the session"))
    dev = Session(DEVICE_ID, KEY, DEVICE)
    older = dev.hello(bytes.fromhex("e1e2e3e4e5e6e7e8"),
                      dict(hello_fields, hello_ctr=HELLO_CTR - 1))
    vs.append(_vector("hello_stale_counter", "uplink", older, False, "replay", prior=[hello],
                      kind="HELLO", note="a genuine earlier HELLO (counter 36) arriving after "
                      "counter 37 was accepted"))
    k_hello = Hmac(hello_key(KEY))
    vs.append(_vector("hello_seq_nonzero", "uplink",
                      fr.build(m.HELLO, 0, DEVICE_ID, 7, m.encode(m.HELLO, dict(
                          hello_fields, nonce=NONCE_D)), k_hello),
                      False, "bad_seq", kind="HELLO",
                      note="correctly signed with K_hello, but a HELLO's seq must be 0"))
    first_form = m.encode(m.HELLO, dict(hello_fields, nonce=NONCE_D))[:28]
    vs.append(_vector("hello_without_counter", "uplink",
                      fr.build(m.HELLO, 0, DEVICE_ID, 0, first_form, k_hello),
                      False, "bad_payload", kind="HELLO",
                      note="the 28-byte HELLO of firmware before hello_ctr: the agent requires "
                      "the counter (SPEC §7)"))
    ag = Session(DEVICE_ID, KEY, AGENT)
    ag.open(hello)
    ag.hello_ack(NONCE_A, {"time": T0, "cum": 99, "window": 128, "cat_version": 1})
    payload = m.encode(m.HELLO_ACK, {"nonce": NONCE_A, "time": T0, "cum": 99, "window": 128,
                                     "cat_version": 1})
    vs.append(_vector("hello_ack_seq_nonzero", "downlink",
                      fr.build(m.HELLO_ACK, fr.FLAG_DOWN, DEVICE_ID, 1, payload, ag._key),
                      False, "bad_seq", kind="HELLO_ACK",
                      note="signed with the right K_s, but a HELLO_ACK's seq must be 0"))
    return vs


def write(vs: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.json"):
        old.unlink()
    for v in vs:
        (OUT / f"{v['name']}.json").write_text(json.dumps(v, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    vectors = build()
    write(vectors)
    print(f"wrote {len(vectors)} vectors to {OUT}", file=sys.stderr)
