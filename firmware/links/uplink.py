"""RL1 on the device: handshake, sending journalled records with the ARQ window, applying acks
to the journal, executing downlink commands, DACKs and STATUS; reconnecting forever with backoff.

`Uplink.step(now_ms)` does everything due at `now_ms` and returns; the app's link task calls it
every few milliseconds. Synchronous and clock-free so tests drive it deterministically.

The app (`host`) supplies what the engine does not own:
    host.on_invite(fields, now)      INVITE (fields as protocol.messages.decode gives them)
    host.on_cancel(invite_id, now)   CANCEL
    host.on_time(first_sync, now)    the clock was set from HELLO_ACK or TIME
    host.on_catalogue(cat, now)      a complete, checked catalogue arrived
    host.on_acked(now)               the journal freed space
    host.on_error(code, now)         an ERROR from the agent (code 1: device not registered)
    host.on_journal_error(exc, now)  a journal read/ack failed (corrupt flash)
    host.status_fields(now)          dict for HELLO/STATUS: status, ui_state, cat_version
"""

import os

from protocol import messages as m
from protocol.arq import RecordSender
from protocol.errors import ProtocolError
from protocol.frame import FLAG_MORE, MAX_PAYLOAD
from firmware import catalogue as catmod
from firmware import ratings
from firmware.version import FW_VERSION

DOWN = 0          # link not connected
WAIT_ACK = 1      # HELLO sent, waiting for HELLO_ACK
UP = 2            # session established
STATE_NAMES = ("down", "hello", "up")


def _random_bytes(n):
    if hasattr(os, "urandom"):
        try:
            return os.urandom(n)
        except (OSError, NotImplementedError):  # pragma: no cover - port without a RNG
            pass
    import random
    return bytes([random.getrandbits(8) for _ in range(n)])


class Backoff:
    """Exponential backoff with jitter, in ms."""

    def __init__(self, first=1000, limit=30000):
        self.first = first
        self.limit = limit
        self.value = first

    def next(self):
        """The delay to wait now; doubles the next one (up to `limit`)."""
        v = self.value
        self.value = min(self.value * 2, self.limit)
        j = _random_bytes(1)[0]
        return v // 2 + (v // 2) * j // 255

    def reset(self):
        self.value = self.first


