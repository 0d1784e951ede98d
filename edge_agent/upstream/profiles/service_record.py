"""The case's service record (服务数据) and the platform's answers about it, shared by the
service-first profiles (`national-sm2`, `sd-epoint-json`).

A rating refers to a service of its case pushed before it, keyed by projectNo + serviceNumber
(the n-th service of the case, an integer; ours is 1: a case reported once is one service).
The province answers a second push of the same service with "已存在该条服务信息", a second rating
for the same assessNumber with "本次服务已存在评价" (some deployments: "评价数据不可重复"), and a
rating whose service it does not hold with "没有对应的服务数据". The first two mean the record is
there: confirmed, counted as duplicates, never sent again. The third means push the service
again, then the rating.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import DASH, RATING, SERVICE, Job, Outcome, area_code, cst, task_type

if TYPE_CHECKING:
    from ...config import Upstream

DUPLICATE_SERVICE = ("已存在该条服务信息",)
DUPLICATE_RATING = ("本次服务已存在评价", "评价数据不可重复")
NO_SERVICE = "没有对应的服务数据"
OFFLINE = "2"          # proChannel: 1 online, 2 offline (a hall window)
TASK_CODE_LEN = 31     # a 33-character code is an implementation item: taskCode = first 31


def service_record(job: Job, up: "Upstream", area_len: int, prefix: str = "") -> dict:
    """The service record of `job`'s case; rater fields come from the opened applicant."""
    c, a = job.case, job.applicant
    code = c["task_code"]
    rec = {
        "taskCode": code[:TASK_CODE_LEN] if len(code) == TASK_CODE_LEN + 2 else code,
        "taskName": c["task_name"],
        "projectNo": prefix + c["project_no"],
        "proStatus": str(c["status"]),
        "deptCode": c["dept_code"],
        "orgName": c["dept_name"],
        "acceptDate": cst(c["accepted_at"], DASH),
        "userProp": str(a.get("userProp") or ""),
        "userName": a.get("name") or "",
        "userPageType": a.get("certType") or "",
        "certKeyGOV": a.get("certNo") or "",
        "mobile": a.get("phone") or "",
        "serviceName": up.service_name,
        "serviceNumber": job.service_number,
        "serviceTime": cst(c["finished_at"] or c["accepted_at"], DASH),
        "projectType": str(c["promise_type"]),
        "areaCode": area_code(c["area_code"], area_len),
        "taskType": task_type(c.get("task_type")),
        "proChannel": OFFLINE,
        "proManager": c["staff_name"],
        "dataSource": up.data_source,
    }
    if len(code) == TASK_CODE_LEN + 2:
        rec["taskHandleItem"] = code
    if c["status"] == 3 and c["finished_at"]:
        rec["resultDate"] = cst(c["finished_at"], DASH)
    return rec


def verdict(kind: str, ok: bool, message: str) -> Outcome:
    """One record's outcome from the platform's success flag and message."""
    if ok:
        return Outcome("done", message or "success")
    if kind == SERVICE and any(m in message for m in DUPLICATE_SERVICE):
        return Outcome("done", message, duplicate=True)
    if kind == RATING and any(m in message for m in DUPLICATE_RATING):
        return Outcome("done", message, duplicate=True)
    if kind == RATING and NO_SERVICE in message:
        return Outcome("repush", message)
    return Outcome("park", message or "rejected without a message")
