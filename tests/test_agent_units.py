"""Small pure parts of the agent: reply classification, masking, sealing, sd_notify, scrubbing."""
from __future__ import annotations

import json
import os
import socket

import pytest

from edge_agent import sdnotify
from edge_agent.levels import LEVEL_NAMES
from edge_agent.privacy import Sealer, mask_cert, mask_name, mask_phone, scrub
from edge_agent.upstream.profiles.base import RATING, SERVICE, BuildContext, Job, Reasons, \
    parse_retry_after
from edge_agent.upstream.registry import get_profile
from tests.agent_support import synthetic_id


def _job(kind=RATING, level=1, reasons=(), flags=0):
    case = {"id": 1, "project_no": "P-1", "area_code": "371402", "dept_code": "X",
            "task_code": "T", "task_name": "n", "status": 3, "dept_name": "d", "staff_name": "s",
            "promise_type": 2, "accepted_at": 0.0, "finished_at": 10.0, "window": "A01",
            "task_type": None}
    rating = {"level": level, "assess_time": 1.7e9, "assess_number": 1, "flags": flags,
              "reasons": list(reasons), "cat_version": 1}
    return Job(kind, 1, "T01-1-1", 0, case, rating=rating if kind == RATING else None,
               applicant={"name": "测试"})


def _classify(profile, status, body, kind=RATING, n=1, retry_after=None):
    raw = body.encode() if isinstance(body, str) else json.dumps(body, ensure_ascii=False).encode()
    return get_profile(profile).classify(kind, [_job(kind)] * n, status, raw, retry_after)


@pytest.mark.parametrize("profile,status,body,kind", [
    ("gbt39046-json", 200, {"ok": True, "result": "duplicate"}, "done"),
    ("gbt39046-json", 422, {"ok": False, "reason": "bad_level", "message": "m"}, "park"),
    ("gbt39046-json", 409, {"ok": False, "reason": "duplicate_assessment"}, "park"),
    ("gbt39046-json", 401, {"ok": False, "reason": "auth_failed"}, "park"),
    ("gbt39046-json", 200, "<html>proxy</html>", "retry"),
    ("gbt39046-json", 502, "", "retry"),
    ("gbt39046-json", 408, "", "retry"),
    ("zj-offlinereport-form", 200, {"result": "0", "resultmsg": "成功"}, "done"),
    ("zj-offlinereport-form", 200, {"result": "1", "resultmsg": "bad_certkey: x"}, "park"),
    ("zj-offlinereport-form", 401, {"result": "2", "resultmsg": "auth_failed: x"}, "park"),
    ("zj-offlinereport-form", 200, {"other": 1}, "retry"),
    ("sd-epoint-json", 200, {"status": {"code": "200"}, "custom": {"code": "1"}}, "done"),
    ("sd-epoint-json", 200, {"status": {"code": "200"}, "custom": {"code": "0", "text": "t"}},
     "park"),
    ("sd-epoint-json", 200, {"status": {"code": "200"}, "custom": {
        "code": "0", "text": "本次服务已存在评价，请勿重复评价！"}}, "done"),
    ("sd-epoint-json", 200, {"status": {"code": "200"}, "custom": {
        "code": "0", "text": "没有对应的服务数据"}}, "repush"),
    ("sd-epoint-json", 401, {"status": {"code": "401"}, "custom": {"code": "0"}}, "park"),
    ("sd-epoint-json", 503, {}, "retry"),
    ("national-sm2", 200, {"code": "0", "success": "true"}, "done"),
    ("national-sm2", 200, {"C-Response-Desc": "success"}, "done"),
    ("national-sm2", 200, {"C-Response-Desc": "评价数据不可重复"}, "done"),
    ("national-sm2", 200, {"code": "401", "success": "false", "msg": "签名验证失败"}, "park"),
    ("national-sm2", 200, {"code": "402", "success": "false", "msg": "时间戳超出允许范围"},
     "retry"),
    ("national-sm2", 200, {"success": "true"}, "retry"),
    ("national-sm2", 200, "<html>gateway</html>", "retry"),
])
def test_classify(profile, status, body, kind):
    assert _classify(profile, status, body)[0].kind == kind


def test_national_reply_settles_each_record_by_its_own_result():
    body = {"code": "1", "success": "false", "results": [
        {"code": "0", "msg": "成功"}, {"code": "1", "msg": "本次服务已存在评价"},
        {"code": "1", "msg": "没有对应的服务数据"}, {"code": "1", "msg": "差评必须勾选详情或填写文字评价"}]}
    out = _classify("national-sm2", 200, body, n=4)
    assert [o.kind for o in out] == ["done", "done", "repush", "park"]
    assert [o.duplicate for o in out] == [False, True, False, False]
    # a results list that does not match the batch is unreadable: retried, never guessed
    assert {o.kind for o in _classify("national-sm2", 200, body, n=3)} == {"retry"}
    # the service record's own duplicate answer confirms it
    dup = {"code": "1", "success": "false", "results": [{"code": "1", "msg": "已存在该条服务信息"}]}
    assert _classify("national-sm2", 200, dup, kind=SERVICE)[0].duplicate


