"""Profile `gbt39046-json`: our canonical JSON rendering of GB/T 39046—2020 table 9.

One rating per request, `POST /api/v1/evaluations`. Level as our wire code (1 非常满意 … 5
非常不满意, the order we read table A.8 in), with the level name. No service record.
Reply: 200 `{"ok": true, ...}` confirms; 4xx with `reason`/`message` is a rejection.
"""
from __future__ import annotations

import json
from typing import Any

from ...levels import LEVEL_NAMES
from .base import RATING, BuildContext, Job, Outcome, Profile, cst, read_json, \
    transport_outcome, unreadable, written_reason

CHANNEL = "政务大厅其他终端"


class Gbt39046Json(Profile):
    name = "gbt39046-json"
    paths = {RATING: "/api/v1/evaluations"}
    orientation = "levelCode 1 非常满意 … 5 非常不满意 (our wire code), with levelName"

    def body(self, kind: str, jobs: list[Job], ctx: BuildContext) -> bytes:
        (job,) = jobs
        r = job.rating
        assert r is not None
        reasons = ctx.reasons(r)
        body: dict[str, Any] = {
            "projectNo": job.case["project_no"],
            "channel": ctx.config.upstream.paper_channel if r.get("paper") else CHANNEL,
            "assessTime": cst(r["assess_time"], "%Y%m%dT%H%M%S"),
            "assessNumber": r["assess_number"], "levelCode": r["level"],
            "levelName": LEVEL_NAMES[r["level"]], "evalDetail": reasons.codes,
            "areaCode": ctx.config.hall.area_code,
        }
        rater = (job.applicant.get("name") or "")[:30]
        if rater:
            body["rater"] = rater
        written = written_reason(r, reasons)
        if written:
            body["writingEvaluation"] = written
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def classify(self, kind: str, jobs: list[Job], status: int, body: bytes,
                 retry_after: str | None) -> list[Outcome]:
        out = transport_outcome(status, retry_after)
        if out is None:
            data = read_json(body)
            if status == 200 and isinstance(data, dict) and data.get("ok") is True:
                result = str(data.get("result", "accepted"))
                out = Outcome("done", result, duplicate=result == "duplicate")
            elif 400 <= status < 500:
                parts = [str(data[k]) for k in ("reason", "message")
                         if isinstance(data, dict) and data.get(k)]
                out = Outcome("park", ": ".join(parts) or f"http_{status}")
            else:
                out = unreadable(status)
        return [out] * len(jobs)


PROFILE = Gbt39046Json()
