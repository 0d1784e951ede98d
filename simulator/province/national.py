"""Profile `national-sm2` on the reference server: the SM2 envelope, service records before
ratings, batches. Checked with this package's own code (sm2.py on gmssl, service.py).

Envelope checks, in order (each refuses the whole request, HTTP 200, `success` "false"):

=====  ========================  ===========================================================
code   reason                    msg
=====  ========================  ===========================================================
4001   bad_body                  报文结构不正确 (not {"txnBodyCom": {...}, "txnCommCom": {}})
4002   bad_app_mark              应用标识不存在 (appMark unknown)
4003   stale_time                请求时间超出允许范围（±5分钟） (time not yyyyMMddHHmmss Beijing
                                 time within ±300 s of ours)
4004   bad_signature             签名验证失败 (sign does not decode in the agreed text encoding or
                                 does not verify over time + appMark + appWord for the hall's
                                 public key, signer ID and signature format)
4005   bad_cipher_encoding       数据解密失败：密文编码不符 (evaluate item not in the agreed encoding)
4006   decrypt_failed            数据解密失败 (wrong key or ciphertext order: C3 does not match)
4007   bad_records               数据格式错误 (plaintext is not a JSON array of 1–100 objects)
=====  ========================  ===========================================================

Then each record is checked on its own and the reply carries one result per record, in order:
``{"code": "0"|"1", "success": "true"|"false", "msg": ..., "results": [{"code", "msg",
"reason"}]}`` — code "0" only when every record was accepted.
"""
from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any

from . import fields as F
from . import sm2
from .fields import Rejection
from .service import (DUPLICATE_RATING, DUPLICATE_SERVICE, NO_SERVICE, TASK_TYPES, TagTable,
                      echo, validate_rating, validate_service)

SERVICE_PATH = "/hcp/projectSubmit"
RATING_PATH = "/hcp/offlineTemp"
CATALOGUE_PATH = "/hcp/getEvalDetail"
MAX_RECORDS = 100
_TIME_RE = re.compile(r"\d{14}")


@dataclass
class NationalKeys:
    """The platform's side of the envelope: who may send and how it is sealed."""
    app_mark: str
    app_word: str
    platform_private: str          # decrypts the records
    hall_public: str               # verifies the hall's signatures
    order: str = "C1C3C2"
    encoding: str = "hex"
    signature_format: str = "der"
    signer_id: str = "1234567812345678"
    window_s: int = 300

    def __repr__(self) -> str:
        return f"NationalKeys(appMark={self.app_mark!r}, order={self.order}, ...)"


