"""Simulated flash with power cuts, and the power-cut harness for firmware/journal.py.

Runs under CPython and under the MicroPython runtime (tests/mpy_runtime.py), so it sticks to the
MicroPython subset: no typing, no dataclasses, no `random` (a small xorshift PRNG instead).

Flash model (FlashFS, the journal's `fs` interface):
- every file has the bytes the program sees and the bytes that survive a power cut (durable);
- flush() and close() make a file's current bytes durable; unflushed writes are lost at a cut;
- a cut *during* a write persists a chosen prefix of that write (a torn record);
- creating a file, rename, remove and mkdir are atomic and durable at once (littlefs commits
  metadata immediately; rename is either old or new).

Every write, flush, close of a writable file, create, rename, remove and mkdir is a numbered
boundary. `arm(k, prefix)` stops the world at boundary k: the operation does not happen (a write
leaves `prefix(n)` of its n bytes), and it and every later operation raise PowerCut, which the
journal does not catch (it is a BaseException). `reboot()` drops everything not durable.
"""
import struct

from firmware.journal import Journal, JournalFull, parse_seg_name


class PowerCut(BaseException):
    """The power went off: the world stopped at this operation."""


def _enoent(path):
    return OSError(2, "no such file: " + path)


class Rng:
    """xorshift32: the same sequence on CPython and MicroPython."""

    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def below(self, n):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s % n if n > 0 else 0


class _Node:
    def __init__(self):
        self.data = bytearray()     # what the program sees
        self.durable = bytearray()  # what survives a cut


class _File:
    def __init__(self, fs, node, readable, writable, append):
        self.fs = fs
        self.node = node
        self.gen = fs.gen
        self.readable = readable
        self.writable = writable
        self.append = append
        self.pos = 0
        self.closed = False

    def _live(self):
        if self.fs.dead:
            raise PowerCut()
        if self.closed or self.gen != self.fs.gen:
            raise OSError(9, "file closed")

    def write(self, buf):
        self._live()
        if not self.writable:
            raise OSError(9, "not open for writing")
        data = bytes(buf)
        if self.append:
            self.pos = len(self.node.data)
        self.fs._op("write", self.node, data, self.pos)
        d = self.node.data
        end = self.pos + len(data)
        if len(d) < end:
            d.extend(bytes(end - len(d)))
        d[self.pos:end] = data
        self.pos = end
        return len(data)

    def flush(self):
        self._live()
        if self.writable:
            self.fs._op("flush")
            self.node.durable = bytearray(self.node.data)

    def close(self):
        if self.closed:
            return
        if self.writable:
            self._live()
            self.fs._op("close")
            self.node.durable = bytearray(self.node.data)
        self.closed = True

    def read(self, n=-1):
        self._live()
        if not self.readable:
            raise OSError(9, "not open for reading")
        d = self.node.data
        end = len(d) if n < 0 else min(len(d), self.pos + n)
        out = bytes(d[self.pos:end])
        self.pos = max(self.pos, end)
        return out

    def readinto(self, buf):
        chunk = self.read(len(buf))
        buf[:len(chunk)] = chunk
        return len(chunk)

    def seek(self, off, whence=0):
        self._live()
        if whence == 1:
            off += self.pos
        elif whence == 2:
            off += len(self.node.data)
        if off < 0:
            raise OSError(22, "bad seek")
        self.pos = off
        return off

    def tell(self):
        return self.pos

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FlashFS:
    """In-memory flash filesystem with power cuts (see the module docstring)."""

    def __init__(self):
        self.files = {}       # path -> _Node
        self.dirs = {"": 1}   # directory paths (no trailing slash); "" is the root
        self.ops = 0          # boundaries passed so far
        self.kinds = []       # kind of each boundary, when recording
        self.record = False
        self.cut_at = -1
        self.prefix = None    # callable(n) -> bytes of the cut write that persist
        self.dead = False
        self.gen = 0          # bumped at reboot: handles from before are dead

    # ---- power ----

    def arm(self, k, prefix=None):
        """Cut the power at boundary number k (counted over the FS's whole life)."""
        self.cut_at = k
        self.prefix = prefix

    def reboot(self):
        """Power back on: everything not durable is gone, open handles are dead."""
        for node in self.files.values():
            node.data = bytearray(node.durable)
        self.dead = False
        self.cut_at = -1
        self.gen += 1

    def _op(self, kind, node=None, data=None, offset=0):
        if self.dead:
            raise PowerCut()
        k = self.ops
        self.ops += 1
        if self.record:
            self.kinds.append(kind)
        if k == self.cut_at:
            if kind == "write":
                n = len(data)
                p = self.prefix(n) if self.prefix is not None else 0
                if p > 0:
                    d = node.durable
                    end = offset + p
                    if len(d) < end:
                        d.extend(bytes(end - len(d)))
                    d[offset:end] = data[:p]
            self.dead = True
            raise PowerCut()

    # ---- the journal's fs interface ----

    def _parent(self, path):
        i = path.rfind("/")
        return path[:i] if i > 0 else ""

    def open(self, path, mode):
        if self.dead:
            raise PowerCut()
        node = self.files.get(path)
        if "r" in mode:
            if node is None:
                raise _enoent(path)
            return _File(self, node, True, "+" in mode, False)
        if self._parent(path) not in self.dirs:
            raise _enoent(path)
        self._op("create")
        if "w" in mode or node is None:
            node = _Node()
            self.files[path] = node
        return _File(self, node, "+" in mode, True, "a" in mode)

    def flush(self, f):
        f.flush()

    def listdir(self, path):
        if self.dead:
            raise PowerCut()
        path = path.rstrip("/")
        if path not in self.dirs:
            raise _enoent(path)
        pre = path + "/"
        out = []
        for p in list(self.files) + [d for d in self.dirs if d]:
            if p.startswith(pre) and "/" not in p[len(pre):]:
                out.append(p[len(pre):])
        return out

    def mkdir(self, path):
        path = path.rstrip("/")
        if path in self.dirs or path in self.files:
            raise OSError(17, "exists: " + path)
        if self._parent(path) not in self.dirs:
            raise _enoent(path)
        self._op("mkdir")
        self.dirs[path] = 1

    def rename(self, src, dst):
        if src not in self.files:
            raise _enoent(src)
        self._op("rename")
        self.files[dst] = self.files.pop(src)

    def remove(self, path):
        if path not in self.files:
            raise _enoent(path)
        self._op("remove")
        del self.files[path]

    # ---- test helpers ----

    def poke(self, path, offset, xor=0xFF):
        """Damage one byte (as flash rot would): both views change."""
        node = self.files[path]
        node.data[offset] ^= xor
        node.durable[offset] ^= xor

    def size(self, path):
        return len(self.files[path].data)


