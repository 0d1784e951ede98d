"""Serial link against real parts: a pty pair behind a symlink, a real Agent with SQLite, the
scripted RL1 device. Ack-after-commit, unplug/replug, rejections by reason, INVITE delivery."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tty

from edge_agent.links import start_links, stop_links
from protocol import messages as m
from protocol.crc32 import crc32
from protocol.session import DEVICE, Session
from tests.agent_links_support import PtyPort, ScriptedDevice, rating_rows, write_links_config
from tests.agent_support import case_body, fast_tuning, running_agent, wait_for
from tests.conftest import require


class _Rig:
    """Agent + serial link + scripted device on a pty."""

    def __init__(self, tmp_path, extra_config: str = "", **link_opts) -> None:
        self.tmp = tmp_path
        self.link_path = tmp_path / "ttyEVAL1001"
        self.cfg, self.keys = write_links_config(tmp_path, serial_port=self.link_path,
                                                 extra=extra_config)
        self.db = tmp_path / "agent.db"
        self.link_opts = link_opts

    async def __aenter__(self):
        self.port = PtyPort(self.link_path)
        self.dev = ScriptedDevice(1001, self.keys[1001])
        self.port.plug(self.dev)
        self.h = await running_agent(self.cfg, fast_tuning()).__aenter__()
        self.agent = self.h.agent
        self.links = await start_links(self.agent, self.h.config, **self.link_opts)
        self.link = self.links[0]
        self.session = self.link.session
        await wait_for(lambda: self.link.is_open, 5)
        return self

    async def post_case_offline(self):
        return await self.h.post_case(case_body("TEST-LINK-0100", window="A01", n=9))

    async def handshake(self):
        self.dev.say_hello()
        self.dev.start()
        await wait_for(lambda: self.dev.established, 5)
        await wait_for(lambda: self.h.q("SELECT online FROM devices WHERE device_id = 1001")
                       == [(1,)], 5)

    async def __aexit__(self, *exc):
        await self.dev.stop()
        await stop_links(self.links)
        await self.h.__aexit__(*exc)
        self.port.unplug()


def test_records_are_acked_only_after_commit(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            # hold the database's write lock: the agent can receive but cannot commit
            blocker = sqlite3.connect(str(r.db), timeout=10, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            seen_at_ack = []
            # at the moment an ACK reaches the device, what does an independent reader see?
            r.dev.on_ack = lambda cum, sack: seen_at_ack.append(
                (cum, rating_rows(r.db, 1001)))
            for level in (1, 4, 2):
                r.dev.press(level)
            await wait_for(lambda: r.session.pending_ingests > 0, 5)
            assert r.dev.acks == [] and r.dev.journal.keys() == {1, 2, 3}
            assert rating_rows(r.db, 1001) == []
            blocker.execute("ROLLBACK")
            blocker.close()
            await wait_for(lambda: not r.dev.journal, 10)
            assert seen_at_ack, "no ACK arrived"
            for cum, rows in seen_at_ack:
                assert set(range(1, cum + 1)) <= set(rows), (cum, rows)
            assert rating_rows(r.db, 1001) == [1, 2, 3]
            # the cumulative ack is persisted for the next start
            await wait_for(lambda: r.h.q("SELECT cum_ack FROM devices WHERE device_id = 1001")
                           == [(3,)], 5)
    asyncio.run(scenario())


def test_unplug_and_replug_reopens_and_continues(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            r.dev.press(1)
            await wait_for(lambda: not r.dev.journal, 5)
            opens = r.link.opens
            r.port.unplug()
            await wait_for(lambda: not r.link.is_open, 5)
            await wait_for(lambda: r.h.q("SELECT online FROM devices WHERE device_id = 1001")
                           == [(0,)], 5)
            # presses while unplugged stay in the journal
            r.dev.press(2)
            r.dev.press(3)
            r.port.plug(r.dev)     # a new pty at the same symlink path
            await wait_for(lambda: r.link.opens > opens, 5)   # SPEC: back within 5 s
            r.dev.link_up()        # the device says HELLO after the link is back
            await wait_for(lambda: not r.dev.journal, 10)
            assert rating_rows(r.db, 1001) == [1, 2, 3]
    asyncio.run(scenario())


def test_boot_hello_sent_before_the_agent_reopens_is_answered(tmp_path):
    """A device whose USB port re-enumerates as it boots says HELLO at once, before the agent
    has the new port open. The agent opens it as soon as it appears (not after reopen_s, here
    30 s) and keeps what was already in it, so that first HELLO is answered: no retry."""
    async def scenario():
        async with _Rig(tmp_path, reopen_s=30.0) as r:
            await r.handshake()
            r.dev.press(1)
            await wait_for(lambda: not r.dev.journal, 5)
            await r.dev.stop()
            r.port.unplug()
            await wait_for(lambda: not r.link.is_open, 5)
            await asyncio.sleep(0.2)
            r.dev.press(2)
            r.dev.session = Session(1001, r.keys[1001], DEVICE)   # rebooted: a new session
            hellos = r.dev.hellos
            r.port.plug(r.dev)
            r.dev.link_up()            # HELLO into the new port, the agent not there yet
            r.dev.start()
            await wait_for(lambda: r.dev.established, 5)
            assert r.dev.hellos == hellos + 1      # the first HELLO was answered
            await wait_for(lambda: not r.dev.journal, 5)
            assert rating_rows(r.db, 1001) == [1, 2]
    asyncio.run(scenario())


def test_rejected_frames_are_counted_by_reason_and_store_nothing(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            r.dev.paused = True
            agent = r.agent
            # 1. forged: a RECORDS frame with a wrong MAC
            good = r.dev.seal(m.RECORDS, {"low": 1, "records": [m.Record(1, 1, 0, 1, 1, 8)]})
            forged = bytearray(good)
            forged[-5] ^= 0x01                    # last MAC byte; the CRC is made valid again
            forged[-4:] = crc32(bytes(forged[:-4])).to_bytes(4, "big")
            r.port.send(bytes(forged))
            await wait_for(lambda: agent.rejected.get("bad_mac") == 1, 5)
            # 2. cross-device: device 1002's correctly signed frame on 1001's port
            other = Session(1002, bytes(32), DEVICE)
            other.adopt(b"\x01" * 8, b"\x02" * 8)
            r.port.send(other.seal(m.RECORDS, {"low": 1, "records": [m.Record(1, 1, 0, 1, 1, 8)]})[1])
            await wait_for(lambda: agent.rejected.get("wrong_device") == 1, 5)
            # 3. line noise: bad COBS and bad CRC
            r.port.write(b"\x05\x01\x02\x00")             # code byte points past the end
            await wait_for(lambda: agent.rejected.get("bad_cobs") == 1, 5)
            damaged = bytearray(good)
            damaged[13] ^= 0xFF
            r.port.send(bytes(damaged))
            await wait_for(lambda: agent.rejected.get("bad_crc") == 1, 5)
            assert rating_rows(r.db, 1001) == []
            # 4. replay: the genuine frame is accepted once, its replay is rejected
            r.port.send(good)
            await wait_for(lambda: rating_rows(r.db, 1001) == [1], 5)
            r.port.send(good)
            await wait_for(lambda: agent.rejected.get("replay") == 1, 5)
            assert rating_rows(r.db, 1001) == [1]
            # no ERROR was sent for any of these (only no_session / bad HELLO are answered)
            assert r.dev.errors == []
    asyncio.run(scenario())


def test_no_session_is_answered_so_the_device_says_hello(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            # the device believes it has a session (e.g. the agent restarted): no HELLO
            r.dev.session.adopt(b"\x11" * 8, b"\x22" * 8)
            r.dev.sender.reset(0)
            r.dev.press(5)
            r.dev.start()
            await wait_for(lambda: r.agent.rejected.get("no_session", 0) >= 1, 5)
            await wait_for(lambda: (m.E_NO_SESSION, False) in r.dev.errors, 5)
            await wait_for(lambda: not r.dev.journal, 10)    # HELLO, resend, ACK
            assert rating_rows(r.db, 1001) == [1]
            assert r.dev.hellos >= 1
    asyncio.run(scenario())


def test_invite_and_cancel_reach_the_device_and_carry_no_rater_data(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            status, body = await r.h.post_case(case_body("TEST-LINK-0001", window="A01", n=7))
            assert status == 201, body
            await wait_for(lambda: len(r.dev.invites) >= 1, 5)
            inv = r.dev.invites[0]
            assert inv["staff_no"] == "S001" and inv["invite_id"] != 0
            assert 0 < inv["lifetime"] <= 120
            # nothing from the applicant travels to the device
            blob = b"".join(r.port.received)
            for secret in ("测试7号", "13900000007"):
                assert secret.encode() not in blob
            await wait_for(lambda: r.h.q("SELECT state FROM invitations") == [("sent",)], 5)
            # a second case at the window supersedes the first: CANCEL is delivered
            status, _ = await r.h.post_case(case_body("TEST-LINK-0002", window="A01", n=8))
            assert status == 201
            await wait_for(lambda: inv["invite_id"] in r.dev.cancels, 5)
            # the device answers the second invitation; it binds to the second case
            await wait_for(lambda: len(r.dev.invites) >= 2, 5)
            r.dev.press(2, invite_id=r.dev.invites[-1]["invite_id"])
            await wait_for(lambda: not r.dev.journal, 5)
            rows = r.h.q("SELECT c.project_no FROM ratings r JOIN cases c ON c.id = r.case_id")
            assert rows == [("TEST-LINK-0002",)]
    asyncio.run(scenario())


def test_lone_zero_is_sent_after_open(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            r.port.unplug()
            await wait_for(lambda: not r.link.is_open, 5)
            # a bare pty (no device reading it): collect what the agent writes after opening
            master, slave = os.openpty()
            tty.setraw(slave)
            os.set_blocking(master, False)
            tmp = r.link_path.with_name("x.tmp")
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, r.link_path)
            raw = bytearray()

            def got_something():
                try:
                    raw.extend(os.read(master, 100))
                except BlockingIOError:
                    pass
                return bool(raw)
            await wait_for(got_something, 5)
            assert raw[0] == 0
            os.close(master)
            os.close(slave)
    asyncio.run(scenario())


def test_storage_failure_sends_busy_and_the_resend_is_stored(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            # a real SQLite failure inside the agent's transaction
            conn = sqlite3.connect(str(r.db), timeout=10, isolation_level=None)
            conn.execute("CREATE TRIGGER test_fail BEFORE INSERT ON ratings BEGIN "
                         "SELECT RAISE(ABORT, 'synthetic storage failure'); END")
            r.dev.press(4)
            await wait_for(lambda: (m.E_BUSY, True) in r.dev.errors, 10)
            assert r.dev.acks == [] and 1 in r.dev.journal
            assert r.session.stats["busy"] >= 1
            conn.execute("DROP TRIGGER test_fail")
            conn.close()
            await wait_for(lambda: not r.dev.journal, 15)     # the device's resend is stored
            assert rating_rows(r.db, 1001) == [1]
    asyncio.run(scenario())


def test_invitation_waits_for_an_offline_device_and_is_sent_on_hello(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            status, _ = await r.post_case_offline()
            assert status == 201
            assert r.h.q("SELECT state FROM invitations") == [("waiting",)]
            await r.handshake()
            await wait_for(lambda: len(r.dev.invites) == 1, 10)
            await wait_for(lambda: r.h.q("SELECT state FROM invitations") == [("sent",)], 10)
    asyncio.run(scenario())


def test_render_name_packs_mono_hlsb():
    from edge_agent.links import name_bitmap
    from tools import bitmaps
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))
    w, h, bitmap = name_bitmap.render_name("测试员甲")
    assert 0 < w <= m.MAX_NAME_W and h == m.MAX_NAME_H
    assert len(bitmap) == (w + 7) // 8 * h and any(bitmap)
    # it fits an INVITE and decodes again
    payload = m.encode(m.INVITE, {"invite_id": 1, "lifetime": 60, "staff_no": "S001",
                                  "name_w": w, "name_h": h, "name_bitmap": bitmap})
    assert m.decode(m.INVITE, payload)["name_bitmap"] == bitmap
    w2, _, _ = name_bitmap.render_name("测试" * 10)      # too wide: condensed into 96 pixels
    assert 0 < w2 <= m.MAX_NAME_W
    assert name_bitmap.render_name("") == (0, 0, b"")


def test_a_burst_of_hellos_raises_one_device_alert(tmp_path):
    """SPEC §5.3: sessions started over and over (a boot loop, a flapping link) are counted; a
    burst alerts once per period, through the same durable alert rows as a 差评 (the webhook is
    never reached here). Replayed HELLOs: tests/test_agent_links_hello.py."""
    async def scenario():
        extra = '[alerts]\nwebhook_url = "http://127.0.0.1:9/hook"\n'
        async with _Rig(tmp_path, extra, hello_burst=(3, 60.0), hello_rate=(20, 1.0)) as r:
            await r.handshake()
            for _ in range(5):
                n = r.session.hellos
                r.dev.say_hello()
                await wait_for(lambda: r.session.hellos > n, 5)
            await wait_for(lambda: r.h.q("SELECT COUNT(*) FROM alerts") == [(1,)], 5)
            assert r.session.hello_bursts == 1
            await wait_for(lambda: r.h.q("SELECT hello_bursts FROM devices") == [(1,)], 5)
            kind, device, rating, payload = r.h.q(
                "SELECT kind, device_id, rating_id, payload FROM alerts")[0]
            assert (kind, device, rating) == ("hello_burst", 1001, None)
            body = json.loads(payload)
            assert body["type"] == "hello_burst" and body["window"] == "A01"
            assert body["hellos"] >= 3 and body["periodS"] == 60.0
    asyncio.run(scenario())


def test_replugged_behind_the_symlink_while_the_old_port_never_hangs_up(tmp_path):
    """The serial stall: the agent held a port that was no longer the device's (a pair torn down
    as it was opened, which never reported a hangup) while the replugged device said HELLO on a
    new one behind the same symlink. The open port is checked against the path, so the agent
    follows the symlink within a second instead of staying deaf."""
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            r.dev.press(1)
            await wait_for(lambda: not r.dev.journal, 5)
            opens = r.link.opens
            old = r.port
            old.device = None              # still open at both ends, never hangs up
            r.port = PtyPort(r.link_path)  # replugged: a new pair behind the same symlink
            r.port.plug(r.dev)
            r.dev.press(2)
            r.dev.link_up()
            try:
                await wait_for(lambda: not r.dev.journal, 10)
            finally:
                old.unplug()
            assert r.link.opens > opens
            assert rating_rows(r.db, 1001) == [1, 2]
    asyncio.run(scenario())


def test_silent_port_shows_the_device_offline_with_the_reason_and_reopens(tmp_path):
    async def scenario():
        async with _Rig(tmp_path, silence_s=1.0) as r:
            await r.handshake()
            opens = r.link.opens
            await r.dev.stop()             # the device stops talking; the port stays open

            def state():
                rows = r.h.q("SELECT online, info FROM devices WHERE device_id = 1001")
                return rows[0][0], json.loads(rows[0][1]).get("offline_reason")
            await wait_for(lambda: state() == (0, "serial_silent"), 10)
            await wait_for(lambda: r.link.opens > opens, 5)
            r.dev.start()
            r.dev.link_up()
            await wait_for(lambda: state() == (1, None), 10)
    asyncio.run(scenario())