class EnvelopeError(Exception):
    def __init__(self, code: str, reason: str, msg: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.msg = code, reason, msg


def _beijing(text: str) -> float | None:
    try:
        moment = datetime.datetime.strptime(text, "%Y%m%d%H%M%S")
    except ValueError:
        return None
    return moment.replace(tzinfo=F.BEIJING).timestamp()


class Envelope:
    """Opens envelopes for one set of keys; remembers signatures it already verified."""

    def __init__(self, keys: NationalKeys) -> None:
        self.keys = keys
        self._verified: dict[tuple[str, str], bool] = {}

    def open(self, body: bytes, now: float) -> dict:
        """The envelope's `params` after every envelope check (see the module docstring)."""
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        txn = data.get("txnBodyCom") if isinstance(data, dict) else None
        if not isinstance(txn, dict) or not isinstance(data.get("txnCommCom"), dict) or \
                not isinstance(txn.get("params"), dict):
            raise EnvelopeError("4001", "bad_body", "报文结构不正确 (body must be {\"txnBodyCom\": "
                                "{appMark, time, sign, params}, \"txnCommCom\": {}})")
        keys = self.keys
        if txn.get("appMark") != keys.app_mark:
            raise EnvelopeError("4002", "bad_app_mark", "应用标识不存在 (unknown appMark)")
        when = txn.get("time")
        moment = _beijing(when) if isinstance(when, str) and _TIME_RE.fullmatch(when) else None
        if moment is None or abs(moment - now) > keys.window_s:
            raise EnvelopeError("4003", "stale_time", f"请求时间超出允许范围（±{keys.window_s // 60}"
                                f"分钟） (time must be yyyyMMddHHmmss Beijing time within "
                                f"{keys.window_s} s of the platform's clock)")
        sign = txn.get("sign")
        if not isinstance(sign, str) or not self._signed(when, sign):
            raise EnvelopeError("4004", "bad_signature", "签名验证失败 (sign does not verify)")
        return txn["params"]

    def _signed(self, when: str, sign: str) -> bool:
        key = (when, sign)
        if key not in self._verified:
            keys = self.keys
            try:
                raw = sm2.decode_text(sign, keys.encoding)
            except ValueError:
                return False
            ok = sm2.verify(raw, (when + keys.app_mark + keys.app_word).encode("utf-8"),
                            keys.hall_public, keys.signer_id, keys.signature_format)
            if len(self._verified) > 4096:
                self._verified.clear()
            self._verified[key] = ok
        return self._verified[key]

    def records(self, params: dict) -> list:
        """The decrypted record array of `params.evaluate`."""
        items = params.get("evaluate")
        if not isinstance(items, list) or not items or \
                not all(isinstance(i, str) for i in items):
            raise EnvelopeError("4001", "bad_body", "报文结构不正确 (params.evaluate must be a list "
                                "of ciphertext strings)")
        out: list = []
        for item in items:
            try:
                raw = sm2.decode_text(item, self.keys.encoding)
            except ValueError:
                raise EnvelopeError("4005", "bad_cipher_encoding", "数据解密失败：密文编码不符 "
                                    f"(ciphertext is not {self.keys.encoding})") from None
            plain = sm2.decrypt(raw, self.keys.platform_private, self.keys.order)
            if plain is None:
                raise EnvelopeError("4006", "decrypt_failed", "数据解密失败 (does not decrypt: "
                                    "wrong key or ciphertext order)")
            try:
                batch = json.loads(plain.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                batch = None
            if not isinstance(batch, list):
                raise EnvelopeError("4007", "bad_records", "数据格式错误 (plaintext must be a JSON "
                                    "array of records)")
            out.extend(batch)
        if not 1 <= len(out) <= MAX_RECORDS:
            raise EnvelopeError("4007", "bad_records", f"数据格式错误 (1..{MAX_RECORDS} records per "
                                "request)")
        return out


def _result(ok: bool, msg: str, reason: str | None = None) -> dict:
    out: dict[str, Any] = {"code": "0" if ok else "1", "msg": msg}
    if reason:
        out["reason"] = reason
    return out


def reply(results: list[dict]) -> dict:
    ok = all(r["code"] == "0" for r in results)
    return {"code": "0" if ok else "1", "success": "true" if ok else "false",
            "msg": "成功" if ok else "部分数据未通过校验 (some records were refused)",
            "results": results}


def refusal(err: EnvelopeError) -> dict:
    return {"code": err.code, "success": "false", "msg": err.msg}


def _check(store: Any, records: list, validate: Any, echo_values: bool
           ) -> tuple[list[dict | None], list[tuple[int, Any]]]:
    """Each record validated on its own: (results with None for the valid ones, [(index,
    what validate returned)])."""
    results: list[dict | None] = []
    good: list[tuple[int, Any]] = []
    for i, rec in enumerate(records):
        try:
            checked = validate(rec)
        except Rejection as rej:
            store.count(f"rejected:{rej.reason}")
            results.append(_result(False, echo(rej, rec) if echo_values else rej.message,
                                   rej.reason))
            continue
        results.append(None)
        good.append((i, checked))
    return results, good


def take_services(store: Any, records: list, now: float, echo_values: bool = False
                  ) -> list[dict]:
    """Check and store a batch of service records; one result each."""
    def validate(rec: Any) -> tuple[str, int, dict]:
        return (*validate_service(rec, now, None, (12,)), rec)
    results, good = _check(store, records, validate, echo_values)
    for (i, _), outcome in zip(good, store.add_batch("national-sm2", [g for _, g in good], [])):
        results[i] = _result(True, "成功") if outcome == "accepted" else \
            _result(False, DUPLICATE_SERVICE, "duplicate_service")
    return [r for r in results if r is not None]


def take_ratings(store: Any, records: list, now: float, tags: TagTable,
                 echo_values: bool = False) -> list[dict]:
    """Check and store a batch of ratings; one result each."""
    def validate(rec: Any) -> tuple:
        project, assess, service, sat = validate_rating(
            rec, now, prefix=None, names={"project": "projectNo"}, tags=tags, strict_ints=True)
        if rec.get("taskType") not in TASK_TYPES:
            raise F.bad_value("taskType", "/".join(TASK_TYPES))
        F.get_text(rec, "name", required=False, max_len=30)
        return f"{project}#{assess}", project, assess, service, 6 - sat, rec
    results, good = _check(store, records, validate, echo_values)
    outcomes = store.add_batch("national-sm2", [], [g for _, g in good])
    for (i, _), outcome in zip(good, outcomes):
        if outcome == "accepted":
            results[i] = _result(True, "成功")
        elif outcome == "duplicate":
            results[i] = _result(False, DUPLICATE_RATING, "duplicate_assessment")
        else:
            store.count("rejected:no_service")
            results[i] = _result(False, NO_SERVICE, "no_service")
    return [r for r in results if r is not None]


def catalogue(params: dict, tags: TagTable) -> dict:
    grade = params.get("grade")
    if grade not in ("1", "2", "3", "4", "5"):
        return {"code": "4001", "success": "false", "msg": "grade 应为 1–5 (grade must be 1..5)"}
    return {"code": "0", "success": "true", "msg": "成功", "data": tags.grades.get(int(grade), [])}
