"""RL1 message types and their payload codecs. Byte layouts: SPEC.md §Messages.

Messages are plain dicts of fields (easy to log, compare and write as test vectors); rating
records are Record objects because the firmware and the agent both handle many of them.
All integers are big-endian. A payload may be longer than the fields a receiver knows: the extra
bytes are ignored (SPEC.md §Versioning), so fields can be appended without a version change.
"""

import struct

from protocol.errors import ProtocolError, BAD_PAYLOAD, BAD_TYPE, WRONG_DIRECTION

# --- message types --------------------------------------------------------------------------
HELLO = 0x01      # device -> agent: start a session
RECORDS = 0x02    # device -> agent: 0..10 rating records
STATUS = 0x03     # device -> agent: health report
DACK = 0x04       # device -> agent: acknowledges downlink frames
RECORDS_REF = 0x05  # device -> agent: 1..10 rating records, each with a scanned reference
HELLO_ACK = 0x81  # agent -> device: session accepted, time, cumulative ack
ACK = 0x82        # agent -> device: cumulative + selective ack of records
INVITE = 0x83     # agent -> device: invite the citizen to rate
CANCEL = 0x84     # agent -> device: withdraw an invitation
TIME = 0x85       # agent -> device: wall-clock time
CONFIG = 0x86     # agent -> device: one chunk of the reason-tag catalogue
ERROR = 0x10      # either direction

UPLINK = (HELLO, RECORDS, STATUS, DACK, RECORDS_REF, ERROR)
DOWNLINK = (HELLO_ACK, ACK, INVITE, CANCEL, TIME, CONFIG, ERROR)
NAMES = {HELLO: "HELLO", RECORDS: "RECORDS", STATUS: "STATUS", DACK: "DACK",
         RECORDS_REF: "RECORDS_REF",
         HELLO_ACK: "HELLO_ACK", ACK: "ACK", INVITE: "INVITE", CANCEL: "CANCEL", TIME: "TIME",
         CONFIG: "CONFIG", ERROR: "ERROR"}

# --- record flags ---------------------------------------------------------------------------
REC_CLOCK_UNSYNCED = 0x01   # pressed before the device had wall-clock time
REC_REASON_TIMEOUT = 0x02   # a 差评 whose reason screen timed out (level kept, no tag)
REC_TOO_FAST = 0x04         # pressed < 300 ms after the invitation appeared
REC_UNSOLICITED = 0x08      # pressed with no invitation showing
REC_TIME_CORRECTED = 0x10   # time was unsynced at the press and corrected by the device since
REC_FLAGS_RESERVED = 0xE0

# --- device status flags (HELLO, STATUS) ----------------------------------------------------
ST_CLOCK_SYNCED = 0x01
ST_JOURNAL_FULL = 0x02
ST_JOURNAL_CORRUPT = 0x04
ST_MAINTENANCE = 0x08

# --- ERROR codes ----------------------------------------------------------------------------
E_UNKNOWN_DEVICE = 1    # agent does not know this device id (or it was retired)
E_BAD_MAC = 2           # a frame failed authentication (wrong key?)
E_NO_SESSION = 3        # send HELLO first
E_BAD_PAYLOAD = 4       # a frame's payload was rejected (ref_seq names it)
E_UNSUPPORTED = 5       # version or message type not supported
E_BUSY = 6              # try again later (agent storage unavailable)
E_BAD_CONFIG = 7        # catalogue chunks inconsistent; device asks again by HELLO
ERROR_NAMES = {1: "unknown_device", 2: "bad_mac", 3: "no_session", 4: "bad_payload",
               5: "unsupported", 6: "busy", 7: "bad_config"}

RECORD_LEN = 22
MAX_RECORDS = 10
MAX_REF = 64             # bytes of a scanned reference (RECORDS_REF), printable ASCII 0x21..0x7E
SACK_BYTES = 16          # selective-ack bitmap covers rseq cum+1 .. cum+128
MAX_STAFF_NO = 16
MAX_NAME_W = 96
MAX_NAME_H = 16
CONFIG_HEADER = 10
CONFIG_CHUNK = 220       # catalogue bytes per CONFIG frame

_REC = ">IIIHBBHHH"


