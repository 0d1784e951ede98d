"""Service records (服务数据) and their ratings as the platform checks them: field rules, the
platform's messages, and the reason-tag table it serves per grade.

Used by the `national-sm2` profile (records inside the SM2 envelope) and `sd-epoint-json`
(plain `{"params": {...}}`). Messages are the platform's own wording where the public code shows
it ("没有对应的服务数据", "已存在该条服务信息，请勿重复提交！", "本次服务已存在评价，请勿重复评价！",
"差评必须勾选详情或填写文字评价"); the `reason` beside each is this server's stable code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from . import fields as F
from . import idcodes
from .fields import Rejection

NO_SERVICE = "没有对应的服务数据"
DUPLICATE_SERVICE = "已存在该条服务信息，请勿重复提交！"
DUPLICATE_RATING = "本次服务已存在评价，请勿重复评价！"
BAD_NEEDS_REASON = "差评必须勾选详情或填写文字评价"
TASK_TYPES = ("01", "05", "07", "08", "09", "10", "20", "99")
USER_PROPS = (1, 2, 3, 4, 5, 6, 9)
MOBILE_RE = re.compile(r"1[3-9]\d{9}")
TASK_CODE_RE = re.compile(r"[0-9A-Za-z-]{1,33}")
CERT_TYPE_RE = re.compile(r"\d{3}")
DEFAULT_CATALOGUE = (Path(__file__).resolve().parents[2] / "edge_agent" / "deploy"
                     / "catalogue.seed-0.json")


def check_prefix(value: str, name: str, prefix: str | None) -> None:
    """The platform prefixes hall case numbers with the province code ("37" in Shandong)."""
    if prefix and not value.startswith(prefix):
        raise Rejection(f"bad_prefix:{name}", f"{name} 须以省份代码 {prefix} 开头（平台为大厅办件号加"
                                              f"省份前缀）({name} must start with the province "
                                              f"prefix {prefix})")


def _prefixed(fields: dict[str, Any], name: str, prefix: str | None) -> str:
    value = F.get_text(fields, name, required=True, max_len=50, pattern=F.CASE_NO_RE,
                       what="1–50位字母数字或- letters, digits, '-', up to 50")
    assert value is not None
    check_prefix(value, name, prefix)
    return value


def _json_int(fields: dict[str, Any], name: str, allowed: range | tuple) -> int:
    value = fields.get(name)
    if value is None:
        raise F.missing(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise F.bad_format(name, "整数 integer (JSON number, not a string)")
    if value not in allowed:
        raise F.bad_value(name, f"{min(allowed)}..{max(allowed)}")
    return value


ECHOED = {"bad_certkey": "certKeyGOV"}


def echo(rej: Rejection, record: Any) -> str:
    """The message with the refused value appended, as careless platforms answer (a test of the
    agent's masking: it must never keep such a value in the clear)."""
    name = rej.reason.split(":", 1)[1] if ":" in rej.reason else ECHOED.get(rej.reason)
    if not name or not isinstance(record, dict) or record.get(name) is None:
        return rej.message
    return f"{rej.message} ({name}={record[name]})"


def validate_service(fields: dict[str, Any], now: float, prefix: str | None,
                     area_lengths: tuple[int, ...]) -> tuple[str, int]:
    """Check a service record; returns (projectNo, serviceNumber)."""
    if not isinstance(fields, dict):
        raise Rejection("bad_body", "服务数据须为JSON对象 (a service record must be an object)")
    F.get_text(fields, "taskCode", required=True, max_len=33, pattern=TASK_CODE_RE)
    F.get_text(fields, "taskHandleItem", required=False, max_len=33, pattern=TASK_CODE_RE)
    F.get_text(fields, "taskName", required=True, max_len=200)
    project_no = _prefixed(fields, "projectNo", prefix)
    F.get_code(fields, "proStatus", (1, 2, 3))
    F.get_credit_code(fields, "deptCode")
    F.get_text(fields, "orgName", required=True, max_len=100)
    accept = F.get_time(fields, "acceptDate", F.DASH_TIME, now=now)
    F.get_text(fields, "userName", required=True, max_len=30)
    page_type = F.get_text(fields, "userPageType", required=True, max_len=3,
                           pattern=CERT_TYPE_RE, what="三位证件类型代码 three-digit ID type")
    cert = F.get_text(fields, "certKeyGOV", required=True, max_len=32)
    user_prop = F.get_code(fields, "userProp", USER_PROPS)
    if user_prop == 1 and page_type == "111" and not idcodes.resident_id_valid(cert or ""):
        raise Rejection("bad_certkey", "certKeyGOV 不是有效的居民身份证号码（含校验码）"
                                       "(certKeyGOV is not a valid resident ID number)")
    if user_prop != 1 and not idcodes.credit_code_valid(cert or ""):
        raise Rejection("bad_certkey", "法人等非自然人的 certKeyGOV 须为统一社会信用代码 "
                                       "(certKeyGOV of a legal person must be its credit code)")
    # the platform texts the rater an invitation to rate: a landline will not do
    F.get_text(fields, "mobile", required=True, max_len=20, pattern=MOBILE_RE,
               what="手机号码（平台短信邀评）a mobile number (the platform texts the rater)")
    F.get_text(fields, "serviceName", required=True, max_len=100)
    number = _json_int(fields, "serviceNumber", range(1, 100))
    service_time = F.get_time(fields, "serviceTime", F.DASH_TIME, now=now)
    F.get_code(fields, "projectType", (1, 2))
    F.get_area_code(fields, "areaCode", area_lengths)
    task_type = F.get_text(fields, "taskType", required=True, max_len=2)
    if task_type not in TASK_TYPES:
        raise F.bad_value("taskType", "/".join(TASK_TYPES))
    F.get_code(fields, "proChannel", (1, 2))
    F.get_text(fields, "proManager", required=False, max_len=30)
    F.get_time(fields, "resultDate", F.DASH_TIME, required=False, now=now)
    data_source = F.get_text(fields, "dataSource", required=True, max_len=3)
    if not (data_source and len(data_source) == 3 and data_source.isdigit()):
        raise F.bad_format("dataSource", "3位数字 three digits")
    if accept is not None and service_time is not None and service_time < accept:
        raise Rejection("bad_time_order", "serviceTime 早于 acceptDate (serviceTime is earlier "
                                          "than acceptDate)")
    return project_no, number


class TagTable:
    """The platform's reason tags per grade (1 非常不满意, 2 不满意), as code strings."""

    def __init__(self, catalogue: dict) -> None:
        prefixes = {lvl: (catalogue.get("codes", {}).get(lvl) or {}).get("prefix", "")
                    for lvl in ("5", "4")}
        self.grades: dict[int, list[dict[str, str]]] = {1: [], 2: []}
        for tag in catalogue.get("tags", []):
            upstream = tag.get("upstream") or {}
            for grade, level in ((1, "5"), (2, "4")):
                code = upstream.get(level) if upstream else prefixes[level] + tag["tag"]
                if code:
                    self.grades[grade].append({"code": code, "text": tag["text"]})

    @classmethod
    def load(cls, path: str | Path | None) -> "TagTable":
        return cls(json.loads(Path(path or DEFAULT_CATALOGUE).read_text(encoding="utf-8")))

    def codes(self, grade: int) -> set[str]:
        return {t["code"] for t in self.grades.get(grade, [])}


def validate_rating(fields: dict[str, Any], now: float, *, prefix: str | None, names: dict,
                    tags: TagTable, strict_ints: bool) -> tuple[str, int, int, int]:
    """Check a rating that refers to a service record; returns (projectNo, assessNumber,
    serviceNumber, satisfaction). `names` maps the profile's key names (projectNo/projectno)."""
    if not isinstance(fields, dict):
        raise Rejection("bad_body", "评价数据须为JSON对象 (a rating must be an object)")
    project_no = _prefixed(fields, names["project"], prefix)
    sat_name = "satisfaction"
    raw = fields.get(sat_name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise F.missing(sat_name)
    if not (isinstance(raw, str) and raw in ("1", "2", "3", "4", "5")) and \
            not (not strict_ints and isinstance(raw, int) and not isinstance(raw, bool)
                 and 1 <= raw <= 5):
        raise Rejection("bad_level", "satisfaction 取值应为1–5（5=非常满意）(satisfaction must "
                                     "be 1..5, 5 = very satisfied)")
    satisfaction = int(raw)
    value = F.get_int(fields, "pf")
    if value == 7:
        raise Rejection("pf_default_not_allowed", "大厅不得上报系统默认评价 pf=7 (pf=7 system-default "
                                                  "ratings are recorded by the province)")
    if value not in (1, 2, 3, 4, 5, 6):
        raise F.bad_value("pf", "1/2/3/4/5/6")
    F.get_time(fields, "assessTime", F.DASH_TIME, now=now)
    if strict_ints:
        assess = _json_int(fields, "assessNumber", (1, 2))
        service = _json_int(fields, "serviceNumber", range(1, 100))
    else:
        assess = F.get_code(fields, "assessNumber", (1, 2))
        service = F.get_int(fields, "serviceNumber")
        if service is None or not 1 <= service < 100:
            raise F.bad_format("serviceNumber", "服务序号整数 the service's number, an integer")
    written = F.get_text(fields, "writingEvaluation", required=False, max_len=2000)
    codes = F.parse_tags(fields.get("evalDetail"), "evalDetail", as_list=False)
    if satisfaction < 3:
        unknown = [c for c in codes if c not in tags.codes(satisfaction)]
        if unknown:
            raise Rejection("unknown_tag", f"评价明细代码不在本级标签表中 (evalDetail code(s) not in "
                                           f"the grade-{satisfaction} table: {', '.join(unknown)})")
        if not codes and not (written and written.strip()):
            raise Rejection("bad_reason_missing", BAD_NEEDS_REASON)
    assert assess is not None
    return project_no, assess, service, satisfaction
