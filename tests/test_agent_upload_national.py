"""The agent against the reference province in `national-sm2` (real HTTP, real SQLite, the SM2
envelope checked by the server's own SM2 package): service records first, batches, requests in
flight, the platform's duplicate and missing-service answers, and bad settings that must park
with a message naming the setting instead of retrying for ever.
"""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from protocol.messages import Record
from tests.agent_support import (NationalKeys, Province, RecordingGateway, case_body, rec,
                                 running_agent, synthetic_id, wait_for, write_config)


@pytest.fixture
def keys(tmp_path):
    return NationalKeys(tmp_path)


@pytest.fixture
def province(tmp_path):
    servers = []

    def start(*args, db_dir="."):
        (tmp_path / db_dir).mkdir(exist_ok=True)
        p = Province(tmp_path / db_dir, "national-sm2", *args)
        servers.append(p)
        return p
    yield start
    for p in servers:
        p.close()


def _config(tmp_path, url, keys, extra="", **sm2):
    return write_config(tmp_path, upstream_url=url, profile="national-sm2", auth="sm2",
                        extra_upstream=extra + keys.agent_config(**sm2))


def _states(h, table="outbox"):
    return dict(h.q(f"SELECT state, COUNT(*) FROM {table} GROUP BY state"))


def _tag(level, i):
    # the placeholder table: 非常不满意 tags are 1xx, 不满意 tags 2xx
    return ((100 if level == 5 else 200) + 1 + i % 10,) if level >= 4 else ()


async def _rate(h, count, start=1, levels=(1, 2, 3, 4, 5), project="P", **case_over):
    """`count` cases on A01, each rated through its invitation; returns the global ids."""
    ids = []
    for i in range(start, start + count):
        status, reply = await h.post_case(case_body(f"{project}-{i:04d}", n=i, **case_over))
        assert status == 201, reply
        level = levels[(i - start) % len(levels)]
        inv = reply["invitations"][0]["inviteId"]
        r = await h.agent.ingest(1001, [rec(i, level=level, invite_id=inv,
                                            reasons=_tag(level, i))], time.time())
        assert r.new == [i]
        ids.append(f"T01-1001-{i}")
    return ids


def test_service_records_first_then_ratings_in_batches(tmp_path, keys, province):
    # the province is down while the hall works: a backlog builds up, then drains in batches
    server = province(*keys.server_args("--outage", "0:3"))
    cfg = _config(tmp_path, server.url, keys)
    n = 45

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            await _rate(h, n, taskType="01")
            await wait_for(lambda: _states(h).get("done") == n, timeout=60)
            assert _states(h, "upstream_services") == {"done": n}
            refs = dict(h.q("SELECT global_id, upstream_ref FROM outbox"))
            return refs, h.agent.uploader.latency.total, dict(h.agent.uploader.results)
    refs, requests, results = asyncio.run(scenario())
    stats = server.stats()
    assert stats["services"] == n and stats["service_duplicates"] == 0
    assert stats["accepted"] == n and stats["duplicates"] == 0 and stats["rejected"] == {}
    # batches: 45 services + 45 ratings went in 3 + 3 requests of up to 20 once it was back
    assert requests - stats["faults"]["outage"] <= 8, (requests, stats)
    assert results["done"] == 2 * n and results["park"] == 0
    records = server.records()
    assert set(records) == set(refs.values())
    first = records[refs["T01-1001-1"]]["fields"]
    assert first["projectNo"] == "P-0001" and first["serviceNumber"] == 1
    assert first["assessNumber"] == 1 and first["satisfaction"] == "5"    # our level 1
    assert first["pf"] == "5" and first["taskType"] == "01"
    assert first["name"].startswith("测") and "1号" not in first["name"]     # masked in /_records
    fifth = records[refs["T01-1001-5"]]["fields"]
    assert fifth["satisfaction"] == "1" and fifth["evalDetail"] == "106"    # 非常不满意


