"""The rating payload the firmware stores in the journal, and its conversion to the wire record
the agent receives. A window evaluator stores 24 bytes (PAYLOAD_SIZE); a waiting-area evaluator
stores 89 (REF_PAYLOAD_SIZE), the same 24 followed by the scanned reference, so the reference is
written in the same append as the rating (one CRC, one flush: power-safe as a whole).

    offset  size  field
    0       22    the RL1 rating record exactly as on the wire (SPEC §4.1), big-endian;
                  its rseq is the journal's rseq for this payload
    22      2     boot (u16 BE): low 16 bits of the journal's boot counter when pressed
    -- REF_PAYLOAD_SIZE only --
    24      1     n: length of the scanned reference, 0..64 (0: the rating has none)
    25      64    the reference (printable ASCII, SPEC §4.12), zero-filled after n bytes

Why the boot counter: a record pressed before the first time sync carries seconds since boot and
REC_CLOCK_UNSYNCED. Only while the device is still in that same boot can it turn those seconds
into wall time (wall time at boot + seconds); a record from an earlier boot is sent unchanged and
the agent places it by its arrival. The stored record is never rewritten: the correction
(REC_TIME_CORRECTED) is applied when the record is sent.
"""

import struct

from protocol.messages import (unpack_record, RECORD_LEN, REC_CLOCK_UNSYNCED,
                               REC_TIME_CORRECTED, MAX_REF)

PAYLOAD_SIZE = RECORD_LEN + 2
REF_OFFSET = PAYLOAD_SIZE
REF_PAYLOAD_SIZE = PAYLOAD_SIZE + 1 + MAX_REF
_FMT = ">IHHIHBBHHHH"   # the u32 time as two u16 halves: no long ints in the press path


def pack_into(buf, rseq, time_hi, time_lo, invite_id, cat_version, level, flags, reason, boot):
    """Write a payload into `buf` (e.g. journal.payload_buffer) without allocating objects.
    The record time is given as its high and low 16 bits (clock.split_wall/split_uptime)."""
    struct.pack_into(_FMT, buf, 0, rseq, time_hi, time_lo, invite_id, cat_version, level,
                     flags, reason, 0, 0, boot & 0xFFFF)


def pack_ref_into(buf, ref, n):
    """Write the reference part of a REF_PAYLOAD_SIZE payload: `n` bytes of `ref` (a bytearray
    the scanner filled), zero-filling the rest of the slot. Allocation-free."""
    buf[REF_OFFSET] = n
    base = REF_OFFSET + 1
    for i in range(MAX_REF):
        buf[base + i] = ref[i] if i < n else 0


def boot_of(payload):
    """The boot counter (u16) a payload was written in."""
    return (payload[RECORD_LEN] << 8) | payload[RECORD_LEN + 1]


def to_record(payload, boot, clock):
    """The wire Record for a stored payload, with the unsynced-time correction applied when the
    record is from the current `boot` and `clock` is synced now."""
    rec = unpack_record(payload, 0)
    if len(payload) > REF_OFFSET and payload[REF_OFFSET]:
        n = payload[REF_OFFSET]
        rec.ref = bytes(payload[REF_OFFSET + 1:REF_OFFSET + 1 + n]).decode()
    if rec.flags & REC_CLOCK_UNSYNCED and not rec.flags & REC_TIME_CORRECTED \
            and clock.synced and boot_of(payload) == boot & 0xFFFF:
        rec.time = (clock.wall_at_boot() + rec.time) & 0xFFFFFFFF
        rec.flags |= REC_TIME_CORRECTED
    return rec


def from_record(rec, boot, size=PAYLOAD_SIZE):
    """Payload bytes for a Record (tests and tools); `size` REF_PAYLOAD_SIZE keeps rec.ref."""
    buf = bytearray(size)
    rec.pack_into(buf, 0)
    struct.pack_into(">H", buf, RECORD_LEN, boot & 0xFFFF)
    if size > REF_OFFSET and rec.ref:
        ref = rec.ref.encode()
        pack_ref_into(buf, ref, len(ref))
    return bytes(buf)
