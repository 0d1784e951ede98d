"""Power-loss-safe journal of fixed-size records on flash.

Knows nothing about ratings: stores opaque payloads of `payload_size` bytes and numbers them with
a record sequence number (rseq) that starts at 1, is dense (no gaps) and never repeats on a
device. Append-only segment files, a CRC-32 per record, and an ack cursor replaced atomically
(temp file + rename). The on-flash format, the recovery rules and what counts as a torn tail
versus corruption are in firmware/JOURNAL.md.

RAM: two record buffers, a 28-byte state buffer, two open files, one small int per segment
file on flash and the 1 KB CRC half tables of protocol.crc32_into; nothing per record.
append() allocates nothing except when it opens a new segment file (once per segment).
"""
import binascii
import struct

from firmware import fsio
from protocol.crc32 import crc32_into, prepare_into

# Records per segment file. A segment is deleted only when all its records are acked, so
# smaller segments free flash sooner; larger ones mean fewer files. 512 records of a 32-byte
# record are 16 KiB (four 4 KiB littlefs blocks).
DEFAULT_SEGMENT_RECORDS = 512
DEFAULT_CAPACITY = 50000

MAX_RSEQ = 0xFFFFFFFF  # rseq is a u32 on the wire and on flash

STATE_NAME = "state"
STATE_TMP_NAME = "state.tmp"
SEG_SUFFIX = ".seg"

_MAGIC = b"HCJ1"
_VERSION = 1
# magic, version, payload_size, acked, next_rseq, boot_count, segment_records; then CRC-32
_STATE_FMT = "<4sHHIIII"
_STATE_BODY = 24
STATE_SIZE = 28
_HDR = 4  # u32 rseq before the payload; u32 CRC-32 after it


class JournalError(Exception):
    """Base class of journal errors."""


class JournalFull(JournalError):
    """`capacity` records are un-acked: refuse new records (never overwrite un-acked ones)."""


class JournalCorrupt(JournalError):
    """Flash content is damaged beyond a torn tail. Reported, never silently reformatted."""


def seg_name(first):
    """File name of the segment whose first record is `first`."""
    return "%010d%s" % (first, SEG_SUFFIX)


def parse_seg_name(name):
    """First rseq of a segment file name, or -1 when `name` is not a segment file."""
    if len(name) != 14 or not name.endswith(SEG_SUFFIX):
        return -1
    digits = name[:10]
    if not digits.isdigit():
        return -1
    return int(digits)