def test_lost_replies_are_resent_and_counted_as_duplicates(tmp_path, keys, province):
    server = province(*keys.server_args("--drop-response-rate", "0.4", "--seed", "3"))
    cfg = _config(tmp_path, server.url, keys, extra="batch_size = 5\n")
    n = 20

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            await _rate(h, n)
            await wait_for(lambda: _states(h).get("done") == n, timeout=60)
            dup = h.q("SELECT SUM(duplicate) FROM outbox")[0][0] + \
                h.q("SELECT SUM(duplicate) FROM upstream_services")[0][0]
            return dup
    agent_duplicates = asyncio.run(scenario())
    stats = server.stats()
    assert stats["faults"]["drop"] > 0
    # each record is held once; a resend of a stored batch was answered "already there"
    assert stats["accepted"] == n and stats["services"] == n
    assert agent_duplicates >= 1
    assert agent_duplicates <= stats["duplicates"] + stats["service_duplicates"]


def test_missing_service_record_is_pushed_again_then_the_rating(tmp_path, keys, province):
    first = province(*keys.server_args())
    port = first.url.rsplit(":", 1)[1]
    cfg = _config(tmp_path, first.url, keys)

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            for i in (1, 2):
                status, _ = await h.post_case(case_body(f"P-{i:04d}", n=i))
                assert status == 201
            await wait_for(lambda: _states(h, "upstream_services").get("done") == 2)
            # the province loses its data (a restore from an old backup) and comes back
            first.close()
            second = await asyncio.to_thread(province, *keys.server_args("--port", port),
                                             db_dir="restored")
            for i in (1, 2):
                _, reply = await h.get_case(f"P-{i:04d}")
                inv = reply["invitations"][0]["inviteId"]
                await h.agent.ingest(1001, [rec(i, level=2, invite_id=inv)], time.time())
            await wait_for(lambda: _states(h).get("done") == 2, timeout=30)
            return second, dict(h.agent.uploader.results)
    second, results = asyncio.run(scenario())
    assert results["repush"] == 2
    stats = second.stats()
    assert stats["services"] == 2 and stats["accepted"] == 2
    assert stats["rejected"] == {"no_service": 2}


@pytest.mark.parametrize("setting,value,refused,named", [
    ("cipher_order", "C1C2C3", "decrypt_failed", "cipher_order"),
    # the text encoding applies to `sign` too, which the platform checks first
    ("cipher_encoding", "base64", "bad_signature", "cipher_encoding"),
    ("signature_format", "raw", "bad_signature", "signature_format"),
    ("signer_id", "ALICE123@YAHOO.COM", "bad_signature", "signer_id"),
])
def test_wrong_envelope_setting_parks_naming_it(tmp_path, keys, province, setting, value,
                                                 refused, named):
    server = province(*keys.server_args())
    cfg = _config(tmp_path, server.url, keys, **{setting: value})

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            await _rate(h, 3)
            await wait_for(lambda: _states(h, "upstream_services").get("parked") == 3)
            # the ratings wait on their service record, so they park with its reason too
            await wait_for(lambda: _states(h).get("parked") == 3)
            await asyncio.sleep(0.5)    # no retry storm: nothing more is sent
            return [r[0] for r in h.q("SELECT last_error FROM upstream_services")] + \
                [r[0] for r in h.q("SELECT last_error FROM outbox")]
    errors = asyncio.run(scenario())
    assert all(named in e and "envelope refused" in e for e in errors), errors
    stats = server.stats()
    assert stats["rejected"] == {refused: 3}     # each service record tried once
    assert stats["services"] == 0 and stats["accepted"] == 0


def test_wrong_key_parks_naming_the_key_file(tmp_path, keys, province):
    server = province(*keys.server_args())
    # our signing key is not the one the platform registered
    (tmp_path / "keys/other.key").write_text(keys.platform_private + "\n")
    cfg = _config(tmp_path, server.url, keys, private_key_file="keys/other.key")

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            await _rate(h, 2)
            await wait_for(lambda: _states(h).get("parked") == 2)
            return h.q("SELECT last_error FROM upstream_services")[0][0]
    error = asyncio.run(scenario())
    assert "private_key_file" in error and "签名验证失败" in error
    assert server.stats()["rejected"] == {"bad_signature": 2}