class Uplink:
    """The device end of RL1 over one link."""

    def __init__(self, link, session, journal, clock, host, counter, session_timeout_ms=60000,
                 status_interval_ms=60000, hello_timeout_ms=2000, sender=None,
                 random_bytes=None):
        self.link = link
        self.session = session
        self.journal = journal
        self.counter = counter     # firmware.hello_counter.HelloCounter: hello_ctr of each HELLO
        self.clock = clock
        self.host = host
        self.session_timeout_ms = session_timeout_ms
        self.status_interval_ms = status_interval_ms
        self.sender = sender if sender is not None else RecordSender()
        self.random_bytes = random_bytes if random_bytes is not None else _random_bytes
        self.assembler = catmod.Assembler()
        self.state = DOWN
        self.connect_backoff = Backoff(1000, 30000)
        self.hello_backoff = Backoff(hello_timeout_ms, 30000)
        self._next_try = 0         # DOWN: when to connect; WAIT_ACK: when to (re)send HELLO
        self._last_rx = 0          # last valid frame from the agent
        self._status_at = 0
        self.status_due = False
        self._dack_due = False
        self._rx_seq = 0
        self.last_error = 0        # ERROR code last received or raised (STATUS last_error)
        self.window = 0
        self.counters = {"hello": 0, "sessions": 0, "records_sent": 0, "frames_up": 0,
                         "frames_down": 0, "rejected": 0, "link_failures": 0,
                         "agent_ahead": 0}
        self.rejected = {}         # reason -> count

    # -- the loop body ---------------------------------------------------------------------
    def step(self, now):
        """Do what is due at `now` (ms). Never raises for link trouble: the link is closed and
        retried after a backoff."""
        try:
            self._step(now)
        except OSError:
            self._link_failed(now)

    def kick(self):
        """A new record was journalled: nothing to do but make the next step() prompt (the
        RecordSender sends a live press at once in its own frame)."""

    def request_status(self):
        self.status_due = True

    @property
    def established(self):
        return self.state == UP

    def _step(self, now):
        link = self.link
        if self.state == DOWN:
            if now - self._next_try < 0:
                return
            link.connect()
            self.connect_backoff.reset()
            self._send_hello(now)
        items = link.poll()
        for it in items:
            if isinstance(it, ProtocolError):
                self._reject(it)
            else:
                self._frame(it, now)
        if self.state == WAIT_ACK:
            if now - self._next_try >= 0:
                self._send_hello(now)
            return
        if self.state != UP:
            return
        if now - self._last_rx >= self.session_timeout_ms:
            self._send_hello(now)      # heard nothing valid for too long: new session
            return
        if self._dack_due:
            self._dack_due = False
            self._send(m.DACK, {"seq": self.session.rx.highest,
                                "bitmap": self.session.rx.bitmap32()})
        self._send_records(now)
        if self.status_due or now - self._status_at >= self.status_interval_ms:
            self._send_status(now)

    def _link_failed(self, now):
        self.counters["link_failures"] += 1
        try:
            self.link.close()
        except OSError:
            pass
        self.state = DOWN
        self._next_try = now + self.connect_backoff.next()

    # -- sending ---------------------------------------------------------------------------
    def _send(self, type, fields, flags=0):
        _, data = self.session.seal(type, fields, flags)
        self.link.send(data)
        self.counters["frames_up"] += 1

    def _send_hello(self, now):
        j = self.journal
        st = self.host.status_fields(now)
        # a new counter value for every HELLO, retries included: the agent refuses any HELLO
        # whose counter it has seen (SPEC §4.2); next() is durable before it returns
        ctr = self.counter.next()
        data = self.session.hello(self.random_bytes(8), {
            "fw": bytes(FW_VERSION), "boot": j.boot_count & 0xFFFF,
            "uptime": self.clock.uptime_s(now) & 0xFFFFFFFF, "cat_version": st["cat_version"],
            "low": j.low(), "next_rseq": j.next_rseq, "status": st["status"],
            "hello_ctr": ctr})
        self.link.send(data)
        self.counters["hello"] += 1
        self.counters["frames_up"] += 1
        self.state = WAIT_ACK
        self._next_try = now + self.hello_backoff.next()

    def _send_status(self, now):
        j = self.journal
        st = self.host.status_fields(now)
        self._send(m.STATUS, {
            "status": st["status"], "ui_state": st["ui_state"], "boot": j.boot_count & 0xFFFF,
            "uptime": self.clock.uptime_s(now) & 0xFFFFFFFF, "low": j.low(),
            "next_rseq": j.next_rseq, "unacked": j.unacked(), "capacity": j.capacity,
            "cat_version": st["cat_version"], "last_error": self.last_error & 0xFF})
        self.status_due = False
        self._status_at = now

    def _send_records(self, now):
        j = self.journal
        low = j.low()
        head = j.next_rseq - 1
        batches = self.sender.poll(now, low, head)
        if not batches:
            return
        boot = j.boot_count
        for batch in batches:
            recs = []
            refs = None
            for r in batch:
                try:
                    p = j.read(r)
                except Exception as e:     # JournalCorrupt: report, never reformat
                    self.host.on_journal_error(e, now)
                    p = None
                if p is not None:
                    rec = ratings.to_record(p, boot, self.clock)
                    if rec.ref is None:
                        recs.append(rec)
                    else:                  # scanned in the waiting area: SPEC §4.12
                        if refs is None:
                            refs = []
                        refs.append(rec)
            flags = FLAG_MORE if self.sender.more_pending(head) else 0
            if recs or refs is None:
                self._send(m.RECORDS, {"low": low, "records": recs}, flags)
                self.counters["records_sent"] += len(recs)
            if refs is not None:
                self._send_refs(low, refs, flags)

    def _send_refs(self, low, refs, flags):
        """RECORDS_REF frames for records with a scanned reference, as many to a frame as fit
        the payload limit (SPEC §4.12 R-R3); acked by rseq like any record."""
        i = 0
        while i < len(refs):
            size = 5
            chunk = []
            while i < len(refs) and len(chunk) < m.MAX_RECORDS and \
                    size + m.ref_record_len(refs[i]) <= MAX_PAYLOAD:
                size += m.ref_record_len(refs[i])
                chunk.append(refs[i])
                i += 1
            self._send(m.RECORDS_REF, {"low": low, "records": chunk}, flags)
            self.counters["records_sent"] += len(chunk)

    # -- receiving -------------------------------------------------------------------------
    def _reject(self, err):
        self.counters["rejected"] += 1
        self.rejected[err.reason] = self.rejected.get(err.reason, 0) + 1

    def _frame(self, data, now):
        try:
            f, t, fields = self.session.open(data)
        except ProtocolError as e:
            self._reject(e)
            return
        self.counters["frames_down"] += 1
        self._rx_seq = f.seq
        if t == m.ERROR:
            self._error(fields["code"], f.mac is not None, now)
            return
        self._last_rx = now
        if t == m.HELLO_ACK:
            self._hello_ack(fields, now)
            return
        if t == m.ACK:
            self._ack(fields["cum"], fields["sack"], now)
            return
        # INVITE, CANCEL, TIME, CONFIG: reliable downlink commands, acknowledged by DACK
        self._dack_due = True
        if t == m.INVITE:
            self.host.on_invite(fields, now)
        elif t == m.CANCEL:
            self.host.on_cancel(fields["invite_id"], now)
        elif t == m.TIME:
            self.host.on_time(self.clock.set_wall(fields["time"], now), now)
        elif t == m.CONFIG:
            self._config(fields, now)

    def _hello_ack(self, fields, now):
        j = self.journal
        self.state = UP
        self.counters["sessions"] += 1
        self.hello_backoff.reset()
        self.connect_backoff.reset()
        self._dack_due = False
        self.window = fields["window"]
        self.host.on_time(self.clock.set_wall(fields["time"], now), now)
        cum = fields["cum"]
        if cum > j.next_rseq - 1:
            # The agent says it has records this journal never wrote (journal replaced?).
            # Free nothing; resend what we hold. The agent sees next_rseq in HELLO to notice.
            self.counters["agent_ahead"] += 1
            self.last_error = m.E_BAD_PAYLOAD
            self.sender.reset(j.acked, fields["window"])
        else:
            self.sender.reset(cum, fields["window"])
            self._apply_cum(cum, now)
        self.status_due = True

    def _ack(self, cum, sack, now):
        if cum > self.journal.next_rseq - 1:
            self.counters["agent_ahead"] += 1
            return
        cum = self.sender.on_ack(cum, sack, now)
        self._apply_cum(cum, now)

    def _apply_cum(self, cum, now):
        j = self.journal
        if cum > j.acked:
            try:
                j.ack(cum)
            except Exception as e:      # flash error while writing the ack cursor
                self.host.on_journal_error(e, now)
                return
            self.host.on_acked(now)

    def _error(self, code, signed, now):
        self.last_error = code
        self.host.on_error(code, now)
        if code in (m.E_UNKNOWN_DEVICE, m.E_BAD_MAC, m.E_NO_SESSION, m.E_UNSUPPORTED):
            # restart the handshake, after a backoff (an unsigned ERROR may be forged)
            self.state = WAIT_ACK
            self._next_try = now + self.hello_backoff.next()

    def _config(self, fields, now):
        cur = self.host.status_fields(now)["cat_version"]
        res, cat = self.assembler.add(fields, cur)
        if res == catmod.INSTALLED:
            self.host.on_catalogue(cat, now)
            self.status_due = True
        elif res == catmod.BAD:
            self.last_error = m.E_BAD_CONFIG
            self._send(m.ERROR, {"code": m.E_BAD_CONFIG, "ref_seq": self._rx_seq})