class Journal:
    """Open (creating or recovering) the journal in directory `root`. See firmware/JOURNAL.md."""

    def __init__(self, root, payload_size, capacity=DEFAULT_CAPACITY, fs=None,
                 segment_records=DEFAULT_SEGMENT_RECORDS):
        if not 1 <= payload_size <= 0xFFFF - 2 * _HDR:
            raise ValueError("payload_size out of range")
        if capacity < 1 or segment_records < 1:
            raise ValueError("capacity and segment_records must be >= 1")
        self.root = root
        self.payload_size = payload_size
        self.record_size = payload_size + 2 * _HDR
        self.capacity = capacity
        self.segment_records = segment_records
        self._fs = fs if fs is not None else fsio.OsFs()
        self._state_path = root + "/" + STATE_NAME
        self._tmp_path = root + "/" + STATE_TMP_NAME
        # Write buffer: the press path fills it in place and never allocates a record.
        self._wbuf = bytearray(self.record_size)
        self._wmv = memoryview(self._wbuf)
        self._wbody = self._wmv[:_HDR + payload_size]
        # The payload part of the write buffer: fill it (e.g. struct.pack_into) and call
        # append() with no argument to append without any copy.
        self.payload_buffer = self._wmv[_HDR:_HDR + payload_size]
        self._rbuf = bytearray(self.record_size)
        self._rmv = memoryview(self._rbuf)
        self._rbody = self._rmv[:_HDR + payload_size]
        self._rpay = self._rmv[_HDR:_HDR + payload_size]
        self._sbuf = bytearray(STATE_SIZE)
        self._smv = memoryview(self._sbuf)
        prepare_into()
        self._segs = []      # first rseq of each segment file on flash, ascending
        self._wf = None      # read/write handle of the last segment, opened on demand
        self._wpos = -1      # where the next write lands in _wf without a seek; -1 = unknown
        self._dirty = False  # last segment holds bytes past its last valid record (torn tail)
        self._rf = None      # read handle of an older segment
        self._rfirst = 0
        self.acked = 0       # every rseq <= acked is acknowledged
        self.next_rseq = 1   # rseq the next append gets
        self.boot_count = 0
        self._recover()

    # ---- public API ----

    def append(self, payload=None):
        """Durably append one record and return its rseq.

        `payload` (bytes-like, payload_size long) is copied into the record buffer; with None,
        the caller has already filled `payload_buffer`. Returns only after the record is
        flushed (committed on littlefs). Raises JournalFull when `capacity` records are un-acked.
        If the write or flush raises, the rseq is not consumed: the next append rewrites that
        slot (the failed record was never returned, so never shown or sent).
        """
        if self.next_rseq - 1 - self.acked >= self.capacity or self.next_rseq > MAX_RSEQ:
            raise JournalFull("日志已满 journal full: %d records not acked" % self.unacked())
        if payload is not None:
            if len(payload) != self.payload_size:
                raise ValueError("payload must be %d bytes" % self.payload_size)
            self.payload_buffer[:] = payload
        rseq = self.next_rseq
        buf = self._wbuf
        struct.pack_into("<I", buf, 0, rseq)
        # not binascii.crc32: its 32-bit result is a heap int on MicroPython (press path)
        crc32_into(self._wbody, _HDR + self.payload_size, buf, _HDR + self.payload_size)
        segs = self._segs
        if not segs or (rseq - segs[-1] >= self.segment_records and not self._dirty):
            self._new_segment(rseq)
        f = self._wfile()
        pos = (rseq - segs[-1]) * self.record_size
        if self._wpos != pos:
            f.seek(pos)
        # Until the write is flushed the slot may hold a torn record: the next append
        # overwrites the same slot with the same rseq.
        self._wpos = -1
        self._dirty = True
        n = f.write(self._wmv)
        if n is not None and n != self.record_size:
            raise OSError("short write to journal")
        self._fs.flush(f)
        self._wpos = pos + self.record_size
        self._dirty = False
        self.next_rseq = rseq + 1
        if pos == 0:
            # First record of a segment: raise the high-water mark on flash (once per segment,
            # not per press) so that a segment file lost to filesystem damage is reported at
            # open instead of its rseqs being handed out again.
            self._write_state(self.acked, self.next_rseq, self.boot_count)
        return rseq

    def ack(self, cum):
        """Acknowledge every rseq <= `cum`; returns the ack cursor.

        An ack at or below the cursor is ignored (acks are idempotent and may arrive late or
        twice). An ack beyond the last appended rseq raises ValueError and changes nothing: the
        peer is confused (or talks about another journal) and must not free records we hold.
        """
        if cum <= self.acked:
            return self.acked
        if cum >= self.next_rseq:
            raise ValueError("ack %d beyond last record %d" % (cum, self.next_rseq - 1))
        self._write_state(cum, self.next_rseq, self.boot_count)
        self.acked = cum
        self._drop_acked()
        return cum

    def reclaim(self):
        """Delete the last segment when every record in it is acked; True when it did. For a
        full filesystem (an append raised OSError): _drop_acked keeps a partly filled last
        segment so that an agent acking every press does not make a file per press, and on a
        full partition that segment's blocks are the only ones acks can free. The next append
        starts a new segment at next_rseq (the state file keeps next_rseq)."""
        segs = self._segs
        if len(segs) != 1 or self.acked != self.next_rseq - 1:
            return False
        try:
            self._close_w()      # its sync may fail for the same lack of space: data acked
        except OSError:
            pass
        self._close_r()
        self._fs.remove(self._seg_path(segs[0]))
        segs.pop()
        self._dirty = False
        self._wpos = -1
        return True

    def read(self, rseq):
        """Payload (bytes) of un-acked record `rseq`; None when it is acked or not written."""
        if rseq <= self.acked or rseq >= self.next_rseq:
            return None
        self._read_slot(rseq)
        return bytes(self._rpay)

    def read_into(self, rseq, buf):
        """Copy the payload of un-acked record `rseq` into `buf`; False when there is none.
        The allocation-free form of read()."""
        if rseq <= self.acked or rseq >= self.next_rseq:
            return False
        self._read_slot(rseq)
        buf[:self.payload_size] = self._rpay
        return True

    def iter_unacked(self, start=None):
        """Yield (rseq, payload bytes) for un-acked records >= `start`, oldest first, reading
        one record at a time. Records appended while iterating are included; records acked
        while iterating are skipped."""
        r = self.acked + 1 if start is None else start
        while r < self.next_rseq:
            if r <= self.acked:
                r = self.acked + 1
                continue
            self._read_slot(r)
            yield r, bytes(self._rpay)
            r += 1

    def low(self):
        """Lowest un-acked rseq, or next_rseq when none is un-acked (rseqs are dense)."""
        return self.acked + 1

    def unacked(self):
        """Number of un-acked records."""
        return self.next_rseq - 1 - self.acked

    def is_full(self):
        """True when append() would raise JournalFull."""
        return self.unacked() >= self.capacity or self.next_rseq > MAX_RSEQ

    def info(self):
        """Small status dict (for STATUS messages and the technician tools)."""
        return {"next_rseq": self.next_rseq, "acked": self.acked, "unacked": self.unacked(),
                "capacity": self.capacity, "boot_count": self.boot_count,
                "segments": len(self._segs)}

    def close(self):
        """Close open files. Not needed for safety (every append is committed) but tidy."""
        self._close_w()
        self._close_r()

    # ---- recovery ----

    def _recover(self):
        fs = self._fs
        try:
            names = fs.listdir(self.root)
        except OSError:
            fs.mkdir(self.root)
            names = []
        segs = []
        for name in names:
            first = parse_seg_name(name)
            if first > 0:
                segs.append(first)
        segs.sort()
        st = self._load_state(names)
        if st is None:
            if segs:
                raise JournalCorrupt("日志损坏 journal corrupt: state file missing, segments present")
            acked, state_next, boot = 0, 1, 0
        else:
            acked, state_next, boot = st
        if STATE_TMP_NAME in names:
            fs.remove(self._tmp_path)
        # Segments fully acked before a cut interrupted their deletion.
        while len(segs) > 1 and segs[1] - 1 <= acked:
            fs.remove(self._seg_path(segs.pop(0)))
        if segs and segs[0] > acked + 1:
            raise JournalCorrupt("日志损坏 journal corrupt: records %d..%d missing"
                                 % (acked + 1, segs[0] - 1))
        self._segs = segs
        nxt = acked + 1
        for i in range(len(segs)):
            nxt = self._check_segment(i, acked)
        if nxt <= acked or nxt < state_next:
            raise JournalCorrupt("日志损坏 journal corrupt: records up to %d missing"
                                 % (max(acked, state_next - 1)))
        self.acked = acked
        self.next_rseq = nxt
        self.boot_count = boot + 1
        self._write_state(acked, nxt, self.boot_count)

    def _load_state(self, names):
        """(acked, next_rseq, boot_count) from the state file, falling back to a complete temp
        file; None when neither exists (a journal never created). Raises JournalCorrupt when
        the state is unreadable and no valid temp file replaces it."""
        if STATE_NAME in names:
            st = self._read_state(self._state_path)
            if st is not None:
                return st
        if STATE_TMP_NAME in names:
            st = self._read_state(self._tmp_path)
            if st is not None:
                self._fs.rename(self._tmp_path, self._state_path)
                names.remove(STATE_TMP_NAME)
                return st
        if STATE_NAME in names:
            raise JournalCorrupt("日志损坏 journal corrupt: state file unreadable")
        return None

    def _read_state(self, path):
        try:
            f = self._fs.open(path, "rb")
        except OSError:
            return None
        try:
            n = f.readinto(self._sbuf)
        finally:
            f.close()
        b = self._sbuf
        if n != STATE_SIZE or struct.unpack_from("<I", b, _STATE_BODY)[0] != \
                binascii.crc32(self._smv[:_STATE_BODY]):
            return None
        magic, version, psize, acked, nxt, boot, _ = struct.unpack_from(_STATE_FMT, b, 0)
        if magic != _MAGIC or version != _VERSION:
            raise JournalCorrupt("日志损坏 journal corrupt: unknown format in state file")
        if psize != self.payload_size:
            raise JournalCorrupt("journal holds %d-byte records, firmware expects %d"
                                 % (psize, self.payload_size))
        if nxt < acked + 1:
            raise JournalCorrupt("日志损坏 journal corrupt: state cursor beyond high-water mark")
        return acked, nxt, boot

    def _check_segment(self, i, acked):
        """Verify segment i; return the rseq after its last valid record. Only the last
        segment may end in a torn record (see JOURNAL.md)."""
        segs = self._segs
        first = segs[i]
        last = i == len(segs) - 1
        rs = self.record_size
        f = self._fs.open(self._seg_path(first), "rb")
        try:
            size = f.seek(0, 2)
            n = size // rs
            if not last and (size % rs or first + n != segs[i + 1]):
                raise JournalCorrupt("日志损坏 journal corrupt: %s has %d bytes, expected %d"
                                     % (seg_name(first), size, (segs[i + 1] - first) * rs))
            slot = acked + 1 - first
            if slot < 0:
                slot = 0
            if slot < n:
                f.seek(slot * rs)
            while slot < n:
                if f.readinto(self._rmv) != rs or not self._valid(first + slot):
                    if last and slot == n - 1 and size == n * rs:
                        n -= 1  # a full-length torn record: the tail
                        break
                    raise JournalCorrupt("日志损坏 journal corrupt: bad record %d in %s"
                                         % (first + slot, seg_name(first)))
                slot += 1
        finally:
            f.close()
        if last:
            self._dirty = size > n * rs
        return first + n

    # ---- internals ----

    def _valid(self, rseq):
        """Is the record in the read buffer rseq's, intact? binascii.crc32 here, not
        crc32_into: reads serve the boot scan and backlog drains, where C speed matters more
        than the few bytes of garbage its result makes (see JOURNAL.md, RAM)."""
        b = self._rbuf
        return struct.unpack_from("<I", b, 0)[0] == rseq and \
            struct.unpack_from("<I", b, _HDR + self.payload_size)[0] == \
            binascii.crc32(self._rbody)

    def _read_slot(self, rseq):
        segs = self._segs
        i = len(segs) - 1
        while segs[i] > rseq:
            i -= 1
        first = segs[i]
        if i == len(segs) - 1:
            f = self._wfile()
            self._wpos = -1
        else:
            if self._rf is None or self._rfirst != first:
                self._close_r()
                self._rf = self._fs.open(self._seg_path(first), "rb")
                self._rfirst = first
            f = self._rf
        f.seek((rseq - first) * self.record_size)
        if f.readinto(self._rmv) != self.record_size or not self._valid(rseq):
            raise JournalCorrupt("日志损坏 journal corrupt: bad record %d in %s"
                                 % (rseq, seg_name(first)))

    def _write_state(self, acked, nxt, boot):
        struct.pack_into(_STATE_FMT, self._sbuf, 0, _MAGIC, _VERSION, self.payload_size,
                         acked, nxt, boot, self.segment_records)
        struct.pack_into("<I", self._sbuf, _STATE_BODY, binascii.crc32(self._smv[:_STATE_BODY]))
        fs = self._fs
        f = fs.open(self._tmp_path, "wb")
        try:
            f.write(self._sbuf)
            fs.flush(f)
        finally:
            f.close()
        fs.rename(self._tmp_path, self._state_path)

    def _drop_acked(self):
        """Delete segments whose records are all acked (the last one only once it is full)."""
        segs = self._segs
        while segs:
            first = segs[0]
            if len(segs) > 1:
                end = segs[1]
            else:
                end = self.next_rseq
                if end - first < self.segment_records:
                    break
            if end - 1 > self.acked:
                break
            if len(segs) == 1:
                self._close_w()
                self._dirty = False
            if self._rf is not None and self._rfirst == first:
                self._close_r()
            self._fs.remove(self._seg_path(first))
            segs.pop(0)

    def _new_segment(self, first):
        self._close_w()
        self._wf = self._fs.open(self._seg_path(first), "w+b")
        self._segs.append(first)
        self._wpos = 0
        self._dirty = False

    def _wfile(self):
        if self._wf is None:
            self._wf = self._fs.open(self._seg_path(self._segs[-1]), "r+b")
            self._wpos = -1
        return self._wf

    def _close_w(self):
        if self._wf is not None:
            f = self._wf
            self._wf = None
            f.close()

    def _close_r(self):
        if self._rf is not None:
            f = self._rf
            self._rf = None
            f.close()

    def _seg_path(self, first):
        return self.root + "/" + seg_name(first)
