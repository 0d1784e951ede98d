"""App-level behaviour of the evaluator firmware on the simulated board with the real journal:
journal full and recovery, corrupt journal, catalogue over CONFIG, config and key files,
watchdog, maintenance boot, screens."""
from __future__ import annotations

import asyncio
import json

import pytest

from firmware import catalogue as catmod
from firmware import display as disp
from firmware import main as fwmain
from firmware.app import App
from firmware.board.sim import SimBoard
from firmware.config import Config, ConfigError, load, load_key
from firmware.watchdog import Watchdog
from fw_rig import DEV, KEY, Rig
from protocol import messages as m

pytestmark = pytest.mark.timeout(60)


def test_journal_full_pauses_and_recovers(tmp_path):
    rig = Rig(str(tmp_path), capacity=5)
    rig.agent_on = False
    for i in range(5):
        rig.rate(1)
        rig.run(1100)
    assert rig.app.journal.unacked() == 5
    assert rig.app.flow.state == 4 and rig.app.display.screen == "paused"
    assert rig.app.display.caption == "暂停评价，请联系工作人员"
    rig.rate(2)                                   # refused visibly, nothing written
    assert rig.app.journal.next_rseq == 6
    rig.app.on_invite({"invite_id": 77, "lifetime": 30, "staff_no": "", "name_w": 0,
                       "name_h": 0, "name_bitmap": b""}, rig.now)
    rig.run(100)
    assert rig.app.display.screen == "paused"     # the invitation waits for space
    rig.agent_on = True
    rig.run_until(lambda: rig.agent.statuses and rig.agent.hellos, 10000)
    assert rig.agent.statuses[0]["status"] & m.ST_JOURNAL_FULL  # STATUS right after HELLO_ACK
    assert rig.agent.statuses[0]["ui_state"] == 4
    rig.run_until(lambda: rig.app.journal.unacked() == 0, 10000)
    rig.run(100)
    assert rig.app.flow.state == 1 and rig.app.flow.invite_id == 77   # recovered
    rig.run(400)
    rig.rate(3)
    rig.run_until(lambda: 6 in rig.agent.stored, 5000)
    assert rig.agent.records[6].invite_id == 77 and rig.agent.records[6].level == 3
    assert not rig.agent.statuses[-1]["status"] & m.ST_JOURNAL_FULL


def test_corrupt_journal_reported_never_reformatted(tmp_path):
    rig = Rig(str(tmp_path))
    rig.agent_on = False
    for i in range(4):
        rig.rate(1)
        rig.run(1100)
    rig.app.journal.close()
    seg = [p for p in (tmp_path / "j").iterdir() if p.name.endswith(".seg")][0]
    data = bytearray(seg.read_bytes())
    data[40] ^= 0xFF                              # record 2 of 4: not a torn tail
    seg.write_bytes(bytes(data))
    rig.reboot()
    rig.run(50)
    app = rig.app
    assert app.corrupt and app.journal is None
    assert app.display.screen == "corrupt"
    rig.rate(1)
    assert seg.read_bytes() == bytes(data)        # untouched
    rig.agent_on = True
    rig.run_until(lambda: rig.agent.hellos and rig.agent.statuses, 10000)
    assert rig.agent.hellos[-1]["status"] & m.ST_JOURNAL_CORRUPT
    assert rig.agent.statuses[-1]["ui_state"] == 4
    assert rig.agent.stored == {}


