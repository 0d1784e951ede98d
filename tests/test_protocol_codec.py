"""Frames and messages: round trips for every message type, accept rules, and a decoder fuzz
asserting that nothing but ProtocolError ever escapes."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from protocol import cobs, frame as fr, messages as m
from protocol.errors import ProtocolError, REASONS
from protocol.session import AGENT, DEVICE, Session

KEY = bytes(range(0x40, 0x60))
u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)

reasons = st.lists(st.integers(1, 0xFFFF), max_size=3).map(tuple)
records = st.builds(m.Record, u32, u32, u32, u16, st.integers(1, 5),
                    st.integers(0, 0x1F), reasons)

ref_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                   max_size=m.MAX_REF)
ref_records = st.builds(m.Record, u32, u32, st.just(0), u16, st.integers(1, 5),
                        st.integers(0, 0x1F), reasons, ref_text)


@st.composite
def invite(draw):
    w = draw(st.integers(0, m.MAX_NAME_W))
    h = draw(st.integers(1, m.MAX_NAME_H)) if w else 0
    return {"invite_id": draw(st.integers(1, 0xFFFFFFFF)), "lifetime": draw(u16),
            "staff_no": draw(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                                     max_size=m.MAX_STAFF_NO)),
            "name_w": w, "name_h": h,
            "name_bitmap": draw(st.binary(min_size=((w + 7) // 8) * h, max_size=((w + 7) // 8) * h))}


PAYLOADS = {
    m.HELLO: st.fixed_dictionaries({"nonce": st.binary(min_size=8, max_size=8),
                                    "fw": st.binary(min_size=3, max_size=3), "boot": u16,
                                    "uptime": u32, "cat_version": u16, "low": u32,
                                    "next_rseq": u32, "status": u8, "hello_ctr": u32}),
    m.RECORDS: st.fixed_dictionaries({"low": u32, "records": st.lists(records, max_size=10)}),
    m.RECORDS_REF: st.fixed_dictionaries({"low": u32, "records": st.lists(ref_records, min_size=1,
                                                                           max_size=2)}),
    m.STATUS: st.fixed_dictionaries({"status": u8, "ui_state": u8, "boot": u16, "uptime": u32,
                                     "low": u32, "next_rseq": u32, "unacked": u32,
                                     "capacity": u32, "cat_version": u16, "last_error": u8}),
    m.DACK: st.fixed_dictionaries({"seq": u32, "bitmap": u32}),
    m.HELLO_ACK: st.fixed_dictionaries({"nonce": st.binary(min_size=8, max_size=8), "time": u32,
                                        "cum": u32, "window": st.integers(1, 0xFFFF),
                                        "cat_version": u16}),
    m.ACK: st.fixed_dictionaries({"cum": u32, "sack": st.binary(min_size=16, max_size=16)}),
    m.INVITE: invite(),
    m.CANCEL: st.fixed_dictionaries({"invite_id": u32}),
    m.TIME: st.fixed_dictionaries({"time": u32}),
    m.CONFIG: st.integers(1, 255).flatmap(lambda count: st.fixed_dictionaries({
        "cat_version": u16, "index": st.integers(0, count - 1), "count": st.just(count),
        "total": u16, "crc": u32, "data": st.binary(max_size=m.CONFIG_CHUNK)})),
    m.ERROR: st.fixed_dictionaries({"code": st.integers(1, 255), "ref_seq": u32}),
}


def test_every_message_type_has_a_strategy():
    assert set(PAYLOADS) == set(m.NAMES)


@pytest.mark.parametrize("type", sorted(PAYLOADS), ids=lambda t: m.NAMES[t])
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_payload_round_trip(type, data):
    fields = data.draw(PAYLOADS[type])
    payload = m.encode(type, fields)
    assert m.decode(type, payload) == fields
    # Appended bytes are an extension area: ignored, never an error (SPEC §Versioning).
    if type not in (m.CONFIG,) and len(payload) < 220:
        assert m.decode(type, payload + b"\xAB\xCD") == fields


@pytest.mark.parametrize("type", [t for t in sorted(PAYLOADS) if t not in (m.HELLO, m.HELLO_ACK)],
                         ids=lambda t: m.NAMES[t])
@settings(max_examples=40)
@given(data=st.data())
def test_session_frame_round_trip(type, data):
    fields = data.draw(PAYLOADS[type])
    uplink = type in m.UPLINK
    tx = Session(1001, KEY, DEVICE if uplink else AGENT)
    rx = Session(1001, KEY, AGENT if uplink else DEVICE)
    tx.adopt(b"n" * 8, b"a" * 8)
    rx.adopt(b"n" * 8, b"a" * 8)
    seq, frame = tx.seal(type, fields)
    assert len(frame) <= fr.MAX_FRAME
    wire = cobs.wire(frame)
    (got,) = cobs.StreamDecoder().feed(wire)
    f, t, decoded = rx.open(got)
    assert (t, f.seq, decoded) == (type, seq, fields)


def test_handshake_and_stale_hello_ack():
    dev, ag = Session(7, KEY, DEVICE), Session(7, KEY, AGENT)
    hello_fields = {"fw": b"\x00\x01\x00", "boot": 1, "uptime": 2, "cat_version": 1, "low": 1,
                    "next_rseq": 1, "status": 0, "hello_ctr": 1}
    ag.open(dev.hello(b"1" * 8, hello_fields))
    old_ack = ag.hello_ack(b"A" * 8, {"time": 1, "cum": 0, "window": 128, "cat_version": 1})
    hello_fields["hello_ctr"] = 2
    ag.open(dev.hello(b"2" * 8, hello_fields))   # device reconnects: new nonce, next counter
    new_ack = ag.hello_ack(b"B" * 8, {"time": 1, "cum": 0, "window": 128, "cat_version": 1})
    with pytest.raises(ProtocolError) as e:
        dev.open(old_ack)          # answers the earlier HELLO: its key is different
    assert e.value.reason == "bad_mac"
    dev.open(new_ack)
    assert dev.established and ag.established
    _, frame = dev.seal(m.DACK, {"seq": 0, "bitmap": 0})
    ag.open(frame)
    with pytest.raises(ProtocolError) as e:
        dev.open(new_ack)
    assert e.value.reason == "replay"


def test_downlink_frame_cannot_be_reflected_or_used_before_session():
    dev, ag = Session(7, KEY, DEVICE), Session(7, KEY, AGENT)
    dev.adopt(b"1" * 8, b"2" * 8)
    _, up = dev.seal(m.DACK, {"seq": 0, "bitmap": 0})
    with pytest.raises(ProtocolError) as e:
        ag.open(up)
    assert e.value.reason == "no_session"
    ag.adopt(b"1" * 8, b"2" * 8)
    with pytest.raises(ProtocolError) as e:
        dev.open(up)               # the device's own frame sent back to it
    assert e.value.reason == "wrong_direction"


def test_unsigned_error_is_informational_only():
    ag, dev = Session(7, KEY, AGENT), Session(7, KEY, DEVICE)
    f, t, fields = dev.open(ag.error_frame(m.E_UNKNOWN_DEVICE))
    assert t == m.ERROR and f.mac is None and not dev.established
    forged = fr.build(m.ERROR, fr.FLAG_DOWN, 7, 0, m.encode(m.ERROR, {"code": m.E_BUSY, "ref_seq": 0}))
    with pytest.raises(ProtocolError) as e:
        dev.open(forged)
    assert e.value.reason == "unsigned"


def _sessions():
    dev, ag = Session(1001, KEY, DEVICE), Session(1001, KEY, AGENT)
    dev.adopt(b"n" * 8, b"a" * 8)
    ag.adopt(b"n" * 8, b"a" * 8)
    return dev, ag


def _try_open(sess, data):
    try:
        sess.open(data)
    except ProtocolError as e:
        assert e.reason in REASONS
        return e.reason
    return "ok"


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_fuzz_random_frames_raise_only_protocol_error(data):
    dev, ag = _sessions()
    _try_open(ag, data)
    _try_open(dev, data)
    for item in cobs.StreamDecoder().feed(data):
        assert isinstance(item, (bytes, ProtocolError))


def test_fuzz_mutated_frames_raise_only_protocol_error():
    rng = random.Random(1234)
    dev, ag = _sessions()
    good = []
    for i in range(20):
        recs = [m.Record(i * 10 + j, 1795000000, 0, 1, 1 + j % 5, 0, ()) for j in range(i % 11)]
        good.append(dev.seal(m.RECORDS, {"low": 1, "records": recs})[1])
    seen = set()
    for n in range(6000):
        f = bytearray(rng.choice(good))
        op = rng.randrange(5)
        if op == 0:
            f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
        elif op == 1:
            del f[rng.randrange(len(f)):]
        elif op == 2:
            f += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif op == 3:
            i = rng.randrange(len(f))
            f[i] = rng.randrange(256)
            body = bytes(f[:-4])       # keep the CRC right so the deeper checks are reached
            f = bytearray(body + fr.crc32(body).to_bytes(4, "big"))
        else:
            f = bytearray(rng.randbytes(rng.randrange(0, 260)))
        _, fresh_ag = _sessions()
        seen.add(_try_open(fresh_ag, bytes(f)))
    # The mutations reach every layer of the accept rules, not just the CRC.
    assert {"bad_crc", "truncated", "bad_mac"} <= seen


def test_frame_limit_enforced_on_build():
    dev, _ = _sessions()
    with pytest.raises(ProtocolError) as e:
        dev.seal(m.CONFIG, {"cat_version": 1, "index": 0, "count": 1, "total": 0, "crc": 0,
                            "data": bytes(m.CONFIG_CHUNK + 1)})
    assert e.value.reason in ("bad_payload", "oversize")
    recs = [m.Record(i, 0, 0, 1, 1) for i in range(11)]
    with pytest.raises(ProtocolError):
        m.encode(m.RECORDS, {"low": 0, "records": recs})


def test_record_validation():
    with pytest.raises(ProtocolError):
        m.Record(1, 0, 0, 1, 0).pack()          # level 0 is not a rating
    bad = bytearray(m.Record(1, 0, 0, 1, 4, 0, (201,)).pack())
    bad[16:18] = b"\x00\x00"
    bad[18:20] = b"\x00\xc9"                   # reason in slot 2 with slot 1 empty
    with pytest.raises(ProtocolError):
        m.unpack_record(bytes(bad))
