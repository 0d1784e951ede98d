"""Small pure parts of the agent: reply classification, masking, sealing, sd_notify, scrubbing."""
from __future__ import annotations

import json
import os
import socket

import pytest

from edge_agent import profiles, sdnotify
from edge_agent.privacy import Sealer, mask_cert, mask_name, mask_phone, scrub
from tests.agent_support import synthetic_id


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
    ("sd-epoint-json", 401, {"status": {"code": "401"}, "custom": {"code": "0"}}, "park"),
    ("sd-epoint-json", 503, {}, "retry"),
])
def test_classify(profile, status, body, kind):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    assert profiles.classify(profile, status, raw).kind == kind


def test_retry_after_forms():
    out = profiles.classify("sd-epoint-json", 429, b"", "7")
    assert out.kind == "retry" and out.retry_after == 7
    assert profiles.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert profiles.parse_retry_after("soon") is None


def test_level_orientation_in_bodies():
    case = {"project_no": "P-1", "area_code": "371402", "dept_code": "X", "task_code": "T",
            "task_name": "n", "status": 3, "dept_name": "d", "staff_name": "s",
            "promise_type": 2, "accepted_at": 0.0}
    for level in range(1, 6):
        u = profiles.UploadInput("T01-1-1", level, 1.7e9, 1, [], 0, case, {"name": "测试"},
                                 "371402", "a", "001", "T01")
        gbt = json.loads(profiles.build_body("gbt39046-json", u))
        sd = json.loads(profiles.build_body("sd-epoint-json", u))
        zj = profiles.build_body("zj-offlinereport-form", u).decode()
        assert gbt["levelCode"] == level and gbt["levelName"] == profiles.LEVEL_NAMES[level]
        assert sd["params"]["satisfaction"] == str(6 - level)
        assert f"satisfaction={6 - level}" in zj
    assert gbt["assessTime"] == "20231115T061320"  # 1.7e9 in Beijing time


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
