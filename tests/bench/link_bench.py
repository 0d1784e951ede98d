"""Backlog drain over a simulated 115200-baud serial line, driven by the real RL1 state machines
and real frames (sealed, COBS-encoded, so their true byte counts are used). Baseline, in the same
run: stop-and-wait (one record per frame, one frame in flight). Simulated time, not wall time, so
the figures are the same on every machine."""
from __future__ import annotations

from protocol import cobs, messages as m
from protocol.arq import RecordReceiver, RecordSender
from protocol.session import AGENT, DEVICE, Session

BAUD_BYTES_PER_MS = 115200 / 10 / 1000       # 8N1: 10 bits a byte
COMMIT_MS = 15                               # agent group commit (fsync) per batch
LATENCY_MS = 2                               # USB-serial adapter and scheduling


def drain(n: int, window: int, per_frame: int, max_frames: int) -> float:
    """Milliseconds until the agent has acked all `n` backlog records."""
    key = bytes(range(32))
    dev, ag = Session(1, key, DEVICE), Session(1, key, AGENT)
    dev.adopt(b"n" * 8, b"a" * 8)
    ag.adopt(b"n" * 8, b"a" * 8)
    sender = RecordSender(window=window, per_frame=per_frame, max_frames=max_frames)
    receiver = RecordReceiver()
    recs = {r: m.Record(r, 1795000000 + r, r, 1, 1 + r % 5) for r in range(1, n + 1)}
    now = 0.0
    up_free = 0.0         # when the uplink wire is idle again
    events: list[tuple[float, str, object]] = []
    acked = 0
    while acked < n:
        in_flight_frames = sum(1 for e in events if e[1] == "arrive")
        if in_flight_frames < max_frames:
            for batch in sender.poll(int(now), acked + 1, n):
                frame = dev.seal(m.RECORDS, {"low": acked + 1,
                                             "records": [recs[r] for r in batch]})[1]
                start = max(now, up_free)
                up_free = start + len(cobs.wire(frame)) / BAUD_BYTES_PER_MS
                events.append((up_free + LATENCY_MS, "arrive", frame))
        events.sort(key=lambda e: e[0])
        t, kind, payload = events.pop(0)
        now = t
        if kind == "arrive":
            _, _, fields = ag.open(payload)
            new, _ = receiver.offer([r.rseq for r in fields["records"]])
            events.append((now + COMMIT_MS, "commit", new))
        elif kind == "commit":
            receiver.committed(payload)
            cum, sack = receiver.ack()
            ack = ag.seal(m.ACK, {"cum": cum, "sack": sack})[1]
            events.append((now + len(cobs.wire(ack)) / BAUD_BYTES_PER_MS + LATENCY_MS, "ack",
                           ack))
        else:
            _, _, fields = dev.open(payload)
            acked = sender.on_ack(fields["cum"], fields["sack"], int(now))
    return now


def report(n: int = 2000) -> str:
    base = drain(n, window=1, per_frame=1, max_frames=1)
    rl1 = drain(n, window=128, per_frame=10, max_frames=16)
    live = drain(n, window=128, per_frame=1, max_frames=128)
    rate = lambda ms: n / (ms / 1000)
    return "\n".join([
        f"Backlog drain of {n} records over simulated 115200 baud (commit {COMMIT_MS} ms)",
        f"  {'baseline: stop-and-wait, 1 record/frame':<44} {rate(base):8.0f} records/s  1.00x",
        f"  {'RL1 window 128, 1 record/frame':<44} {rate(live):8.0f} records/s  {base / live:5.2f}x",
        f"  {'RL1 window 128, 10 records/frame':<44} {rate(rl1):8.0f} records/s  {base / rl1:5.2f}x",
    ])


if __name__ == "__main__":
    print(report())
