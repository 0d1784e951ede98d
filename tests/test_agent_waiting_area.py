"""Waiting-area ratings at the agent: the scanned reference (RL1 RECORDS_REF) is resolved to a
case — its projectNo, or a queue ticket whose case a report named — with 一次一评 and the age
limit; what cannot be resolved is kept with its reason, never guessed, and binds later only if
the missing case or ticket is reported."""
from __future__ import annotations

import asyncio
import time

from protocol.messages import Record
from tests.agent_support import (RecordingGateway, case_body, rec, running_agent,
                                 upload_tried, wait_for, write_config)

WA = 1003     # the waiting-area evaluator of write_config(waiting_area=True)


def _cst(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + 8 * 3600))


def scanned(rseq: int, ref: str, level: int = 2, t: float | None = None,
            reasons=()) -> Record:
    """A waiting-area record as the firmware sends it: no invitation, not unsolicited, the
    scanned code."""
    return Record(rseq, int(t if t is not None else time.time()), 0, 1, level, 0,
                  tuple(reasons), ref)


def _row(h, rseq: int, device: int = WA):
    return h.q("SELECT r.binding, r.unbound_reason, c.project_no, r.ref,"
               " (SELECT COUNT(*) FROM outbox o WHERE o.rating_id = r.id)"
               " FROM ratings r LEFT JOIN cases c ON c.id = r.case_id"
               " WHERE r.device_id = ? AND r.rseq = ?", (device, rseq))[0]


def test_scanned_receipt_binds_its_case_once_and_withdraws_the_window_invitation(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, waiting_area=True), gateway=gw) as h:
            status, case = await h.post_case(case_body("P-WA-1"))
            invite = case["invitations"][0]["inviteId"]
            # the citizen walked off and scanned the receipt in the waiting area
            await h.agent.ingest(WA, [scanned(1, "P-WA-1", level=5, reasons=(103,))],
                                 time.time())
            assert _row(h, 1) == ("reference", None, "P-WA-1", "P-WA-1", 1)
            # the window's invitation for that case is withdrawn (CANCEL to its device)
            await wait_for(lambda: (1001, invite) in gw.cancels, timeout=5)
            await wait_for(lambda: h.q("SELECT state FROM invitations WHERE invite_id = ?",
                                       (invite,)) == [("cancelled",)], timeout=5)
            # 一次一评: the same receipt again is kept, not uploaded
            await h.agent.ingest(WA, [scanned(2, "P-WA-1", level=1)], time.time())
            assert _row(h, 2) == ("unbound", "already_rated", "P-WA-1", "P-WA-1", 0)
            # and a late press on the window's invitation too
            await h.agent.ingest(1001, [rec(1, level=1, invite_id=invite)], time.time())
            assert _row(h, 1, 1001)[:2] == ("unbound", "case_already_rated")
            _, state = await h.get_case("P-WA-1")
            assert state["rating"]["binding"] == "reference"
            assert state["rating"]["scannedRef"] == "P-WA-1"
            # status shows the waiting area's numbers
            st = h.q("SELECT role FROM devices WHERE device_id = ?", (WA,))
            assert st == [("waiting_area",)]
            from edge_agent import queries
            wa = queries.waiting_area(h.agent.reader())
            assert wa == {"ratings": 2, "bound": 1, "unbound": {"already_rated": 1}}
            await upload_tried(h)
    asyncio.run(scenario())


def test_unknown_reference_is_kept_and_binds_when_its_case_is_reported(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, waiting_area=True), gateway=gw) as h:
            await h.agent.ingest(WA, [scanned(1, "P-WA-LATE")], time.time())
            assert _row(h, 1) == ("unbound", "unknown_reference", None, "P-WA-LATE", 0)
            # nothing is guessed: another case does not take it
            await h.post_case(case_body("P-WA-OTHER"))
            assert _row(h, 1)[:2] == ("unbound", "unknown_reference")
            # the case it names is reported (the business system was slow): it binds, and the
            # case, already rated, sends no invitation to its window
            invites = len(gw.invites)
            status, case = await h.post_case(case_body("P-WA-LATE", n=2))
            assert status == 201 and case["rated"] is True and case["invitations"] == []
            assert len(gw.invites) == invites
            assert _row(h, 1) == ("reference", None, "P-WA-LATE", "P-WA-LATE", 1)
            await upload_tried(h)
    asyncio.run(scenario())


def test_ticket_code_resolves_through_the_ticket_to_its_case(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path, waiting_area=True), gateway=gw) as h:
            now = time.time()
            for etype, extra in (("issued", {}), ("called", {"window": "A02", "staff": {
                    "id": "S002", "name": "测试员乙"}})):
                st, _ = await h.post_event({"eventId": f"E-{etype}", "type": etype,
                                            "ticket": "20261121C007", "at": _cst(now),
                                            **extra})
                assert st == 201
            # scanned before any case names the ticket: kept, waiting for its case
            await h.agent.ingest(WA, [scanned(1, "20261121C007", level=4, reasons=(202,))],
                                 now)
            assert _row(h, 1) == ("unbound", "awaiting_case", None, "20261121C007", 0)
            status, case = await h.post_case(case_body("P-WA-T", window="A02",
                                                       ticket="20261121C007"))
            assert status == 201 and case["rated"] is True
            assert _row(h, 1) == ("reference", None, "P-WA-T", "20261121C007", 1)
            # a second ticket: its case is known when the scan comes — binds at once
            await h.post_case(case_body("P-WA-T2", window="A02", ticket="20261121C008"))
            await h.agent.ingest(WA, [scanned(2, "20261121C008")], now)
            assert _row(h, 2)[:3] == ("reference", None, "P-WA-T2")
            await upload_tried(h)
    asyncio.run(scenario())


def test_too_old_and_unknown_device_are_kept_with_their_reason(tmp_path):
    async def scenario():
        cfg = write_config(tmp_path, waiting_area=True, reference_max_age_s=3600)
        async with running_agent(cfg) as h:
            now = time.time()
            await h.post_case(case_body("P-WA-OLD", acceptedAt=_cst(now - 3 * 86400),
                                        finishedAt=_cst(now - 2 * 86400)))
            await h.agent.ingest(WA, [scanned(1, "P-WA-OLD")], now)
            assert _row(h, 1) == ("unbound", "too_old", "P-WA-OLD", "P-WA-OLD", 0)
            _, state = await h.get_case("P-WA-OLD")
            assert state["rated"] is False
            assert [r["unboundReason"] for r in state["extraRatings"]] == ["too_old"]
            # a device hall.toml does not know: kept, never bound
            await h.agent.ingest(7777, [scanned(1, "P-WA-OLD")], now)
            assert _row(h, 1, 7777)[:2] == ("unbound", "unknown_device")
            assert h.q("SELECT COUNT(*) FROM outbox") == [(0,)]
    asyncio.run(scenario())
