"""Field checks shared by the profiles, and the catalogue of rejection reasons.

A rejection carries a short stable snake_case reason (what tests, the agent's parking view and
`/_stats` key on) and a message in Chinese with English beside it (what people read). Messages
never contain the rejected value: it may be an ID number or a name.

Reason codes (`<field>` is the request's own key name, e.g. `missing_field:projectNo`):

=========================  ==================================================================
reason                     meaning
=========================  ==================================================================
auth_failed                token missing/wrong, or app id missing/unknown
bad_timestamp              `X-Timestamp` is not unix seconds
stale_timestamp            `X-Timestamp` more than the window (300 s) away from server time
bad_nonce                  `X-Nonce` missing or not 8–64 of ``[A-Za-z0-9_-]``
replayed_nonce             nonce already used within the window
bad_signature              `X-Signature` missing or wrong
missing_idempotency_key    no `Idempotency-Key` header
bad_idempotency_key        key not 1–128 printable ASCII characters without spaces
bad_content_type           wrong Content-Type for the profile
bad_encoding               body (or percent-escapes) not UTF-8, or a charset other than UTF-8
bad_json                   body is not JSON
bad_body                   JSON is not the profile's object shape (e.g. no ``params`` object)
duplicate_field:<f>        a form field given twice
unknown_field:<f>          key not in the canonical schema (gbt39046-json only)
missing_field:<f>          required field absent or blank
bad_format:<f>             wrong type, length, character set or time format
bad_value:<f>              code outside its range (pf, proStatus, userProp, assessNumber,
                           promiseTime, channel)
bad_level                  level code / satisfaction not 1–5 (an integer)
bad_level_name             levelName does not match levelCode (gbt39046-json)
bad_reason_missing         差评 without evalDetail and without written text
pf_default_not_allowed     pf=7 (系统默认评价) — only the province records default ratings
bad_credit_code:<f>        not an 18-character 统一社会信用代码 with the right check character
bad_certkey                certkeyGOV is not a valid resident ID (userProp=1) or credit code
                           (userProp=2)
bad_time_future:<f>        time more than 10 minutes ahead of server time (Beijing time)
bad_time_order             assessTime earlier than acceptDate
duplicate_assessment       another idempotency key already rated this projectNo+assessNumber
idempotency_conflict       same idempotency key with different content
no_service                 the rating's service record was never pushed (没有对应的服务数据)
duplicate_service          the service record is held already (已存在该条服务信息)
bad_prefix:<f>             the case number lacks the province prefix (sd, when configured)
unknown_tag                a 差评 code not in the platform's table for that grade
bad_app_mark ... bad_records   national-sm2 envelope refusals (see national.py)
=========================  ==================================================================
"""
from __future__ import annotations

import datetime
import re
from typing import Any, Mapping

from . import idcodes

BEIJING = datetime.timezone(datetime.timedelta(hours=8), "Asia/Shanghai")