def test_envelope_refusal_names_the_settings():
    out = _classify("national-sm2", 200, {"code": "402", "success": "false", "msg": "数据解密失败"})
    assert out[0].kind == "park" and "cipher_order" in out[0].reason \
        and "platform_public_key_file" in out[0].reason
    out = _classify("national-sm2", 200, {"code": "401", "success": "false", "msg": "签名验证失败"})
    assert "signature_format" in out[0].reason and "signer_id" in out[0].reason


def test_retry_after_forms():
    out = _classify("sd-epoint-json", 429, b"".decode(), retry_after="7")[0]
    assert out.kind == "retry" and out.retry_after == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


def test_level_orientation_in_bodies(tmp_path):
    from edge_agent.config import load_config
    from tests.agent_support import write_config
    cfg = load_config(write_config(tmp_path, extra_upstream='dept_number = "ZJ-DEPT-001"'))
    ctx = BuildContext(cfg, lambda r: Reasons([str(c) for c in r["reasons"]]), None)
    for level in range(1, 6):
        jobs = [_job(level=level)]
        gbt = json.loads(get_profile("gbt39046-json").body(RATING, jobs, ctx))
        sd = json.loads(get_profile("sd-epoint-json").body(RATING, jobs, ctx))
        zj = get_profile("zj-offlinereport-form").body(RATING, jobs, ctx).decode()
        assert gbt["levelCode"] == level and gbt["levelName"] == LEVEL_NAMES[level]
        assert sd["params"]["satisfaction"] == str(6 - level)
        assert f"satisfaction={6 - level}" in zj
    assert gbt["assessTime"] == "20231115T061320"  # 1.7e9 in Beijing time
    # sd: the province prefix (from the hall's area code), pf 4, the window
    assert sd["params"]["projectno"] == "37P-1" and sd["params"]["pf"] == "4"
    assert sd["params"]["winNo"] == "A01" and sd["params"]["winName"] == "一号窗（测试）"
    assert "proDepartCode=ZJ-DEPT-001" in zj and "pf=5" in zj


def test_timed_out_reason_and_unmapped_tag_go_in_words(tmp_path):
    from edge_agent.config import load_config
    from tests.agent_support import write_config
    cfg = load_config(write_config(tmp_path))
    ctx = BuildContext(cfg, lambda r: Reasons([]), None)
    body = json.loads(get_profile("gbt39046-json").body(RATING, [_job(level=5, flags=2)], ctx))
    assert body["evalDetail"] == [] and "原因选择超时" in body["writingEvaluation"]
    ctx = BuildContext(cfg, lambda r: Reasons([], ["排队等候时间长"]), None)
    body = json.loads(get_profile("gbt39046-json").body(RATING, [_job(level=4)], ctx))
    assert body["writingEvaluation"] == "排队等候时间长"


def test_paper_form_rating_uses_the_paper_channel_and_its_own_words(tmp_path):
    """A paper form's rating (binding 'paper') goes with `upstream.paper_pf` /
    `paper_channel`, and the words copied from the paper are its written reason."""
    from edge_agent.config import load_config
    from tests.agent_support import write_config
    cfg = load_config(write_config(tmp_path, extra_upstream='dept_number = "ZJ-DEPT-001"\n'
                                                             'paper_pf = 6\npaper_channel = "短信"'))
    ctx = BuildContext(cfg, lambda r: Reasons([]), None)
    paper = _job(level=4)
    paper.rating.update(paper=True, written="窗口人员离岗半小时")
    sd = json.loads(get_profile("sd-epoint-json").body(RATING, [paper], ctx))["params"]
    zj = get_profile("zj-offlinereport-form").body(RATING, [paper], ctx).decode()
    gbt = json.loads(get_profile("gbt39046-json").body(RATING, [paper], ctx))
    assert sd["pf"] == "6" and "pf=6" in zj and gbt["channel"] == "短信"
    assert sd["writingEvaluation"] == gbt["writingEvaluation"] == "窗口人员离岗半小时"
    device = json.loads(get_profile("sd-epoint-json").body(RATING, [_job(level=1)], ctx))
    assert device["params"]["pf"] == "4"          # a device's rating keeps the evaluator channel


def test_masks_and_scrub():
    cert = synthetic_id(1)
    assert mask_cert(cert) == cert[:4] + "**********" + cert[-4:]
    assert mask_phone("13800000000") == "138****0000"
    assert mask_name("张三") == "张*" and mask_name("") == ""
    text = f"id {cert} phone 13900001111 project P-20261121-0001 n=12345678901234"
    clean = scrub(text)
    assert cert not in clean and "13900001111" not in clean
    assert "P-20261121-0001" in clean


def test_sealer_binds_row_and_key():
    s = Sealer(bytes(32))
    blob = s.seal({"certNo": "x"}, "P-1")
    assert s.open(blob, "P-1") == {"certNo": "x"}
    with pytest.raises(ValueError):
        s.open(blob, "P-2")
    with pytest.raises(ValueError):
        Sealer(bytes([1] * 32)).open(blob, "P-1")


def test_sd_notify_abstract_socket_and_watchdog_env():
    name = f"hcp-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval({}) is None
