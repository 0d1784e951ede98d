"""Province reference server: real HTTP on loopback, real SQLite files, one server per test.

Covers every profile's valid upload, each rejection reason, level orientation, duplicates,
一次一评, authentication (token, HMAC-SHA256, HMAC-SM3) and masking. Faults and the CLI are in
test_province_faults.py. All IDs are synthetic (see test_province_ids.py).
"""
from __future__ import annotations

import contextlib
import datetime
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from simulator.province import LEVEL_NAMES, content_type, upload_path
from simulator.province import signing
from simulator.province.fields import REASONS, reason_base
from simulator.province.server import ServerConfig, running_server
from tests.test_province_ids import (CREDIT_SET, synthetic_credit_code, synthetic_resident_id,
                                     wrong_last)

GBT, ZJ, SD = "gbt39046-json", "zj-offlinereport-form", "sd-epoint-json"
BEIJING = datetime.timezone(datetime.timedelta(hours=8))


# --- helpers shared with test_province_faults.py ---------------------------------------------

def bj_time(fmt: str, minutes_ago: float = 5) -> str:
    """Beijing wall time `minutes_ago` minutes ago in `fmt`."""
    moment = datetime.datetime.now(BEIJING) - datetime.timedelta(minutes=minutes_ago)
    return moment.strftime(fmt)