def test_catalogue_over_config_installed_saved_and_used(tmp_path):
    tags = [(201 + i, 101 + i, 48, bytes([0x55] * 6 * 12)) for i in range(5)]
    blob = catmod.build_blob(3, tags, 12)
    assert len(blob) > m.CONFIG_CHUNK                 # two chunks
    rig = Rig(str(tmp_path))
    rig.run_until(lambda: rig.app.uplink.established, 5000)
    parts = catmod.chunks(blob)
    bad = dict(parts[1], data=parts[1]["data"][:-1])  # a chunk of the wrong size
    rig.agent.config([parts[0], bad])
    rig.run_until(lambda: m.E_BAD_CONFIG in rig.agent.errors, 5000)
    assert rig.app.flow.catalogue is None
    rig.agent.config(parts)
    rig.run_until(lambda: rig.app.flow.catalogue is not None, 5000)
    assert rig.app.flow.catalogue.version == 3
    rig.run_until(lambda: rig.agent.statuses and rig.agent.statuses[-1]["cat_version"] == 3, 5000)
    rig.agent.invite(5)
    rig.run(400)
    rig.rate(5)
    assert rig.app.display.screen == "reason"
    assert rig.board.fb.text_lines()[:2] == ["1", "2"]
    rig.rate(5)
    rig.rate(1)                                       # page 2, tag 5
    rig.run_until(lambda: 1 in rig.agent.stored, 5000)
    r = rig.agent.records[1]
    assert r.reasons == (105,) and r.cat_version == 3
    rig.reboot()
    assert rig.app.flow.catalogue.version == 3        # survived the reboot


def test_config_and_key_files(tmp_path):
    cfgp = tmp_path / "config.json"
    keyp = tmp_path / "device.key"
    with pytest.raises(ConfigError, match="config file missing"):
        load(str(cfgp))
    cfgp.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load(str(cfgp))
    cfgp.write_text(json.dumps({"device_id": 0}))
    with pytest.raises(ConfigError, match="device_id"):
        load(str(cfgp))
    cfgp.write_text(json.dumps({"device_id": 7, "link": "mqtt", "hall": "H1",
                                "mqtt": {"host": "10.0.0.2", "password": "s3cret-pw"},
                                "wifi": {"ssid": "hall", "password": "wifi-pw"}}))
    cfg = load(str(cfgp))
    assert cfg.device_id == 7 and cfg["mqtt"]["port"] == 1883
    assert "s3cret-pw" not in repr(cfg) and "wifi-pw" not in repr(cfg)
    secret = bytes(range(200, 232))
    keyp.write_bytes(secret.hex().encode())
    assert load_key(str(keyp)) == secret
    keyp.write_bytes(secret[:31])
    with pytest.raises(ConfigError) as e:
        load_key(str(keyp))
    assert secret[:31].hex() not in str(e.value)


def test_watchdog_fed_only_when_all_fresh():
    class W:
        feeds = 0

        def feed(self):
            self.feeds += 1
    w = W()
    wd = Watchdog(w, max_age_ms=1000)
    wd.start(0)
    assert wd.check(500) and w.feeds == 1
    wd.beat(0, 1400)
    wd.beat(1, 1400)
    assert not wd.check(1600) and w.feeds == 1       # the link task went quiet
    wd.beat(2, 1600)
    assert wd.check(1700) and w.feeds == 2


def test_app_run_tasks_feed_watchdog(tmp_path):
    rig = Rig(str(tmp_path))
    board = rig.board

    async def go():
        from firmware import app as appmod
        appmod.WATCH_PERIOD_MS = 50
        task = asyncio.ensure_future(rig.app.run(watchdog_ms=2000))
        await asyncio.sleep(0.4)
        task.cancel()
    asyncio.run(go())
    assert board.wdt is not None and board.wdt.feeds >= 2


def test_maintenance_boot_skips_app_and_watchdog(tmp_path, monkeypatch):
    board = SimBoard(None, str(tmp_path / "j"))
    board.set_buttons(0x11)
    assert fwmain.main(board) == "maintenance"
    assert board.wdt is None and not (tmp_path / "j").exists()
    board.set_buttons(0x01)
    monkeypatch.chdir(tmp_path)                      # no config.json here
    assert fwmain.main(board) == "config-error"
    assert board.wdt is None


