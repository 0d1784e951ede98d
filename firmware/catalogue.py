"""The reason-tag catalogue: assembling CONFIG chunks (SPEC §4.10) and reading the blob.

Blob layout: cat_version u16, n u8, label height h u8, then n entries of
code_l4 u16, code_l5 u16, width w u8, label bitmap ceil(w/8)*h bytes (MONO_HLSB, rendered by the
agent because the device has no CJK font). Big-endian like the rest of RL1.

The assembler keeps the chunks of one cat_version; the blob is installed only when every chunk
arrived, the length equals `total` and the CRC matches; otherwise the current catalogue stays and
the caller sends ERROR bad_config. CONFIG is resent by the agent, so chunks are idempotent by
(cat_version, index).
"""

import struct

from protocol.crc32 import crc32
from protocol.messages import CONFIG_CHUNK

MAX_BLOB = 8192       # a catalogue larger than this is refused (RAM on the device)
MAX_TAGS = 64

# add() results
PARTIAL = 0
INSTALLED = 1
BAD = 2


class CatalogueError(ValueError):
    """A catalogue blob is malformed."""


class Catalogue:
    """A parsed catalogue blob. Tags are indexed 0..count-1 in display order."""

    def __init__(self, blob):
        blob = bytes(blob)
        if len(blob) < 4:
            raise CatalogueError("catalogue blob too short")
        self.blob = blob
        self.version, n, self.height = struct.unpack_from(">HBB", blob, 0)
        if n > MAX_TAGS or self.height > 16:
            raise CatalogueError("catalogue has %d tags of height %d" % (n, self.height))
        offs = []
        p = 4
        for _ in range(n):
            if p + 5 > len(blob):
                raise CatalogueError("catalogue blob truncated at tag %d" % len(offs))
            w = blob[p + 4]
            size = ((w + 7) // 8) * self.height
            if w > 128 or p + 5 + size > len(blob):
                raise CatalogueError("catalogue tag %d label bitmap does not fit" % len(offs))
            offs.append(p)
            p += 5 + size
        self._offs = offs
        self.count = n

    def code(self, i, level):
        """Reason code of tag i sent with `level` (4 or 5)."""
        p = self._offs[i]
        c4, c5 = struct.unpack_from(">HH", self.blob, p)
        return c5 if level == 5 else c4

    def label(self, i):
        """(width, height, MONO_HLSB bitmap bytes) of tag i's label."""
        p = self._offs[i]
        w = self.blob[p + 4]
        size = ((w + 7) // 8) * self.height
        return w, self.height, memoryview(self.blob)[p + 5:p + 5 + size]


def build_blob(version, tags, height=0):
    """Blob for `tags` = [(code_l4, code_l5, width, bitmap bytes)] (tests and tools)."""
    out = bytearray(struct.pack(">HBB", version, len(tags), height))
    for c4, c5, w, bm in tags:
        out += struct.pack(">HHB", c4, c5, w) + bytes(bm)
    return bytes(out)


def chunks(blob):
    """CONFIG fields for each chunk of `blob` (the agent side; used by tests)."""
    version = struct.unpack_from(">H", blob, 0)[0]
    count = max(1, (len(blob) + CONFIG_CHUNK - 1) // CONFIG_CHUNK)
    crc = crc32(blob)
    out = []
    for i in range(count):
        out.append({"cat_version": version, "index": i, "count": count, "total": len(blob),
                    "crc": crc, "data": blob[i * CONFIG_CHUNK:(i + 1) * CONFIG_CHUNK]})
    return out


class Assembler:
    """Collects CONFIG chunks of one catalogue version until the blob is complete."""

    def __init__(self):
        self._reset(-1)
        self.last_error = ""

    def _reset(self, version):
        self.version = version
        self.count = 0
        self.total = 0
        self.crc = 0
        self._parts = {}

    def add(self, f, installed_version=-1):
        """Add one CONFIG's fields. Returns (PARTIAL|INSTALLED|BAD, Catalogue or None)."""
        v = f["cat_version"]
        if v == installed_version:
            return PARTIAL, None          # already have it (a resent chunk)
        if v != self.version or f["count"] != self.count or f["total"] != self.total \
                or f["crc"] != self.crc:
            if v == self.version:
                # same version, different shape: the agent changed its mind; start over
                self._reset(-1)
                self.last_error = "chunks of version %d disagree" % v
                return BAD, None
            self._reset(v)
            self.count = f["count"]
            self.total = f["total"]
            self.crc = f["crc"]
            if self.total > MAX_BLOB or self.total > self.count * CONFIG_CHUNK \
                    or self.total <= (self.count - 1) * CONFIG_CHUNK:
                self._reset(-1)
                self.last_error = "catalogue of %d bytes in %d chunks" % (f["total"], f["count"])
                return BAD, None
        i = f["index"]
        data = f["data"]
        want = CONFIG_CHUNK if i < self.count - 1 else self.total - CONFIG_CHUNK * (self.count - 1)
        if len(data) != want:
            self._reset(-1)
            self.last_error = "chunk %d has %d bytes, expected %d" % (i, len(data), want)
            return BAD, None
        self._parts[i] = bytes(data)
        if len(self._parts) < self.count:
            return PARTIAL, None
        blob = b"".join([self._parts[k] for k in range(self.count)])
        total, crc = self.total, self.crc
        self._reset(-1)
        if len(blob) != total or crc32(blob) != crc:
            self.last_error = "catalogue CRC or length mismatch"
            return BAD, None
        try:
            cat = Catalogue(blob)
        except CatalogueError as e:
            self.last_error = str(e)
            return BAD, None
        if cat.version != v:
            self.last_error = "blob says version %d, CONFIG said %d" % (cat.version, v)
            return BAD, None
        return INSTALLED, cat


def load(path):
    """The catalogue saved at `path`, or None when there is none or it is unreadable."""
    try:
        with open(path, "rb") as f:
            return Catalogue(f.read())
    except (OSError, CatalogueError):
        return None


def save(path, cat):
    """Store an installed catalogue (temp file + rename, so a power cut leaves old or new)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cat.blob)
    # rename replaces atomically on littlefs and POSIX (as the journal's state file relies on)
    import os
    os.rename(tmp, path)
