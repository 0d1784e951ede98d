"""Upstream profiles: build one province request from a bound rating, and read the reply.

Level orientation: our records carry the GB/T 39046 A.8 code (1 非常满意 … 5 非常不满意).
`gbt39046-json` sends it as is; `zj-offlinereport-form` and `sd-epoint-json` send
`satisfaction = 6 - level` (5 = 非常满意).

Reply classification (what the uploader does next):
  done  - the province confirmed (accepted, or a duplicate of what it already has)
  retry - transport error, timeout, 5xx, 408, 429 (Retry-After honoured), or an unreadable reply
  park  - a permanent rejection (4xx, or the profile's error code); kept with the upstream's reason
          until a technician fixes the cause and runs `hcp agent outbox retry`
"""
from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

GBT = "gbt39046-json"
ZJ = "zj-offlinereport-form"
SD = "sd-epoint-json"

DEFAULT_PATHS = {GBT: "/api/v1/evaluations", ZJ: "/offlinereport", SD: "/rest/evaluate"}
CONTENT_TYPES = {GBT: "application/json", ZJ: "application/x-www-form-urlencoded",
                 SD: "application/json"}
LEVEL_NAMES = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}
CHANNEL_GBT = "政务大厅其他终端"
PF_HALL_TERMINAL = 5  # 政务大厅其他终端: our evaluator; 7 (系统默认) is never sent

# A 差评 whose reason screen timed out carries no tag; the provinces require a tag or a text, so
# we state what happened instead of choosing a tag for the citizen.
REASON_TIMEOUT_TEXT = "评价人未选择具体原因（原因选择超时）"
FLAG_REASON_TIMEOUT = 2


@dataclass(frozen=True)
class UploadInput:
    """Everything one upload needs; `applicant` is plaintext and lives only for the request."""
    global_id: str
    level: int
    assess_time: float
    assess_number: int
    reasons: list[int]
    flags: int
    case: dict
    applicant: dict
    hall_area_code: str
    area_name: str
    data_source: str
    service_number: str


@dataclass(frozen=True)
class Outcome:
    kind: str  # "done" | "retry" | "park"
    reason: str
    retry_after: float | None = None


def _cst(ts: float, fmt: str) -> str:
    return time.strftime(fmt, time.gmtime(ts + 8 * 3600))


def _written(u: UploadInput) -> str:
    if u.level >= 4 and not u.reasons and u.flags & FLAG_REASON_TIMEOUT:
        return REASON_TIMEOUT_TEXT
    return ""


def build_body(profile: str, u: UploadInput) -> bytes:
    """The request body bytes for one rating under `profile`."""
    tags = [str(r) for r in u.reasons]
    written = _written(u)
    c = u.case
    if profile == GBT:
        body: dict[str, Any] = {
            "projectNo": c["project_no"], "channel": CHANNEL_GBT,
            "rater": (u.applicant.get("name") or "")[:30],
            "assessTime": _cst(u.assess_time, "%Y%m%dT%H%M%S"),
            "assessNumber": u.assess_number, "levelCode": u.level,
            "levelName": LEVEL_NAMES[u.level], "evalDetail": tags,
            "areaCode": u.hall_area_code,
        }
        if not body["rater"]:
            del body["rater"]
        if written:
            body["writingEvaluation"] = written
        return json.dumps(body, ensure_ascii=False).encode("utf-8")
    if profile == ZJ:
        fields = {
            "areaCode": c["area_code"][:6], "areaName": u.area_name, "deptCode": c["dept_code"],
            "taskCode": c["task_code"], "taskName": c["task_name"],
            "projectNo": c["project_no"], "proStatus": str(c["status"]),
            "proDepartCode": c["dept_code"], "proDepart": c["dept_name"],
            "proManager": c["staff_name"], "pf": str(PF_HALL_TERMINAL),
            "certkeyGOV": u.applicant.get("certNo") or "",
            "userName": u.applicant.get("name") or "",
            "userProp": str(u.applicant.get("userProp") or ""),
            "satisfaction": str(6 - u.level), "evalDetail": ",".join(tags),
            "writingEvaluation": written,
            "assessTime": _cst(u.assess_time, "%Y-%m-%d %H:%M:%S"),
            "assessNumber": str(u.assess_number), "promiseTime": str(c["promise_type"]),
            "acceptDate": _cst(c["accepted_at"], "%Y-%m-%d %H:%M:%S"),
            "dataSource": u.data_source,
        }
        return urllib.parse.urlencode(fields, encoding="utf-8").encode("ascii")
    if profile == SD:
        params = {
            "projectno": c["project_no"], "pf": str(PF_HALL_TERMINAL),
            "satisfaction": str(6 - u.level),
            "assessTime": _cst(u.assess_time, "%Y-%m-%d %H:%M:%S"),
            "assessNumber": str(u.assess_number), "serviceNumber": u.service_number,
            "evalDetail": ",".join(tags), "areacode": u.hall_area_code[:6],
            "writingEvaluation": written,
        }
        return json.dumps({"params": params}, ensure_ascii=False).encode("utf-8")
    raise ValueError(f"unknown profile {profile!r}")


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def classify(profile: str, status: int, body: bytes, retry_after: str | None = None) -> Outcome:
    """What the uploader does with this HTTP reply."""
    if status == 429:
        return Outcome("retry", "http_429", parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return Outcome("retry", f"http_{status}", parse_retry_after(retry_after))
    data = _json(body)
    if profile == GBT:
        if status == 200 and isinstance(data, dict) and data.get("ok") is True:
            return Outcome("done", str(data.get("result", "accepted")))
        if 400 <= status < 500:
            return Outcome("park", _reason(data, ("reason", "message")) or f"http_{status}")
    elif profile == ZJ:
        if status == 200 and isinstance(data, dict):
            if str(data.get("result")) == "0":
                return Outcome("done", str(data.get("resultmsg", "")))
            if "result" in data:
                return Outcome("park", str(data.get("resultmsg") or f"result={data['result']}"))
        if 400 <= status < 500:
            return Outcome("park", _reason(data, ("resultmsg",)) or f"http_{status}")
    elif profile == SD:
        if isinstance(data, dict) and isinstance(data.get("custom"), dict) \
                and isinstance(data.get("status"), dict):
            ok_status = str(data["status"].get("code")) == "200"
            if status == 200 and ok_status and str(data["custom"].get("code")) == "1":
                return Outcome("done", str(data["custom"].get("text", "")))
            if status == 200 and ok_status:
                return Outcome("park", str(data["custom"].get("text") or "custom.code != 1"))
        if 400 <= status < 500:
            return Outcome("park", _reason(data, ("custom",)) or f"http_{status}")
    # a 2xx/3xx we cannot read: not confirmed, so not done; the idempotency key makes a resend safe
    return Outcome("retry", f"unreadable_reply_http_{status}")


def _reason(data: Any, keys: tuple[str, ...]) -> str | None:
    if not isinstance(data, dict):
        return None
    parts = []
    for k in keys:
        v = data.get(k)
        if isinstance(v, dict):
            v = v.get("text")
        if v:
            parts.append(str(v))
    return ": ".join(parts) if parts else None
