"""Waiting-area records (RECORDS_REF, SPEC §4.12) on the device's runtime: the scanner, the
journal payload with the reference, and the lossy RL1 run with a reboot, under the real
MicroPython runtime — once from source and once from the .mpy files mpy-cross makes for the
device (tools/firmware_build.py), so what the board loads is what was tested."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FILES = {f"/lib/{n}": (HERE / n).read_text()
         for n in ("fw_traces.py", "fw_agent.py", "fw_rig.py")}
PACKAGES = ("protocol", "firmware")
pytestmark = pytest.mark.timeout(180)

RUN = """
import os
os.mkdir('/w')
from protocol import messages as m
from protocol.errors import ProtocolError
from firmware import ratings
# the codec: a scanned record round-trips, a bad reference is refused
recs = [m.Record(5, 1795000000, 0, 1, 4, 0, (201,), 'TEST-3714-20261118-000042'),
        m.Record(6, 1795000060, 0, 1, 1, 0, (), 'R' * 64)]
p = m.encode(m.RECORDS_REF, {'low': 5, 'records': recs})
got = m.decode(m.RECORDS_REF, p)['records']
assert [r.to_dict() for r in got] == [r.to_dict() for r in recs], got
for bad in ('', 'A B', 'R' * 65):
    try:
        m.check_ref(bad)
        raise AssertionError('accepted %r' % bad)
    except ProtocolError as e:
        assert e.reason == 'bad_payload'
# the journal payload keeps the reference
buf = bytearray(ratings.REF_PAYLOAD_SIZE)
ref = bytearray(b'A023' + bytes(60))
ratings.pack_into(buf, 9, 0, 40, 0, 1, 2, m.REC_CLOCK_UNSYNCED, 0, 3)
ratings.pack_ref_into(buf, ref, 4)
class C:
    synced = False
r = ratings.to_record(buf, 3, C())
assert (r.rseq, r.level, r.ref, r.time) == (9, 2, 'A023', 40), r
# scan flow traces, then a lossy link with a reboot: every scanned rating exactly once
import fw_traces
fw_traces.s_scan_rate('/w/trace1')
fw_traces.s_scan_unreadable('/w/trace2')
from fw_rig import Rig
from fw_agent import Faults
bad = Faults(loss=0.2, dup=0.1, reorder=0.3, corrupt=0.05)
os.mkdir('/w/rig')
rig = Rig('/w/rig', up=bad, down=bad, seed=7, role='waiting_area')
codes = {}
for i in range(12):
    code = 'T%08d' % i if i % 2 else 'TEST-3714-20261118-%06d' % i
    rig.scan(code)
    rig.rate(1 + i % 3)
    rig.run(900)
    codes[rig.journalled()] = code
    if i == 6:
        rig.reboot()
n = rig.journalled()
rig.run_until(lambda: rig.app.journal.unacked() == 0 and len(rig.agent.stored) == n)
assert sorted(rig.agent.stored) == list(range(1, n + 1))
assert all(c == 1 for c in rig.agent.stored.values())
for k in codes:
    assert rig.agent.records[k].ref == codes[k], (k, rig.agent.records[k])
print('refs exactly once', n, len(rig.agent.ref_frames))
"""


def _check(out: str) -> None:
    line = [x for x in out.splitlines() if x.startswith("refs exactly once")]
    assert line, out
    _, _, _, n, frames = line[0].split()
    assert int(n) == 12 and int(frames) >= 1


def test_refs_micropython_from_source(micropython):
    _check(micropython.run(RUN, packages=PACKAGES, files=FILES))


def test_refs_micropython_from_mpy_cross_build(micropython, tmp_path):
    from tools.firmware_build import build
    out = tmp_path / "build"
    build(out, with_phrases=False)
    # only compiled modules: an import that fell back to source would fail here
    assert not list((out / "protocol").rglob("*.py"))
    assert (out / "protocol" / "messages.mpy").exists()
    assert (out / "firmware" / "board" / "gm65.mpy").exists()
    _check(micropython.run(RUN, packages=PACKAGES, files=FILES, root=out))
