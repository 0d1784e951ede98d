"""Binding rules: by invitation; unsolicited presses kept unbound by default, inferred only where a
hall opted in (late cases too); one rating per case; unbound ratings kept and listed but never
uploaded."""
from __future__ import annotations

import asyncio
import time

from tests.agent_support import (RecordingGateway, case_body, http_json, rec, run_cli,
                                 running_agent, upload_tried, wait_for, write_config)


def _row(h, device_id, rseq):
    return h.q("SELECT r.binding, r.unbound_reason, c.project_no, r.assess_number,"
               " (SELECT COUNT(*) FROM outbox o WHERE o.rating_id = r.id)"
               " FROM ratings r LEFT JOIN cases c ON c.id = r.case_id"
               " WHERE r.device_id = ? AND r.rseq = ?", (device_id, rseq))[0]


async def _expire_invitations(h, now):
    """Let every invitation's lifetime run out (as if 120 s had passed)."""
    await h.agent.writer.write(lambda db: db.execute("UPDATE invitations SET expires_at = ?",
                                                     (now - 1,)))


async def _case(h, gw, project_no, window="A01", **over):
    status, reply = await h.post_case(case_body(project_no, window=window, **over))
    assert status == 201, reply
    return reply["invitations"][0]["inviteId"] if reply["invitations"] else None


def test_bind_by_invitation_even_when_expired(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            inv1 = await _case(h, gw, "P-1")
            await h.agent.ingest(1001, [rec(1, level=2, invite_id=inv1)], time.time())
            assert _row(h, 1001, 1) == ("invitation", None, "P-1", 1, 1)
            _, state = await h.get_case("P-1")
            assert state["rated"] and state["rating"]["level"] == 2
            assert state["invitations"][0]["state"] == "answered"
            # an expired invitation still binds: the device accepted the press while showing it
            inv2 = await _case(h, gw, "P-2")
            await h.agent.writer.write(lambda db: db.execute(
                "UPDATE invitations SET expires_at = 0 WHERE invite_id = ?", (inv2,)))
            _, state = await h.get_case("P-2")
            assert state["invitations"][0]["state"] == "expired"
            await h.agent.ingest(1001, [rec(2, level=3, invite_id=inv2)], time.time())
            assert _row(h, 1001, 2) == ("invitation", None, "P-2", 1, 1)
            # a superseded invitation (P-3 replaced P-3's predecessor) binds the same way
            inv3 = await _case(h, gw, "P-3")
            await _case(h, gw, "P-4")
            await h.agent.ingest(1001, [rec(3, level=1, invite_id=inv3)], time.time())
            assert _row(h, 1001, 3) == ("invitation", None, "P-3", 1, 1)
    asyncio.run(scenario())


def test_unknown_or_foreign_invitation_stays_unbound(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            inv = await _case(h, gw, "P-1", window="A01")  # invitation for device 1001
            await h.agent.ingest(1001, [rec(1, invite_id=123456789 if inv != 123456789 else 7)],
                                 time.time())
            assert _row(h, 1001, 1) == ("unbound", "unknown_invitation", None, None, 0)
            await h.agent.ingest(1002, [rec(1, invite_id=inv)], time.time())
            assert _row(h, 1002, 1) == ("unbound", "invitation_device_mismatch", None, None, 0)
            # never re-guessed as unsolicited: P-1 stays unrated
            _, state = await h.get_case("P-1")
            assert state["rated"] is False
    asyncio.run(scenario())


def test_unsolicited_press_binds_to_latest_unrated_case_inferred(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, unsolicited="infer"), gateway=gw) as h:
            now = time.time()
            await _case(h, gw, "P-OLD", finishedAt=_cst(now - 300))
            await _case(h, gw, "P-NEW", finishedAt=_cst(now - 30))
            await _case(h, gw, "P-OTHERWIN", window="A02", finishedAt=_cst(now - 10))
            await _expire_invitations(h, now)     # nobody answered the invitations
            await h.agent.ingest(1001, [rec(1, level=1)], now)
            assert _row(h, 1001, 1) == ("inferred", None, "P-NEW", 1, 1)
            # the next unsolicited press goes to the latest UNRATED case of the window
            await h.agent.ingest(1001, [rec(2, level=2)], now)
            assert _row(h, 1001, 2) == ("inferred", None, "P-OLD", 1, 1)
            # nothing left unrated on A01: kept, unbound, listed
            await h.agent.ingest(1001, [rec(3, level=3)], now)
            assert _row(h, 1001, 3)[:2] == ("unbound", "no_case")
    asyncio.run(scenario())


def test_unsolicited_press_outside_binding_window_does_not_bind(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, binding_window_s=600,
                                              unsolicited="infer"), gateway=gw) as h:
            now = time.time()
            await _case(h, gw, "P-STALE", finishedAt=_cst(now - 1200),
                        acceptedAt=_cst(now - 1500))
            await h.agent.ingest(1001, [rec(1)], now)
            assert _row(h, 1001, 1) == ("unbound", "no_case", None, None, 0)
    asyncio.run(scenario())