def _apply(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def gbt_rating(project: str = "SYN0001", **over: Any) -> dict[str, Any]:
    """A valid canonical rating (非常满意); keyword overrides, None removes a key."""
    return _apply({
        "projectNo": project, "channel": "政务大厅其他终端", "assessTime": bj_time("%Y%m%dT%H%M%S"),
        "assessNumber": 1, "levelCode": 1, "levelName": "非常满意", "areaCode": "371400",
    }, over)


def zj_rating(project: str = "SYN0001", **over: Any) -> dict[str, Any]:
    """A valid Zhejiang-style form (satisfaction 5 = 非常满意)."""
    return _apply({
        "areaCode": "330100", "areaName": "测试区", "deptCode": synthetic_credit_code(1),
        "taskCode": "SYNTASK-0001", "taskName": "测试事项", "projectNo": project,
        "proStatus": "3", "proDepartCode": "SYNDEPT01", "proDepart": "测试部门", "pf": "5",
        "certkeyGOV": synthetic_resident_id(1), "userName": "测试人", "userProp": "1",
        "satisfaction": "5", "assessTime": bj_time("%Y-%m-%d %H:%M:%S", 5),
        "assessNumber": "1", "promiseTime": "2", "acceptDate": bj_time("%Y-%m-%d %H:%M:%S", 30),
        "dataSource": "001",
    }, over)


def sd_rating(project: str = "SYN0001", **over: Any) -> dict[str, Any]:
    """Valid Shandong platform params (satisfaction 5 = 非常满意) for service number 1."""
    return _apply({
        "projectno": project, "pf": "5", "satisfaction": "5",
        "assessTime": bj_time("%Y-%m-%d %H:%M:%S"), "assessNumber": "1",
        "serviceNumber": 1, "areacode": "371400", "winNo": "A01", "winName": "一号窗（测试）",
    }, over)


def service_record(project: str = "SYN0001", **over: Any) -> dict[str, Any]:
    """A valid service record (服务数据) of a case, service number 1."""
    return _apply({
        "taskCode": "SYNTASK-0001", "taskName": "测试事项", "projectNo": project, "proStatus": "3",
        "deptCode": synthetic_credit_code(1), "orgName": "测试部门",
        "acceptDate": bj_time("%Y-%m-%d %H:%M:%S", 30), "userProp": "1", "userName": "测试人",
        "userPageType": "111", "certKeyGOV": synthetic_resident_id(1), "mobile": "13900000001",
        "serviceName": "窗口办理", "serviceNumber": 1,
        "serviceTime": bj_time("%Y-%m-%d %H:%M:%S", 10), "projectType": "2",
        "areaCode": "371400000000", "taskType": "01", "proChannel": "2", "proManager": "测试员",
        "dataSource": "001",
    }, over)


_SERVICES_PUSHED: set[tuple[str, str]] = set()


def push_sd_service(url: str, project: str, headers: dict[str, str] | None = None,
                    **over: Any) -> Answer:
    """POST a case's service record to an sd-epoint-json server at base `url`."""
    body = json.dumps({"params": service_record(project, **over)}, ensure_ascii=False)
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return post(url + "/rest/addEvaluateService", body.encode("utf-8"), all_headers)


RATING: dict[str, Callable[..., dict[str, Any]]] = {GBT: gbt_rating, ZJ: zj_rating, SD: sd_rating}


def encode(profile: str, payload: dict[str, Any]) -> bytes:
    """Request body for `payload` under `profile`."""
    if profile == ZJ:
        return urllib.parse.urlencode(payload).encode("utf-8")
    if profile == SD:
        return json.dumps({"params": payload}, ensure_ascii=False).encode("utf-8")
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    raw: bytes


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> Answer:
    """POST over real HTTP; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, hdrs, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        status, hdrs, raw = err.code, dict(err.headers), err.read()
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        parsed = None
    return Answer(status, hdrs, parsed, raw)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read().decode("utf-8"))


def upload_to(url: str, profile: str, payload: dict[str, Any], key: str,
              headers: dict[str, str] | None = None, body: bytes | None = None,
              timeout: float = 10) -> Answer:
    """POST one rating to the server at base `url` under `profile` with Idempotency-Key `key`."""
    data = encode(profile, payload) if body is None else body
    project = payload.get("projectno")
    if profile == SD and isinstance(project, str) and (url, project) not in _SERVICES_PUSHED \
            and signing.HEADER_SIGNATURE not in (headers or {}):
        # the platform takes a rating only for a service record it holds: push it once
        _SERVICES_PUSHED.add((url, project))
        push_sd_service(url, project, headers)
    all_headers = {"Content-Type": content_type(profile), signing.HEADER_IDEMPOTENCY: key}
    all_headers.update(headers or {})
    return post(url + upload_path(profile), data, all_headers, timeout=timeout)


def upload(srv: running_server, payload: dict[str, Any], key: str,
           headers: dict[str, str] | None = None, body: bytes | None = None,
           timeout: float = 10) -> Answer:
    """POST one rating to `srv` under its profile with Idempotency-Key `key`."""
    return upload_to(srv.url, srv.config.profile, payload, key, headers, body, timeout)


def verdict(profile: str, ans: Answer) -> tuple[str, str | None]:
    """Read the body the way an uploader must: ('ok', None) or ('rejected', reason).

    Also checks the reference server's convenience headers agree with the body.
    """
    body = ans.body
    if profile == GBT:
        ok, reason = body["ok"], body.get("reason")
        assert (ans.status == 200) == ok
    elif profile == ZJ:
        ok = body["result"] == "0"
        reason = None if ok else body["resultmsg"].split(": ", 1)[0]
    else:
        ok = ans.status == 200 and body["status"]["code"] == "200" and body["custom"]["code"] == "1"
        reason = None if ok else body["custom"]["text"].split(": ", 1)[0]
    if ok:
        assert ans.headers["X-Result"] in ("accepted", "duplicate")
        return "ok", None
    assert ans.headers["X-Result"] == "rejected"
    assert ans.headers["X-Reject-Reason"] == reason
    return "rejected", reason


def stats(srv: running_server) -> dict[str, Any]:
    return get_json(srv.url + "/_stats")


def records(srv: running_server) -> dict[str, Any]:
    return get_json(srv.url + "/_records")["records"]


@pytest.fixture
def province(tmp_path: Any) -> Iterator[Callable[..., running_server]]:
    """Factory: province(profile, **config) -> a running server on a fresh SQLite file."""
    with contextlib.ExitStack() as stack:
        counter = iter(range(1000))

        def start(profile: str, db: Any = None, **config: Any) -> running_server:
            path = db or tmp_path / f"province-{next(counter)}.sqlite3"
            return stack.enter_context(running_server(ServerConfig(profile=profile, db=path,
                                                                   **config)))
        yield start


# --- valid uploads, duplicates, orientation --------------------------------------------------

@pytest.mark.parametrize("profile", [GBT, ZJ, SD])
def test_valid_upload_accepted_and_duplicate_answered_success(province, profile) -> None:
    srv = province(profile)
    payload = RATING[profile]()
    first = upload(srv, payload, "HALL1-DEV7-1")
    assert verdict(profile, first) == ("ok", None)
    assert first.headers["X-Result"] == "accepted"
    again = upload(srv, payload, "HALL1-DEV7-1")
    assert verdict(profile, again) == ("ok", None)
    assert again.headers["X-Result"] == "duplicate"
    s = stats(srv)
    assert s["accepted"] == 1 and s["duplicates"] == 1 and s["rejected"] == {}
    assert s["by_level"] == {"1": 1, "2": 0, "3": 0, "4": 0, "5": 0}
    recs = records(srv)
    assert list(recs) == ["HALL1-DEV7-1"]
    assert recs["HALL1-DEV7-1"]["projectNo"] == "SYN0001"
    assert recs["HALL1-DEV7-1"]["level"] == 1


def test_gbt_reply_shapes(province) -> None:
    srv = province(GBT)
    ok = upload(srv, gbt_rating(), "K-1")
    assert ok.status == 200 and ok.body["result"] == "accepted" and ok.body["idempotencyKey"] == "K-1"
    bad = upload(srv, gbt_rating(levelCode=9), "K-2")
    assert bad.status == 422 and bad.body == {**bad.body, "ok": False, "reason": "bad_level"}
    clash = upload(srv, gbt_rating(), "K-3")
    assert clash.status == 409 and clash.body["reason"] == "duplicate_assessment"


def test_zj_orientation_reversed(province) -> None:
    srv = province(ZJ)
    # satisfaction 1 = 非常不满意 in this profile, i.e. GB/T A.8 code 5; a written reason suffices
    a = upload(srv, zj_rating("SYN1", satisfaction="1", writingEvaluation="等候时间过长"), "K-1")
    b = upload(srv, zj_rating("SYN2", satisfaction="2", evalDetail="101,207"), "K-2")
    c = upload(srv, zj_rating("SYN3", satisfaction="4"), "K-3")
    assert [verdict(ZJ, x)[0] for x in (a, b, c)] == ["ok", "ok", "ok"]
    assert stats(srv)["by_level"] == {"1": 0, "2": 1, "3": 0, "4": 1, "5": 1}


def test_sd_orientation_and_numbers_as_ints(province) -> None:
    srv = province(SD)
    a = upload(srv, sd_rating("SYN1", satisfaction=2, pf=5, assessNumber=1, evalDetail="101"), "K-1")
    b = upload(srv, sd_rating("SYN2", satisfaction="3"), "K-2")
    assert verdict(SD, a) == ("ok", None) and verdict(SD, b) == ("ok", None)
    assert stats(srv)["by_level"] == {"1": 0, "2": 0, "3": 1, "4": 1, "5": 0}


def test_gbt_bad_rating_with_tags_accepted(province) -> None:
    srv = province(GBT)
    ans = upload(srv, gbt_rating(levelCode=4, levelName="不满意", evalDetail=["207"]), "K-1")
    assert verdict(GBT, ans) == ("ok", None)
    assert stats(srv)["by_level"]["4"] == 1


# --- rejections ------------------------------------------------------------------------------

FUTURE_GBT = (datetime.datetime.now(BEIJING) + datetime.timedelta(hours=2)).strftime("%Y%m%dT%H%M%S")
FUTURE_DASH = (datetime.datetime.now(BEIJING) + datetime.timedelta(hours=2)).strftime(
    "%Y-%m-%d %H:%M:%S")
ID_OK = synthetic_resident_id(9)
CREDIT_OK = synthetic_credit_code(9)

REJECTIONS = [
    # canonical GB/T 39046
    (GBT, {"projectNo": None}, "missing_field:projectNo"),
    (GBT, {"projectNo": "办件/1"}, "bad_format:projectNo"),
    (GBT, {"assessTime": "2024-01-01 12:00:00"}, "bad_format:assessTime"),
    (GBT, {"assessTime": "20240230T120000"}, "bad_format:assessTime"),
    (GBT, {"assessTime": FUTURE_GBT}, "bad_time_future:assessTime"),
    (GBT, {"areaCode": "3714"}, "bad_format:areaCode"),
    (GBT, {"areaCode": "991400"}, "bad_format:areaCode"),
    (GBT, {"levelCode": 6}, "bad_level"),
    (GBT, {"levelCode": "1"}, "bad_level"),
    (GBT, {"levelCode": 2}, "bad_level_name"),
    (GBT, {"levelCode": 5, "levelName": "非常不满意"}, "bad_reason_missing"),
    (GBT, {"levelCode": 4, "levelName": "不满意", "writingEvaluation": "  ", "evalDetail": []},
     "bad_reason_missing"),
    (GBT, {"channel": "系统默认"}, "bad_value:channel"),
    (GBT, {"assessNumber": 3}, "bad_value:assessNumber"),
    (GBT, {"assessNumber": "1"}, "bad_format:assessNumber"),
    (GBT, {"evalDetail": "101"}, "bad_format:evalDetail"),
    (GBT, {"userName": "测试人"}, "unknown_field:userName"),
    # Zhejiang-style form
    (ZJ, {"projectNo": None}, "missing_field:projectNo"),
    (ZJ, {"projectNo": ""}, "missing_field:projectNo"),
    (ZJ, {"assessTime": bj_time("%Y%m%dT%H%M%S")}, "bad_format:assessTime"),
    (ZJ, {"acceptDate": "2024-13-01 00:00:00"}, "bad_format:acceptDate"),
    (ZJ, {"assessTime": FUTURE_DASH}, "bad_time_future:assessTime"),
    # both times fixed here (at collection), so their order holds however late the test runs
    (ZJ, {"assessTime": bj_time("%Y-%m-%d %H:%M:%S", 10),
          "acceptDate": bj_time("%Y-%m-%d %H:%M:%S", 5)}, "bad_time_order"),
    (ZJ, {"areaCode": "37140"}, "bad_format:areaCode"),
    (ZJ, {"areaCode": "330100000"}, "bad_format:areaCode"),
    (ZJ, {"deptCode": wrong_last(CREDIT_OK, CREDIT_SET)}, "bad_credit_code:deptCode"),
    (ZJ, {"deptCode": CREDIT_OK[:17]}, "bad_credit_code:deptCode"),
    (ZJ, {"certkeyGOV": wrong_last(ID_OK, "0123456789X")}, "bad_certkey"),
    (ZJ, {"certkeyGOV": CREDIT_OK, "userProp": "1"}, "bad_certkey"),
    (ZJ, {"certkeyGOV": ID_OK, "userProp": "2"}, "bad_certkey"),
    (ZJ, {"certkeyGOV": wrong_last(CREDIT_OK, CREDIT_SET), "userProp": "2"}, "bad_certkey"),
    (ZJ, {"userProp": "3"}, "bad_value:userProp"),
    (ZJ, {"satisfaction": "0"}, "bad_level"),
    (ZJ, {"satisfaction": "6"}, "bad_level"),
    (ZJ, {"satisfaction": "一"}, "bad_level"),
    (ZJ, {"satisfaction": "1"}, "bad_reason_missing"),
    (ZJ, {"satisfaction": "2", "evalDetail": "", "writingEvaluation": ""}, "bad_reason_missing"),
    (ZJ, {"evalDetail": "101,,207"}, "bad_format:evalDetail"),
    (ZJ, {"pf": "7"}, "pf_default_not_allowed"),
    (ZJ, {"pf": "8"}, "bad_value:pf"),
    (ZJ, {"proStatus": "4"}, "bad_value:proStatus"),
    (ZJ, {"promiseTime": "3"}, "bad_value:promiseTime"),
    (ZJ, {"assessNumber": "3"}, "bad_value:assessNumber"),
    (ZJ, {"dataSource": "12"}, "bad_format:dataSource"),
    (ZJ, {"userName": None}, "missing_field:userName"),
    # Shandong vendor platform
    (SD, {"projectno": None}, "missing_field:projectno"),
    (SD, {"assessTime": "2024/01/01 12:00:00"}, "bad_format:assessTime"),
    (SD, {"areacode": "37"}, "bad_format:areacode"),
    (SD, {"satisfaction": 9}, "bad_level"),
    (SD, {"satisfaction": "2"}, "bad_reason_missing"),
    (SD, {"pf": 7}, "pf_default_not_allowed"),
    (SD, {"assessNumber": "0"}, "bad_value:assessNumber"),
]


@pytest.mark.parametrize("profile,override,reason", REJECTIONS,
                         ids=[f"{p}-{r}-{i}" for i, (p, _, r) in enumerate(REJECTIONS)])
def test_malformed_upload_rejected(province, profile, override, reason) -> None:
    srv = province(profile)
    ans = upload(srv, RATING[profile](**override), "K-1")
    assert verdict(profile, ans) == ("rejected", reason)
    assert reason_base(reason) in REASONS
    # the message never echoes an ID number back
    assert ID_OK not in ans.raw.decode("utf-8") and CREDIT_OK not in ans.raw.decode("utf-8")
    s = stats(srv)
    assert s["accepted"] == 0 and s["rejected"] == {reason: 1}
    assert records(srv) == {}


@pytest.mark.parametrize("profile", [GBT, ZJ, SD])
def test_request_level_rejections(province, profile) -> None:
    srv = province(profile)
    path = srv.url + upload_path(profile)
    good = encode(profile, RATING[profile]())
    ctype = content_type(profile)
    cases = [
        (post(path, good, {"Content-Type": ctype}), "missing_idempotency_key"),
        (post(path, good, {"Content-Type": ctype, "Idempotency-Key": "a b"}),
         "bad_idempotency_key"),
        (post(path, good, {"Content-Type": "text/plain", "Idempotency-Key": "K"}),
         "bad_content_type"),
        (post(path, good, {"Content-Type": ctype + "; charset=gbk", "Idempotency-Key": "K"}),
         "bad_encoding"),
        (post(path, b"\xff\xfe{", {"Content-Type": ctype, "Idempotency-Key": "K"}),
         "bad_encoding"),
    ]
    if profile == ZJ:
        dup = good + b"&projectNo=SYN0002"
        cases.append((post(path, dup, {"Content-Type": ctype, "Idempotency-Key": "K"}),
                      "duplicate_field:projectNo"))
    else:
        cases.append((post(path, b"{not json", {"Content-Type": ctype, "Idempotency-Key": "K"}),
                      "bad_json"))
        cases.append((post(path, b"[1]", {"Content-Type": ctype, "Idempotency-Key": "K"}),
                      "bad_body"))
    if profile == SD:
        flat = json.dumps(sd_rating()).encode()
        cases.append((post(path, flat, {"Content-Type": ctype, "Idempotency-Key": "K"}),
                      "bad_body"))
    for ans, reason in cases:
        assert verdict(profile, ans) == ("rejected", reason)
    assert stats(srv)["accepted"] == 0


# --- 一次一评 and idempotency ------------------------------------------------------------------

@pytest.mark.parametrize("profile", [GBT, ZJ, SD])
def test_duplicate_assessment_and_follow_up(province, profile) -> None:
    srv = province(profile)
    number = {GBT: 2, ZJ: "2", SD: "2"}[profile]
    assert verdict(profile, upload(srv, RATING[profile](), "H-D-1"))[0] == "ok"
    # another rating of the same case and assessNumber under a different key: 一次一评
    assert verdict(profile, upload(srv, RATING[profile](), "H-D-2")) == \
        ("rejected", "duplicate_assessment")
    # the follow-up rating is a separate assessNumber
    assert verdict(profile, upload(srv, RATING[profile](assessNumber=number), "H-D-3")) == \
        ("ok", None)
    s = stats(srv)
    assert s["accepted"] == 2 and s["duplicates"] == 0
    assert s["rejected"] == {"duplicate_assessment": 1}
    assert sorted(records(srv)) == ["H-D-1", "H-D-3"]


def test_same_key_different_content_is_conflict(province) -> None:
    srv = province(SD)
    assert verdict(SD, upload(srv, sd_rating(), "H-D-1"))[0] == "ok"
    changed = sd_rating(satisfaction="4")
    assert verdict(SD, upload(srv, changed, "H-D-1")) == ("rejected", "idempotency_conflict")
    assert records(srv)["H-D-1"]["level"] == 1


def test_form_field_order_does_not_matter_for_duplicates(province) -> None:
    srv = province(ZJ)
    payload = zj_rating()
    assert verdict(ZJ, upload(srv, payload, "K"))[0] == "ok"
    reordered = dict(reversed(list(payload.items())))
    ans = upload(srv, reordered, "K")
    assert ans.headers["X-Result"] == "duplicate"


def test_store_survives_restart(province, tmp_path) -> None:
    db = tmp_path / "kept.sqlite3"
    with running_server(ServerConfig(profile=GBT, db=db)) as first:
        assert verdict(GBT, upload(first, gbt_rating(), "H-D-1"))[0] == "ok"
    second = province(GBT, db=db)
    ans = upload(second, gbt_rating(), "H-D-1")
    assert ans.headers["X-Result"] == "duplicate"
    assert stats(second)["accepted"] == 1 and stats(second)["duplicates"] == 1


# --- authentication --------------------------------------------------------------------------

def test_token_auth(province) -> None:
    srv = province(ZJ, auth="token", token="synthetic-token")
    none = upload(srv, zj_rating(), "K-1")
    assert none.status == 401 and verdict(ZJ, none) == ("rejected", "auth_failed")
    wrong = upload(srv, zj_rating(), "K-1", {signing.HEADER_TOKEN: "nope"})
    assert verdict(ZJ, wrong) == ("rejected", "auth_failed")
    right = upload(srv, zj_rating(), "K-1", {signing.HEADER_TOKEN: "synthetic-token"})
    assert verdict(ZJ, right) == ("ok", None)
    assert stats(srv)["rejected"] == {"auth_failed": 2}


@pytest.mark.parametrize("alg", ["sha256", "sm3"])
def test_hmac_auth(province, alg) -> None:
    srv = province(ZJ, auth="hmac", app_id="hall-test", secret="synthetic-secret", sign_alg=alg)
    body = encode(ZJ, zj_rating())

    def signed(**kw: Any) -> dict[str, str]:
        return signing.auth_headers(kw.pop("app_id", "hall-test"), kw.pop("secret",
                                    "synthetic-secret"), body, alg=alg, **kw)

    good = signed()
    assert verdict(ZJ, upload(srv, {}, "K-1", good, body=body)) == ("ok", None)
    replay = upload(srv, {}, "K-1", good, body=body)
    assert replay.status == 401 and verdict(ZJ, replay) == ("rejected", "replayed_nonce")
    stale = signed(timestamp=int(time.time()) - 1000)
    assert verdict(ZJ, upload(srv, {}, "K-1", stale, body=body)) == \
        ("rejected", "stale_timestamp")
    assert verdict(ZJ, upload(srv, {}, "K-1", signed(secret="other"), body=body)) == \
        ("rejected", "bad_signature")
    assert verdict(ZJ, upload(srv, {}, "K-1", signed(app_id="intruder"), body=body)) == \
        ("rejected", "auth_failed")
    # signature over a different body than the one sent
    other_body = encode(ZJ, zj_rating(satisfaction="4"))
    assert verdict(ZJ, upload(srv, {}, "K-1", signed(), body=other_body)) == \
        ("rejected", "bad_signature")
    assert verdict(ZJ, upload(srv, {}, "K-1", {**signed(), signing.HEADER_NONCE: "x"},
                              body=body)) == ("rejected", "bad_nonce")
    assert verdict(ZJ, upload(srv, {}, "K-1", {**signed(), signing.HEADER_TIMESTAMP: "soon"},
                              body=body)) == ("rejected", "bad_timestamp")
    # a retry of the same rating with a fresh nonce is a duplicate, answered success
    again = upload(srv, {}, "K-1", signed(), body=body)
    assert again.headers["X-Result"] == "duplicate"
    s = stats(srv)
    assert s["accepted"] == 1 and s["duplicates"] == 1
    assert s["rejected"] == {"replayed_nonce": 1, "stale_timestamp": 1, "bad_signature": 2,
                             "auth_failed": 1, "bad_nonce": 1, "bad_timestamp": 1}


# --- privacy, discovery ----------------------------------------------------------------------

def test_records_mask_personal_fields(province) -> None:
    srv = province(ZJ)
    rid = synthetic_resident_id(42)
    assert verdict(ZJ, upload(srv, zj_rating(certkeyGOV=rid), "K-1"))[0] == "ok"
    raw = urllib.request.urlopen(srv.url + "/_records", timeout=10).read().decode("utf-8")
    assert rid not in raw and "测试人" not in raw
    fields = json.loads(raw)["records"]["K-1"]["fields"]
    assert fields["certkeyGOV"] == rid[:4] + "*" * 10 + rid[-4:]
    assert fields["userName"] == "测**"


def test_health_and_paths(province) -> None:
    assert {p: upload_path(p) for p in (GBT, ZJ, SD)} == {
        GBT: "/api/v1/evaluations", ZJ: "/offlinereport", SD: "/rest/evaluate"}
    srv = province(ZJ, auth="token", token="t")
    assert get_json(srv.url + "/_health") == {"ok": True, "profile": ZJ,
                                             "path": "/offlinereport", "auth": "token"}
    # only the profile's own path takes uploads
    ans = post(srv.url + "/rest/evaluate", b"{}", {"Content-Type": "application/json"})
    assert ans.status == 404
    assert LEVEL_NAMES[1] == "非常满意" and LEVEL_NAMES[5] == "非常不满意"
