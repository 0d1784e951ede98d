"""The journal on real littlefs (MicroPython's `vfs.VfsLfs2`, unix port): power cut at every
block write of appends, acks and segment rolls, torn four ways; a long life of random cuts; a
full journal and a full partition refuse visibly and lose nothing; a damaged filesystem is never
reformatted — with the firmware's own mount code (firmware/board/journalfs.py) and app.

The cut counts are printed (pytest -s, or the captured output of a failure)."""
from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FILES = {"/lib/" + n: (HERE / n).read_text()
         for n in ("journal_faults.py", "lfs_faults.py", "fw_agent.py", "fw_rig.py")}
PACKAGES = ("firmware", "protocol")
pytestmark = pytest.mark.timeout(240)


def _figures(out: str, tag: str) -> list[int]:
    return [int(x) for x in out.split(tag + " ", 1)[1].split("\n", 1)[0].split()]


EVERY_CUT = """
import lfs_faults as lf
total_writes = total_cuts = 0
# (blocks, block size, records per segment): small blocks compact metadata often; segments of
# 4 records stay inline in littlefs metadata, of 16 records get data blocks of their own
for blocks, bs, segrec in ((48, 512, 4), (64, 512, 16), (24, 4096, 4)):
    w, c = lf.every_cut(blocks, bs, segrec=segrec)
    print('geometry', blocks, bs, segrec, 'block writes', w, 'cuts', c)
    total_writes += w
    total_cuts += c
print('CUTS', total_writes, total_cuts)
"""


def test_power_cut_at_every_block_write(micropython_unix):
    out = micropython_unix.run(EVERY_CUT, packages=PACKAGES, files=FILES, timeout=200)
    writes, cuts = _figures(out, "CUTS")
    print(f"\nlittlefs: {cuts} power cuts tried at {writes} block writes "
          "(each program torn at 0, n/2, n-1 and n bytes; each erase at half and whole)")
    for line in out.splitlines():
        if line.startswith("geometry"):
            print("  " + line)
    assert writes >= 250 and cuts >= 900


LIFE = """
import lfs_faults as lf
acc = cuts = 0
for seed in (1, 2, 3):
    o = lf.life(seed, 400)
    acc += o.accepted
    cuts += o.cuts
print('LIFE', acc, cuts)
"""


def test_power_cuts_over_a_long_life(micropython_unix):
    out = micropython_unix.run(LIFE, packages=PACKAGES, files=FILES, timeout=200)
    accepted, cuts = _figures(out, "LIFE")
    print(f"\nlittlefs life: {accepted} appends accepted through {cuts} random power cuts")
    assert accepted >= 1200 and cuts >= 300


FULL = """
import os
import lfs_faults as lf
from fw_rig import Rig
from firmware.app import open_journal
from protocol import messages as m
os.mkdir('/r')
flash = lf.formatted(64, 512)
lf.mount(flash)
j, err = open_journal(lf.ROOT, 5)
assert err is None
rig = Rig('/r', journal=j, capacity=5)
rig.agent_on = False                      # no agent: nothing is acked
for i in range(7):
    rig.rate(1 + i % 3)
    rig.run(1100)
app = rig.app
assert rig.journalled() == 5, rig.journalled()
# paused after the rating that filled it; the presses after it were not taken (not refused
# one by one: a paused screen takes no rating)
assert app.display.screen == 'paused' and app.flow.paused, app.display.screen
assert app.status_fields(rig.now)['status'] & m.ST_JOURNAL_FULL
rig.agent_on = True                       # the agent acks: room again, rating again
rig.run_until(lambda: app.journal.unacked() == 0 and app.display.screen == 'idle', 30000)
rig.rate(2)
rig.run_until(lambda: 6 in rig.agent.stored, 20000)
assert sorted(rig.agent.stored) == [1, 2, 3, 4, 5, 6]
print('FULL ok')
"""


def test_full_journal_refuses_visibly(micropython_unix):
    out = micropython_unix.run(FULL, packages=PACKAGES, files=FILES)
    assert "FULL ok" in out


