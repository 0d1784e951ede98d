"""Queue-system events (`POST /v1/queue/events`): tickets called to windows, services opened by a
call + finish, and ratings bound through the ticket to the case a report names — whichever of the
queue's finish and the case report comes first."""
from __future__ import annotations

import asyncio
import time

from tests.agent_support import (RecordingGateway, case_body, http_json, rec, running_agent,
                                 upload_tried, write_config)


def _cst(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + 8 * 3600))


def _ev(event_id: str, etype: str, ticket: str, window: str | None = None, staff=None) -> dict:
    e = {"eventId": event_id, "type": etype, "ticket": ticket, "at": _cst(time.time())}
    if window is not None:
        e["window"] = window
    if staff is not None:
        e["staff"] = staff
    return e


STAFF = {"id": "S007", "name": "测试员庚"}


async def _serve(h, ticket: str, window: str = "A01", finish: bool = True) -> dict:
    """issued, called, started (and finished) for `ticket` at `window`; returns the last reply."""
    reply = None
    for etype in ("issued", "called", "started") + (("finished",) if finish else ()):
        status, reply = await h.post_event(_ev(f"{ticket}-{etype}", etype, ticket,
                                               None if etype == "issued" else window,
                                               STAFF if etype == "called" else None))
        assert status == 201, reply
    return reply


def _rating(h, device_id: int, rseq: int):
    return h.q("SELECT r.binding, r.unbound_reason, c.project_no,"
               " (SELECT COUNT(*) FROM outbox o WHERE o.rating_id = r.id)"
               " FROM ratings r LEFT JOIN cases c ON c.id = r.case_id"
               " WHERE r.device_id = ? AND r.rseq = ?", (device_id, rseq))[0]


def test_finish_opens_the_service_and_the_rating_binds_when_the_case_names_the_ticket(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            reply = await _serve(h, "20261121A023")
            # call + finish at A01: the window's evaluator is invited, with the caller's staff
            assert reply["serviceOpened"] is True and reply["state"] == "finished"
            assert len(gw.invites) == 1
            device, invite, _, staff_no, staff_name = gw.invites[0]
            assert (device, invite, staff_no, staff_name) == (1001, reply["inviteId"], "S007",
                                                              "测试员庚")
            # the citizen rates; no case reported yet: kept, waiting for its case
            await h.agent.ingest(1001, [rec(1, level=4, invite_id=invite, reasons=(201,))],
                                 time.time())
            assert _rating(h, 1001, 1) == ("unbound", "awaiting_case", None, 0)
            # the business system reports the case and names the ticket: no second invitation,
            # the rating binds through the ticket
            status, case = await h.post_case(case_body("P-Q-1", ticket="20261121A023",
                                                       staff={"id": "S007",
                                                              "name": "测试员庚"}))
            assert status == 201 and case["rated"] is True, case
            assert len(gw.invites) == 1
            assert _rating(h, 1001, 1) == ("ticket", None, "P-Q-1", 1)
            assert case["ticket"] == "20261121A023"
            assert case["invitations"][0]["inviteId"] == invite
            await upload_tried(h)
    asyncio.run(scenario())


def test_case_first_then_finish_invites_once_and_binds_by_invitation(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            await _serve(h, "20261121B001", finish=False)
            status, case = await h.post_case(case_body("P-Q-2", ticket="20261121B001"))
            assert status == 201 and len(gw.invites) == 1
            invite = case["invitations"][0]["inviteId"]
            status, reply = await h.post_event(_ev("20261121B001-finished", "finished",
                                                   "20261121B001", "A01"))
            assert status == 201 and reply["serviceOpened"] is False
            assert reply["note"] == "already_invited" and len(gw.invites) == 1
            await h.agent.ingest(1001, [rec(1, level=1, invite_id=invite)], time.time())
            assert _rating(h, 1001, 1) == ("invitation", None, "P-Q-2", 1)
            await upload_tried(h)
    asyncio.run(scenario())



def test_no_service_without_a_call_to_that_window_and_events_are_idempotent(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            # finished at A02 after a call to A01: no evidence the service was at A02
            await _serve(h, "T-X1", window="A01", finish=False)
            status, reply = await h.post_event(_ev("T-X1-finished", "finished", "T-X1", "A02"))
            assert (status, reply["serviceOpened"], reply["note"]) == (201, False,
                                                                       "not_called_here")
            # finished with no call at all
            status, reply = await h.post_event(_ev("T-X2-finished", "finished", "T-X2", "A01"))
            assert reply["note"] == "not_called_here" and gw.invites == []
            # a window without an evaluator
            reply = await _serve(h, "T-X3", window="A03")
            assert (reply["serviceOpened"], reply["note"]) == (False, "no_device")
            # no-show
            await _serve(h, "T-X4", finish=False)
            status, reply = await h.post_event(_ev("T-X4-no_show", "no_show", "T-X4", "A01"))
            assert status == 201 and reply["state"] == "no_show"
            # the same eventId again: 200, nothing changes
            status, again = await h.post_event(_ev("T-X4-no_show", "no_show", "T-X4", "A01"))
            assert status == 200 and again["created"] is False
            assert h.q("SELECT COUNT(*) FROM queue_events WHERE event_id = 'T-X4-no_show'") == \
                [(1,)]
            # invalid events name their fields; nothing stored for them
            before = h.q("SELECT COUNT(*) FROM queue_events")
            status, reply = await h.post_event({"eventId": "E 1", "type": "called",
                                                "ticket": "A 023", "at": "soon",
                                                "window": "Z9"})
            assert status == 422
            assert {e["field"] for e in reply["fields"]} == {"eventId", "ticket", "at", "window",
                                                             "staff"}
            status, reply = await h.post_event(_ev("E2", "teleported", "T1", "A01"))
            assert status == 422 and reply["fields"][0]["field"] == "type"
            assert h.q("SELECT COUNT(*) FROM queue_events") == before
            # audited, with the queue client's id
            outcomes = dict(h.q("SELECT outcome, COUNT(*) FROM intake_audit WHERE endpoint ="
                                " 'queue' GROUP BY outcome"))
            assert outcomes["created"] >= 10 and outcomes["duplicate"] == 1
            assert outcomes["invalid"] == 2
            # the OpenAPI document lists the endpoint with its example
            _, doc = await http_json("GET", h.url + "/openapi.json")
            post = doc["paths"]["/v1/queue/events"]["post"]
            example = post["requestBody"]["content"]["application/json"]["example"]
            assert example["type"] == "called" and "QueueEvent" in doc["components"]["schemas"]
            assert "401" in post["responses"] and "hcpSignature" in \
                doc["components"]["securitySchemes"]
    asyncio.run(scenario())


def test_ticket_invitation_is_resent_when_its_device_comes_online(tmp_path):
    gw = RecordingGateway()
    gw.offline.add(1001)

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            reply = await _serve(h, "T-OFF-1")
            assert reply["serviceOpened"] and gw.invites == []
            gw.offline.clear()
            await h.agent.device_seen(1001, {"online": True})
            for _ in range(100):
                if gw.invites:
                    break
                await asyncio.sleep(0.05)
            assert gw.invites and gw.invites[0][1] == reply["inviteId"]
            assert gw.invites[0][3] == "S007"          # the caller's staff, from the ticket
    asyncio.run(scenario())
