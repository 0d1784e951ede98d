"""Case intake: validate a `POST /v1/cases` body and turn it into a row (rater data sealed).

Error messages name the field and the rule, never the submitted value (it may be an ID number).
Every text field is refused (422 naming it) when it holds a control character (the province
refuses them, so the rating would be parked later), a lone surrogate (not encodable as UTF-8:
it could not be stored at all) or a Unicode non-character.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from protocol.messages import MAX_REF

from .idcheck import credit_code_valid, resident_id_valid
from .privacy import Sealer, mask_cert, mask_name, mask_phone

CST = timezone(timedelta(hours=8))

CERT_TYPES = {"111": "居民身份证", "414": "护照", "511": "台湾居民来往大陆通行证",
              "516": "港澳居民来往内地通行证", "001": "统一社会信用代码", "099": "其他"}

# the province's patterns (PROVINCE_API.md): refuse at intake what could never be uploaded
_PROJECT_NO = re.compile(r"[0-9A-Za-z-]{1,50}")
_CODE = re.compile(r"[0-9A-Za-z-]{1,64}")
_AREA = re.compile(r"\d{6}|\d{9}|\d{12}")
_PHONE = re.compile(r"1[3-9]\d{9}|0\d{2,3}-?\d{7,8}")
_TASK_TYPE = re.compile(r"\d{2}")
# a queue ticket's code as its QR holds it: what a waiting-area evaluator can scan and send
# (SPEC §4.12: printable ASCII without spaces, ≤ 64 bytes)
TICKET = re.compile(r"[\x21-\x7e]{1,%d}" % MAX_REF)


def text_problem(value: str) -> str | None:
    """Why `value` may not be stored or sent upstream (None when it may). Names the kind of
    character and its position, never the text."""
    for i, ch in enumerate(value):
        o = ord(ch)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return f"含控制字符 contains a control character at position {i + 1}"
        if 0xD800 <= o <= 0xDFFF:
            return f"含孤立代理码元 contains a lone surrogate at position {i + 1}"
        if 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE:
            return f"含非字符 contains a Unicode non-character at position {i + 1}"
    return None


@dataclass(frozen=True)
class CaseInput:
    """A validated case; `applicant` is plaintext and must only go to `seal_applicant`."""
    window: str
    project_no: str
    task_code: str
    task_name: str
    dept_code: str
    dept_name: str
    area_code: str
    staff_id: str
    staff_name: str
    applicant: dict
    accepted_at: float
    finished_at: float | None
    promise_type: int
    status: int
    task_type: str | None = None     # 事项类型 (GB/T 39046 A.1), optional
    ticket: str | None = None      # the queue ticket this case was served under, if reported


def parse_time(value: Any) -> float:
    """`2026-11-21 10:00:00` (China time), or ISO 8601 with an offset -> unix seconds."""
    if not isinstance(value, str):
        raise ValueError
    text = value.strip().replace("Z", "+00:00")
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CST)
    return dt.timestamp()


def check_text(errors: list[dict], obj: dict, key: str, path: str, max_len: int,
               pattern: re.Pattern | None = None, required: bool = True, what: str = ""
               ) -> str | None:
    """`obj[key]` as a clean, stripped string, or None with an error for `path` appended."""
    v = obj.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            errors.append({"field": path, "error": "必填 required"})
        return None
    if not isinstance(v, str):
        errors.append({"field": path, "error": "应为字符串 must be a string"})
        return None
    problem = text_problem(v)
    if problem is not None:
        errors.append({"field": path, "error": problem})
        return None
    v = v.strip()
    if len(v) > max_len:
        errors.append({"field": path, "error": f"过长 too long (max {max_len})"})
        return None
    if pattern is not None and not pattern.fullmatch(v):
        errors.append({"field": path,
                       "error": f"格式不正确 invalid format{': ' + what if what else ''}"})
        return None
    return v


def check_time(errors: list[dict], obj: dict, key: str, path: str, required: bool = True
               ) -> float | None:
    """`obj[key]` as unix seconds (parse_time), or None with an error for `path` appended."""
    v = obj.get(key)
    if v is None:
        if required:
            errors.append({"field": path, "error": "必填 required"})
        return None
    try:
        return parse_time(v)
    except (ValueError, TypeError, OverflowError):
        errors.append({"field": path, "error": "时间格式不正确 invalid time: use 'YYYY-MM-DD "
                       "HH:MM:SS' (China time) or ISO 8601 with offset"})
        return None


def validate_case(body: Any, windows: set[str]) -> tuple[CaseInput | None, list[dict]]:
    """Check every field; returns (case, []) or (None, [{"field", "error"}, ...])."""
    errors: list[dict] = []

    def err(field: str, msg: str) -> None:
        errors.append({"field": field, "error": msg})

    if not isinstance(body, dict):
        return None, [{"field": "(body)", "error": "请求体应为 JSON 对象 body must be a JSON object"}]

    def text(obj: dict, key: str, path: str, max_len: int, pattern: re.Pattern | None = None,
             required: bool = True, what: str = "") -> str | None:
        return check_text(errors, obj, key, path, max_len, pattern, required, what)

    def choice(obj: dict, key: str, path: str, allowed: tuple[int, ...]) -> int | None:
        v = obj.get(key)
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 3:
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or v not in allowed:
            err(path, f"应为 must be one of {', '.join(map(str, allowed))}")
            return None
        return v

    def when(obj: dict, key: str, path: str, required: bool = True) -> float | None:
        return check_time(errors, obj, key, path, required)

    window = text(body, "window", "window", 32)
    if window is not None and window not in windows:
        err("window", "未配置的窗口 window is not configured in hall.toml")
        window = None
    project_no = text(body, "projectNo", "projectNo", 50, _PROJECT_NO,
                      what="letters, digits, - (≤ 50)")
    task_code = text(body, "taskCode", "taskCode", 64, _CODE, what="letters, digits, -")
    task_name = text(body, "taskName", "taskName", 200)
    dept_code = text(body, "deptCode", "deptCode", 18)
    if dept_code is not None and not credit_code_valid(dept_code):
        err("deptCode", "不是有效的统一社会信用代码 not a valid 18-character unified social "
            "credit code (check character included)")
        dept_code = None
    dept_name = text(body, "deptName", "deptName", 100)
    area_code = text(body, "areaCode", "areaCode", 12, _AREA, what="6, 9 or 12 digits")

    staff = body.get("staff")
    staff_id = staff_name = None
    if not isinstance(staff, dict):
        err("staff", "必填对象 required object {id, name}")
    else:
        staff_id = text(staff, "id", "staff.id", 32)
        staff_name = text(staff, "name", "staff.name", 30)

    applicant = body.get("applicant")
    app: dict = {}
    if not isinstance(applicant, dict):
        err("applicant", "必填对象 required object {name, certType, certNo, phone, userProp}")
    else:
        app["name"] = text(applicant, "name", "applicant.name", 30)
        cert_type = text(applicant, "certType", "applicant.certType", 3)
        if cert_type is not None and cert_type not in CERT_TYPES:
            err("applicant.certType", "未知证件类型 unknown; one of " + ", ".join(CERT_TYPES))
            cert_type = None
        app["certType"] = cert_type
        cert_no = text(applicant, "certNo", "applicant.certNo", 32)
        if cert_no is not None:
            cert_no = cert_no.upper()
            if cert_type == "111" and not resident_id_valid(cert_no):
                err("applicant.certNo", "不是有效的居民身份证号码 not a valid 18-digit resident "
                    "ID number (check character included)")
                cert_no = None
            elif cert_type == "001" and not credit_code_valid(cert_no):
                err("applicant.certNo", "不是有效的统一社会信用代码 not a valid credit code")
                cert_no = None
        app["certNo"] = cert_no
        app["phone"] = text(applicant, "phone", "applicant.phone", 20, _PHONE, required=False,
                            what="mobile 1xxxxxxxxxx or landline 0xxx-xxxxxxx")
        app["userProp"] = choice(applicant, "userProp", "applicant.userProp", (1, 2))

    ticket = text(body, "ticket", "ticket", MAX_REF, TICKET, required=False,
                  what="the ticket's code: printable ASCII without spaces (≤ 64)")
    accepted_at = when(body, "acceptedAt", "acceptedAt")
    promise_type = choice(body, "promiseType", "promiseType", (1, 2))
    status = choice(body, "status", "status", (1, 2, 3))
    finished_at = when(body, "finishedAt", "finishedAt", required=(status == 3))
    if accepted_at is not None and finished_at is not None and finished_at < accepted_at:
        err("finishedAt", "早于受理时间 is before acceptedAt")

    task_type = text(body, "taskType", "taskType", 2, _TASK_TYPE, required=False,
                     what="two digits (GB/T 39046 A.1, e.g. 01 行政许可, 20 公共服务)")

    if errors:
        return None, errors
    return CaseInput(window=window, project_no=project_no, task_code=task_code,
                     task_name=task_name, dept_code=dept_code, dept_name=dept_name,
                     area_code=area_code, staff_id=staff_id, staff_name=staff_name,
                     applicant=app, accepted_at=accepted_at, finished_at=finished_at,
                     promise_type=promise_type, status=status, task_type=task_type,
                     ticket=ticket), []


def masked_applicant(app: dict) -> dict:
    """The only form of rater data that may be shown or stored in the clear."""
    return {"name": mask_name(app.get("name")), "certType": app.get("certType"),
            "certNo": mask_cert(app.get("certNo")), "phone": mask_phone(app.get("phone")),
            "userProp": app.get("userProp")}


def case_row(case: CaseInput, sealer: Sealer, received_at: float) -> dict:
    """The `cases` row: rater data sealed with the projectNo as associated data."""
    return {
        "project_no": case.project_no, "window": case.window, "task_code": case.task_code,
        "task_name": case.task_name, "dept_code": case.dept_code, "dept_name": case.dept_name,
        "area_code": case.area_code, "staff_id": case.staff_id, "staff_name": case.staff_name,
        "applicant_sealed": sealer.seal(case.applicant, case.project_no),
        "applicant_masked": json.dumps(masked_applicant(case.applicant), ensure_ascii=False),
        "accepted_at": case.accepted_at, "finished_at": case.finished_at,
        "promise_type": case.promise_type, "status": case.status, "received_at": received_at,
        "task_type": case.task_type,
        "ticket": case.ticket,
    }
