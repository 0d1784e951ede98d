"""Synthetic applicant and department data for the scripted staff: valid check characters (the
agent and the province refuse anything else), and obviously nobody's.

Resident IDs are born 1900-01-01 (sequence 000..999), credit codes carry organisation code
00000000x, phones are 139 0000 xxxx and names are 测试N号. Written from the generators in
tests/test_province_ids.py (ISO 7064 MOD 11-2 by recursion, GB 32100 weights as 3^i mod 31), so
they stay independent of the agent's and the province's own check code.
"""
from __future__ import annotations

import time
from typing import Any

CREDIT_SET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
AREA = "371402"          # a county area code in 山东 (37): the reference province accepts it


def iso7064_mod11_2(digits: str) -> str:
    """ISO 7064 MOD 11-2 check character (resident ID, GB 11643)."""
    p = 0
    for d in digits:
        p = ((p + int(d)) * 2) % 11
    return "0123456789X"[(12 - p) % 11]


def synthetic_resident_id(seq: int = 1, area: str = AREA) -> str:
    """A valid-by-checksum resident ID for nobody: born 1900-01-01, sequence `seq`."""
    body = f"{area}19000101{seq % 1000:03d}"
    return body + iso7064_mod11_2(body)


def gb32100_check(first17: str) -> str:
    """GB 32100 check character of a unified social credit code."""
    total = sum(CREDIT_SET.index(c) * pow(3, i, 31) for i, c in enumerate(first17))
    return CREDIT_SET[(31 - total % 31) % 31]


def synthetic_credit_code(serial: int = 1, kind: str = "11", area: str = "371400") -> str:
    """A valid-by-checksum credit code for no organisation: org code 00000000`serial`."""
    first17 = f"{kind}{area}{serial % 10**9:09d}"
    return first17 + gb32100_check(first17)


def synthetic_phone(n: int) -> str:
    """139 0000 xxxx."""
    return f"1390000{n % 10000:04d}"


def china_time(ts: float) -> str:
    """`YYYY-MM-DD HH:MM:SS` in China time (what the window business system sends)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts + 8 * 3600))


TASKS = (("TEST-TASK-0001", "个体工商户登记（测试）"), ("TEST-TASK-0002", "社保关系转移（测试）"),
         ("TEST-TASK-0003", "不动产登记查询（测试）"), ("TEST-TASK-0004", "居住证办理（测试）"))


def case_body(project_no: str, window: str, staff_id: str, staff_name: str, n: int,
              served_s: float = 120.0, company: bool = False) -> dict[str, Any]:
    """A POST /v1/cases body with synthetic applicant `n` (a person, or a company)."""
    now = time.time()
    code, name = TASKS[n % len(TASKS)]
    if company:
        applicant = {"name": f"测试{n}号公司", "certType": "001",
                     "certNo": synthetic_credit_code(1000 + n), "phone": synthetic_phone(n),
                     "userProp": 2}
    else:
        applicant = {"name": f"测试{n}号", "certType": "111",
                     "certNo": synthetic_resident_id(n), "phone": synthetic_phone(n),
                     "userProp": 1}
    return {
        "window": window, "projectNo": project_no, "taskCode": code, "taskName": name,
        "deptCode": synthetic_credit_code(1), "deptName": "测试局（虚构）", "areaCode": AREA,
        "staff": {"id": staff_id, "name": staff_name}, "applicant": applicant,
        "acceptedAt": china_time(now - served_s), "finishedAt": china_time(now - 1),
        "promiseType": 2, "status": 3,
    }