# Base reason (the part before ':') -> one-line description; the docs and tests use this list.
REASONS: dict[str, str] = {
    "auth_failed": "认证失败 authentication failed",
    "bad_timestamp": "时间戳格式错误 bad timestamp",
    "stale_timestamp": "时间戳超出允许窗口 timestamp outside window",
    "bad_nonce": "随机串格式错误 bad nonce",
    "replayed_nonce": "随机串重复（重放） replayed nonce",
    "bad_signature": "签名错误 bad signature",
    "missing_idempotency_key": "缺少幂等键 missing Idempotency-Key",
    "bad_idempotency_key": "幂等键格式错误 bad Idempotency-Key",
    "bad_content_type": "内容类型错误 wrong Content-Type",
    "bad_encoding": "编码须为UTF-8 body must be UTF-8",
    "bad_json": "JSON格式错误 body is not JSON",
    "bad_body": "报文结构错误 wrong body shape",
    "duplicate_field": "字段重复 field given twice",
    "unknown_field": "未知字段 unknown field",
    "missing_field": "缺少必填字段 missing required field",
    "bad_format": "字段格式错误 bad field format",
    "bad_value": "字段取值超出范围 code out of range",
    "bad_level": "满意度取值错误 level out of range",
    "bad_level_name": "满意度名称与代码不符 level name does not match code",
    "bad_reason_missing": "差评须有评价明细或文字评价 bad rating needs a reason",
    "pf_default_not_allowed": "大厅不得上报系统默认评价 hall may not send default ratings",
    "bad_credit_code": "统一社会信用代码错误 bad credit code",
    "bad_certkey": "证件号码错误 bad ID number",
    "bad_time_future": "时间晚于当前时间 time in the future",
    "bad_time_order": "评价时间早于受理时间 rated before accepted",
    "duplicate_assessment": "该办件本次评价已存在（一次一评） case already rated",
    "idempotency_conflict": "幂等键重复但内容不同 same key, different content",
    "no_service": "没有对应的服务数据 no service record for the rating",
    "duplicate_service": "已存在该条服务信息 service record already held",
    "bad_prefix": "办件编号缺少省份前缀 case number lacks the province prefix",
    "unknown_tag": "评价明细代码不在标签表中 tag code not in the platform's table",
    "bad_app_mark": "应用标识不存在 unknown appMark",
    "stale_time": "请求时间超出允许范围 envelope time outside ±5 minutes",
    "decrypt_failed": "数据解密失败 records do not decrypt",
    "bad_cipher_encoding": "密文编码不符 ciphertext not in the agreed encoding",
    "bad_records": "数据格式错误 plaintext is not an array of records",
}

FUTURE_TOLERANCE_S = 600