# ---- the oracle: what the journal must hold after any cut ----

def payload(n, size):
    """Distinct, recognisable synthetic payload number n."""
    b = bytearray(size)
    struct.pack_into("<I", b, 0, n)
    for i in range(4, size):
        b[i] = (n * 31 + i * 7) & 0xFF
    return bytes(b)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


class Oracle:
    """Tracks what the program was told, and checks the journal after each open.

    Invariants: every append that returned survives until acked; at most the append in flight at
    the cut is lost (or it survives, intact); rseqs returned never repeat and are dense; acks that
    returned are never undone; boot_count strictly increases across opens.
    """

    def __init__(self):
        self.live = {}              # rseq -> payload: append returned, not yet acked
        self.max_rseq = 0           # highest rseq append ever returned
        self.acked = 0              # highest cum whose ack() returned (or seen after open)
        self.boot = -1
        self.pending_append = None  # payload of an append in flight at the cut
        self.pending_ack = None     # cum of an ack in flight at the cut
        self.accepted = 0
        self.opens = 0
        self.fulls = 0

    def append(self, j, data):
        self.pending_append = data
        try:
            r = j.append(data)
        except JournalFull:
            self.pending_append = None
            check(j.unacked() >= j.capacity, "JournalFull with room left")
            self.fulls += 1
            return None
        self.pending_append = None
        check(r == self.max_rseq + 1, "rseq %d after %d" % (r, self.max_rseq))
        check(j.unacked() <= j.capacity, "more than capacity un-acked")
        self.max_rseq = r
        self.live[r] = data
        self.accepted += 1
        return r

    def ack(self, j, cum):
        self.pending_ack = cum
        j.ack(cum)
        self.pending_ack = None
        self._acked(cum)

    def _acked(self, cum):
        if cum > self.acked:
            self.acked = cum
            for r in list(self.live):
                if r <= cum:
                    del self.live[r]

    def opened(self, j):
        """Check a freshly opened journal against what was promised."""
        self.opens += 1
        check(j.boot_count > self.boot, "boot_count %d not > %d" % (j.boot_count, self.boot))
        hi = self.acked
        if self.pending_ack is not None and self.pending_ack > hi:
            hi = self.pending_ack
        check(self.acked <= j.acked <= hi,
              "ack cursor %d outside [%d, %d]" % (j.acked, self.acked, hi))
        nxt = self.max_rseq + 1
        if j.next_rseq == nxt + 1:
            # the append in flight at the cut made it to flash whole: it is a real record now
            check(self.pending_append is not None, "record %d appeared from nowhere" % nxt)
            check(j.read(nxt) == self.pending_append, "in-flight record %d garbled" % nxt)
            self.max_rseq = nxt
            self.live[nxt] = self.pending_append
        else:
            check(j.next_rseq == nxt, "next_rseq %d, expected %d" % (j.next_rseq, nxt))
        self.pending_append = None
        self.pending_ack = None
        self._acked(j.acked)
        got = list(j.iter_unacked())
        want = [(r, self.live[r]) for r in sorted(self.live)]
        check(got == want, "un-acked records differ: got %d want %d (first %r / %r)"
              % (len(got), len(want), got[:1], want[:1]))
        check(j.unacked() == len(want), "unacked() wrong")
        check(j.low() == j.acked + 1, "low() wrong")
        if j.acked:
            check(j.read(j.acked) is None, "acked record readable")
        check(j.read(j.next_rseq) is None, "unwritten record readable")
        self.boot = j.boot_count


