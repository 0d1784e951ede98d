"""Power cuts on real littlefs: the firmware journal on MicroPython's own `vfs.VfsLfs2`, mounted
on a RAM flash written in Python that stops the world at the N-th block write.

Runs under MicroPython's unix port only (tests/mpy_unix.py; CPython has no littlefs). The
oracle is the one of the simulated-flash tests (tests/journal_faults.py): nothing acked comes
back, every append that returned survives until acked, at most the append in flight at the cut
is lost (or it survives whole), rseqs stay dense and never repeat, boot_count grows.

Flash model (CutFlash, the block-device protocol littlefs uses):
- `blocks` x `block_size` bytes of RAM; erased = 0xFF;
- every program (writeblocks) and every erase (ioctl 6) is a numbered block write;
- `arm(k, tear)` cuts at block write k: a program keeps `tear(n)` of its n bytes, an erase
  erases `tear(block_size)` bytes; later writes are lost. Nothing else of the run survives: a new
  VfsLfs2 is mounted on the same bytes, and the journal recovers from what littlefs gives it.

The cut raises nothing inside littlefs (unwinding through its C code mid-operation leaves it
inconsistent, and a real cut stops it dead instead): after the cut write the flash takes no
more writes, and CutJournal raises PowerCut when the journal call returns, so the program never
sees its result. The littlefs instance of that power-on is dropped; its port is stale and never
writes again, even when MicroPython's GC later finalises (syncs) its open files.
"""
import io
import os

import vfs

from firmware.board import journalfs
from firmware.journal import Journal, JournalFull, parse_seg_name
from journal_faults import Oracle, PowerCut, Rng, check, payload

MOUNT = "/lfs"
ROOT = MOUNT + "/j"


class CutFlash:
    """RAM flash with a power switch (see the module docstring). littlefs gets a `port()` per
    power-on: after a cut the old littlefs instance and its open files are gone, and whatever
    they do later (MicroPython's GC finalises unclosed files by syncing them) must not reach
    the flash, so a stale port reads but never writes."""

    def __init__(self, blocks=48, block_size=512):
        self.blocks = blocks
        self.block_size = block_size
        # a BytesIO, not a bytearray: seek + readinto copy a block without allocating (stale
        # ports are read from GC finalisers, where the heap is locked)
        self.io = io.BytesIO(b"\xff" * (blocks * block_size))
        self._erased = b"\xff" * block_size
        self.writes = 0          # block writes so far (programs + erases)
        self.cut_at = -1
        self.tear = None
        self.dead = False
        self.gen = 0             # power-on count; ports of older generations are stale
        self.record = False
        self.kinds = []          # "prog" / "erase" per block write, when recording

    def arm(self, k, tear=None):
        self.cut_at = k
        self.tear = tear

    def port(self):
        """The block device littlefs mounts during this power-on."""
        return _Port(self, self.gen)

    def power_on(self):
        """Power back: the flash keeps its bytes; the writes counter keeps counting."""
        self.dead = False
        self.cut_at = -1
        self.gen += 1

    def image(self):
        """The flash content (bytes)."""
        return self.io.getvalue()

    def poke(self, a, data):
        """Overwrite bytes at `a` (damage, as flash rot or a stray write would)."""
        self.io.seek(a)
        self.io.write(data)

    def write(self, kind, a, data):
        """One block write of `data` at byte `a` (data None: an erase of one block). The cut
        write lands torn; after it nothing lands. No exception is raised in here: unwinding
        through littlefs' C code mid-operation leaves it inconsistent (a real cut stops it
        dead instead). CutJournal raises PowerCut when the operation returns."""
        if self.dead:
            return
        k = self.writes
        self.writes += 1
        if self.record:
            self.kinds.append(kind)
        n = self.block_size if data is None else len(data)
        keep = n
        if k == self.cut_at:
            self.dead = True
            keep = self.tear(n) if self.tear is not None else 0
        self.io.seek(a)
        self.io.write(memoryview(self._erased if data is None else data)[:keep])


class CutJournal:
    """A Journal whose calls end in PowerCut once the flash died during them: what the call
    did after the cut never reached the flash, and its result is never seen by the program."""

    def __init__(self, flash, *args, **kw):
        self._flash = flash
        self._j = self._call(Journal, *args, **kw)

    def _call(self, fn, *args, **kw):
        try:
            r = fn(*args, **kw)
        except Exception:
            if self._flash.dead:
                raise PowerCut()
            raise
        if self._flash.dead:
            raise PowerCut()
        return r

    def append(self, payload=None):
        return self._call(self._j.append, payload)

    def ack(self, cum):
        return self._call(self._j.ack, cum)

    def read(self, rseq):
        return self._call(self._j.read, rseq)

    def close(self):
        return self._call(self._j.close)

    def iter_unacked(self, start=None):
        it = self._j.iter_unacked(start)
        while True:
            try:
                x = self._call(next, it)
            except StopIteration:
                return
            yield x

    def low(self):
        return self._j.low()

    def unacked(self):
        return self._j.unacked()

    def __getattr__(self, name):
        return getattr(self._j, name)


class _Port:
    """One power-on's block device over a CutFlash (extended block-device protocol)."""

    def __init__(self, flash, gen):
        self.flash = flash
        self.gen = gen

    def readblocks(self, block, buf, off=0):
        f = self.flash
        f.io.seek(block * f.block_size + off)
        f.io.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        f = self.flash
        if f.gen == self.gen:
            f.write("prog", block * f.block_size + off, buf)

    def ioctl(self, op, arg):
        f = self.flash
        if op == 4:
            return f.blocks
        if op == 5:
            return f.block_size
        if op == 6 and f.gen == self.gen:
            f.write("erase", arg * f.block_size, None)
        return 0