def test_late_case_binds_unbound_press_within_window(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, unsolicited="infer"), gateway=gw) as h:
            now = time.time()
            # a press 20 min ago (outside the window) and one 3 min ago, then the case arrives
            await h.agent.ingest(1001, [rec(1, level=1)], now - 1200)
            await h.agent.ingest(1001, [rec(2, level=4, reasons=(201,))], now - 180)
            assert _row(h, 1001, 2)[:2] == ("unbound", "no_case")
            await _case(h, gw, "P-LATE", acceptedAt=_cst(now - 600), finishedAt=_cst(now - 60))
            # held back while P-LATE's own invitation is open: its citizen may still answer it
            assert _row(h, 1001, 2)[:2] == ("unbound", "no_case")
            await _expire_invitations(h, now)     # unanswered: the sweep binds the press late
            await wait_for(lambda: _row(h, 1001, 2)[0] == "late_case", 5)
            assert _row(h, 1001, 2) == ("late_case", None, "P-LATE", 1, 1)
            assert _row(h, 1001, 1)[:2] == ("unbound", "no_case")
            # a case on another window does not take A01's presses
            await h.agent.ingest(1001, [rec(3, level=2)], now - 30)
            await _case(h, gw, "P-A02", window="A02")
            assert _row(h, 1001, 3)[:2] == ("unbound", "no_case")
    asyncio.run(scenario())


def test_invited_rating_beats_an_unsolicited_press(tmp_path):
    """Exact beats inferred: a press just before or while a case is invited never takes the case
    from the citizen answering the invitation (else staff could pre-empt a 差评)."""
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, unsolicited="infer"), gateway=gw) as h:
            now = time.time()
            await h.agent.ingest(1001, [rec(1, level=1)], now - 20)     # before the case
            inv = await _case(h, gw, "P-EXACT", acceptedAt=_cst(now - 300),
                              finishedAt=_cst(now - 30))
            assert _row(h, 1001, 1)[:2] == ("unbound", "no_case")
            await h.agent.ingest(1001, [rec(2, level=1)], now)          # while it is invited
            assert _row(h, 1001, 2)[:2] == ("unbound", "no_case")
            await h.agent.ingest(1001, [rec(3, level=5, invite_id=inv, reasons=(107,))], now)
            assert _row(h, 1001, 3) == ("invitation", None, "P-EXACT", 1, 1)
            # the invitation was answered: expiry later changes nothing
            await _expire_invitations(h, now)
            await asyncio.sleep(0.3)
            assert _row(h, 1001, 1)[:2] == ("unbound", "no_case")
            assert _row(h, 1001, 2)[:2] == ("unbound", "no_case")
    asyncio.run(scenario())


