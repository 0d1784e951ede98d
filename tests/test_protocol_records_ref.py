"""RECORDS_REF (0x05, SPEC §4.12): the waiting-area record variant. Its rules on CPython (the
same checks run under MicroPython and from the mpy-cross build in
test_firmware_refs_micropython.py and through the vectors), and what an agent that predates it
does: refuses the frame as `bad_type`, changes no state, and the session goes on."""
from __future__ import annotations

import pytest

from protocol import frame as fr, messages as m
from protocol.errors import ProtocolError
from protocol.session import AGENT, DEVICE, Session

KEY = bytes(range(0x40, 0x60))
ND, NA = bytes(8), bytes(range(8))


def _pair() -> tuple[Session, Session]:
    dev, ag = Session(1001, KEY, DEVICE), Session(1001, KEY, AGENT)
    dev.adopt(ND, NA)
    ag.adopt(ND, NA)
    return dev, ag


def _rec(rseq: int, ref: str | None, invite: int = 0) -> m.Record:
    return m.Record(rseq, 1795000000 + rseq, invite, 1, 2, 0, (), ref)


def test_rules_refuse_what_a_scan_can_never_be():
    ok = m.encode(m.RECORDS_REF, {"low": 1, "records": [_rec(1, "A023")]})
    assert m.decode(m.RECORDS_REF, ok)["records"][0].ref == "A023"
    for bad in ("", " A023", "A\x00", "票", "R" * 65):
        with pytest.raises(ProtocolError) as e:
            m.encode(m.RECORDS_REF, {"low": 1, "records": [_rec(1, bad)]})
        assert e.value.reason == "bad_payload", bad
    with pytest.raises(ProtocolError):             # no invitation on a scanned record
        m.encode(m.RECORDS_REF, {"low": 1, "records": [_rec(1, "A023", invite=7)]})
    with pytest.raises(ProtocolError):             # at least one record
        m.encode(m.RECORDS_REF, {"low": 1, "records": []})
    # count says 2, one entry present: refused, never half-read
    one = bytearray(ok)
    one[0] = 2
    with pytest.raises(ProtocolError) as e:
        m.decode(m.RECORDS_REF, bytes(one))
    assert e.value.reason == "bad_payload"
    # two records with 64-byte references fit a frame; three do not (R-R3)
    dev, _ = _pair()
    dev.seal(m.RECORDS_REF, {"low": 1, "records": [_rec(i, "R" * 64) for i in (1, 2)]})
    with pytest.raises(ProtocolError) as e:
        dev.seal(m.RECORDS_REF, {"low": 1, "records": [_rec(i, "R" * 64) for i in (1, 2, 3)]})
    assert e.value.reason == "oversize"


def test_an_agent_that_predates_records_ref_refuses_it_as_bad_type(monkeypatch):
    """V-3: an unknown type is rejected without ending the session; nothing is acked, so the
    device keeps the records in its journal until an agent that knows 0x05 answers."""
    dev, ag = _pair()
    _, frame = dev.seal(m.RECORDS_REF, {"low": 1, "records": [_rec(1, "A023")]})
    _, status = dev.seal(m.DACK, {"seq": 0, "bitmap": 0})
    # the agent as it was before RECORDS_REF existed
    monkeypatch.setattr(m, "NAMES", {k: v for k, v in m.NAMES.items() if k != m.RECORDS_REF})
    monkeypatch.setattr(m, "UPLINK", tuple(t for t in m.UPLINK if t != m.RECORDS_REF))
    with pytest.raises(ProtocolError) as e:
        ag.open(frame)
    assert e.value.reason == "bad_type"
    assert ag.rx.highest == 0                       # the replay window did not move
    f, t, fields = ag.open(status)                  # the session goes on
    assert t == m.DACK and f.seq == 2
    monkeypatch.undo()
    # the same frame to an agent that knows the type
    _, ag2 = _pair()
    f, t, fields = ag2.open(frame)
    assert t == m.RECORDS_REF and fields["records"][0].ref == "A023"
    assert f.flags & fr.FLAG_SIGNED