GBT_TIME = "%Y%m%dT%H%M%S"
DASH_TIME = "%Y-%m-%d %H:%M:%S"
_TIME_RE = {GBT_TIME: re.compile(r"\d{8}T\d{6}"),
            DASH_TIME: re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")}
_TIME_SHOWN = {GBT_TIME: "YYYYMMDDThhmmss", DASH_TIME: "yyyy-MM-dd HH:mm:ss"}

CASE_NO_RE = re.compile(r"[0-9A-Za-z-]{1,50}")
CODE_RE = re.compile(r"[0-9A-Za-z-]{1,64}")
TAG_RE = re.compile(r"[0-9A-Za-z]{1,10}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TAGS = 10


class Rejection(Exception):
    """A request the province refuses. `kind` picks the HTTP answer: invalid, auth or conflict."""

    def __init__(self, reason: str, message: str, kind: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.message = message
        self.kind = kind

    def text(self) -> str:
        """`reason: message`, the form the profiles put in their reply text."""
        return f"{self.reason}: {self.message}"


def reason_base(reason: str) -> str:
    """`missing_field:projectNo` -> `missing_field`."""
    return reason.split(":", 1)[0]


def missing(name: str) -> Rejection:
    return Rejection(f"missing_field:{name}", f"缺少必填字段 {name} (missing required field {name})")


def bad_format(name: str, what: str) -> Rejection:
    return Rejection(f"bad_format:{name}", f"字段 {name} 格式错误，应为{what} (bad format of {name})")


def bad_value(name: str, allowed: str) -> Rejection:
    return Rejection(f"bad_value:{name}",
                     f"字段 {name} 取值错误，应为 {allowed} ({name} must be one of {allowed})")


def get_text(fields: Mapping[str, Any], name: str, *, required: bool, max_len: int,
             pattern: re.Pattern[str] | None = None, what: str = "") -> str | None:
    """A string field: present (if required), a string, no control characters, within length."""
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise bad_format(name, "字符串 string")
    if len(value) > max_len or _CONTROL_RE.search(value):
        raise bad_format(name, what or f"不超过{max_len}个字符的文本 text up to {max_len} chars")
    if pattern is not None and not pattern.fullmatch(value):
        raise bad_format(name, what or "规定字符 allowed characters")
    return value


def get_int(fields: Mapping[str, Any], name: str, *, required: bool = True,
            strict_json_int: bool = False) -> int | None:
    """An integer field. Form and vendor JSON send digit strings; the canonical JSON sends ints."""
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise missing(name)
        return None
    if isinstance(value, bool):
        raise bad_format(name, "整数 integer")
    if isinstance(value, int):
        return value
    if strict_json_int or not isinstance(value, str) or not value.isascii() \
            or not value.isdigit() or len(value) > 9:
        raise bad_format(name, "整数 integer")
    return int(value)


def get_code(fields: Mapping[str, Any], name: str, allowed: tuple[int, ...], *,
             required: bool = True, strict_json_int: bool = False) -> int | None:
    """An integer code that must be one of `allowed` (bad_value otherwise)."""
    value = get_int(fields, name, required=required, strict_json_int=strict_json_int)
    if value is not None and value not in allowed:
        raise bad_value(name, "/".join(str(a) for a in allowed))
    return value


def get_time(fields: Mapping[str, Any], name: str, fmt: str, *, required: bool = True,
             now: float) -> datetime.datetime | None:
    """A Beijing-time timestamp in the profile's format, a real date, not in the future."""
    value = get_text(fields, name, required=required, max_len=32)
    if value is None:
        return None
    shown = _TIME_SHOWN[fmt]
    if not _TIME_RE[fmt].fullmatch(value):
        raise bad_format(name, shown)
    try:
        moment = datetime.datetime.strptime(value, fmt).replace(tzinfo=BEIJING)
    except ValueError:
        raise bad_format(name, shown) from None
    if moment.timestamp() > now + FUTURE_TOLERANCE_S:
        raise Rejection(f"bad_time_future:{name}",
                        f"{name} 晚于当前时间（北京时间）({name} is in the future; times are "
                        f"Beijing time UTC+8)")
    return moment


def get_area_code(fields: Mapping[str, Any], name: str, lengths: tuple[int, ...]) -> str:
    """GB/T 2260 area code of one of the allowed lengths."""
    value = get_text(fields, name, required=True, max_len=12)
    assert value is not None
    if not idcodes.area_code_valid(value, lengths):
        digits = "或".join(str(n) for n in lengths)
        raise bad_format(name, f"{digits}位行政区划代码 {digits}-digit GB/T 2260 area code")
    return value


def get_credit_code(fields: Mapping[str, Any], name: str) -> str:
    """18-character unified social credit code with a valid GB 32100 check character."""
    value = get_text(fields, name, required=True, max_len=18 * 4)
    assert value is not None
    if not idcodes.credit_code_valid(value):
        raise Rejection(f"bad_credit_code:{name}",
                        f"{name} 不是有效的18位统一社会信用代码（含校验码）"
                        f"({name} is not a valid unified social credit code)")
    return value


def parse_tags(value: Any, name: str, *, as_list: bool) -> list[str]:
    """Reason-tag codes: a JSON list of strings, or a comma-separated string for form/vendor."""
    if value is None:
        return []
    if as_list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad_format(name, "字符串数组 list of code strings")
        tags = value
    else:
        if not isinstance(value, str):
            raise bad_format(name, "逗号分隔的代码 comma-separated codes")
        if not value.strip():
            return []
        tags = [t.strip() for t in value.split(",")]
    if len(tags) > MAX_TAGS or not all(TAG_RE.fullmatch(t) for t in tags):
        raise bad_format(name, f"最多{MAX_TAGS}个字母数字代码 up to {MAX_TAGS} alphanumeric codes")
    return list(tags)


def require_reason_for_bad(is_bad: bool, tags: list[str], written: str | None,
                           tag_field: str, text_field: str) -> None:
    """A 差评 needs a reason tag or a written reason."""
    if is_bad and not tags and not (written and written.strip()):
        raise Rejection("bad_reason_missing",
                        f"差评须填写 {tag_field} 或 {text_field} "
                        f"(a bad rating needs {tag_field} or {text_field})")
