"""The upstream profiles: request shape, validation and reply shape of each province interface.

Level orientation differs between profiles; everything stored and counted is converted to the
GB/T 39046 A.8 code (1 非常满意 … 5 非常不满意). A 差评 is A.8 code 4 or 5, i.e. satisfaction ≤ 2
in the provincial (reversed) profiles.

All times are Beijing time (UTC+8) without a zone suffix, as the provinces expect.

``gbt39046-json`` — ``POST /api/v1/evaluations``, ``Content-Type: application/json``.
Our canonical JSON rendering of GB/T 39046—2020 table 9. Keys (unknown keys are rejected):

==================  ======  ==================================================================
key                 req.    table 9 item, format
==================  ======  ==================================================================
projectNo           yes     办件编号, string ``[0-9A-Za-z-]{1,50}``
channel             yes     评价渠道, one of PC端 移动服务端 二维码 政务大厅平板电脑
                            政务大厅其他终端 电话 短信 (our evaluator: 政务大厅其他终端)
rater               no      评价人, string ≤ 30 characters
assessTime          yes     评价时间, string ``YYYYMMDDThhmmss``
assessNumber        yes     评价次数, JSON integer 1 (first) or 2 (follow-up)
levelCode           yes     满意度代码, JSON integer, A.8: 1 非常满意 … 5 非常不满意
levelName           yes     满意度, the A.8 name matching levelCode
writingEvaluation   no      文字评价, string ≤ 2000 characters
evalDetail          no      测评内容 codes, JSON list of strings ``[0-9A-Za-z]{1,10}``, ≤ 10
areaCode            yes     行政区划, 6-digit county or 9-digit township GB/T 2260 code
==================  ======  ==================================================================

Reply: HTTP 200 ``{"ok": true, "result": "accepted"|"duplicate", "idempotencyKey": k}``;
rejections HTTP 422 (invalid), 409 (duplicate_assessment, idempotency_conflict) or 401 (auth)
with ``{"ok": false, "result": "rejected", "reason": r, "message": m}``.

``zj-offlinereport-form`` — ``POST /offlinereport``,
``Content-Type: application/x-www-form-urlencoded`` (UTF-8). Fields as in PROVINCE_API.md;
required: areaCode (6 digits), areaName, deptCode (credit code), taskCode, taskName, projectNo,
proStatus (1–3), proDepartCode, proDepart, pf (1–6; 7 rejected), certkeyGOV, userName, userProp
(1 个人 → resident ID, 2 法人 → credit code), satisfaction (1 非常不满意 … 5 非常满意),
assessTime, assessNumber (1/2), promiseTime (1/2), acceptDate (≤ assessTime), dataSource
(3 digits). Optional: taskHandleItem, subMatter, proManager, evalDetail (comma-separated codes),
writingEvaluation. Unknown fields are ignored; a field given twice is rejected.
Reply: HTTP 200 ``{"result": "0", "resultmsg": "..."}`` on success or duplicate,
``{"result": "1", "resultmsg": "<reason>: <message>"}`` on rejection; authentication failures
HTTP 401 with ``result`` "2".

``sd-epoint-json`` — ``POST /rest/evaluate``, ``Content-Type: application/json``,
``{"params": {...}}``: projectno (with the province prefix when the server is started with
one), pf (1–6; 7 rejected), satisfaction (1 非常不满意 … 5 非常满意), assessTime
(``yyyy-MM-dd HH:mm:ss``), assessNumber (1/2), serviceNumber (the service record's number, an
integer), areacode (6 digits), winNo, winName required; evalDetail (comma-separated codes),
writingEvaluation optional. Numbers may be JSON integers or digit strings. The case's service
record must have been pushed first (``POST /rest/addEvaluateService``, see service.py), else
"没有对应的服务数据". Reply: HTTP 200 ``{"status": {"code": "200"}, "custom": {"code": "1",
"text": "..."}}`` on success or duplicate; anything else is a failure with ``custom.code`` "0"
and ``custom.text`` = ``<reason>: <message>``; authentication failures are HTTP 401 with
``status.code`` "401". Reason tags: ``POST /rest/getEvalDetail`` ``{"params": {"grade": g}}``.

``national-sm2`` — see national.py: the SM2 envelope, service records and ratings in batches.

Every reply also carries ``X-Result: accepted|duplicate|rejected`` and, on rejection,
``X-Reject-Reason`` — conveniences of this reference server only; a real province sends neither,
so an uploader must read the body.
"""
from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from . import fields as F
from . import idcodes
from .fields import Rejection

