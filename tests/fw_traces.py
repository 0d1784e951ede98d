"""Citizen-flow scenarios from scripted button traces, run through the real app (debouncer,
flow, journal, display) on the simulated board with a manual clock. MicroPython subset: the same
scenarios run under CPython and under the MicroPython runtime.

A trace is a list of (time ms, raw button mask) changes; the harness samples every 5 ms as the
buttons task does. Each scenario asserts on what the journal holds afterwards.
"""

import os

from protocol import messages as m
from firmware.app import App
from firmware.board.sim import SimBoard
from firmware.catalogue import Catalogue, build_blob
from firmware.clock import Clock
from firmware.config import Config
from firmware.links.base import Link
from firmware.ratings import PAYLOAD_SIZE, REF_PAYLOAD_SIZE, to_record
from protocol.messages import unpack_record

B1, B2, B3, B4, B5 = 1, 2, 4, 8, 16


def _mkdirs(path):
    p = ""
    for part in path.split("/"):
        if not part:
            p = "/" if not p else p
            continue
        p = p + part if p.endswith("/") else p + "/" + part
        try:
            os.mkdir(p)
        except OSError:
            pass


def catalogue(n):
    """A catalogue of n tags: codes 200+i for level 4, 100+i for level 5, 8-pixel labels."""
    tags = []
    for i in range(n):
        tags.append((201 + i, 101 + i, 8, bytes([0xAA] * 8)))
    return Catalogue(build_blob(7, tags, 8))


class Harness:
    def __init__(self, root, unsolicited=True, cat=None, capacity=50000, flow=None,
                 role="window"):
        _mkdirs(root)
        self.t = [0]
        self.clock = Clock(ticks=lambda: self.t[0])
        f = {"unsolicited": unsolicited}
        if flow:
            f.update(flow)
        self.cfg = Config({"device_id": 1001, "catalogue_path": root + "/cat.bin", "role": role,
                           "journal": {"dir": root + "/j", "capacity": capacity}, "flow": f})
        self.board = SimBoard(None, root + "/j")
        self.cat = cat
        self.app = None
        self.boot()
        self.now = 0

    def boot(self):
        """Power on (again): a new app on the same journal directory."""
        if self.app is not None and self.app.journal is not None:
            self.app.journal.close()
        self.app = App(self.board, self.cfg, bytes(32), link=Link(), clock=self.clock,
                       phrases={})
        if self.cat is not None:
            self.app.flow.set_catalogue(self.cat)

    def advance(self, ms):
        end = self.now + ms
        while self.now < end:
            self.now += 5
            self.t[0] = self.now
            self.app.sample_buttons(self.now)
            self.app.ui(self.now)

    def play(self, trace):
        """Apply (t, mask) changes relative to now, sampling every 5 ms."""
        start = self.now
        for t, mask in trace:
            target = start + t
            if target > self.now:
                self.advance(target - self.now)
            self.board.set_buttons(mask)
        self.advance(5)

    def tap(self, mask, hold=120, gap=200):
        self.play([(0, mask), (hold, 0)])
        self.advance(gap)

    def invite(self, invite_id, lifetime=60, staff_no=""):
        self.app.on_invite({"invite_id": invite_id, "lifetime": lifetime, "staff_no": staff_no,
                            "name_w": 0, "name_h": 0, "name_bitmap": b""}, self.now)
        self.app.ui(self.now)

    def records(self):
        j = self.app.journal
        out = []
        for r, p in j.iter_unacked():
            if self.cfg.waiting_area:
                assert len(p) == REF_PAYLOAD_SIZE
                rec = to_record(p, j.boot_count, self.clock)
            else:
                assert len(p) == PAYLOAD_SIZE
                rec = unpack_record(p, 0)
            assert rec.rseq == r
            out.append(rec)
        return out

    @property
    def state(self):
        return self.app.flow.state

    @property
    def screen(self):
        return self.app.display.screen


def bounce(mask, start=0, n=6, step=3):
    """Contact bounce: the contact toggles n times `step` ms apart, ending closed."""
    out = []
    t = start
    for i in range(n):
        out.append((t, mask if i % 2 == 0 else 0))
        t += step
    out.append((t, mask))
    return out


# ---- scenarios ----------------------------------------------------------------------------

def s_bounce(root):
    h = Harness(root)
    h.invite(1)
    h.advance(500)
    tr = bounce(B1) + [(140, 0), (142, B1), (145, 0), (148, B1), (150, 0)]
    h.play(tr)
    h.advance(300)
    recs = h.records()
    assert len(recs) == 1, recs
    assert recs[0].level == 1 and recs[0].invite_id == 1 and recs[0].flags & m.REC_TOO_FAST == 0
    assert h.app.debouncer.presses == 1


