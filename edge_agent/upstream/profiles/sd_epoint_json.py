"""Profile `sd-epoint-json`: Shandong halls on the common provincial platform (Epoint), JSON
`{"params": {...}}`, one record per request, the case's service record first.

* service record → `POST /rest/addEvaluateService` (fields in service_record.py), rating →
  `POST /rest/evaluate`: projectno, pf, satisfaction (1 非常不满意 … 5 非常满意), assessTime,
  assessNumber 1, serviceNumber (integer), evalDetail (comma-separated code strings), areacode,
  writingEvaluation, winNo / winName (the window, from hall.toml).
* projectno carries the province prefix the platform adds to hall case numbers ("37" in
  Shandong): `upstream.province_prefix`, by default the first two digits of the hall's area code.
* pf: `upstream.pf`, default 4 — what the platform's own window endpoint sets for window devices.
* reason tags: fetched per grade from `POST /rest/getEvalDetail` (`{"params": {"grade": g}}`).
* reply `{"status": {"code": "200"}, "custom": {"code": "1", "text": ...}}` confirms; custom.code
  "0" is a rejection whose text says why — except the platform's duplicate answers (confirmed)
  and "没有对应的服务数据" (push the service record again).
"""
from __future__ import annotations

import json

from ...levels import provincial
from . import service_record as sr
from .base import DASH, RATING, SERVICE, BuildContext, Job, Outcome, Profile, cst, read_json, \
    transport_outcome, unreadable, written_reason

CATALOGUE = "catalogue"


class SdEpointJson(Profile):
    name = "sd-epoint-json"
    paths = {RATING: "/rest/evaluate", SERVICE: "/rest/addEvaluateService",
             CATALOGUE: "/rest/getEvalDetail"}
    needs_service = True
    default_pf = 4
    fetches_catalogue = True

    def prefix(self, up) -> str:
        return up.province_prefix or ""

    def body(self, kind: str, jobs: list[Job], ctx: BuildContext) -> bytes:
        (job,) = jobs
        up = ctx.config.upstream
        if kind == SERVICE:
            params = sr.service_record(job, up, self.area_length(up), self.prefix(up))
        else:
            r, c = job.rating, job.case
            assert r is not None
            reasons = ctx.reasons(r)
            window = ctx.config.window(c["window"])
            params = {
                "projectno": self.prefix(up) + c["project_no"], "pf": str(self.pf(up, r)),
                "satisfaction": str(provincial(r["level"])),
                "assessTime": cst(r["assess_time"], DASH),
                "assessNumber": r["assess_number"], "serviceNumber": job.service_number,
                "evalDetail": ",".join(reasons.codes),
                "areacode": ctx.config.hall.area_code[:6],
                "writingEvaluation": written_reason(r, reasons),
                "winNo": c["window"], "winName": window.name if window else c["window"],
            }
        return json.dumps({"params": params}, ensure_ascii=False).encode("utf-8")

    def classify(self, kind: str, jobs: list[Job], status: int, body: bytes,
                 retry_after: str | None) -> list[Outcome]:
        out = transport_outcome(status, retry_after)
        if out is None:
            data = read_json(body)
            custom = data.get("custom") if isinstance(data, dict) else None
            head = data.get("status") if isinstance(data, dict) else None
            if isinstance(custom, dict) and isinstance(head, dict) and status == 200 \
                    and str(head.get("code")) == "200":
                out = sr.verdict(kind, str(custom.get("code")) == "1",
                                 str(custom.get("text") or ""))
            elif 400 <= status < 500:
                text = custom.get("text") if isinstance(custom, dict) else None
                out = Outcome("park", str(text or f"http_{status}"))
            else:
                out = unreadable(status)
        return [out] * len(jobs)

    def catalogue_request(self, grade: int, ctx: BuildContext) -> bytes:
        return json.dumps({"params": {"grade": str(grade)}}).encode("utf-8")

    def catalogue_items(self, status: int, body: bytes) -> list[tuple[str, str]]:
        data = read_json(body)
        custom = data.get("custom") if isinstance(data, dict) else None
        if status != 200 or not isinstance(custom, dict) or str(custom.get("code")) != "1":
            raise ValueError(f"catalogue refused (HTTP {status}): "
                             f"{custom.get('text') if isinstance(custom, dict) else body[:200]!r}")
        return _items(custom.get("evalDetail"))

    def describe(self, up) -> list[str]:
        return super().describe(up) + [
            f"projectno prefix: {self.prefix(up)!r}", f"pf (channel): {self.pf(up)}",
            "winNo / winName: the case's window id and name from hall.toml"]


def _items(value) -> list[tuple[str, str]]:
    """[(code, text)] from a list of {"code", "text"} objects."""
    if not isinstance(value, list):
        raise ValueError("catalogue reply has no list of tags")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str) \
                or not isinstance(item.get("text"), str):
            raise ValueError("catalogue tag without code/text strings")
        out.append((item["code"], item["text"]))
    return out


PROFILE = SdEpointJson()
