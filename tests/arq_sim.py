"""A lossy-link simulation of RL1's windows with real sessions and frames. MicroPython subset:
it runs under CPython (many seeds) and under the MicroPython runtime (a few seeds).

The device journals `n` records over time (some rseqs skipped, SPEC §6.2), sends them
with RecordSender, the agent stores them with RecordReceiver and acks after "commit"; the agent
also pushes INVITEs through DownlinkSender. Frames are lost, duplicated, reordered, corrupted,
and the session is re-established now and then. Returns a dict of counters; raises AssertionError
if any record is stored twice, never stored, or invented.
"""

from protocol import messages as m
from protocol.arq import RecordSender, RecordReceiver, DownlinkSender
from protocol.errors import ProtocolError
from protocol.session import Session, DEVICE, AGENT

from fw_agent import Faults, Lossy, Rng   # the firmware tests' deterministic lossy wire


def run(seed, n=200, loss=0.2, dup=0.1, reorder=0.3, corrupt=0.05, reconnect_ms=4000,
        invites=20, limit_ms=600000):
    rng = Rng(seed)
    key = bytes([(seed + i) & 0xFF for i in range(32)])
    dev = Session(1001, key, DEVICE)
    ag = Session(1001, key, AGENT)
    faults = Faults(loss, dup, reorder, corrupt)
    up = Lossy(rng, faults)
    down = Lossy(rng, faults)
    sender = RecordSender()
    receiver = RecordReceiver()
    dl = DownlinkSender()
    journal = {}          # rseq -> Record (held, un-acked)
    made = []             # rseqs that exist
    next_rseq = 1
    stored = {}           # rseq -> times stored by the agent
    executed = {}         # invite id -> times the device saw it
    stats = {"rejected": 0, "frames_up": 0, "frames_down": 0, "sessions": 0}
    for i in range(invites):
        dl.push(7000 + i)

    def handshake(now):
        stats["sessions"] += 1
        nd = bytes([rng.next() & 0xFF for _ in range(8)])
        na = bytes([rng.next() & 0xFF for _ in range(8)])
        dev.adopt(nd, na)
        ag.adopt(nd, na)
        sender.reset(receiver.cum)     # HELLO_ACK carries the agent's cumulative ack ...
        for r in [r for r in journal if r <= receiver.cum]:
            del journal[r]                 # ... which frees the journal like an ACK does
        dl.reset()
        up.q = []
        down.q = []

    handshake(0)
    now = 0
    next_reconnect = reconnect_ms
    while now < limit_ms:
        # the citizen side: a record every ~30 ms, some rseqs skipped (a salvaged journal, §6.2)
        if next_rseq <= n and rng.chance(0.5):
            if rng.chance(0.03):
                next_rseq += 1            # this rseq never exists
            else:
                journal[next_rseq] = m.Record(next_rseq, 1795000000 + next_rseq, 0, 1,
                                              1 + next_rseq % 5, 0, ())
                made.append(next_rseq)
                next_rseq += 1
        if reconnect_ms and now >= next_reconnect:
            handshake(now)
            next_reconnect += reconnect_ms
        low = min(journal) if journal else next_rseq
        head = next_rseq - 1
        for batch in sender.poll(now, low, head):
            recs = [journal[r] for r in batch if r in journal]
            _, data = dev.seal(m.RECORDS, {"low": low, "records": recs})
            up.put(now, data)
            stats["frames_up"] += 1
        for item_id in dl.poll(now):
            seq, data = ag.seal(m.INVITE, {"invite_id": dl.items[item_id], "lifetime": 60,
                                           "staff_no": "", "name_w": 0, "name_h": 0,
                                           "name_bitmap": b""})
            dl.sent(item_id, seq, now)
            down.put(now, data)
            stats["frames_down"] += 1
        for data in up.due(now):
            try:
                f, t, fields = ag.open(data)
            except ProtocolError:
                stats["rejected"] += 1
                continue
            if t == m.RECORDS:
                receiver.note_low(fields["low"])
                new, dup = receiver.offer([r.rseq for r in fields["records"]])
                for r in new:
                    stored[r] = stored.get(r, 0) + 1
                receiver.committed(new)
                cum, sack = receiver.ack()
                down.put(now, ag.seal(m.ACK, {"cum": cum, "sack": sack})[1])
            elif t == m.DACK:
                dl.on_dack(fields["seq"], fields["bitmap"], now)
        for data in down.due(now):
            try:
                f, t, fields = dev.open(data)
            except ProtocolError:
                stats["rejected"] += 1
                continue
            if t == m.ACK:
                cum = sender.on_ack(fields["cum"], fields["sack"], now)
                for r in [r for r in journal if r <= cum]:
                    del journal[r]
            elif t == m.INVITE:
                executed[fields["invite_id"]] = executed.get(fields["invite_id"], 0) + 1
            up.put(now, dev.seal(m.DACK, {"seq": dev.rx.highest,
                                           "bitmap": dev.rx.bitmap32()})[1])
        if next_rseq > n and not journal and dl.pending() == 0:
            break
        now += 10
    for r in made:
        assert stored.get(r, 0) == 1, "seed %d: rseq %d stored %d times" % (seed, r, stored.get(r, 0))
    for r in stored:
        assert r in made, "seed %d: rseq %d stored but never made" % (seed, r)
    assert not journal, "seed %d: %d records never acked" % (seed, len(journal))
    for i in range(invites):
        assert executed.get(7000 + i, 0) >= 1, "seed %d: invite %d never arrived" % (seed, 7000 + i)
    stats["records"] = len(made)
    stats["ms"] = now
    stats["retransmitted"] = sender.retransmitted
    return stats