class Record:
    """One rating as the device journals and sends it.

    rseq: u32 per-device sequence, never repeats. time: unix seconds (or seconds since boot when
    REC_CLOCK_UNSYNCED without REC_TIME_CORRECTED). invite_id: 0 = unsolicited. cat_version:
    catalogue version the reasons refer to. level: 1..5 (GB/T 39046 A.8, 1 = 非常满意).
    flags: REC_* bits. reasons: tuple of 0..3 tag codes. ref: the reference a waiting-area
    device scanned for this rating (str, 1..MAX_REF printable ASCII), or None; a record with a
    ref travels in RECORDS_REF, one without in RECORDS.
    """

    def __init__(self, rseq, time, invite_id, cat_version, level, flags=0, reasons=(), ref=None):
        self.rseq = rseq
        self.time = time
        self.invite_id = invite_id
        self.cat_version = cat_version
        self.level = level
        self.flags = flags
        self.reasons = tuple(reasons)
        self.ref = ref

    def __eq__(self, other):
        return isinstance(other, Record) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "Record(%r)" % (self.to_dict(),)

    def to_dict(self):
        d = {"rseq": self.rseq, "time": self.time, "invite_id": self.invite_id,
             "cat_version": self.cat_version, "level": self.level, "flags": self.flags,
             "reasons": list(self.reasons)}
        if self.ref is not None:
            d["ref"] = self.ref
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(d["rseq"], d["time"], d["invite_id"], d["cat_version"], d["level"],
                   d.get("flags", 0), d.get("reasons", ()), d.get("ref"))

    def pack_into(self, buf, off):
        """Write the 22-byte wire form at buf[off:]."""
        r = self.reasons
        if len(r) > 3:
            raise ProtocolError(BAD_PAYLOAD, "at most 3 reasons")
        if not 1 <= self.level <= 5:
            raise ProtocolError(BAD_PAYLOAD, "level %r outside 1..5" % (self.level,))
        struct.pack_into(_REC, buf, off, self.rseq, self.time, self.invite_id, self.cat_version,
                         self.level, self.flags, r[0] if len(r) > 0 else 0,
                         r[1] if len(r) > 1 else 0, r[2] if len(r) > 2 else 0)

    def pack(self):
        buf = bytearray(RECORD_LEN)
        self.pack_into(buf, 0)
        return bytes(buf)


def unpack_record(buf, off=0):
    """Read and validate a 22-byte record at buf[off:]."""
    rseq, t, inv, cat, level, flags, r0, r1, r2 = struct.unpack_from(_REC, buf, off)
    if not 1 <= level <= 5:
        raise ProtocolError(BAD_PAYLOAD, "record %d: level %d outside 1..5" % (rseq, level))
    if flags & REC_FLAGS_RESERVED:
        raise ProtocolError(BAD_PAYLOAD, "record %d: reserved flag bits set" % rseq)
    if (r0 == 0 and (r1 or r2)) or (r1 == 0 and r2):
        raise ProtocolError(BAD_PAYLOAD, "record %d: reason codes must be packed first" % rseq)
    reasons = tuple([r for r in (r0, r1, r2) if r])
    return Record(rseq, t, inv, cat, level, flags, reasons)


def check_ref(ref):
    """The reference as bytes; raises BAD_PAYLOAD unless it is 1..MAX_REF printable ASCII
    characters without spaces (what a scanned ticket or receipt code may be)."""
    if isinstance(ref, str):
        ref = ref.encode()
    n = len(ref)
    if n < 1 or n > MAX_REF:
        raise ProtocolError(BAD_PAYLOAD, "reference of %d bytes, need 1..%d" % (n, MAX_REF))
    for b in ref:
        if b < 0x21 or b > 0x7E:
            raise ProtocolError(BAD_PAYLOAD, "reference must be printable ASCII without spaces")
    return bytes(ref)


def ref_record_len(rec):
    """Bytes one record takes inside RECORDS_REF: the record, the length byte, the reference."""
    return RECORD_LEN + 1 + len(rec.ref)


# --- payload codecs -------------------------------------------------------------------------
# Each entry: (struct format of the fixed part, field names). Variable parts are handled below.
_FIXED = {
    # hello_ctr (offset 28) was appended under SPEC §7 V-4; the codec requires it, so a HELLO
    # of the 28-byte first form is bad_payload (SPEC §4.2)
    HELLO: (">8s3sHIHIIBI", ("nonce", "fw", "boot", "uptime", "cat_version", "low", "next_rseq",
                             "status", "hello_ctr")),
    STATUS: (">BBHIIIIIHB", ("status", "ui_state", "boot", "uptime", "low", "next_rseq",
                             "unacked", "capacity", "cat_version", "last_error")),
    DACK: (">II", ("seq", "bitmap")),
    HELLO_ACK: (">8sIIHH", ("nonce", "time", "cum", "window", "cat_version")),
    ACK: (">I16s", ("cum", "sack")),
    CANCEL: (">I", ("invite_id",)),
    TIME: (">I", ("time",)),
    ERROR: (">BI", ("code", "ref_seq")),
}
_BYTES_FIELDS = ("nonce", "fw", "sack")