GBT = "gbt39046-json"
ZJ = "zj-offlinereport-form"
SD = "sd-epoint-json"
NATIONAL = "national-sm2"

LEVEL_NAMES = {1: "非常满意", 2: "满意", 3: "基本满意", 4: "不满意", 5: "非常不满意"}
GBT_CHANNELS = ("PC端", "移动服务端", "二维码", "政务大厅平板电脑", "政务大厅其他终端", "电话", "短信")
PF_DEFAULT = 7
PF_ALLOWED = (1, 2, 3, 4, 5, 6)


@dataclass
class Rating:
    """A validated upload: what the store keys, counts and keeps."""

    project_no: str
    assess_number: int
    gb_level: int  # GB/T 39046 A.8 code, whatever the profile's orientation
    fields: dict[str, Any] = field(default_factory=dict)
    service_number: int | None = None   # the service record it refers to (sd)


@dataclass
class Reply:
    """An HTTP answer in the profile's shape."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Profile:
    """One upstream interface."""

    name: str
    path: str
    content_type: str
    parse: Callable[[bytes], dict[str, Any]]
    validate: Callable[[dict[str, Any], float], Rating]
    success: Callable[[str, str], Reply]  # (outcome, idempotency key)
    reject: Callable[[Rejection], Reply]
    sensitive: tuple[str, ...]  # fields masked in /_records

    def __repr__(self) -> str:
        return f"Profile({self.name})"


# --- request parsing ------------------------------------------------------------------------

def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejection("bad_encoding", "报文须为UTF-8编码 (body must be UTF-8)") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Rejection(f"duplicate_field:{key}", f"字段 {key} 重复 (field {key} given twice)")
        result[key] = value
    return result


def parse_json_object(body: bytes) -> dict[str, Any]:
    """UTF-8 JSON whose top level is an object without repeated keys."""
    text = _decode(body)
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except ValueError:
        raise Rejection("bad_json", "报文不是合法JSON (body is not valid JSON)") from None
    if not isinstance(value, dict):
        raise Rejection("bad_body", "报文须为JSON对象 (body must be a JSON object)")
    return value


def parse_form(body: bytes) -> dict[str, Any]:
    """application/x-www-form-urlencoded, UTF-8, each field at most once."""
    text = _decode(body)
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                                       encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise Rejection("bad_encoding", "表单编码须为UTF-8 (form must be UTF-8)") from None
    except ValueError:
        raise Rejection("bad_body", "表单格式错误 (malformed form body)") from None
    return _no_duplicate_keys(pairs)


def parse_sd(body: bytes) -> dict[str, Any]:
    """`{"params": {...}}` -> the params object."""
    outer = parse_json_object(body)
    params = outer.get("params")
    if not isinstance(params, dict):
        raise Rejection("bad_body", "报文须为 {\"params\": {...}} (body must be {\"params\": {...}})")
    return params


# --- validation -----------------------------------------------------------------------------

_GBT_KEYS = ("projectNo", "channel", "rater", "assessTime", "assessNumber", "levelCode",
             "levelName", "writingEvaluation", "evalDetail", "areaCode")


def _pf(fields: dict[str, Any], name: str = "pf") -> int:
    value = F.get_int(fields, name)
    if value == PF_DEFAULT:
        raise Rejection("pf_default_not_allowed",
                        "大厅不得上报系统默认评价 pf=7，默认评价由省平台记录 "
                        "(pf=7 system-default ratings are recorded by the province, never sent)")
    if value not in PF_ALLOWED:
        raise F.bad_value(name, "1/2/3/4/5/6")
    assert value is not None
    return value


def _satisfaction(fields: dict[str, Any], name: str) -> int:
    """Provincial orientation 1 非常不满意 … 5 非常满意, returned as the A.8 code."""
    if fields.get(name) is None or (isinstance(fields.get(name), str) and not fields[name].strip()):
        raise F.missing(name)
    try:
        value = F.get_int(fields, name)
    except Rejection:
        value = None
    if value not in (1, 2, 3, 4, 5):
        raise Rejection("bad_level", f"{name} 取值应为1–5（5=非常满意）({name} must be 1..5, "
                                     f"5 = very satisfied)")
    assert value is not None
    return 6 - value


def validate_gbt(fields: dict[str, Any], now: float) -> Rating:
    """Validate the canonical GB/T 39046 JSON."""
    for key in fields:
        if key not in _GBT_KEYS:
            raise Rejection(f"unknown_field:{key}", f"未知字段 {key} (unknown field {key})")
    project_no = F.get_text(fields, "projectNo", required=True, max_len=50, pattern=F.CASE_NO_RE,
                            what="1–50位字母数字或- letters, digits, '-', up to 50")
    channel = F.get_text(fields, "channel", required=True, max_len=50)
    if channel not in GBT_CHANNELS:
        raise F.bad_value("channel", "、".join(GBT_CHANNELS))
    F.get_text(fields, "rater", required=False, max_len=30)
    F.get_time(fields, "assessTime", F.GBT_TIME, now=now)
    assess_number = F.get_code(fields, "assessNumber", (1, 2), strict_json_int=True)
    if fields.get("levelCode") is None:
        raise F.missing("levelCode")
    level = fields["levelCode"]
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVEL_NAMES:
        raise Rejection("bad_level", "levelCode 应为整数1–5（1=非常满意）"
                                     "(levelCode must be the integer 1..5, 1 = very satisfied)")
    name = F.get_text(fields, "levelName", required=True, max_len=20)
    if name != LEVEL_NAMES[level]:
        raise Rejection("bad_level_name", f"levelName 应为“{LEVEL_NAMES[level]}” "
                                          f"(levelName must match levelCode {level})")
    written = F.get_text(fields, "writingEvaluation", required=False, max_len=2000)
    tags = F.parse_tags(fields.get("evalDetail"), "evalDetail", as_list=True)
    F.get_area_code(fields, "areaCode", (6, 9))
    F.require_reason_for_bad(level >= 4, tags, written, "evalDetail", "writingEvaluation")
    assert project_no is not None and assess_number is not None
    return Rating(project_no, assess_number, level, dict(fields))


def validate_zj(fields: dict[str, Any], now: float) -> Rating:
    """Validate the Zhejiang-style offline report form."""
    F.get_area_code(fields, "areaCode", (6,))
    F.get_text(fields, "areaName", required=True, max_len=100)
    F.get_credit_code(fields, "deptCode")
    F.get_text(fields, "taskCode", required=True, max_len=64, pattern=F.CODE_RE)
    F.get_text(fields, "taskName", required=True, max_len=200)
    F.get_text(fields, "taskHandleItem", required=False, max_len=200)
    F.get_text(fields, "subMatter", required=False, max_len=200)
    project_no = F.get_text(fields, "projectNo", required=True, max_len=50, pattern=F.CASE_NO_RE,
                            what="1–50位字母数字或- letters, digits, '-', up to 50")
    F.get_code(fields, "proStatus", (1, 2, 3))
    F.get_text(fields, "proDepartCode", required=True, max_len=64, pattern=F.CODE_RE)
    F.get_text(fields, "proDepart", required=True, max_len=100)
    F.get_text(fields, "proManager", required=False, max_len=30)
    _pf(fields)
    certkey = F.get_text(fields, "certkeyGOV", required=True, max_len=18 * 4)
    F.get_text(fields, "userName", required=True, max_len=30)
    user_prop = F.get_code(fields, "userProp", (1, 2))
    valid = (idcodes.resident_id_valid(certkey or "") if user_prop == 1
             else idcodes.credit_code_valid(certkey or ""))
    if not valid:
        kind = "18位居民身份证号码 resident ID" if user_prop == 1 else "统一社会信用代码 credit code"
        raise Rejection("bad_certkey", f"certkeyGOV 不是有效的{kind}（含校验码）"
                                       f"(certkeyGOV is not a valid number for userProp={user_prop})")
    level = _satisfaction(fields, "satisfaction")
    tags = F.parse_tags(fields.get("evalDetail"), "evalDetail", as_list=False)
    written = F.get_text(fields, "writingEvaluation", required=False, max_len=2000)
    assess_time = F.get_time(fields, "assessTime", F.DASH_TIME, now=now)
    assess_number = F.get_code(fields, "assessNumber", (1, 2))
    F.get_code(fields, "promiseTime", (1, 2))
    accept_date = F.get_time(fields, "acceptDate", F.DASH_TIME, now=now)
    data_source = F.get_text(fields, "dataSource", required=True, max_len=3)
    if not (data_source and len(data_source) == 3 and data_source.isascii()
            and data_source.isdigit()):
        raise F.bad_format("dataSource", "3位数字 three digits")
    if assess_time is not None and accept_date is not None and assess_time < accept_date:
        raise Rejection("bad_time_order", "assessTime 早于 acceptDate（先受理后评价）"
                                          "(assessTime is earlier than acceptDate)")
    F.require_reason_for_bad(level >= 4, tags, written, "evalDetail", "writingEvaluation")
    assert project_no is not None and assess_number is not None
    return Rating(project_no, assess_number, level, dict(fields))


def validate_sd(fields: dict[str, Any], now: float) -> Rating:
    """Validate the Shandong platform's rating params (its service record is checked by the
    server: it must have been pushed first)."""
    project_no = F.get_text(fields, "projectno", required=True, max_len=50, pattern=F.CASE_NO_RE,
                            what="1–50位字母数字或- letters, digits, '-', up to 50")
    _pf(fields)
    level = _satisfaction(fields, "satisfaction")
    F.get_time(fields, "assessTime", F.DASH_TIME, now=now)
    assess_number = F.get_code(fields, "assessNumber", (1, 2))
    service_number = F.get_int(fields, "serviceNumber")
    if service_number is None or not 1 <= service_number < 100:
        raise F.bad_format("serviceNumber", "服务序号整数 the service's number, an integer")
    tags = F.parse_tags(fields.get("evalDetail"), "evalDetail", as_list=False)
    F.get_area_code(fields, "areacode", (6,))
    written = F.get_text(fields, "writingEvaluation", required=False, max_len=2000)
    F.get_text(fields, "winNo", required=True, max_len=32)
    F.get_text(fields, "winName", required=True, max_len=100)
    F.require_reason_for_bad(level >= 4, tags, written, "evalDetail", "writingEvaluation")
    assert project_no is not None and assess_number is not None
    return Rating(project_no, assess_number, level, dict(fields), service_number)


# --- replies --------------------------------------------------------------------------------

_OK_TEXT = {"accepted": "成功 accepted", "duplicate": "重复上报，已接收 duplicate, already accepted"}
_CONFLICT_STATUS = {"invalid": 422, "conflict": 409, "auth": 401}


def gbt_success(outcome: str, key: str) -> Reply:
    return Reply(200, {"ok": True, "result": outcome, "idempotencyKey": key,
                       "message": _OK_TEXT[outcome]})


def gbt_reject(rej: Rejection) -> Reply:
    return Reply(_CONFLICT_STATUS[rej.kind], {"ok": False, "result": "rejected",
                                              "reason": rej.reason, "message": rej.message})


def zj_success(outcome: str, key: str) -> Reply:
    return Reply(200, {"result": "0", "resultmsg": _OK_TEXT[outcome]})


def zj_reject(rej: Rejection) -> Reply:
    if rej.kind == "auth":
        return Reply(401, {"result": "2", "resultmsg": rej.text()})
    return Reply(200, {"result": "1", "resultmsg": rej.text()})


def sd_success(outcome: str, key: str) -> Reply:
    return Reply(200, {"status": {"code": "200", "text": ""},
                       "custom": {"code": "1", "text": _OK_TEXT[outcome]}})


def sd_reject(rej: Rejection) -> Reply:
    if rej.kind == "auth":
        return Reply(401, {"status": {"code": "401", "text": rej.text()},
                           "custom": {"code": "0", "text": rej.text()}})
    return Reply(200, {"status": {"code": "200", "text": ""},
                       "custom": {"code": "0", "text": rej.text()}})


PROFILES: dict[str, Profile] = {
    GBT: Profile(GBT, "/api/v1/evaluations", "application/json", parse_json_object,
                 validate_gbt, gbt_success, gbt_reject, ("rater",)),
    ZJ: Profile(ZJ, "/offlinereport", "application/x-www-form-urlencoded", parse_form,
                validate_zj, zj_success, zj_reject, ("certkeyGOV", "userName")),
    SD: Profile(SD, "/rest/evaluate", "application/json", parse_sd,
                validate_sd, sd_success, sd_reject, ()),
    # the envelope, batches and per-record replies live in national.py
    NATIONAL: Profile(NATIONAL, "/hcp/offlineTemp", "application/json", parse_json_object,
                      validate_gbt, gbt_success, gbt_reject, ("name",)),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`; ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"未知接口规范 unknown profile {name!r}; known: "
                         f"{', '.join(PROFILES)}") from None


def upload_path(profile: str) -> str:
    """The HTTP path a rating is POSTed to under `profile`."""
    return get_profile(profile).path


def content_type(profile: str) -> str:
    """The Content-Type an upload under `profile` must carry."""
    return get_profile(profile).content_type