def unmount():
    try:
        vfs.umount(MOUNT)
    except OSError:
        pass


def mount(flash):
    """Mount (formatting a blank flash) with the firmware's own code."""
    unmount()
    try:
        formatted = journalfs.mount(flash.port(), MOUNT)
    except OSError:
        if flash.dead:
            raise PowerCut()
        raise
    if flash.dead:
        raise PowerCut()
    return formatted


def _segments():
    return sorted(parse_seg_name(n) for n in os.listdir(ROOT) if parse_seg_name(n) > 0)


def open_journal(flash, orc, psize, segrec, cap):
    j = CutJournal(flash, ROOT, psize, capacity=cap, segment_records=segrec)
    orc.opened(j)
    firsts = _segments()
    for i in range(len(firsts) - 1):
        check(firsts[i + 1] - 1 > j.acked, "fully acked segment %d left" % firsts[i])
    return j


def scenario(flash, orc, psize, segrec, cap):
    """Appends over several segment rolls, acks that delete segments, a clean reboot, an ack of
    everything (no segment left), appends again."""
    mount(flash)
    n = 0
    j = open_journal(flash, orc, psize, segrec, cap)
    for _ in range(10):
        orc.append(j, payload(n, psize))
        n += 1
    orc.ack(j, 3)
    for _ in range(5):
        orc.append(j, payload(n, psize))
        n += 1
    orc.ack(j, 9)
    j.close()
    unmount()
    mount(flash)
    j = open_journal(flash, orc, psize, segrec, cap)
    orc.append(j, payload(n, psize))
    n += 1
    orc.ack(j, j.next_rseq - 1)
    for _ in range(3):
        orc.append(j, payload(n, psize))
        n += 1
    j.close()
    unmount()


def after_cut(flash, orc, psize, segrec, cap):
    """Power back on: mount, recover, check; keep working; clean reboot; check again."""
    flash.power_on()
    mount(flash)
    j = open_journal(flash, orc, psize, segrec, cap)
    for i in range(5):
        orc.append(j, payload(1000 + i, psize))
    orc.ack(j, j.acked + (j.next_rseq - j.acked) // 2)
    j.close()
    unmount()
    mount(flash)
    open_journal(flash, orc, psize, segrec, cap).close()
    unmount()


TEARS = {
    "prog": (lambda n: 0, lambda n: n // 2, lambda n: n - 1, lambda n: n),
    "erase": (lambda n: n // 2, lambda n: n),
}


def formatted(blocks, block_size):
    """A CutFlash holding a freshly formatted littlefs (the journal's promises start there; a
    cut during the very first format leaves a partition the firmware refuses, see
    test_firmware_littlefs.py)."""
    flash = CutFlash(blocks, block_size)
    mount(flash)
    unmount()
    return flash


def every_cut(blocks=48, block_size=512, psize=24, segrec=4, cap=40):
    """Cut at every block write of scenario() (each program torn four ways, each erase two
    ways), recover on littlefs and check. Returns (block writes in the scenario, cuts tried)."""
    flash = formatted(blocks, block_size)
    base = flash.writes
    flash.record = True
    scenario(flash, Oracle(), psize, segrec, cap)
    kinds = flash.kinds
    tried = 0
    for k in range(len(kinds)):
        for tear in TEARS[kinds[k]]:
            flash = formatted(blocks, block_size)
            flash.arm(base + k, tear)
            orc = Oracle()
            try:
                scenario(flash, orc, psize, segrec, cap)
                raise AssertionError("cut %d never happened" % k)
            except PowerCut:
                pass
            try:
                after_cut(flash, orc, psize, segrec, cap)
            except Exception as e:
                raise AssertionError("cut at block write %d (%s): %s %s"
                                     % (k, kinds[k], type(e).__name__, e))
            tried += 1
    return len(kinds), tried


def life(seed, presses, blocks=64, block_size=512, psize=24, segrec=8, cap=64, max_gap=40):
    """A device's life on littlefs: random appends, acks and clean reboots, with the power cut
    at a random block write (randomly torn) every few dozen writes, recovery included. Runs
    until `presses` appends have returned. Returns the Oracle (with .cuts)."""
    rng = Rng(seed)
    flash = formatted(blocks, block_size)
    orc = Oracle()
    n = 0
    cuts = 0
    while orc.accepted < presses:
        flash.arm(flash.writes + 1 + rng.below(max_gap), lambda k: rng.below(k + 1))
        try:
            mount(flash)
            j = open_journal(flash, orc, psize, segrec, cap)
            while True:
                x = rng.below(100)
                if x < 65:
                    orc.append(j, payload(n, psize))
                    n += 1
                elif x < 95:
                    lo = j.acked - 2 if j.acked > 2 else 0
                    orc.ack(j, lo + rng.below(j.next_rseq - lo))
                else:
                    j.close()
                    unmount()
                    mount(flash)
                    j = open_journal(flash, orc, psize, segrec, cap)
        except PowerCut:
            flash.power_on()
            cuts += 1
    mount(flash)
    open_journal(flash, orc, psize, segrec, cap).close()
    unmount()
    orc.cuts = cuts
    return orc
