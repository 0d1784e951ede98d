"""A test agent for the firmware tests: the agent side of RL1 built from the real protocol
package (Session(AGENT), RecordReceiver, DownlinkSender), over a byte stream (serial: COBS) or
a frame transport (MQTT). MicroPython subset, so the same agent runs in the MicroPython tests.

Fault injection (loss, duplication, reordering, corruption) sits between the agent and the wire,
both ways, driven by a deterministic xorshift generator. `stored` counts how often each rseq was
committed: the exactly-once checks read it.
"""

from protocol import cobs
from protocol import messages as m
from protocol.arq import RecordReceiver, DownlinkSender
from protocol.errors import ProtocolError
from protocol.session import Session, AGENT


class Rng:
    def __init__(self, seed):
        self.s = (seed * 2654435761 + 1) & 0xFFFFFFFF or 1

    def next(self):
        x = self.s
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.s = x
        return x

    def chance(self, p):
        return (self.next() % 10000) < int(p * 10000)


class Faults:
    """Per-direction fault rates (0 = clean link)."""

    def __init__(self, loss=0.0, dup=0.0, reorder=0.0, corrupt=0.0):
        self.loss, self.dup, self.reorder, self.corrupt = loss, dup, reorder, corrupt


class Lossy:
    """Delays/drops/duplicates/corrupts items (frames) on their way; deliver with due(now)."""

    def __init__(self, rng, faults):
        self.rng = rng
        self.f = faults
        self.q = []
        self.n = 0

    def put(self, now, data):
        rng, f = self.rng, self.f
        if rng.chance(f.loss):
            return
        copies = 2 if rng.chance(f.dup) else 1
        for _ in range(copies):
            d = data
            if rng.chance(f.corrupt):
                b = bytearray(d)
                i = rng.next() % len(b)
                b[i] ^= 1 << (rng.next() % 8)
                d = bytes(b)
            delay = 5 + rng.next() % 150 if rng.chance(f.reorder) else 0
            self.n += 1
            self.q.append((now + delay, self.n, d))

    def due(self, now):
        out = [x for x in self.q if x[0] <= now]
        if out:
            self.q = [x for x in self.q if x[0] > now]
            out.sort()
        return [x[2] for x in out]


class AgentEnd:
    """Agent end for one device. `stream`: read(n)/write(b) byte stream (COBS framing); or
    `send_frame`/`feed_frame` for a frame transport such as MQTT."""

    def __init__(self, device_id, key, stream=None, seed=1, up_faults=None, down_faults=None,
                 time_fn=None, window=128, send_frame=None, lean=0):
        self.device_id = device_id
        self.session = Session(device_id, key, AGENT)
        self.rx = RecordReceiver()
        self.dl = DownlinkSender()
        self.stream = stream
        self.send_frame = send_frame
        self.decoder = cobs.StreamDecoder()
        self.rng = Rng(seed)
        self.up = Lossy(self.rng, up_faults or Faults())
        self.down = Lossy(self.rng, down_faults or Faults())
        self.time_fn = time_fn or (lambda: 1795000000)
        self.window = window
        self.stored = {}        # rseq -> times committed
        self.records = {}       # rseq -> Record (first copy)
        # lean=N: count commits of rseq 1..N in a preallocated bytearray instead (heap runs)
        self.counts = bytearray(lean + 1) if lean else None
        self.statuses = []
        self.ref_frames = []    # records per RECORDS_REF frame received
        self.hellos = []
        self.errors = []
        self.rejected = 0
        self.dacked = 0
        self.cat_version = 0
        self.accept = True      # False: ERROR busy instead of committing (agent storage down)
        self.last_hello = None  # the bytes of the last HELLO accepted (to replay it in tests)

    # commands
    def invite(self, invite_id, lifetime=60, staff_no="", name=None):
        w, h, bm = name if name else (0, 0, b"")
        self.dl.push((m.INVITE, {"invite_id": invite_id, "lifetime": lifetime,
                                 "staff_no": staff_no, "name_w": w, "name_h": h,
                                 "name_bitmap": bm}))

    def cancel(self, invite_id):
        self.dl.push((m.CANCEL, {"invite_id": invite_id}))

    def send_time(self):
        self.dl.push((m.TIME, {"time": self.time_fn()}))

    def config(self, chunk_fields):
        for f in chunk_fields:
            self.dl.push((m.CONFIG, f))

    # transport
    def _out(self, now, frame):
        self.down.put(now, frame)

    def _flush_out(self, now):
        for frame in self.down.due(now):
            if self.send_frame is not None:
                self.send_frame(frame)
            else:
                self.stream.write(cobs.wire(frame))

    def feed_frame(self, now, frame):
        """A frame arrived from a frame transport (MQTT)."""
        self.up.put(now, frame)

    def feed_raw(self, now, frame):
        """Handle a frame as if it came from the device now (a replay injected by a test)."""
        self._frame(now, frame)

    def step(self, now):
        if self.stream is not None:
            while True:
                data = self.stream.read(512)
                if not data:
                    break
                for it in self.decoder.feed(data):
                    if isinstance(it, ProtocolError):
                        self.rejected += 1
                    else:
                        self.up.put(now, it)
        for frame in self.up.due(now):
            self._frame(now, frame)
        if self.session.established:
            for item_id in self.dl.poll(now):
                t, fields = self.dl.items[item_id]
                seq, data = self.session.seal(t, fields)
                self.dl.sent(item_id, seq, now)
                self._out(now, data)
        self._flush_out(now)

    def _frame(self, now, data):
        try:
            f, t, fields = self.session.open(data)
        except ProtocolError:
            self.rejected += 1
            return
        if t == m.HELLO:
            self.hellos.append(fields)
            self.last_hello = data
            self.rx.note_low(fields["low"])
            self.dl.reset()
            nonce = bytes([self.rng.next() & 0xFF for _ in range(8)])
            self._out(now, self.session.hello_ack(nonce, {
                "time": self.time_fn(), "cum": self.rx.cum, "window": self.window,
                "cat_version": self.cat_version}))
        elif t == m.RECORDS or t == m.RECORDS_REF:
            if t == m.RECORDS_REF:
                self.ref_frames.append(len(fields["records"]))
            if not self.accept:
                self._out(now, self.session.seal(m.ERROR, {"code": m.E_BUSY,
                                                           "ref_seq": f.seq})[1])
                return
            self.rx.note_low(fields["low"])
            by = {}
            for r in fields["records"]:
                by[r.rseq] = r
            new, dup = self.rx.offer(list(by))
            for r in new:
                if self.counts is not None:
                    self.counts[r] += 1
                    continue
                self.stored[r] = self.stored.get(r, 0) + 1
                self.records[r] = by[r]
            self.rx.committed(new)
            cum, sack = self.rx.ack()
            self._out(now, self.session.seal(m.ACK, {"cum": cum, "sack": sack})[1])
        elif t == m.DACK:
            self.dacked += len(self.dl.on_dack(fields["seq"], fields["bitmap"], now))
        elif t == m.STATUS:
            self.statuses.append(fields)
        elif t == m.ERROR:
            self.errors.append(fields["code"])
