"""The device's HELLO counter (firmware/hello_counter.py, SPEC §4.2 `hello_ctr`): real files,
power cuts at every boundary on the simulated flash (tests/journal_faults.py), and the same
under the real MicroPython runtime. mpy-cross is covered by tests/test_mpy_cross.py."""
from __future__ import annotations

import binascii
import struct
from pathlib import Path

from firmware.hello_counter import BLOCK, HelloCounter
from journal_faults import FlashFS
import hello_counter_faults as hcf

HERE = Path(__file__).resolve().parent


def _ceiling(path: Path) -> int:
    raw = path.read_bytes()
    assert len(raw) == 12 and raw[:4] == b"HCH1"
    assert struct.unpack_from("<I", raw, 8)[0] == binascii.crc32(raw[:8])
    return struct.unpack_from("<I", raw, 4)[0]


def test_counter_grows_across_reboots_and_writes_once_a_block(tmp_path):
    p = tmp_path / "hello.ctr"
    c = HelloCounter(str(p))
    assert not p.exists()                       # opening writes nothing
    assert [c.next() for _ in range(3)] == [1, 2, 3]
    assert _ceiling(p) == 1 + BLOCK             # reserved before 1 was handed out
    seen = [1, 2, 3]
    for _ in range(3):                          # reboots: each starts above the reservation
        c = HelloCounter(str(p))
        seen += [c.next() for _ in range(BLOCK + 1)]
    assert seen == sorted(set(seen))
    assert not (tmp_path / "hello.ctr.tmp").exists()


def test_flash_writes_per_hello():
    fs = FlashFS()
    fs.record = True
    c = HelloCounter("/hello.ctr", fs=fs, block=16)
    for _ in range(64):
        c.next()
    assert fs.kinds.count("rename") == 4        # one reservation per 16 HELLOs


def test_damaged_file_restarts_from_one_and_says_so(tmp_path):
    p = tmp_path / "hello.ctr"
    c = HelloCounter(str(p))
    for _ in range(40):
        c.next()
    raw = bytearray(p.read_bytes())
    raw[5] ^= 0x10                               # flash rot in the ceiling
    p.write_bytes(bytes(raw))
    c = HelloCounter(str(p))
    assert c.damaged and c.next() == 1          # refused by the agent until re-provisioned
    assert HelloCounter(str(p)).damaged is False     # rewritten by that HELLO
    # a missing file is a new key's fresh start, not damage
    p.unlink()
    c = HelloCounter(str(p))
    assert not c.damaged and c.next() == 1


def test_a_complete_temp_file_is_used(tmp_path):
    """A cut between writing the temp file and the rename: the temp's ceiling is used (it is
    the newer one; nothing at or above the old ceiling was handed out yet)."""
    p = tmp_path / "hello.ctr"
    c = HelloCounter(str(p), block=4)
    for _ in range(4):
        c.next()                                 # ceiling 5 on flash
    tmp = tmp_path / "hello.ctr.tmp"
    body = b"HCH1" + struct.pack("<I", 9)
    tmp.write_bytes(body + struct.pack("<I", binascii.crc32(body)))
    assert HelloCounter(str(p), block=4).next() == 9
    tmp.write_bytes(b"HCH1\x01")                 # a torn temp file is ignored
    p.write_bytes(b"garbage")
    c = HelloCounter(str(p), block=4)
    assert c.damaged and c.next() == 1


def test_raise_to_puts_the_next_value_above_the_agents_floor(tmp_path):
    p = tmp_path / "hello.ctr"
    assert HelloCounter(str(p)).raise_to(500) == 501
    c = HelloCounter(str(p))
    assert c.next() == 501
    assert c.raise_to(10) == 502                 # never lowers
    assert HelloCounter(str(p)).next() > 501


def test_power_cut_at_every_boundary():
    boundaries, runs = hcf.exhaustive(block=3)
    assert boundaries >= 15 and runs > boundaries


def test_power_cuts_micropython(micropython):
    files = {"/lib/journal_faults.py": (HERE / "journal_faults.py").read_text(),
             "/lib/hello_counter_faults.py": (HERE / "hello_counter_faults.py").read_text()}
    out = micropython.run(
        "import hello_counter_faults as hcf\n"
        "from firmware.hello_counter import HelloCounter\n"
        "b, runs = hcf.exhaustive(block=3)\n"
        "c = HelloCounter('/hc.ctr')\n"
        "v = [c.next() for _ in range(20)]\n"
        "c = HelloCounter('/hc.ctr')\n"
        "w = c.next()\n"
        "assert v == list(range(1, 21)) and w > 20, (v, w)\n"
        "print('CUTS', b, runs, w)\n",
        packages=("firmware", "protocol"), files=files)
    b, runs, w = (int(x) for x in out.split("CUTS", 1)[1].split()[:3])
    assert b >= 15 and runs > b and w == 33      # two blocks of 16 reserved before the reboot
