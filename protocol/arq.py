"""RL1 reliability as pure state machines: no I/O, no clock reads; `now` is passed in (ms).

- RecordSender (device): which rating records to put in the next RECORDS frames, given the
  journal's range and the agent's acks. Sliding window counted in records, retransmit timer from
  smoothed RTT (RFC 6298 with Karn's rule), resume from HELLO_ACK's cumulative ack.
- RecordReceiver (agent): which records are new, which are duplicates, and the ACK to send once
  the new ones are committed. Cumulative ack + 128-bit selective ack.
- DownlinkSender (agent): reliable delivery of INVITE/CANCEL/TIME/CONFIG, acked by DACK; a
  retransmission goes out in a new frame (new sequence), so downlink commands are idempotent.
Ticks may wrap on the device; callers pass a monotonic count in ms (see firmware clock).
"""

from protocol.messages import MAX_RECORDS, SACK_BYTES

DEFAULT_WINDOW = 128      # records in flight; >= 8 full frames of 10, and == the SACK span
SACK_SPAN = SACK_BYTES * 8


class Rto:
    """Retransmission timeout (RFC 6298), integers in ms.

    The floor is RFC 6298's 1 s, not Linux TCP's 200 ms: an RL1 round trip includes the agent's
    group commit, and a backlog drain of many devices queues frames at the agent. With 200 ms,
    a commit slower than usual made devices resend whole windows that were merely queued
    (`python -m tests.bench mqtt-ingest`: 2 % of records sent twice at a median SRTT of 120 ms);
    a frame that is really lost is resent after 1 s instead of 200 ms."""

    def __init__(self, initial=1000, lo=1000, hi=8000):
        self.lo = lo
        self.hi = hi
        self.srtt = -1
        self.rttvar = 0
        self.value = initial
        self._base = initial

    def sample(self, rtt):
        """Feed one RTT measurement (only from frames sent once: Karn's rule)."""
        if rtt < 0:
            return
        if self.srtt < 0:
            self.srtt = rtt
            self.rttvar = rtt // 2
        else:
            d = self.srtt - rtt
            if d < 0:
                d = -d
            self.rttvar = (3 * self.rttvar + d) // 4
            self.srtt = (7 * self.srtt + rtt) // 8
        self._base = self._clamp(self.srtt + max(4 * self.rttvar, 20))
        self.value = self._base

    def backoff(self):
        """Double the timeout after a retransmission (until the next fresh sample)."""
        self.value = self._clamp(self.value * 2)

    def _clamp(self, v):
        if v < self.lo:
            return self.lo
        if v > self.hi:
            return self.hi
        return v


def sack_bits(sack, cum):
    """The rseqs a selective-ack bitmap names: bit i (byte i//8, LSB first) <-> cum + 1 + i."""
    out = []
    for byte_i in range(len(sack)):
        b = sack[byte_i]
        if b:
            for bit in range(8):
                if b & (1 << bit):
                    out.append(cum + 1 + byte_i * 8 + bit)
    return out


class RecordSender:
    """Device side of the record window.

    The journal holds records low..head (some rseqs in that range may not exist, e.g. after a
    journal salvage: SPEC §6.2). poll() returns batches of rseqs to send now; the caller reads them from the
    journal, drops the ones that don't exist, and sends each batch as one RECORDS frame carrying
    `low` (even when the batch ends up empty: that frame tells the agent where the journal starts).
    """

    def __init__(self, window=DEFAULT_WINDOW, per_frame=MAX_RECORDS, max_frames=16, rto=None):
        self.window = min(window, SACK_SPAN)
        self.per_frame = per_frame
        self.max_frames = max_frames
        self.rto = rto if rto is not None else Rto()
        self.cum = 0
        self.next_new = 1
        self._sent = {}        # rseq -> time sent (ms); -1 once selectively acked
        self._retx = set()     # rseqs sent more than once (no RTT samples from them)
        self._low_said = -1    # last `low` announced while the agent lagged behind it
        self._low_at = 0
        self.retransmitted = 0

    def reset(self, cum, window=None):
        """A (re)connected session: the agent has every rseq <= cum. Everything else is resent."""
        if window:
            self.window = min(window, SACK_SPAN)
        self.cum = cum
        self.next_new = cum + 1
        self._sent = {}
        self._retx = set()
        self._low_said = -1

    def in_flight(self):
        return len(self._sent)

    def on_ack(self, cum, sack, now):
        """Apply an ACK. Returns the cumulative ack (unchanged when the ACK was stale)."""
        sent = self._sent
        if cum > self.cum:
            for r in list(sent):
                if r <= cum:
                    t = sent.pop(r)
                    if t >= 0 and r not in self._retx:
                        self.rto.sample(now - t)
                    self._retx.discard(r)
            self.cum = cum
            if self.next_new <= cum:
                self.next_new = cum + 1
        if cum == self.cum:
            for r in sack_bits(sack, cum):
                t = sent.get(r)
                if t is not None and t >= 0:
                    if r not in self._retx:
                        self.rto.sample(now - t)
                    sent[r] = -1
        return self.cum

    def poll(self, now, low, head):
        """Batches (lists of rseqs, <= per_frame each) to send now. Marks them sent at `now`."""
        sent = self._sent
        for r in list(sent):
            if r < low:           # acked by an earlier session, or burnt: nothing to send
                del sent[r]
                self._retx.discard(r)
        batches = []
        # 1. Retransmit what timed out (oldest first).
        due = []
        for r in sent:
            t = sent[r]
            if t >= 0 and now - t >= self.rto.value:
                due.append(r)
        if due:
            due.sort()
            self.rto.backoff()
            for i in range(0, len(due), self.per_frame):
                if len(batches) >= self.max_frames:
                    break
                batch = due[i:i + self.per_frame]
                for r in batch:
                    sent[r] = now
                    self._retx.add(r)
                self.retransmitted += len(batch)
                batches.append(batch)
        # 2. New records inside the window.
        if self.next_new < low:
            self.next_new = low
        limit = self.cum + self.window
        if limit > head:
            limit = head
        while self.next_new <= limit and len(batches) < self.max_frames:
            end = self.next_new + self.per_frame - 1
            if end > limit:
                end = limit
            batch = list(range(self.next_new, end + 1))
            for r in batch:
                sent[r] = now
            batches.append(batch)
            self.next_new = end + 1
        # 3. The agent's cumulative ack is stuck below a gap the journal no longer holds: say so.
        if not batches and self.cum < low - 1:
            if self._low_said != low or now - self._low_at >= self.rto.value:
                self._low_said = low
                self._low_at = now
                batches.append([])
        return batches

    def more_pending(self, head):
        """True when records beyond what was just sent are waiting (the FLAG_MORE hint)."""
        return self.next_new <= head

    def next_due(self):
        """Earliest time (ms) a retransmission could be due, or None when nothing is in flight."""
        best = None
        for r in self._sent:
            t = self._sent[r]
            if t >= 0 and (best is None or t < best):
                best = t
        if best is None:
            return None
        return best + self.rto.value