def test_refused_rater_field_parks_with_the_reason_masked(tmp_path, keys, province):
    # this province echoes the value it refuses; the agent must keep it masked
    server = province(*keys.server_args("--echo-values"))
    cfg = _config(tmp_path, server.url, keys)
    cert = synthetic_id(7)

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            # a legal person (userProp 2) named by a resident ID: the platform wants its credit
            # code; the good case alongside goes through
            body = case_body("P-LEGAL", n=7)
            body["applicant"] = {**body["applicant"], "userProp": 2, "certNo": cert}
            status, reply = await h.post_case(body)
            assert status == 201, reply
            await _rate(h, 1, start=2)
            inv = reply["invitations"][0]["inviteId"]
            await h.agent.ingest(1001, [rec(9, level=1, invite_id=inv)], time.time())
            await wait_for(lambda: _states(h).get("parked") == 1 and _states(h).get("done") == 1)
            return h.q("SELECT last_error FROM upstream_services WHERE state = 'parked'")[0][0], \
                h.q("SELECT last_error FROM outbox WHERE state = 'parked'")[0][0]
    service_error, rating_error = asyncio.run(scenario())
    assert "统一社会信用代码" in service_error and "certKeyGOV=" in service_error
    assert cert not in service_error and cert[:4] in service_error    # masked, not dropped
    assert rating_error.startswith("service record refused") and cert not in rating_error
    assert server.stats()["rejected"] == {"bad_certkey": 1}


def test_echoed_landline_is_masked_too(tmp_path, keys, province):
    """The platform wants a mobile (it texts the rater); a landline is refused and echoed. No
    pattern finds a landline or a name in free text: the agent masks the values it sent."""
    server = province(*keys.server_args("--echo-values"))
    cfg = _config(tmp_path, server.url, keys)
    landline = "0531-86120001"

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            body = case_body("P-LANDLINE", n=8)
            body["applicant"] = {**body["applicant"], "phone": landline}
            status, reply = await h.post_case(body)
            assert status == 201, reply
            await wait_for(lambda: _states(h, "upstream_services").get("parked") == 1)
            return h.q("SELECT last_error FROM upstream_services")[0][0]
    error = asyncio.run(scenario())
    assert "mobile=" in error and landline not in error and "86120001" not in error
    assert server.stats()["rejected"] == {"bad_format:mobile": 1}


def test_reason_tags_go_as_the_platform_codes(tmp_path, keys, province):
    """The platform's table has its own code strings; devices get our numbering, and a rating
    made under it reaches the province with the platform's code."""
    table = {"version": 1, "tags": [
        {"tag": "01", "text": "办理时间长", "upstream": {"5": "510", "4": "410"}},
        {"tag": "02", "text": "态度不好", "upstream": {"5": "517", "4": "417"}}],
        "codes": {"5": {"prefix": "1"}, "4": {"prefix": "2"}}}
    (tmp_path / "platform-tags.json").write_text(json.dumps(table, ensure_ascii=False))
    server = province(*keys.server_args("--catalogue", str(tmp_path / "platform-tags.json")))
    cfg = _config(tmp_path, server.url, keys)

    async def scenario():
        async with running_agent(cfg, gateway=RecordingGateway()) as h:
            sync = h.agent.uploader.sync
            await wait_for(lambda: sync.fetched_at is not None, timeout=20)
            cat = h.agent.uploader.catalogues.current
            by_text = {t["text"]: t for t in cat["tags"]}
            assert by_text["态度不好"]["upstream"] == {"5": "517", "4": "417"}
            version = cat["version"]
            status, reply = await h.post_case(case_body("P-TAG", n=3))
            inv = reply["invitations"][0]["inviteId"]
            code = int("1" + by_text["态度不好"]["tag"])     # what the device sends with level 5
            r = Record(5, int(time.time()), inv, version, 5, 0, (code,))
            await h.agent.ingest(1001, [r], time.time())
            await wait_for(lambda: _states(h).get("done") == 1)
            stored = h.q("SELECT COUNT(*) FROM catalogues WHERE source = 'platform'")[0][0]
            return h.q("SELECT upstream_ref FROM outbox")[0][0], stored
    ref, stored = asyncio.run(scenario())
    assert stored == 1
    assert server.records()[ref]["fields"]["evalDetail"] == "517"