def _need(payload, n, what):
    if len(payload) < n:
        raise ProtocolError(BAD_PAYLOAD, "%s needs %d payload bytes, got %d" % (what, n, len(payload)))


def check_direction(type, downlink):
    """Raise BAD_TYPE for an unknown type, WRONG_DIRECTION for one not allowed this way."""
    if type not in NAMES:
        raise ProtocolError(BAD_TYPE, "type 0x%02x" % type)
    if type not in (DOWNLINK if downlink else UPLINK):
        raise ProtocolError(WRONG_DIRECTION, "%s is not sent %s" % (
            NAMES[type], "agent->device" if downlink else "device->agent"))


def decode(type, payload):
    """Decode a payload of `type` into a dict of fields (records as Record objects)."""
    if type in _FIXED:
        fmt, names = _FIXED[type]
        _need(payload, struct.calcsize(fmt), NAMES[type])
        values = struct.unpack_from(fmt, payload, 0)
        d = {}
        for i in range(len(names)):
            d[names[i]] = values[i]
        if type == ERROR and d["code"] == 0:
            raise ProtocolError(BAD_PAYLOAD, "ERROR code 0")
        if type == HELLO_ACK and d["window"] == 0:
            raise ProtocolError(BAD_PAYLOAD, "HELLO_ACK window 0")
        return d
    if type == RECORDS:
        _need(payload, 5, "RECORDS")
        count, low = struct.unpack_from(">BI", payload, 0)
        if count > MAX_RECORDS:
            raise ProtocolError(BAD_PAYLOAD, "%d records, at most %d" % (count, MAX_RECORDS))
        _need(payload, 5 + count * RECORD_LEN, "RECORDS")
        recs = []
        for i in range(count):
            recs.append(unpack_record(payload, 5 + i * RECORD_LEN))
        return {"low": low, "records": recs}
    if type == RECORDS_REF:
        _need(payload, 5, "RECORDS_REF")
        count, low = struct.unpack_from(">BI", payload, 0)
        if count < 1 or count > MAX_RECORDS:
            raise ProtocolError(BAD_PAYLOAD, "%d records, need 1..%d" % (count, MAX_RECORDS))
        recs = []
        p = 5
        for i in range(count):
            _need(payload, p + RECORD_LEN + 1, "RECORDS_REF")
            rec = unpack_record(payload, p)
            if rec.invite_id != 0:
                raise ProtocolError(BAD_PAYLOAD, "record %d: a scanned record has no invitation"
                                    % rec.rseq)
            n = payload[p + RECORD_LEN]
            _need(payload, p + RECORD_LEN + 1 + n, "RECORDS_REF")
            rec.ref = check_ref(payload[p + RECORD_LEN + 1:p + RECORD_LEN + 1 + n]).decode()
            recs.append(rec)
            p += RECORD_LEN + 1 + n
        return {"low": low, "records": recs}
    if type == INVITE:
        _need(payload, 7, "INVITE")
        inv, life, n = struct.unpack_from(">IHB", payload, 0)
        if inv == 0:
            raise ProtocolError(BAD_PAYLOAD, "invite id 0 is reserved for unsolicited presses")
        if n > MAX_STAFF_NO:
            raise ProtocolError(BAD_PAYLOAD, "staff number of %d bytes" % n)
        _need(payload, 9 + n, "INVITE")
        staff_no = bytes(payload[7:7 + n])
        for b in staff_no:
            if b < 0x20 or b > 0x7E:
                raise ProtocolError(BAD_PAYLOAD, "staff number must be printable ASCII")
        w, h = payload[7 + n], payload[8 + n]
        if w > MAX_NAME_W or h > MAX_NAME_H or (w == 0) != (h == 0):
            raise ProtocolError(BAD_PAYLOAD, "name bitmap %dx%d" % (w, h))
        size = ((w + 7) // 8) * h
        _need(payload, 9 + n + size, "INVITE")
        return {"invite_id": inv, "lifetime": life, "staff_no": staff_no.decode(),
                "name_w": w, "name_h": h, "name_bitmap": bytes(payload[9 + n:9 + n + size])}
    if type == CONFIG:
        _need(payload, CONFIG_HEADER, "CONFIG")
        ver, idx, count, total, crc = struct.unpack_from(">HBBHI", payload, 0)
        if count == 0 or idx >= count:
            raise ProtocolError(BAD_PAYLOAD, "chunk %d of %d" % (idx, count))
        data = bytes(payload[CONFIG_HEADER:])
        if len(data) > CONFIG_CHUNK:
            data = data[:CONFIG_CHUNK]
        return {"cat_version": ver, "index": idx, "count": count, "total": total, "crc": crc,
                "data": data}
    raise ProtocolError(BAD_TYPE, "type 0x%02x" % type)


def encode(type, fields):
    """Encode a dict of fields (as decode returns them) into a payload."""
    if type in _FIXED:
        fmt, names = _FIXED[type]
        values = []
        for n in names:
            values.append(fields[n])
        return struct.pack(fmt, *values)
    if type == RECORDS:
        recs = fields["records"]
        if len(recs) > MAX_RECORDS:
            raise ProtocolError(BAD_PAYLOAD, "%d records, at most %d" % (len(recs), MAX_RECORDS))
        buf = bytearray(5 + RECORD_LEN * len(recs))
        struct.pack_into(">BI", buf, 0, len(recs), fields["low"])
        for i in range(len(recs)):
            recs[i].pack_into(buf, 5 + i * RECORD_LEN)
        return bytes(buf)
    if type == RECORDS_REF:
        recs = fields["records"]
        if not 1 <= len(recs) <= MAX_RECORDS:
            raise ProtocolError(BAD_PAYLOAD, "%d records, need 1..%d" % (len(recs), MAX_RECORDS))
        size = 5
        refs = []
        for r in recs:
            if r.invite_id != 0:
                raise ProtocolError(BAD_PAYLOAD, "a scanned record has no invitation")
            ref = check_ref(r.ref if r.ref is not None else b"")
            refs.append(ref)
            size += RECORD_LEN + 1 + len(ref)
        buf = bytearray(size)
        struct.pack_into(">BI", buf, 0, len(recs), fields["low"])
        p = 5
        for i in range(len(recs)):
            recs[i].pack_into(buf, p)
            ref = refs[i]
            buf[p + RECORD_LEN] = len(ref)
            buf[p + RECORD_LEN + 1:p + RECORD_LEN + 1 + len(ref)] = ref
            p += RECORD_LEN + 1 + len(ref)
        return bytes(buf)
    if type == INVITE:
        staff_no = fields.get("staff_no", "").encode()
        bitmap = fields.get("name_bitmap", b"")
        w, h = fields.get("name_w", 0), fields.get("name_h", 0)
        if len(staff_no) > MAX_STAFF_NO or w > MAX_NAME_W or h > MAX_NAME_H:
            raise ProtocolError(BAD_PAYLOAD, "staff number or name bitmap too large")
        if len(bitmap) != ((w + 7) // 8) * h:
            raise ProtocolError(BAD_PAYLOAD, "name bitmap size does not match %dx%d" % (w, h))
        return (struct.pack(">IHB", fields["invite_id"], fields["lifetime"], len(staff_no))
                + staff_no + bytes([w, h]) + bitmap)
    if type == CONFIG:
        data = fields["data"]
        if len(data) > CONFIG_CHUNK:
            raise ProtocolError(BAD_PAYLOAD, "CONFIG chunk of %d bytes, max %d" % (len(data), CONFIG_CHUNK))
        return struct.pack(">HBBHI", fields["cat_version"], fields["index"], fields["count"],
                           fields["total"], fields["crc"]) + data
    raise ProtocolError(BAD_TYPE, "type 0x%02x" % type)


def to_jsonable(type, fields):
    """Fields with bytes as hex and records as dicts (for logs and test vectors)."""
    out = {"type": NAMES[type]}
    for k in fields:
        v = fields[k]
        if k == "records":
            v = [r.to_dict() for r in v]
        elif isinstance(v, (bytes, bytearray)):
            v = bytes(v).hex()
        out[k] = v
    return out


def from_jsonable(d):
    """Inverse of to_jsonable: returns (type, fields)."""
    type = None
    for t in NAMES:
        if NAMES[t] == d["type"]:
            type = t
    if type is None:
        raise ProtocolError(BAD_TYPE, "unknown type name %r" % (d["type"],))
    fields = {}
    for k in d:
        if k == "type":
            continue
        v = d[k]
        if k == "records":
            v = [Record.from_dict(r) for r in v]
        elif k in _BYTES_FIELDS or k in ("name_bitmap", "data"):
            v = bytes.fromhex(v)
        fields[k] = v
    return type, fields
