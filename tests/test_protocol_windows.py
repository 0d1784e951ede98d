"""The window state machines under loss, duplication, reordering, corruption and reconnects:
every record is stored exactly once, nothing is invented, every downlink command arrives."""
from __future__ import annotations

import pytest

import arq_sim
from protocol.arq import RecordReceiver, RecordSender, DownlinkSender, Rto


@pytest.mark.parametrize("seed", range(1, 41))
def test_lossy_link_delivers_exactly_once(seed):
    stats = arq_sim.run(seed)
    assert stats["records"] > 150


@pytest.mark.parametrize("seed", range(100, 106))
def test_hostile_link_delivers_exactly_once(seed):
    arq_sim.run(seed, loss=0.5, dup=0.3, reorder=0.6, corrupt=0.2, reconnect_ms=1500)


def test_clean_link_never_retransmits():
    stats = arq_sim.run(7, loss=0, dup=0, reorder=0, corrupt=0, reconnect_ms=0)
    assert stats["retransmitted"] == 0 and stats["rejected"] == 0


def test_backlog_drains_in_full_frames_with_many_in_flight():
    s = RecordSender()
    batches = s.poll(0, 1, 1000)
    assert len(batches) >= 8 and all(len(b) == 10 for b in batches[:-1])
    assert sum(len(b) for b in batches) <= s.window


def test_gap_below_low_is_announced_and_closed():
    s, r = RecordSender(), RecordReceiver()
    # rseq 3 was burnt by a torn write; the journal holds 1, 2, 4.
    (batch,) = s.poll(0, 1, 4)
    new, _ = r.offer([1, 2, 4])
    r.committed(new)
    cum, sack = r.ack()
    assert cum == 2
    assert s.on_ack(cum, sack, 10) == 2
    # The journal now starts at 4: rseq 3 never existed. The sender says so at once, in a
    # RECORDS frame with no records (the caller fills in low=4), and repeats only per RTO.
    assert s.poll(20, 4, 4) == [[]]
    assert s.poll(21, 4, 4) == []
    assert s.poll(21 + s.rto.value, 4, 4) == [[]]
    r.note_low(4)
    assert r.ack()[0] == 4


def test_receiver_acks_only_committed():
    r = RecordReceiver(cum=10)
    new, dup = r.offer([11, 12, 9])
    assert new == [11, 12] and dup == [9]
    assert r.ack()[0] == 10          # nothing acked before the commit
    assert r.offer([11]) == ([], [])  # a retransmission while committing: not stored twice
    r.abandon([12])                   # commit of 12 failed
    r.committed([11])
    assert r.ack()[0] == 11
    assert r.offer([12]) == ([12], [])


def test_rto_follows_rtt_and_backs_off():
    rto = Rto(initial=1000)
    for _ in range(20):
        rto.sample(100)
    assert rto.value == rto.lo == 1000   # RFC 6298 floor: a short RTT never goes below 1 s
    for _ in range(20):
        rto.sample(2000)
    assert 2000 <= rto.value < 3000
    v = rto.value
    rto.backoff()
    assert rto.value == min(2 * v, rto.hi)


def test_downlink_retransmits_in_new_frames_until_dacked():
    d = DownlinkSender(max_in_flight=2)
    ids = [d.push(x) for x in "abc"]
    first = d.poll(0)
    assert first == ids[:2]
    d.sent(ids[0], 1, 0)
    d.sent(ids[1], 2, 0)
    assert d.on_dack(2, 0, 50) == [ids[1]]     # seq 1 lost
    again = d.poll(5000)
    assert again[0] == ids[0] and ids[2] in again


def test_downlink_drop_forgets_an_item():
    d = DownlinkSender()
    a, b = d.push("a"), d.push("b")
    assert d.poll(0) == [a, b]
    d.sent(a, 1, 0)
    d.drop(a)
    d.drop(b)                      # never sent: dropped from the queue too
    assert d.pending() == 0 and d.poll(10_000) == []