def s_hold(root):
    h = Harness(root)
    h.invite(2)
    h.advance(500)
    h.play([(0, B3), (8000, 0)])       # held 8 s: past the thanks screen
    h.advance(4000)
    recs = h.records()
    assert len(recs) == 1 and recs[0].level == 3, recs
    assert h.state == 0


def s_chatter_while_held(root):
    h = Harness(root)
    h.invite(3)
    h.advance(500)
    tr = [(0, B2)]
    t = 100
    for _ in range(10):                  # 20 ms dropouts while held: still one press
        tr.append((t, 0))
        tr.append((t + 20, B2))
        t += 100
    tr.append((t, 0))
    h.play(tr)
    h.advance(300)
    recs = h.records()
    assert len(recs) == 1 and recs[0].level == 2, recs


def s_double_press(root):
    h = Harness(root)
    h.invite(4)
    h.advance(500)
    h.tap(B2)
    assert h.screen == "thanks", h.screen
    h.tap(B3)                         # during THANKS: ignored (一次一评)
    h.advance(3500)
    h.invite(4)                       # the agent resends the same INVITE: ignored
    assert h.state == 0, h.state
    recs = h.records()
    assert len(recs) == 1 and recs[0].level == 2 and recs[0].invite_id == 4, recs


def s_walk_away(root):
    h = Harness(root)
    h.invite(5, lifetime=5)
    assert h.screen == "invite" and h.board.beeps == 1
    h.advance(5100)
    assert h.state == 0 and h.screen == "idle"
    assert h.records() == []
    h.tap(B1)                          # after expiry: unsolicited
    recs = h.records()
    assert len(recs) == 1 and recs[0].invite_id == 0 and recs[0].flags & m.REC_UNSOLICITED, recs


def s_reason_paging(root):
    h = Harness(root, cat=catalogue(6))
    h.invite(6)
    h.advance(500)
    h.tap(B5)                          # 非常不满意 -> reason page 0
    assert h.screen == "reason" and h.app.flow.page == 0
    assert h.board.led_mask == 0x1F    # 4 tags + "next page"
    h.tap(B5)
    assert h.app.flow.page == 1 and h.board.led_mask == 0x13, h.board.led_mask
    h.tap(B3)                          # page 1 has 2 tags: button 3 does nothing
    assert h.screen == "reason"
    h.tap(B5)
    assert h.app.flow.page == 0        # wraps
    h.tap(B5)
    h.tap(B2)                          # tag index 5
    recs = h.records()
    assert len(recs) == 1, recs
    r = recs[0]
    assert r.level == 5 and r.reasons == (106,) and r.cat_version == 7, r
    assert r.flags & m.REC_REASON_TIMEOUT == 0


def s_reason_level4(root):
    h = Harness(root, cat=catalogue(3))
    h.invite(7)
    h.advance(500)
    h.tap(B4)
    h.tap(B1)
    r = h.records()[0]
    assert r.level == 4 and r.reasons == (201,), r


def s_reason_timeout(root):
    h = Harness(root, cat=catalogue(6))
    h.invite(8)
    h.advance(500)
    h.tap(B4)
    assert h.screen == "reason"
    h.advance(29000)
    assert h.records() == []
    h.advance(1500)
    recs = h.records()
    assert len(recs) == 1, recs
    r = recs[0]
    assert r.level == 4 and r.reasons == () and r.flags & m.REC_REASON_TIMEOUT, r
    assert h.screen == "thanks"


def s_no_catalogue(root):
    h = Harness(root)
    h.invite(9)
    h.advance(500)
    h.tap(B5)
    recs = h.records()
    assert len(recs) == 1 and recs[0].level == 5 and recs[0].reasons == () \
        and recs[0].flags & m.REC_REASON_TIMEOUT == 0, recs
    assert h.screen == "thanks"


def s_unsolicited(root):
    h = Harness(root)
    h.tap(B2)
    recs = h.records()
    assert len(recs) == 1 and recs[0].flags & m.REC_UNSOLICITED and recs[0].invite_id == 0
    h2 = Harness(root + "x", unsolicited=False)
    h2.tap(B2)
    assert h2.records() == [] and h2.state == 0


def s_too_fast(root):
    h = Harness(root)
    h.invite(10)
    h.tap(B1)                          # debounced 55 ms after the invitation appeared
    h.advance(3500)
    h.invite(11)
    h.advance(400)
    h.tap(B1)
    recs = h.records()
    assert len(recs) == 2, recs
    assert recs[0].flags & m.REC_TOO_FAST and not recs[1].flags & m.REC_TOO_FAST, recs


