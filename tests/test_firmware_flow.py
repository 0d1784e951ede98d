"""Citizen flow and debouncing under CPython: the scripted button traces of tests/fw_traces.py
(the same scenarios run under MicroPython in test_firmware_micropython.py), plus the pure
debouncer and flow on their own."""
from __future__ import annotations

import pytest

import fw_traces
from firmware import flow as fl
from firmware.buttons import Debouncer, first_button
from protocol import messages as m


@pytest.mark.parametrize("scenario", fw_traces.SCENARIOS, ids=lambda s: s.__name__[2:])
def test_trace(scenario, tmp_path):
    scenario(str(tmp_path / "t"))


def test_debouncer_bounce_hold_chatter():
    d = Debouncer()
    presses = []
    raw = [(0, 1), (2, 0), (4, 1), (7, 0), (9, 1)]        # bounce, then held
    t = 0
    seq = dict(raw)
    for t in range(0, 2000, 1):
        if t in seq:
            cur = seq[t]
        if t == 1500:
            cur = 0
        if 1000 <= t < 1040 and t % 10 == 0:               # chatter while held
            cur = 0 if cur else 1
        p = d.update(cur, t)
        if p:
            presses.append((t, p))
    assert presses == [(59, 1)]
    assert first_button(0b10100) == 3 and first_button(0) == 0


def test_flow_pure_effects():
    f = fl.Flow(fl.Tunables(reason_timeout_ms=1000, thanks_ms=500))
    assert f.invite(9, 10, 0) == fl.E_REDRAW | fl.E_BEEP
    assert f.invite(9, 10, 5) == 0                          # resent: ignored
    assert f.press(2, 100) == fl.E_COMMIT and f.rec_flags == m.REC_TOO_FAST
    assert f.ui_state() == fl.INVITED
    assert f.press(3, 150) == 0                             # waiting for the journal
    assert f.committed(200) == fl.E_REDRAW and f.state == fl.THANKS
    assert f.tick(700) == fl.E_REDRAW and f.state == fl.IDLE
    assert f.set_paused(True, 800) & fl.E_STATUS and f.state == fl.PAUSED
    assert f.press(1, 900) == 0
    assert f.set_paused(False, 1000) & fl.E_REDRAW and f.state == fl.IDLE
