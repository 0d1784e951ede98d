"""Case intake over HTTP: validation (422 naming fields), idempotency, invitations, masking."""
from __future__ import annotations

import asyncio

from tests.agent_support import (RecordingGateway, case_body, http_json, running_agent,
                                 synthetic_id, synthetic_phone, wait_for, write_config)


def test_openapi_served(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            status, doc = await http_json("GET", h.url + "/openapi.json")
            assert status == 200 and doc["openapi"].startswith("3.")
            assert "/v1/cases" in doc["paths"] and "post" in doc["paths"]["/v1/cases"]
            assert "projectNo" in doc["components"]["schemas"]["Case"]["required"]
            status, health = await http_json("GET", h.url + "/healthz")
            assert status == 200 and health == {"ok": True}
            # every route the app serves is in the document, with its method
            import re
            from edge_agent.http_api import make_app
            documented = {(re.sub(r"\{[^}]+\}", "{}", path), method.upper())
                          for path, ops in doc["paths"].items() for method in ops}
            for route in make_app(h.agent).router.routes():
                if route.method == "HEAD" or route.resource.canonical == "/openapi.json":
                    continue
                key = (re.sub(r"\{[^}]+\}", "{}", route.resource.canonical), route.method)
                assert key in documented, key
    asyncio.run(scenario())


def test_invalid_case_names_each_bad_field(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            bad_id = "371402190001019999"  # synthetic, wrong check character
            body = case_body("P-BAD-1", window="Z9", taskCode="", deptCode="123",
                             areaCode="12", promiseType=3, status=3, finishedAt="yesterday",
                             staff={"id": "S1"},
                             applicant={"name": "测试", "certType": "111", "certNo": bad_id,
                                        "phone": "12345", "userProp": 5})
            status, reply = await h.post_case(body)
            assert status == 422
            fields = {e["field"] for e in reply["fields"]}
            assert fields == {"window", "taskCode", "deptCode", "areaCode", "promiseType",
                              "finishedAt", "staff.name", "applicant.certNo",
                              "applicant.phone", "applicant.userProp"}
            # the submitted values are never echoed (they may be ID numbers)
            assert bad_id not in str(reply) and "12345" not in str(reply)
            status, reply = await h.post_case(["not", "an", "object"])
            assert status == 422 and reply["fields"][0]["field"] == "(body)"
            status, reply = await h.biz.post("/v1/cases", "{nope")   # a JSON string: no object
            assert status == 422 and reply["fields"][0]["field"] == "(body)"
            status, reply = await h.post_case({})
            assert status == 422
            assert {"window", "projectNo", "staff", "applicant", "acceptedAt"} <= \
                {e["field"] for e in reply["fields"]}
            assert h.q("SELECT COUNT(*) FROM cases") == [(0,)]
    asyncio.run(scenario())


def test_intake_invites_window_device_and_is_idempotent(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            status, reply = await h.post_case(case_body("P-0001", window="A01"))
            assert status == 201 and reply["created"] is True
            assert len(gw.invites) == 1
            device_id, invite_id, lifetime, staff_no, staff_name = gw.invites[0]
            assert (device_id, lifetime, staff_no, staff_name) == (1001, 120, "S001", "测试员甲")
            assert 0 < invite_id < 2 ** 32
            assert reply["invitations"][0]["inviteId"] == invite_id
            assert reply["invitations"][0]["state"] == "sent"
            # posting the same projectNo again changes nothing and sends nothing
            status, again = await h.post_case(case_body("P-0001", window="A01", n=2))
            assert status == 200 and again["created"] is False
            assert len(gw.invites) == 1
            assert h.q("SELECT COUNT(*) FROM cases") == [(1,)]
            assert again["applicant"]["name"] == "测***"  # the first submission's data stays
            # a new case on the same device supersedes (cancels) the open invitation
            status, reply2 = await h.post_case(case_body("P-0002", window="A01", n=2))
            assert status == 201 and gw.cancels == [(1001, invite_id)]
            assert gw.invites[-1][1] == reply2["invitations"][0]["inviteId"]
            _, r1 = await h.get_case("P-0001")
            assert r1["invitations"][0]["state"] == "superseded"
            # a window without a device: intake succeeds, no invitation is sent
            status, reply3 = await h.post_case(case_body("P-0003", window="A03"))
            assert status == 201 and len(gw.invites) == 2
            status, _ = await h.get_case("P-NOPE")
            assert status == 404
    asyncio.run(scenario())


def test_offline_device_invitation_waits_and_is_sent_when_online(tmp_path):
    gw = RecordingGateway()
    gw.offline.add(1002)

    async def scenario():
        async with running_agent(write_config(tmp_path), gateway=gw) as h:
            status, reply = await h.post_case(case_body("P-0100", window="A02"))
            assert status == 201 and reply["invitations"][0]["state"] == "waiting"
            assert gw.invites == []
            gw.offline.clear()
            await h.agent.device_seen(1002, {"online": True})
            await wait_for(lambda: gw.invites)
            device_id, invite_id, lifetime, _, _ = gw.invites[0]
            assert device_id == 1002 and invite_id == reply["invitations"][0]["inviteId"]
            assert 0 < lifetime <= 120  # what is left of the lifetime, not a fresh one
            _, state = await h.get_case("P-0100")
            assert state["invitations"][0]["state"] == "sent"
    asyncio.run(scenario())


def test_no_gateway_registered_intake_still_succeeds(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            status, reply = await h.post_case(case_body("P-0200"))
            assert status == 201 and reply["invitations"][0]["state"] == "waiting"
    asyncio.run(scenario())


def test_case_state_is_masked_and_rater_data_sealed_at_rest(tmp_path):
    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            await h.post_case(case_body("P-0300", n=7))
            _, state = await h.get_case("P-0300")
            cert, phone = synthetic_id(7), synthetic_phone(7)
            assert state["applicant"]["certNo"] == cert[:4] + "*" * 10 + cert[-4:]
            assert state["applicant"]["phone"] == phone[:3] + "****" + phone[-4:]
            assert state["applicant"]["name"] == "测***"
            assert cert not in str(state) and phone not in str(state)
    asyncio.run(scenario())
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("agent.db*"))
    for secret in (synthetic_id(7), synthetic_phone(7), "测试7号"):
        assert secret.encode("utf-8") not in raw, secret


def test_text_fields_refuse_control_characters_surrogates_and_non_characters(tmp_path):
    """What the province would refuse (control characters) or what cannot even be stored (a lone
    surrogate) is refused at intake, per field, with 422 — never a 500, nothing stored."""
    import json as _json

    import aiohttp

    from edge_agent.intake_auth import signed_headers
    from tests.agent_support import BIZ, CLIENT_KEYS

    async def post_raw(url: str, body: dict) -> tuple[int, dict]:
        data = _json.dumps(body, ensure_ascii=True).encode()     # "\ud800" travels escaped
        headers = signed_headers(BIZ, CLIENT_KEYS[BIZ], "POST", "/v1/cases", data)
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/v1/cases", data=data, headers=headers) as r:
                return r.status, await r.json()

    async def scenario():
        async with running_agent(write_config(tmp_path)) as h:
            cases = [
                ("applicant.name", {"applicant": {"name": "测试\u0000号", "certType": "111",
                                                  "certNo": synthetic_id(1), "userProp": 1}}),
                ("staff.name", {"staff": {"id": "S001", "name": "测试\ud800员"}}),
                ("taskName", {"taskName": "测试事项\ufffe"}),
                ("deptName", {"deptName": "测试局\ufdd0"}),
                ("staff.id", {"staff": {"id": "S0\n01", "name": "测试员甲"}}),
                ("taskName", {"taskName": "测试\x7f事项"}),
                ("ticket", {"ticket": "A 023"}),
            ]
            for field, over in cases:
                status, reply = await post_raw(h.url, case_body("P-TEXT-1", **over))
                assert status == 422, (field, status, reply)
                assert [e["field"] for e in reply["fields"]] == [field], reply
                assert "\ud800" not in _json.dumps(reply)
            # a digit string int() cannot parse is a 422 too, not a 500
            status, reply = await post_raw(h.url, case_body("P-TEXT-2", promiseType="²"))
            assert status == 422 and reply["fields"][0]["field"] == "promiseType"
            assert h.q("SELECT COUNT(*) FROM cases") == [(0,)]
            # the same characters are fine where the province takes them: ordinary CJK text
            status, _ = await post_raw(h.url, case_body("P-TEXT-3", taskName="测试事项（虚构）·一"))
            assert status == 201
    asyncio.run(scenario())