def s_cancel_and_queue(root):
    h = Harness(root)
    h.invite(12)
    h.app.on_cancel(12, h.now)
    h.app.ui(h.now)
    assert h.state == 0 and h.screen == "idle"
    h.invite(12)                       # a late resend of the cancelled invitation
    assert h.state == 0
    h.invite(13)
    h.advance(500)
    h.tap(B1)
    h.invite(14)                       # arrives during THANKS: shown afterwards
    assert h.screen == "thanks"
    h.advance(3500)
    assert h.screen == "invite" and h.app.flow.invite_id == 14
    h.advance(500)
    h.tap(B2)
    recs = h.records()
    assert [(r.invite_id, r.level) for r in recs] == [(13, 1), (14, 2)], recs


def s_unsynced_time(root):
    h = Harness(root)
    h.advance(7000)
    h.tap(B1)
    r = h.records()[0]
    assert r.flags & m.REC_CLOCK_UNSYNCED and r.time == 7, r


def s_thanks_after_append(root):
    h = Harness(root)
    j = h.app.journal
    seen = []
    orig = j.append

    def spy(payload=None):
        seen.append(h.app.flow.state)      # the flow still waits while the append runs
        return orig(payload)
    j.append = spy
    h.invite(15)
    h.advance(500)
    h.tap(B1)
    assert seen == [6] and h.records()[0].level == 1


def s_scan_rate(root):
    """Waiting area: scan the ticket, rate, choose the 差评 reason, thanks; the reference is
    journalled with the rating and survives a reboot."""
    h = Harness(root, role="waiting_area", cat=catalogue(6))
    h.advance(20)
    assert h.screen == "scan" and h.app.display.caption == "请扫描排队小票或回执二维码"
    h.tap(B2)                          # nothing scanned: not a rating
    assert h.records() == [] and h.state == 0
    assert h.board.scan("20261118A023")
    h.advance(500)
    assert h.screen == "invite" and h.app.flow.scanning and h.board.beeps == 1
    assert "20261118A023" in h.board.fb.text_lines()
    h.tap(B4)
    assert h.screen == "reason"
    h.board.scan("OTHER-TICKET")       # a scan while the reason is chosen changes nothing
    h.advance(50)
    h.tap(B2)
    assert h.screen == "thanks"
    h.advance(3500)
    assert h.screen == "scan"
    recs = h.records()
    assert len(recs) == 1, recs
    r = recs[0]
    assert (r.level, r.reasons, r.invite_id, r.ref) == (4, (202,), 0, "20261118A023"), r
    assert r.flags & (m.REC_UNSOLICITED | m.REC_TOO_FAST) == 0, r
    h.board.scan("TEST-3714-20261118-000042")
    h.advance(100)
    h.tap(B1)                          # pressed 100 ms after the scan: too fast, still kept
    h.advance(3500)
    h.boot()                           # power cycle: both refs come back from flash
    recs = h.records()
    assert [(x.level, x.ref) for x in recs] == [(4, "20261118A023"),
                                               (1, "TEST-3714-20261118-000042")], recs
    assert recs[1].flags & m.REC_TOO_FAST


def s_scan_unreadable(root):
    """Waiting area: a line that is no usable code asks for another scan; a scan nobody rates
    times out; neither records anything."""
    h = Harness(root, role="waiting_area", flow={"default_lifetime_s": 5})
    h.advance(20)
    h.board.scan("X" * 65)             # longer than an RL1 reference
    h.advance(50)
    assert h.screen == "scan_bad" and h.app.display.caption == "无法识别，请重新扫描"
    h.advance(3100)
    assert h.screen == "scan"
    h.board.scan("票号 A023".encode("utf-8"))
    h.advance(50)
    assert h.screen == "scan_bad"
    h.board.scan("A023")
    h.advance(50)
    assert h.screen == "invite"
    h.advance(61000)                   # scanned, never rated: back to the prompt
    assert h.screen == "scan" and h.records() == []
    sc = h.app.scanner
    assert (sc.codes, sc.rejected) == (1, 2), (sc.codes, sc.rejected)


SCENARIOS = (s_bounce, s_hold, s_chatter_while_held, s_double_press, s_walk_away,
             s_reason_paging, s_reason_level4, s_reason_timeout, s_no_catalogue, s_unsolicited,
             s_too_fast, s_cancel_and_queue, s_unsynced_time, s_thanks_after_append,
             s_scan_rate, s_scan_unreadable)


def run_all(base):
    done = []
    for s in SCENARIOS:
        s(base + "/" + s.__name__)
        done.append(s.__name__)
    return done
