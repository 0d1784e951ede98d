"""The firmware's RL1 engine against an agent built from the protocol package: over an in-memory
pipe and over a real pty, with loss, duplication, reordering and corruption both ways. Every
record the device journalled must be stored by the agent exactly once."""
from __future__ import annotations

import os
import time

import pytest
import serial

from firmware.app import App
from firmware.board.sim import FdStream, SimBoard
from firmware.config import Config
from fw_agent import Faults, AgentEnd
from fw_rig import DEV, KEY, WALL, Rig, hello_after_reboot
from protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def assert_exactly_once(agent: AgentEnd, n: int) -> None:
    assert sorted(agent.stored) == list(range(1, n + 1)), sorted(agent.stored)
    assert all(c == 1 for c in agent.stored.values()), agent.stored


def test_clean_pipe_invite_rate_ack(tmp_path):
    rig = Rig(str(tmp_path))
    rig.run_until(lambda: rig.app.uplink.established, 5000)
    assert rig.app.clock.synced
    rig.agent.invite(501, staff_no="A07")
    rig.run_until(lambda: rig.app.display.screen == "invite", 2000)
    assert rig.board.beeps == 1 and "No.A07" in rig.board.fb.text_lines()
    rig.run(400)
    rig.rate(2)
    rig.run_until(lambda: 1 in rig.agent.stored and rig.app.journal.unacked() == 0, 5000)
    rec = rig.agent.records[1]
    assert (rec.level, rec.invite_id, rec.flags) == (2, 501, 0)
    assert abs(rec.time - rig.wall()) <= 2
    assert rig.agent.dacked == 1 and rig.agent.statuses


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossy_pipe_exactly_once_with_reboot(tmp_path, seed):
    bad = Faults(loss=0.2, dup=0.15, reorder=0.3, corrupt=0.08)
    rig = Rig(str(tmp_path), up=bad, down=bad, seed=seed)
    made = 0
    for i in range(40):
        if i % 2 == 0:
            rig.agent.invite(900 + i)
            rig.run(300)
        rig.rate(1 + i % 3)
        rig.run(900)
        if i == 20:
            rig.reboot()       # power cut: the journal and the backlog survive
            rig.run(50)
    made = rig.journalled()
    assert made >= 40
    rig.run_until(lambda: rig.app.journal.unacked() == 0 and len(rig.agent.stored) == made,
                  120000)
    assert_exactly_once(rig.agent, made)
    assert rig.app.journal.boot_count == 2
    assert rig.app.uplink.counters["rejected"] > 0 or rig.agent.rejected > 0


def test_hello_counter_survives_a_power_cut(tmp_path):
    first, second, sent = hello_after_reboot(Rig(str(tmp_path)))
    assert second > first and sent == 1        # one HELLO after the cut, accepted at once


def test_agent_outage_backlog_drains(tmp_path):
    rig = Rig(str(tmp_path))
    rig.agent_on = False                   # no agent: presses are journalled, unsynced
    for i in range(25):
        rig.rate(1 + i % 3)
        rig.run(1100)
    assert rig.app.journal.unacked() == 25 and not rig.app.clock.synced
    rig.agent_on = True
    rig.run_until(lambda: len(rig.agent.stored) == 25 and rig.app.journal.unacked() == 0, 60000)
    assert_exactly_once(rig.agent, 25)
    # pressed before any sync, same boot: sent with the corrected wall time
    for r in rig.agent.records.values():
        assert r.flags & m.REC_CLOCK_UNSYNCED and r.flags & m.REC_TIME_CORRECTED, r
        assert WALL - 60 <= r.time <= WALL + 40, r


def test_unsynced_records_of_an_earlier_boot_are_not_corrected(tmp_path):
    rig = Rig(str(tmp_path))
    rig.agent_on = False
    rig.run(3000)
    rig.rate(1)
    rig.reboot()
    rig.agent_on = True
    rig.run_until(lambda: 1 in rig.agent.stored, 20000)
    r = rig.agent.records[1]
    assert r.flags & m.REC_CLOCK_UNSYNCED and not r.flags & m.REC_TIME_CORRECTED
    assert r.time == 3                     # seconds since that boot, left as they were


def test_pty_lossy_exactly_once(tmp_path):
    """Real pty: the device writes COBS frames to the master fd, the agent reads the slave
    through pyserial; faults are injected at the agent end, both directions."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    port = serial.Serial(name, 115200, timeout=0)
    import tty
    tty.setraw(master)
    try:
        bad = Faults(loss=0.15, dup=0.1, reorder=0.3, corrupt=0.05)
        cfg = Config({"device_id": DEV, "catalogue_path": str(tmp_path / "cat.bin"),
                      "flow": {"thanks_s": 0}})
        board = SimBoard(FdStream(master), str(tmp_path / "j"))
        app = App(board, cfg, KEY, phrases={})          # real monotonic clock
        t0 = time.monotonic()
        agent = AgentEnd(DEV, KEY, port, seed=7, up_faults=bad, down_faults=bad,
                          time_fn=lambda: WALL + int(time.monotonic() - t0))

        def spin(seconds, until=None):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                now = app.clock.now()
                app.step(now)
                agent.step(now)
                if until is not None and until():
                    return True
                time.sleep(0.002)
            return until is None

        assert spin(10, lambda: app.uplink.established)
        # A citizen's press: held 150 ms and released for 150 ms. The device is this process:
        # when a loaded CI machine stalls it for longer than a hold, a real button would still
        # have been down for the device's own 150 ms, so each phase also lasts until the
        # debouncer has seen it (a stall cannot shorten a press in device time).
        for i in range(20):
            bit = 1 << (i % 5)
            board.press(1 + i % 5)
            spin(0.15)
            assert spin(10, lambda: app.debouncer.held() & bit)
            board.release(1 + i % 5)
            spin(0.15)
            assert spin(10, lambda: not app.debouncer.held() & bit)
            spin(0.03)                         # thanks_s = 0: back to idle at once
        n = app.journal.next_rseq - 1
        assert n == 20
        assert spin(30, lambda: len(agent.stored) == n and app.journal.unacked() == 0)
        assert_exactly_once(agent, n)
    finally:
        port.close()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("seed", [4, 5])
def test_waiting_area_refs_exactly_once_over_lossy_link(tmp_path, seed):
    """Waiting area: scanned ratings travel in RECORDS_REF (several to a frame when the
    backlog drains), survive a reboot, and arrive exactly once with their reference."""
    bad = Faults(loss=0.2, dup=0.15, reorder=0.3, corrupt=0.08)
    rig = Rig(str(tmp_path), up=bad, down=bad, seed=seed, role="waiting_area")
    codes = {}
    rig.agent_on = False                      # a backlog first: refs packed several a frame
    for i in range(30):
        if i == 12:
            rig.agent_on = True
        code = ("T%08d" % i) if i % 3 else ("TEST-3714-%s-%06d" % ("R" * 20, i))
        rig.scan(code)
        rig.rate(1 + i % 3)
        rig.run(1100)
        codes[rig.journalled()] = code
        if i == 18:
            rig.reboot()
            rig.run(50)
    made = rig.journalled()
    assert made == 30
    rig.run_until(lambda: rig.app.journal.unacked() == 0 and len(rig.agent.stored) == made,
                  120000)
    assert_exactly_once(rig.agent, made)
    assert {r: rec.ref for r, rec in rig.agent.records.items()} == codes
    assert max(rig.agent.ref_frames) > 1      # the backlog went several to a frame
    assert all(rec.invite_id == 0 and not rec.flags & m.REC_UNSOLICITED
               for rec in rig.agent.records.values())