def test_second_rating_for_rated_case_kept_not_uploaded(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            inv = await _case(h, gw, "P-1")
            await h.agent.ingest(1001, [rec(1, level=1, invite_id=inv),
                                        rec(2, level=5, invite_id=inv, reasons=(107,))],
                                 time.time())
            assert _row(h, 1001, 1) == ("invitation", None, "P-1", 1, 1)
            assert _row(h, 1001, 2) == ("unbound", "case_already_rated", "P-1", None, 0)
            _, state = await h.get_case("P-1")
            assert state["rating"]["ratingId"] == "T01-1001-1"
            assert [r["ratingId"] for r in state["extraRatings"]] == ["T01-1001-2"]
            status, unbound = await http_json("GET", h.url + "/v1/ratings/unbound")
            assert [(u["ratingId"], u["unboundReason"]) for u in unbound] == \
                [("T01-1001-2", "case_already_rated")]
    asyncio.run(scenario())
    r = run_cli("unbound", "--config", str(tmp_path / "hall.toml"))
    assert r.returncode == 0 and "case_already_rated" in r.stdout


def test_invalid_level_and_unknown_device_kept_unbound(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            await h.post_case(case_body("P-1"))
            await h.agent.ingest(1001, [rec(1, level=9)], time.time())
            assert _row(h, 1001, 1)[:2] == ("unbound", "invalid_level")
            await h.agent.ingest(7777, [rec(1, level=1)], time.time())
            assert _row(h, 7777, 1)[:2] == ("unbound", "unknown_device")
            _, state = await h.get_case("P-1")
            assert state["rated"] is False  # nothing invented for the case
            assert h.q("SELECT COUNT(*) FROM outbox") == [(0,)]
    asyncio.run(scenario())


def test_unsynced_clock_uses_receipt_time(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            await h.agent.ingest(1001, [rec(1, flags=1, t=42), rec(2, flags=1 | 16, t=1.7e9)],
                                 1.8e9)
            assert h.q("SELECT assess_time, time_source FROM ratings ORDER BY rseq") == \
                [(1.8e9, "agent"), (1.7e9, "device")]
    asyncio.run(scenario())


def _cst(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + 8 * 3600))


def test_unsolicited_presses_are_kept_not_bound_by_default(tmp_path):
    """The default: a press with no invitation is evidence of nothing — kept, counted, shown,
    never bound, not even later (a passer-by or staff would otherwise rate for a citizen)."""
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            now = time.time()
            await _case(h, gw, "P-OPEN", finishedAt=_cst(now - 30))
            await _expire_invitations(h, now)     # its citizen left without rating
            await h.agent.ingest(1001, [rec(1, level=1)], now)
            await h.agent.ingest(1001, [rec(2, level=5, reasons=(107,))], now)
            assert _row(h, 1001, 1) == ("unbound", "unsolicited", None, None, 0)
            assert _row(h, 1001, 2) == ("unbound", "unsolicited", None, None, 0)
            # a case reported afterwards does not take them either
            await _case(h, gw, "P-NEXT")
            await _expire_invitations(h, time.time())
            await asyncio.sleep(0.3)
            assert _row(h, 1001, 1)[:2] == ("unbound", "unsolicited")
            _, state = await h.get_case("P-OPEN")
            assert state["rated"] is False
            # counted and shown
            _, status = await http_json("GET", h.url + "/v1/status")
            assert status["unbound"] == {"unsolicited": 2}
            _, unbound = await http_json("GET", h.url + "/v1/ratings/unbound")
            assert {u["unboundReason"] for u in unbound} == {"unsolicited"}
            assert h.q("SELECT COUNT(*) FROM outbox") == [(0,)]
    asyncio.run(scenario())


def test_inference_is_opted_in_per_window(tmp_path):
    gw = RecordingGateway()
    cfg = write_config(tmp_path)
    text = cfg.read_text(encoding="utf-8").replace(
        'id = "A02"\nname = "二号窗（测试）"',
        'id = "A02"\nname = "二号窗（测试）"\nbinding.unsolicited = "infer"')
    cfg.write_text(text, encoding="utf-8")

    async def scenario():
        async with running_agent(cfg, gateway=gw) as h:
            now = time.time()
            await _case(h, gw, "P-A01", window="A01", finishedAt=_cst(now - 30))
            await _case(h, gw, "P-A02", window="A02", finishedAt=_cst(now - 30))
            await _expire_invitations(h, now)
            await h.agent.ingest(1001, [rec(1, level=2)], now)
            await h.agent.ingest(1002, [rec(1, level=2)], now)
            assert _row(h, 1001, 1)[:2] == ("unbound", "unsolicited")       # hall default
            assert _row(h, 1002, 1) == ("inferred", None, "P-A02", 1, 1)    # A02 opted in
            await upload_tried(h)
    asyncio.run(scenario())


def test_misuse_signals_per_window_and_staff(tmp_path):
    """Too-fast and unsolicited shares per window and staff member: the console's query, the
    HTTP view and the metrics. An unsolicited press counts against the staff on duty."""
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            now = time.time()
            inv = await _case(h, gw, "P-S1", staff={"id": "S001", "name": "测试员甲"})
            await h.agent.ingest(1001, [rec(1, level=1, invite_id=inv, flags=4)], now)  # fast
            inv2 = await _case(h, gw, "P-S2", staff={"id": "S001", "name": "测试员甲"})
            await h.agent.ingest(1001, [rec(2, level=1, invite_id=inv2)], now)
            # unsolicited presses at A01 while S001 is on duty there; one at A02 (nobody)
            await h.agent.ingest(1001, [rec(3, level=1), rec(4, level=1)], now)
            await h.agent.ingest(1002, [rec(1, level=3)], now)
            from edge_agent import queries
            sig = queries.press_signals(h.agent.reader(), now - 3600, now + 3600)
            win = {w["window"]: w for w in sig["windows"]}
            assert (win["A01"]["presses"], win["A01"]["unsolicited"], win["A01"]["tooFast"]) \
                == (4, 2, 1)
            assert win["A01"]["unsolicitedRate"] == 0.5 and win["A01"]["tooFastRate"] == 0.25
            assert (win["A02"]["presses"], win["A02"]["unsolicited"]) == (1, 1)
            staff = {s["staffId"]: s for s in sig["staff"]}
            assert set(staff) == {"S001"}
            assert (staff["S001"]["presses"], staff["S001"]["unsolicited"],
                    staff["S001"]["tooFast"], staff["S001"]["staffName"]) == (4, 2, 1, "测试员甲")
            status, view = await http_json("GET", h.url + "/v1/ratings/signals?hours=2")
            assert status == 200 and view["windows"] == sig["windows"]
            status, _ = await http_json("GET", h.url + "/v1/ratings/signals?hours=-1")
            assert status == 422
            async with __import__("aiohttp").ClientSession() as s:
                async with s.get(h.url + "/metrics") as r:
                    text = await r.text()
            assert 'hcp_window_presses_total{window="A01",kind="unsolicited"} 2' in text
            assert 'hcp_window_presses_total{window="A01",kind="too_fast"} 1' in text
            assert 'hcp_staff_presses_total{staff="S001",kind="unsolicited"} 2' in text
            await upload_tried(h)
    asyncio.run(scenario())
