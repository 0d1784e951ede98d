"""1,000 rated invitations through the real app on the simulated board, with the test agent
acking over an in-memory pipe, measuring the heap. MicroPython subset (run under the MicroPython
runtime, where gc.mem_alloc() is the real allocator's count).

Reports: live heap after import (code + objects), peak live heap during the run (sampled after
gc.collect()), and bytes allocated by the press path itself (the sample that completes a press:
debounce -> flow -> journal append), measured with the collector disabled.
"""

import gc

try:
    import asyncio
except ImportError:  # pragma: no cover
    asyncio = None


async def live():
    """Live heap bytes. The WebAssembly port collects only once control is back in the JS
    event loop, hence the sleep(0) after gc.collect()."""
    gc.collect()
    await asyncio.sleep(0)
    return gc.mem_alloc()


async def run(root, presses=1000):
    base = await live()
    from firmware.app import App
    from firmware.board.sim import SimBoard, pipe_pair
    from firmware.clock import Clock
    from firmware.config import Config
    code = await live()
    from fw_agent import AgentEnd
    after_import = await live()
    t = [0]
    clock = Clock(ticks=lambda: t[0])
    dev, ag = pipe_pair()
    key = bytes(range(32))
    cfg = Config({"device_id": 1001, "catalogue_path": root + "/cat.bin",
                  "journal": {"dir": root + "/j", "capacity": 50000},
                  "flow": {"thanks_s": 0}})
    board = SimBoard(dev, root + "/j")
    before_app = await live()
    app = App(board, cfg, key, clock=clock, phrases={})
    app_objects = await live() - before_app
    agent = AgentEnd(1001, key, ag, lean=presses)
    after_setup = await live()
    now = 0
    peak = 0
    press_alloc_max = 0
    press_alloc_total = 0
    press_alloc_count = 0     # presses that allocated anything
    measured = 0

    def step(now):
        app.ui(now)
        app.link(now)
        agent.step(now)

    for i in range(presses):
        agent.invite(1000 + i)
        # wait for the invitation to show
        for _ in range(200):
            now += 5
            t[0] = now
            app.sample_buttons(now)
            step(now)
            if app.flow.state == 1:
                break
        assert app.flow.state == 1, "invitation %d never showed" % i
        board.set_buttons(1 << (i % 3))
        # sample until the press registers. The samples before it only run the debouncer
        # (ints), so the allocation over the loop is the press path's. gc.mem_alloc() walks
        # the heap (slow on a large heap): two calls per press.
        n_before = app.flow.committed_count
        gc.disable()
        a = gc.mem_alloc()
        for _ in range(40):
            now += 5
            t[0] = now
            app.sample_buttons(now)
            if app.flow.committed_count != n_before:
                break
        d = gc.mem_alloc() - a
        gc.enable()
        assert app.flow.committed_count == n_before + 1, "press %d not committed" % i
        measured += 1
        press_alloc_total += d
        if d:
            press_alloc_count += 1
        if d > press_alloc_max:
            press_alloc_max = d
        board.set_buttons(0)
        for _ in range(250):          # the thanks screen (0 s here) and the ack
            now += 10
            t[0] = now
            app.sample_buttons(now)
            step(now)
            if i % 50 == 0 and _ % 50 == 0:
                a = await live()
                if a > peak:
                    peak = a
            if app.flow.state == 0 and app.journal.unacked() == 0:
                break
        if i % 10 == 0:
            a = await live()
            if a > peak:
                peak = a
    for _ in range(400):
        now += 5
        t[0] = now
        step(now)
    counts = agent.counts
    for r in range(1, presses + 1):
        assert counts[r] == 1, (r, counts[r])
    assert app.journal.unacked() == 0
    return {"heap_at_start": base, "device_code": code - base, "app_objects": app_objects,
            "after_setup": after_setup, "peak": peak, "growth": peak - after_setup,
            "device_heap": app_objects + max(0, peak - after_setup),
            "press_alloc_max": press_alloc_max, "presses_allocating": press_alloc_count,
            "press_alloc_avg": press_alloc_total // max(1, measured), "presses": measured,
            "stored_once": presses}
