"""A long link outage on the device's object model: the real app on the host board with a journal
backlog of 50,000 records (the default capacity), then the agent comes back and everything is
drained through RL1 to the test agent. MicroPython subset; run under the unix port with a heap
size like an ESP32's (tests/bench/heap_bench.py), on littlefs (journal.img, the unix board's
file-backed block device), measuring the live heap (gc.mem_alloc() after gc.collect()).

The backlog is written straight into the journal (as `App._commit` writes a press: the rating
payload packed into `journal.payload_buffer`), because pressing 50,000 times through the flow
would only repeat the 1,000-press run (fw_memrun.py) for minutes. The last `presses` records are
real presses during the outage, so the journal fills up to its capacity and the device pauses.
"""

import gc


def live():
    gc.collect()
    return gc.mem_alloc()


def run(root, records=50000, presses=100):
    """Returns heap figures (bytes) and counts; raises AssertionError when a record is not
    stored exactly once."""
    from firmware import ratings
    from firmware.app import App
    from firmware.board.sim import SimBoard, pipe_pair
    from firmware.clock import Clock
    from firmware.config import Config
    from firmware.journal import Journal
    from protocol import messages as m
    from fw_agent import AgentEnd
    base = live()
    jdir = root + "/j"
    j = Journal(jdir, ratings.PAYLOAD_SIZE, capacity=records)
    buf = j.payload_buffer
    flags = m.REC_CLOCK_UNSYNCED | m.REC_UNSOLICITED
    for i in range(records - presses):
        ratings.pack_into(buf, j.next_rseq, 0, i & 0xFFFF, 0, 0, 1 + i % 5, flags, 0,
                          j.boot_count)
        j.append()
    j.close()
    j = None
    t = [0]
    clock = Clock(ticks=lambda: t[0])
    dev, ag = pipe_pair()
    key = bytes(range(32))
    cfg = Config({"device_id": 1001, "catalogue_path": root + "/cat.bin",
                  "journal": {"capacity": records}, "flow": {"thanks_s": 0}})
    board = SimBoard(dev, jdir)
    before_app = live()
    app = App(board, cfg, key, clock=clock, phrases={})    # boot scan of the whole backlog
    app_objects = live() - before_app
    agent = AgentEnd(1001, key, ag, lean=records)
    after_setup = live()        # the test agent (and its 50 KB of counters) is not the device's
    peak = after_setup
    now = 0
    # the outage: the link retries, citizens press until the journal is full
    for i in range(presses + 5):
        for _ in range(40):
            now += 5
            t[0] = now
            board.set_buttons(1 << (i % 3) if _ < 20 else 0)
            app.step(now)
        if i % 10 == 0:
            a = live()
            if a > peak:
                peak = a
    full = app.journal.unacked()
    paused = app.flow.paused
    # the agent is back: drain everything
    steps = 0
    while app.journal.unacked():
        now += 5
        t[0] = now
        app.step(now)
        agent.step(now)
        steps += 1
        if steps % 2000 == 0:
            a = live()
            if a > peak:
                peak = a
        if steps > 4000000:
            raise AssertionError("backlog not drained: %d left" % app.journal.unacked())
    counts = agent.counts
    for r in range(1, records + 1):
        if counts[r] != 1:
            raise AssertionError("record %d stored %d times" % (r, counts[r]))
    return {"heap_at_start": base, "app_objects": app_objects, "peak": peak,
            "growth": peak - after_setup, "device_heap": app_objects + peak - after_setup,
            "backlog": full, "paused_when_full": paused,
            "stored_once": records, "drain_steps": steps}
