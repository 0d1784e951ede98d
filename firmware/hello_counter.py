"""The HELLO counter: a number that grows with every HELLO this device sends under its key and
never repeats, across reboots and power cuts (SPEC.md §4.2 `hello_ctr`, §5.3). The agent
refuses a HELLO whose counter is not above the last one it accepted, so a recorded HELLO
replayed later changes nothing.

Power-safe with few flash writes: the file holds a *ceiling*, the first value not yet handed
out. Values are reserved in blocks: before the first value of a block is used, the new ceiling
is written (temp file + rename, atomic on littlefs, as the journal's state). A cut loses at most
the rest of a block (skipped numbers are harmless: the counter only has to grow). One write per
BLOCK HELLOs, and one at the first HELLO after a boot.

The file lives beside `device.key` on the main filesystem, not in the journal: a journal wiped
by a technician does not touch it. It belongs to the key: provisioning a new key removes it
(the agent forgets its floor for the old key at the same time), re-provisioning with the same
key raises it above the agent's floor (`raise_to`). See tools/provision.py.

File (12 bytes, little-endian like firmware/JOURNAL.md): magic `HCH1`, u32 ceiling, CRC-32 of
the first 8 bytes. A file that exists but is unreadable, with no readable temp file beside it,
cannot be trusted: the counter restarts from 1 and `damaged` is set (the agent refuses these
HELLOs until a technician re-provisions: shown on the device's idle line as CTR!).
"""
import binascii
import struct

from firmware import fsio

BLOCK = 16                 # HELLOs per flash write
MAX_CTR = 0xFFFFFFFF       # a u32 on the wire
_MAGIC = b"HCH1"
_SIZE = 12


class HelloCounterError(OSError):
    """The counter cannot be advanced (u32 used up): the device needs a new key. An OSError,
    so the link treats it like a flash failure (retries) instead of dying."""


class HelloCounter:
    """Open (or create) the counter stored at `path` (`path` + ".tmp" while it is rewritten)."""

    def __init__(self, path, fs=None, block=BLOCK):
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = path
        self.tmp_path = path + ".tmp"
        self.block = block
        self._fs = fs if fs is not None else fsio.OsFs()
        self._buf = bytearray(_SIZE)
        self.damaged = False
        self.ceiling = self._load()    # first value not handed out by any earlier boot
        self._reserved = self.ceiling  # values below this may be handed out now
        self.last = 0                  # the value next() returned last (0: none this boot)
        self._next = self.ceiling if self.ceiling > 0 else 1

    def next(self):
        """The next counter value, durably reserved before it is returned. Raises OSError when
        the reservation cannot be written (the HELLO must then wait: a value is never reused)."""
        v = self._next
        if v > MAX_CTR:
            raise HelloCounterError("HELLO 计数器用尽 counter exhausted: provision a new key")
        if v >= self._reserved:
            top = v + self.block
            if top > MAX_CTR + 1:
                top = MAX_CTR + 1
            self._write(top)
            self._reserved = top
        self._next = v + 1
        self.last = v
        return v

    def raise_to(self, floor):
        """Make every later value exceed `floor` (the agent's last accepted counter) and write
        the file (even when the counter was above already). Returns the next value. Used when
        a device is re-provisioned with a key the agent already holds a floor for."""
        target = self._next if self._next > floor + 1 else floor + 1
        self._write(target)
        self._reserved = target
        self._next = target
        self.ceiling = target
        return target

    # ---- storage ----

    def _load(self):
        best = -1
        exists = False
        for p in (self.path, self.tmp_path):
            v = self._read(p)
            if v is None:
                continue
            if p == self.path:
                exists = True
            if v > best:
                best = v
        if best >= 0:
            return best
        if exists:
            self.damaged = True
        return 0

    def _read(self, path):
        """The ceiling in `path`; None when the file does not exist; -1 when unreadable."""
        try:
            f = self._fs.open(path, "rb")
        except OSError:
            return None
        try:
            n = f.readinto(self._buf)
        finally:
            f.close()
        b = self._buf
        if n != _SIZE or bytes(b[0:4]) != _MAGIC or \
                struct.unpack_from("<I", b, 8)[0] != binascii.crc32(memoryview(b)[:8]):
            return -1
        return struct.unpack_from("<I", b, 4)[0]

    def _write(self, ceiling):
        b = self._buf
        b[0:4] = _MAGIC
        struct.pack_into("<I", b, 4, ceiling)
        struct.pack_into("<I", b, 8, binascii.crc32(memoryview(b)[:8]))
        fs = self._fs
        f = fs.open(self.tmp_path, "wb")
        try:
            f.write(b)
            fs.flush(f)
        finally:
            f.close()
        fs.rename(self.tmp_path, self.path)