class RecordReceiver:
    """Agent side of the record window for one device.

    offer() sorts incoming records into new ones (store them) and duplicates; committed() is
    called once the new ones are durable; ack() gives the ACK fields. Only committed records are
    ever acknowledged, so a crash between receipt and commit costs a retransmission, not a record.
    """

    def __init__(self, cum=0):
        self.cum = cum
        self._done = set()      # committed rseqs above cum
        self._pending = set()   # offered, not yet committed

    def note_low(self, low):
        """The device holds nothing below `low` un-acked: rseqs below it are done or never were."""
        if low - 1 > self.cum:
            self.cum = low - 1
            self._advance()

    def offer(self, rseqs):
        """Split rseqs into (new, duplicates). New ones become pending until committed()."""
        new = []
        dup = []
        for r in rseqs:
            if r <= self.cum or r in self._done:
                dup.append(r)
            elif r in self._pending:
                continue   # a retransmission of something being committed right now
            else:
                self._pending.add(r)
                new.append(r)
        return new, dup

    def committed(self, rseqs):
        """The records with these rseqs are durably stored."""
        for r in rseqs:
            self._pending.discard(r)
            if r > self.cum:
                self._done.add(r)
        self._advance()

    def abandon(self, rseqs):
        """The commit failed: forget these so a retransmission is stored again."""
        for r in rseqs:
            self._pending.discard(r)

    def _advance(self):
        done = self._done
        while self.cum + 1 in done:
            self.cum += 1
            done.discard(self.cum)
        for r in [r for r in done if r <= self.cum]:
            done.discard(r)

    def ack(self):
        """(cum, sack) for an ACK: sack bit i <-> cum + 1 + i is committed."""
        sack = bytearray(SACK_BYTES)
        for r in self._done:
            i = r - self.cum - 1
            if 0 <= i < SACK_SPAN:
                sack[i >> 3] |= 1 << (i & 7)
        return self.cum, bytes(sack)


class DownlinkSender:
    """Agent side of downlink reliability. Items are opaque; each is identified by an int id.

    poll() names the items to (re)send now; the caller seals each in a frame and reports the
    sequence with sent(). on_dack() completes the items whose latest frame was acknowledged.
    """

    def __init__(self, max_in_flight=8, rto=None):
        self.max_in_flight = max_in_flight
        self.rto = rto if rto is not None else Rto()
        self._queue = []     # ids not yet sent, in order
        self._flight = {}    # id -> [seq, sent_at, tries]
        self._next_id = 1
        self.items = {}      # id -> item

    def push(self, item):
        """Queue an item; returns its id."""
        i = self._next_id
        self._next_id += 1
        self.items[i] = item
        self._queue.append(i)
        return i

    def pending(self):
        return len(self._queue) + len(self._flight)

    def reset(self):
        """New session: sequence numbers restart, so everything in flight is sent again."""
        ids = sorted(self._flight)
        self._flight = {}
        self._queue = ids + self._queue

    def poll(self, now):
        """Ids to send now: timed-out retransmissions first, then new ones up to the limit."""
        out = []
        timed_out = False
        for i in sorted(self._flight):
            seq, at, tries = self._flight[i]
            if now - at >= self.rto.value:
                out.append(i)
                timed_out = True
        if timed_out:
            self.rto.backoff()
        new = 0
        while self._queue and len(self._flight) + new < self.max_in_flight:
            out.append(self._queue.pop(0))
            new += 1
        return out

    def drop(self, item_id):
        """Give up on an item (it expired): it is neither sent again nor completed."""
        self._flight.pop(item_id, None)
        if item_id in self._queue:
            self._queue.remove(item_id)
        self.items.pop(item_id, None)

    def sent(self, item_id, seq, now):
        """Item `item_id` went out in the frame with sequence `seq`."""
        f = self._flight.get(item_id)
        tries = f[2] + 1 if f else 1
        self._flight[item_id] = [seq, now, tries]

    def on_dack(self, seq, bitmap, now):
        """Apply a DACK; returns the ids completed (their items are removed)."""
        acked = {seq}
        for i in range(32):
            if bitmap & (1 << i):
                acked.add(seq - 1 - i)
        done = []
        for i in list(self._flight):
            fseq, at, tries = self._flight[i]
            if fseq in acked:
                if tries == 1:
                    self.rto.sample(now - at)
                del self._flight[i]
                self.items.pop(i, None)
                done.append(i)
        return done