# ---- scenarios ----

ROOT = "/jr"


def open_journal(fs, orc, psize, segrec, cap):
    j = Journal(ROOT, psize, capacity=cap, fs=fs, segment_records=segrec)
    orc.opened(j)
    check_no_acked_segments(fs, j)
    return j


def check_no_acked_segments(fs, j):
    """After open, no segment whose records are all acked is left (an interrupted ack's
    deletes are finished), except a last segment that is still being filled."""
    firsts = sorted(parse_seg_name(n) for n in fs.listdir(ROOT) if parse_seg_name(n) > 0)
    for i in range(len(firsts) - 1):
        check(firsts[i + 1] - 1 > j.acked, "fully acked segment %d left" % firsts[i])


def scenario(fs, orc, psize=8, segrec=4, cap=40):
    """Fixed workload: appends across several segments, acks that delete segments, a clean
    reboot, acking everything (so no segment is left), and appending again."""
    n = 0
    j = open_journal(fs, orc, psize, segrec, cap)
    for _ in range(10):
        orc.append(j, payload(n, psize))
        n += 1
    orc.ack(j, 3)
    for _ in range(5):
        orc.append(j, payload(n, psize))
        n += 1
    orc.ack(j, 9)
    j.close()
    j = open_journal(fs, orc, psize, segrec, cap)
    orc.append(j, payload(n, psize))
    n += 1
    orc.ack(j, j.next_rseq - 1)
    for _ in range(2):
        orc.append(j, payload(n, psize))
        n += 1
    j.close()
    return n


def after_cut(fs, orc, psize=8, segrec=4, cap=40):
    """Reopen after the cut, check, keep working, reboot cleanly, check again."""
    j = open_journal(fs, orc, psize, segrec, cap)
    for i in range(6):
        orc.append(j, payload(1000 + i, psize))
    orc.ack(j, j.acked + (j.next_rseq - j.acked) // 2)
    j.close()
    j = open_journal(fs, orc, psize, segrec, cap)
    j.close()


def _prefixes(n_kind):
    if n_kind != "write":
        return [None]
    return [lambda n: 0, lambda n: 1, lambda n: n // 2, lambda n: n - 1, lambda n: n]


def exhaustive(psize=8, segrec=4, cap=40):
    """Cut at every boundary of scenario() (every write with five torn lengths), recover and
    check. Returns (boundaries, runs)."""
    fs = FlashFS()
    fs.record = True
    scenario(fs, Oracle(), psize, segrec, cap)
    kinds = fs.kinds
    runs = 0
    for k in range(len(kinds)):
        for pre in _prefixes(kinds[k]):
            fs = FlashFS()
            fs.arm(k, pre)
            orc = Oracle()
            try:
                scenario(fs, orc, psize, segrec, cap)
                raise AssertionError("cut %d never happened" % k)
            except PowerCut:
                pass
            fs.reboot()
            try:
                after_cut(fs, orc, psize, segrec, cap)
            except AssertionError as e:
                raise AssertionError("cut at boundary %d (%s): %s" % (k, kinds[k], e))
            runs += 1
    return len(kinds), runs


def life(seed, presses, psize=8, segrec=8, cap=64, max_gap=60, ack_pct=23):
    """A device's life: random appends, acks (some stale), reads and clean reboots, with the
    power cut at a random boundary (random torn length) every few dozen operations — including
    during recovery. Runs until `presses` appends have returned. Returns the Oracle."""
    rng = Rng(seed)
    fs = FlashFS()
    orc = Oracle()
    n = 0
    cuts = 0
    while orc.accepted < presses:
        fs.arm(fs.ops + 1 + rng.below(max_gap), lambda k: rng.below(k + 1))
        try:
            j = open_journal(fs, orc, psize, segrec, cap)
            while True:
                x = rng.below(100)
                if x < 62:
                    orc.append(j, payload(n, psize))
                    n += 1
                elif x < 62 + ack_pct:
                    lo = j.acked - 2 if j.acked > 2 else 0
                    orc.ack(j, lo + rng.below(j.next_rseq - lo))
                elif x < 95:
                    start = j.low() + rng.below(4)
                    for r, p in j.iter_unacked(start):
                        check(orc.live.get(r) == p, "iter_unacked %d wrong" % r)
                        if rng.below(3) == 0:
                            break
                else:
                    j.close()
                    j = open_journal(fs, orc, psize, segrec, cap)
        except PowerCut:
            fs.reboot()
            cuts += 1
    j = open_journal(fs, orc, psize, segrec, cap)
    j.close()
    orc.cuts = cuts
    return orc
