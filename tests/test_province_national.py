"""The reference province in `national-sm2`: as strict as a platform. Each refusal of the
envelope and of a record, over real HTTP. Envelopes are built with the agent's SM2 code
(snowland-smx) and checked by the server's own (gmssl), so this also tests the two against
each other.
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from edge_agent.upstream.auth.sm2 import Sm2Envelope
from simulator.province import cli
from simulator.province.national import NationalKeys
from simulator.province.server import ServerConfig, running_server
from simulator.province.service import (BAD_NEEDS_REASON, DUPLICATE_RATING, DUPLICATE_SERVICE,
                                        NO_SERVICE)
from simulator.province.sm2 import generate_keypair
from tests.test_province_server import bj_time, get_json, post, service_record

MARK, WORD = "TESTHALL01", "synthetic-app-word"
SERVICE, RATING, CATALOGUE = "/hcp/projectSubmit", "/hcp/offlineTemp", "/hcp/getEvalDetail"


@pytest.fixture(scope="module")
def pairs():
    return {"hall": generate_keypair(), "platform": generate_keypair(),
            "stranger": generate_keypair()}


@pytest.fixture
def srv(tmp_path, pairs):
    keys = NationalKeys(MARK, WORD, pairs["platform"][0], pairs["hall"][1])
    with running_server(ServerConfig(profile="national-sm2", db=tmp_path / "n.sqlite3",
                                     national=keys)) as server:
        yield server


def sealer(pairs, hall="hall", platform="platform", **kw: Any) -> Sm2Envelope:
    return Sm2Envelope(kw.pop("mark", MARK), kw.pop("word", WORD), pairs[hall][0],
                       pairs[platform][1], **kw)


def national_service(project: str = "SYN0001", **over: Any) -> dict:
    return service_record(project, **{"areaCode": "371400000000", **over})


def national_rating(project: str = "SYN0001", **over: Any) -> dict:
    rec = {"taskType": "01", "projectNo": project, "satisfaction": "5", "pf": "5",
           "name": "测试人", "evalDetail": "", "writingEvaluation": "",
           "assessTime": bj_time("%Y-%m-%d %H:%M:%S"), "serviceNumber": 1, "assessNumber": 1}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not None}


def send(server, path: str, records: list, env: Sm2Envelope, now: float | None = None,
         evaluate: list | None = None) -> dict:
    plain = json.dumps(records, ensure_ascii=False).encode("utf-8")
    params = {"evaluate": evaluate if evaluate is not None else [env.encrypt(plain)]}
    body = json.dumps(env.seal(params, now), ensure_ascii=False).encode("utf-8")
    ans = post(server.url + path, body, {"Content-Type": "application/json"})
    assert ans.status == 200
    return ans.body


def test_service_then_ratings_in_one_batch_each(srv, pairs):
    env = sealer(pairs)
    services = [national_service(f"SYN{i:04d}") for i in range(20)]
    assert send(srv, SERVICE, services, env) == {
        "code": "0", "success": "true", "msg": "成功",
        "results": [{"code": "0", "msg": "成功"}] * 20}
    ratings = [national_rating(f"SYN{i:04d}", satisfaction=str(1 + i % 5),
                               evalDetail="101" if i % 5 == 0 else "207" if i % 5 == 1 else "")
               for i in range(20)]
    assert send(srv, RATING, ratings, env)["code"] == "0"
    stats = get_json(srv.url + "/_stats")
    assert stats["services"] == 20 and stats["accepted"] == 20
    assert stats["by_level"] == {"1": 4, "2": 4, "3": 4, "4": 4, "5": 4}
    recs = get_json(srv.url + "/_records")["records"]
    assert set(recs) == {f"SYN{i:04d}#1" for i in range(20)}
    assert recs["SYN0000#1"]["fields"]["name"] == "测**"           # masked for display


@pytest.mark.parametrize("make,code,reason", [
    (lambda p: sealer(p, hall="stranger"), "4004", "bad_signature"),          # wrong hall key
    (lambda p: sealer(p, signature_format="raw"), "4004", "bad_signature"),
    (lambda p: sealer(p, signer_id="ALICE123@YAHOO.COM"), "4004", "bad_signature"),
    (lambda p: sealer(p, word="guessed-word"), "4004", "bad_signature"),
    (lambda p: sealer(p, mark="OTHERHALL"), "4002", "bad_app_mark"),
    (lambda p: sealer(p, order="C1C2C3"), "4006", "decrypt_failed"),
    (lambda p: sealer(p, platform="stranger"), "4006", "decrypt_failed"),     # wrong platform key
    (lambda p: sealer(p, encoding="base64"), "4004", "bad_signature"),        # sign in base64
])
def test_envelope_refusals(srv, pairs, make, code, reason):
    answer = send(srv, SERVICE, [national_service()], make(pairs))
    assert answer["code"] == code and answer["success"] == "false" and "results" not in answer
    stats = get_json(srv.url + "/_stats")
    assert stats["rejected"] == {reason: 1} and stats["services"] == 0


def test_ciphertext_in_another_encoding_and_stale_time(srv, pairs):
    env = sealer(pairs)
    raw = bytes.fromhex(env.encrypt(b"[]"))
    answer = send(srv, SERVICE, [], env, evaluate=[base64.b64encode(raw).decode()])
    assert answer["code"] == "4005" and "密文编码" in answer["msg"]
    for skew in (-400, 400):
        answer = send(srv, SERVICE, [national_service()], env, now=time.time() + skew)
        assert answer["code"] == "4003" and "时间" in answer["msg"]
    assert send(srv, SERVICE, [national_service()], env, now=time.time() - 200)["code"] == "0"


def test_not_an_envelope_and_not_records(srv, pairs):
    for body in (b"{}", b"[1]", b"not json",
                 json.dumps({"txnBodyCom": {"appMark": MARK}, "txnCommCom": {}}).encode()):
        ans = post(srv.url + SERVICE, body, {"Content-Type": "application/json"})
        assert ans.body["code"] == "4001"
    env = sealer(pairs)
    assert send(srv, SERVICE, [], env)["code"] == "4007"          # empty array
    ct = env.encrypt(json.dumps({"not": "an array"}).encode())
    assert send(srv, SERVICE, [], env, evaluate=[ct])["code"] == "4007"
    assert send(srv, SERVICE, [], env, evaluate="x")["code"] == "4001"


def test_record_rules_in_the_platforms_words(srv, pairs):
    env = sealer(pairs)
    # a rating before its service record
    out = send(srv, RATING, [national_rating("SYN0001")], env)
    assert out["results"] == [{"code": "1", "msg": NO_SERVICE, "reason": "no_service"}]
    assert send(srv, SERVICE, [national_service("SYN0001")], env)["code"] == "0"
    # the same service again; the same rating again
    out = send(srv, SERVICE, [national_service("SYN0001")], env)
    assert out["results"][0]["msg"] == DUPLICATE_SERVICE
    assert send(srv, RATING, [national_rating("SYN0001")], env)["code"] == "0"
    out = send(srv, RATING, [national_rating("SYN0001", satisfaction="4")], env)
    assert out["results"][0]["msg"] == DUPLICATE_RATING
    # a follow-up rating is assessNumber 2 of the same service
    assert send(srv, RATING, [national_rating("SYN0001", assessNumber=2)], env)["code"] == "0"
    stats = get_json(srv.url + "/_stats")
    assert stats["accepted"] == 2 and stats["duplicates"] == 1
    assert stats["service_duplicates"] == 1


@pytest.mark.parametrize("kind,over,reason", [
    ("rating", {"satisfaction": "2"}, "bad_reason_missing"),
    ("rating", {"satisfaction": "1", "evalDetail": "207"}, "unknown_tag"),   # a 不满意 tag
    ("rating", {"satisfaction": 5}, "bad_level"),                            # not a string
    ("rating", {"serviceNumber": "1"}, "bad_format:serviceNumber"),
    ("rating", {"assessNumber": 3}, "bad_value:assessNumber"),
    ("rating", {"pf": "7"}, "pf_default_not_allowed"),
    ("rating", {"taskType": "33"}, "bad_value:taskType"),
    ("rating", {"assessTime": "2024/01/01 00:00:00"}, "bad_format:assessTime"),
    ("service", {"areaCode": "371400"}, "bad_format:areaCode"),               # 12 digits wanted
    ("service", {"mobile": None}, "missing_field:mobile"),
    ("service", {"serviceNumber": "1"}, "bad_format:serviceNumber"),
    ("service", {"deptCode": "123"}, "bad_credit_code:deptCode"),
    ("service", {"userProp": "2"}, "bad_certkey"),      # a legal person needs its credit code
    ("service", {"taskCode": "X" * 40}, "bad_format:taskCode"),
])
def test_malformed_records_refused_one_by_one(srv, pairs, kind, over, reason):
    env = sealer(pairs)
    assert send(srv, SERVICE, [national_service("SYN-OK")], env)["code"] == "0"
    if kind == "rating":
        batch = [national_rating("SYN-OK"), national_rating("SYN-OK", **{**over,
                                                                         "assessNumber": 2})
                 if "assessNumber" not in over else national_rating("SYN-OK", **over)]
        path = RATING
    else:
        batch = [national_service("SYN-A"), national_service("SYN-B", **over)]
        path = SERVICE
    out = send(srv, path, batch, env)
    assert out["code"] == "1" and out["success"] == "false"
    assert out["results"][0] == {"code": "0", "msg": "成功"}
    assert out["results"][1]["code"] == "1" and out["results"][1]["reason"] == reason
    if reason == "bad_reason_missing":
        assert out["results"][1]["msg"] == BAD_NEEDS_REASON
    # the good record of the batch is stored, the bad one is not
    stats = get_json(srv.url + "/_stats")
    assert stats["rejected"] == {reason: 1}
    assert (stats["accepted"], stats["services"]) == ((1, 1) if kind == "rating" else (0, 2))


def test_catalogue_per_grade_signed(srv, pairs):
    env = sealer(pairs)

    def ask(envelope, grade):
        body = json.dumps(envelope.seal({"grade": grade})).encode()
        return post(srv.url + CATALOGUE, body, {"Content-Type": "application/json"}).body
    one, two = ask(env, "1"), ask(env, "2")
    assert one["code"] == "0" and {"code": "107", "text": "服务态度差、不耐烦"} in one["data"]
    assert {"code": "207", "text": "服务态度差、不耐烦"} in two["data"]
    assert ask(sealer(pairs, hall="stranger"), "1")["code"] == "4004"
    assert ask(env, "9")["code"] == "4001"


def test_cli_needs_the_envelope_keys(tmp_path, capsys):
    db = str(tmp_path / "x.sqlite3")
    assert cli.main(["serve", "--profile", "national-sm2", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "--sm2-key" in err and "--app-mark" in err
