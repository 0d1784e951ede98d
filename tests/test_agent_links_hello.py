"""Issue 17, SPEC §4.2 / §5.3 at the agent, against real parts (pty pairs, a real Agent with
SQLite and its HTTP API, `hcp agent devices`): a HELLO with seq ≠ 0 is refused; a recorded HELLO
replayed in the same session, a later one and after an agent restart is refused with nothing
sent back; fresh HELLOs beyond the token bucket are counted and not answered, and a replay flood
does not drain the bucket; nothing but HELLO_ACK goes out before the device's first frame under
the new session key; a new key resets the agent's floor. The replay flood against the real
firmware (simulator VirtualDevice) is in test_agent_links_hello_firmware.py."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp

from edge_agent import cli, device_hellos
from edge_agent.links import start_links, stop_links
from protocol import frame as fr
from protocol import messages as m
from protocol.auth import Hmac, hello_key
from tests.agent_links_support import (PtyPort, ScriptedDevice, rating_rows, use_catalogue,
                                       write_links_config)
from tests.agent_support import fast_tuning, rec, running_agent, wait_for

DEV = 1001


class _Rig:
    """Agent (with HTTP API) + serial link + scripted device on a pty; restartable agent."""

    def __init__(self, tmp_path: Path, extra_config: str = "", **link_opts) -> None:
        self.link_path = tmp_path / "ttyEVAL1001"
        self.cfg, self.keys = write_links_config(tmp_path, serial_port=self.link_path,
                                                 extra=extra_config)
        self.db = tmp_path / "agent.db"
        self.link_opts = link_opts
        self.h = None
        self.links: list = []

    async def __aenter__(self) -> "_Rig":
        self.port = PtyPort(self.link_path)
        self.dev = ScriptedDevice(DEV, self.keys[DEV])
        self.port.plug(self.dev)
        await self.start_agent()
        return self

    async def start_agent(self) -> None:
        self.h = await running_agent(self.cfg, fast_tuning()).__aenter__()
        self.agent = self.h.agent
        self.links = await start_links(self.agent, self.h.config, **self.link_opts)
        self.session = self.links[0].session
        await wait_for(lambda: self.links[0].is_open, 5)

    async def stop_agent(self) -> None:
        await stop_links(self.links)
        await self.h.__aexit__(None, None, None)
        self.h = None

    async def handshake(self) -> None:
        self.dev.say_hello()
        self.dev.start()
        await wait_for(lambda: self.dev.established and self.session.confirmed, 5)

    def hellos_sent(self) -> list[bytes]:
        return [f for f in self.dev.sent_frames if f[2] == m.HELLO]

    async def quiet(self, seconds: float = 0.4) -> int:
        """Frames the device received while waiting `seconds` (the agent's answers)."""
        before = len(self.port.received)
        await asyncio.sleep(seconds)
        return len(self.port.received) - before

    async def __aexit__(self, *exc) -> None:
        await self.dev.stop()
        if self.h is not None:
            await self.stop_agent()
        self.port.unplug()


def _metric(text: str, name: str, labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics") as resp:
            return await resp.text()


def test_hello_with_seq_other_than_zero_is_refused_counted_and_not_answered(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            fields = {"nonce": os.urandom(8), "fw": b"\x00\x01\x00", "boot": 1, "uptime": 9,
                      "cat_version": 1, "low": 1, "next_rseq": 1, "status": 0,
                      "hello_ctr": r.dev.hello_ctr + 1}
            k_hello = Hmac(hello_key(r.keys[DEV]))
            before = len(r.port.received)
            r.port.send(fr.build(m.HELLO, 0, DEV, 7, m.encode(m.HELLO, fields), k_hello))
            await wait_for(lambda: r.agent.rejected.get("bad_seq") == 1, 5)
            assert await r.quiet() == 0 and len(r.port.received) == before
            # it changed nothing: the floor stands, the session carries on and stores a press
            assert r.session.session.hello_floor == r.dev.hello_ctr and r.session.confirmed
            r.dev.press(2)
            await wait_for(lambda: not r.dev.journal, 5)
            assert rating_rows(r.db, DEV) == [1]
            # the same fields at seq 0 are a fresh, genuine HELLO: accepted
            r.port.send(fr.build(m.HELLO, 0, DEV, 0, m.encode(m.HELLO, fields), k_hello))
            await wait_for(lambda: r.session.hellos == 2, 5)
    asyncio.run(scenario())


def test_replayed_hello_is_refused_in_the_same_and_later_sessions_and_after_restart(tmp_path):
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            (captured,) = r.hellos_sent()
            # 1. the same session: refused, nothing sent back, the session untouched
            for _ in range(3):
                r.port.send(captured)
            await wait_for(lambda: r.agent.rejected.get("replay") == 3, 5)
            assert await r.quiet() == 0
            assert r.dev.errors == [] and r.dev.hello_acks == 1 and r.session.hellos == 1
            r.dev.press(1)
            await wait_for(lambda: not r.dev.journal, 5)
            # 2. a later session (the device said HELLO again): the old HELLO is still refused
            r.dev.say_hello()
            await wait_for(lambda: r.dev.hello_acks == 2 and r.session.confirmed, 5)
            second = r.hellos_sent()[-1]
            for frame in (captured, second):
                r.port.send(frame)
            await wait_for(lambda: r.agent.rejected.get("replay") == 5, 5)
            assert await r.quiet() == 0 and r.dev.errors == [] and r.session.hellos == 2
            # visible without alert targets: database, /metrics, `hcp agent devices`
            await wait_for(lambda: r.h.q("SELECT hello_replays, hellos, hello_ctr FROM devices"
                                         " WHERE device_id = ?", (DEV,)) == [(5, 2, 2)], 5)
            text = await _metrics(r.h.url)
            assert _metric(text, "hcp_device_hellos_total",
                           f'device="{DEV}",outcome="replayed"') == 5
            assert _metric(text, "hcp_device_hellos_total",
                           f'device="{DEV}",outcome="accepted"') == 2
            # 3. the agent restarts: the floor comes back from the database
            await r.stop_agent()
            await r.start_agent()
            assert r.session.session.hello_floor == 2
            for frame in (captured, second):
                r.port.send(frame)
            await wait_for(lambda: r.agent.rejected.get("replay") == 2, 5)
            assert await r.quiet() == 0
            r.dev.say_hello()                     # the device's next HELLO is welcome
            await wait_for(lambda: r.dev.hello_acks == 3 and r.session.confirmed, 5)
            r.dev.press(3)
            await wait_for(lambda: rating_rows(r.db, DEV) == [1, 2], 5)
        out = _cli(r.cfg, "devices")
        assert "replayed 7" in out, out
        rows = json.loads(_cli(r.cfg, "devices", "--json"))
        assert rows[0]["hello"]["replays"] == 7 and rows[0]["hello"]["accepted"] == 3
        assert "HELLO refused: replayed 7, limited 0" in _cli(r.cfg, "status")
    asyncio.run(scenario())


def _cli(cfg: Path, command: str, *extra: str) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main([command, "--config", str(cfg), *extra]) == 0
    return buf.getvalue()


def test_fresh_hellos_over_the_bucket_are_counted_not_answered(tmp_path):
    async def scenario():
        async with _Rig(tmp_path, hello_rate=(2, 1.5)) as r:
            await r.handshake()                                # token 1 of 2
            r.dev.say_hello()                                  # token 2
            await wait_for(lambda: r.dev.hello_acks == 2, 5)
            before = len(r.port.received)
            r.dev.say_hello()                                  # genuine, but over the limit
            await wait_for(lambda: r.session.guard.counts["limited"] == 1, 5)
            await asyncio.sleep(0.3)
            assert len(r.port.received) == before and r.dev.hello_acks == 2
            # the device repeats its HELLO (1 s later); once a token is back it is answered
            await wait_for(lambda: r.dev.hello_acks == 3, 10)
            assert r.session.hellos == 3 and r.session.guard.counts["limited"] >= 1
            limited = r.session.guard.counts["limited"]
            await wait_for(lambda: r.h.q("SELECT hello_limited FROM devices WHERE device_id ="
                                         " ?", (DEV,)) == [(limited,)], 5)
    asyncio.run(scenario())


def test_a_replay_flood_does_not_drain_the_bucket(tmp_path):
    """Replays are refused before the bucket: the real device's next HELLO still gets in."""
    async def scenario():
        async with _Rig(tmp_path, hello_rate=(2, 3600.0)) as r:
            await r.handshake()                                # 1 token left, none refilled
            (captured,) = r.hellos_sent()
            for _ in range(50):
                r.port.send(captured)
            await wait_for(lambda: r.agent.rejected.get("replay") == 50, 10)
            assert r.session.guard.counts["limited"] == 0
            r.dev.say_hello()
            await wait_for(lambda: r.dev.hello_acks == 2 and r.session.confirmed, 5)
    asyncio.run(scenario())


def test_only_hello_ack_goes_out_before_the_device_confirms_the_session(tmp_path):
    """SPEC §5.3: the catalogue (8 frames of 254 bytes in the issue), the selective ACK and
    queued commands wait for the first frame under the new session key."""
    async def scenario():
        r = _Rig(tmp_path)
        use_catalogue(tmp_path, r.cfg, version=2)             # the device holds version 1
        async with r:
            await r.agent.ingest(DEV, [rec(2), rec(3)], 0.0)    # committed above cum 0
            await r.session.load()
            r.dev.press(1)                                      # rseq 1: still on the device
            r.dev.next_rseq = 4
            r.dev.confirm = False                               # hold back STATUS
            before = len(r.port.received)
            r.dev.say_hello()
            await wait_for(lambda: r.dev.hello_acks == 1, 5)
            await asyncio.sleep(0.5)
            got = r.port.received[before:]
            assert [f[2] for f in got] == [m.HELLO_ACK], [hex(f[2]) for f in got]
            assert not r.session.confirmed and not r.session.reachable
            # the device's first session frame: now the SACK and the catalogue follow
            r.dev.send(r.dev.seal(m.STATUS, r.dev.status_fields()))
            chunks = len(r.session.catalogue.chunks)
            await wait_for(lambda: sum(1 for f in r.port.received[before:]
                                       if f[2] == m.CONFIG) >= chunks, 5)
            acks = [f for f in r.port.received[before:] if f[2] == m.ACK]
            assert acks and r.dev.acks[0][0] == 0 and r.dev.acks[0][1][0] == 0b110
            assert r.h.q("SELECT online FROM devices WHERE device_id = ?", (DEV,)) == [(1,)]
    asyncio.run(scenario())


def test_a_new_key_resets_the_floor_and_old_hellos_get_nothing(tmp_path):
    """Re-provisioning: the agent holds a floor for the old key; started with the device's new
    key it resets the floor, the re-provisioned device (counter from 1) gets in, and the old
    key's HELLOs fail the MAC and are not answered while the new session is live."""
    async def scenario():
        async with _Rig(tmp_path) as r:
            await r.handshake()
            for n in (2, 3):
                r.dev.say_hello()
                await wait_for(lambda: r.dev.hello_acks == n, 5)
            old_hellos = r.hellos_sent()
            old_fp = device_hellos.key_fingerprint(r.keys[DEV])
            assert r.h.q("SELECT hello_ctr, hello_key FROM devices WHERE device_id = ?",
                         (DEV,)) == [(3, old_fp)]
            await r.dev.stop()
            await r.stop_agent()
            # `hcp device provision` with a new key: new key file at the agent, new device key
            new_key = os.urandom(32)
            (tmp_path / "keys" / f"{DEV}.key").write_bytes(new_key)
            r.dev = ScriptedDevice(DEV, new_key)
            r.port.plug(r.dev)
            await r.start_agent()
            assert r.session.session.hello_floor == 0
            assert r.h.q("SELECT hello_ctr, hello_key FROM devices WHERE device_id = ?",
                         (DEV,)) == [(0, device_hellos.key_fingerprint(new_key))]
            await r.handshake()                                # hello_ctr 1 under the new key
            assert r.dev.hello_ctr == 1
            for frame in old_hellos:
                r.port.send(frame)
            await wait_for(lambda: r.agent.rejected.get("bad_mac") == len(old_hellos), 5)
            assert await r.quiet() == 0 and r.dev.errors == []
    asyncio.run(scenario())


def test_a_replay_burst_raises_one_device_alert(tmp_path):
    async def scenario():
        extra = '[alerts]\nwebhook_url = "http://127.0.0.1:9/hook"\n'
        async with _Rig(tmp_path, extra, hello_burst=(5, 60.0)) as r:
            await r.handshake()
            (captured,) = r.hellos_sent()
            for _ in range(12):
                r.port.send(captured)
            await wait_for(lambda: r.agent.rejected.get("replay") == 12, 5)
            await wait_for(lambda: r.h.q("SELECT COUNT(*) FROM alerts") == [(1,)], 5)
            kind, device, payload = r.h.q("SELECT kind, device_id, payload FROM alerts")[0]
            body = json.loads(payload)
            assert (kind, device, body["type"]) == ("hello_replay", DEV, "hello_replay")
            assert body["replays"] >= 5 and "重放" in body["message"]
    asyncio.run(scenario())