def test_screens_phrase_pack_and_ascii(tmp_path):
    bm = bytes([0xFF, 0x00] * 8)
    pack = disp.build_pack({disp.P_RATE: (16, 8, bm)})
    assert disp.parse_pack(pack)[disp.P_RATE] == (16, 8, bm)
    board = SimBoard(None, str(tmp_path / "j"))
    cfg = Config({"device_id": DEV, "catalogue_path": str(tmp_path / "c.bin")})
    app = App(board, cfg, KEY, phrases=disp.parse_pack(pack))
    app.on_invite({"invite_id": 1, "lifetime": 30, "staff_no": "A07", "name_w": 8,
                   "name_h": 2, "name_bitmap": b"\xff\x81"}, app.clock.now())
    app.ui(app.clock.now())
    art = board.fb.ascii_art()
    assert "#" in art and "No.A07" in art
    assert app.display.caption == "请对本次服务进行评价"


def test_unknown_device_shown_on_idle_line(tmp_path):
    rig = Rig(str(tmp_path))
    rig.agent.session = type(rig.agent.session)(DEV, bytes(32), "agent")   # wrong key
    rig.agent.accept = True

    def refuse(now, data, agent=rig.agent):
        agent._out(now, agent.session.error_frame(m.E_UNKNOWN_DEVICE))
    rig.agent._frame = refuse
    rig.run(2500)
    assert rig.app.uplink.last_error == m.E_UNKNOWN_DEVICE
    assert any("UNREG" in s for s in rig.board.fb.text_lines())


def _jump(rig, to_ms):
    """Move the scripted clock forward in one leap (days of uptime without stepping them)."""
    rig.now = to_ms
    rig.t[0] = to_ms
    rig.run(100)


def test_maintenance_restart_before_timer_ints_grow(tmp_path):
    """Uptime ms stay small ints (< 2**30, 12.4 days) only if the device restarts before: after
    10 days, while idle, at night in hall time; never in the middle of a rating."""
    from firmware.app import RESTART_AFTER_MS, RESTART_CHECK_MS
    rig = Rig(str(tmp_path))
    rig.run_until(lambda: rig.app.clock.synced, 10000)
    day = 86400 * 1000
    _jump(rig, 9 * day)
    assert rig.board.restarts == 0                      # too early, whatever the hour
    t = RESTART_AFTER_MS
    while not 8 <= _hall_hour_at(rig, t) < 20:           # a working hour after 10 days
        t += 3600 * 1000
    _jump(rig, t)
    rig.run(RESTART_CHECK_MS + 100)
    assert rig.board.restarts == 0                      # daytime: the hall is open
    while _hall_hour_at(rig, t) != 3:
        t += 3600 * 1000
    _jump(rig, t - 2 * 3600 * 1000)                     # 01:xx: not yet the night window
    assert rig.board.restarts == 0
    rig.app.on_invite({"invite_id": 5, "lifetime": 10800, "staff_no": "", "name_w": 0,
                       "name_h": 0, "name_bitmap": b""}, rig.now)
    _jump(rig, t)
    rig.run(RESTART_CHECK_MS + 100)
    assert rig.app.flow.state != 0 and rig.board.restarts == 0   # an invitation is showing
    rig.rate(1)
    rig.run(2000)                                        # thanks, back to idle
    rig.run(RESTART_CHECK_MS + 100)
    assert rig.board.restarts == 1 and _hall_hour_at(rig, rig.now) == 3
    assert rig.app.journal.next_rseq == 2                # the rating was durable before


def _hall_hour_at(rig, ms):
    from firmware.app import HALL_UTC_OFFSET_S
    return (rig.app.clock.wall(ms) + HALL_UTC_OFFSET_S) // 3600 % 24


def test_maintenance_restart_without_time_waits_for_day_12(tmp_path):
    from firmware.app import RESTART_CHECK_MS, RESTART_LATEST_MS
    rig = Rig(str(tmp_path))
    rig.agent_on = False                                 # never synced: the hour is unknown
    _jump(rig, RESTART_LATEST_MS - 3 * RESTART_CHECK_MS)
    rig.run(RESTART_CHECK_MS + 100)
    assert rig.board.restarts == 0
    _jump(rig, RESTART_LATEST_MS + 10)
    rig.run(RESTART_CHECK_MS + 100)
    assert rig.board.restarts >= 1      # (the rig does not reboot: it asks again each minute)