NOSPACE = """
import os
import lfs_faults as lf
from fw_rig import Rig
from firmware.app import open_journal
from journal_faults import payload
os.mkdir('/r')
flash = lf.formatted(16, 512)             # 8 KB: littlefs fills long before 50,000 records
lf.mount(flash)
j, err = open_journal(lf.ROOT, 50000)
rig = Rig('/r', journal=j)
rig.agent_on = False
app = rig.app
presses = 0
while app.refused == 0:
    rig.rate(1 + presses % 3)
    rig.run(1100)
    presses += 1
    assert presses < 2000, 'never refused'
n = rig.journalled()
assert app.display.screen == 'paused', app.display.screen
print('NOSPACE accepted', n, 'refused', app.refused)
# power cycle: every accepted record is on flash, none more
j.close()
lf.unmount()
lf.mount(flash)
j2, err = open_journal(lf.ROOT, 50000)
assert err is None, err
assert [r for r, _ in j2.iter_unacked()] == list(range(1, n + 1))
rig.app = None
rig2 = Rig('/r', journal=j2)
rig2.run_until(lambda: j2.unacked() == 0 and len(rig2.agent.stored) == n, 60000)
rig2.run_until(lambda: rig2.app.display.screen == 'idle', 5000)
rig2.rate(3)
rig2.run_until(lambda: n + 1 in rig2.agent.stored, 20000)
print('NOSPACE drained', sorted(rig2.agent.stored) == list(range(1, n + 2)))
"""


def test_full_partition_refuses_visibly_and_loses_nothing(micropython_unix):
    out = micropython_unix.run(NOSPACE, packages=PACKAGES, files=FILES)
    print("\n" + "\n".join(l for l in out.splitlines() if l.startswith("NOSPACE")))
    assert "NOSPACE drained True" in out


NEVER_REFORMAT = """
import os, vfs
import lfs_faults as lf
from firmware.board import journalfs
from firmware.app import open_journal
from journal_faults import payload
# blank: formatted once; afterwards mounted as it is
flash = lf.CutFlash(32, 512)
assert journalfs.is_blank(flash.port())
assert journalfs.mount(flash.port(), lf.MOUNT) is True
j, err = open_journal(lf.ROOT, 100)
for i in range(20):
    j.append(payload(i, 24))
j.close()
lf.unmount()
assert journalfs.mount(flash.port(), lf.MOUNT) is False
lf.unmount()
# damaged superblocks: refused, every byte left as it was (twice: no second-boot reformat)
bad = lf.CutFlash(32, 512)
bad.poke(0, flash.image())
bad.poke(8, b'\\x00' * 600)                 # across block 0 into block 1
before = bad.image()
for _ in range(2):
    try:
        journalfs.mount(bad.port(), lf.MOUNT)
        raise AssertionError('damaged filesystem mounted')
    except OSError:
        pass
assert bad.image() == before
# the first format cut halfway: not blank any more, not mountable: refused, not reformatted
cut = lf.CutFlash(32, 512)
cut.arm(1, lambda n: n // 2)
try:
    journalfs.mount(cut.port(), lf.MOUNT)
except BaseException:
    pass
cut.power_on()
before = cut.image()
try:
    journalfs.mount(cut.port(), lf.MOUNT)
    refused = False
except OSError:
    refused = True
assert cut.image() == before
print('FORMATCUT refused', refused)
# a record damaged inside a mounted filesystem: the journal is corrupt, the app reports it,
# the files stay as they are
lf.mount(flash)
f = open(lf.ROOT + '/0000000001.seg', 'r+b')
f.seek(3 * 32 + 6)
f.write(b'X')
f.close()
img = flash.image()
for _ in range(2):
    j, err = open_journal(lf.ROOT, 100)
    assert j is None and err is not None, (j, err)
lf.unmount()
assert flash.image() == img
print('NEVER ok')
"""


def test_damaged_filesystem_is_never_reformatted(micropython_unix):
    out = micropython_unix.run(NEVER_REFORMAT, packages=PACKAGES, files=FILES)
    assert "NEVER ok" in out
    print("\n" + "\n".join(l for l in out.splitlines() if l.startswith("FORMATCUT")))
