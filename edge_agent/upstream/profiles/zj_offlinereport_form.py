"""Profile `zj-offlinereport-form`: Zhejiang-style offline report, form-encoded, one per request.

`satisfaction` 1 非常不满意 … 5 非常满意; `pf` 5 (政务大厅其他终端, our evaluator) unless
configured. `proDepartCode` is the province's unified department number (省统一的部门编号), a
setting (`upstream.dept_number`) because no case system carries it; `deptCode` stays the
18-character credit code. `areaCode` at `upstream.area_code_length` digits (default 6).
Reply: `result` "0" confirms, anything else is a rejection with `resultmsg`.
"""
from __future__ import annotations

import urllib.parse

from ...levels import provincial
from .base import DASH, RATING, BuildContext, Job, Outcome, Profile, area_code, cst, \
    read_json, transport_outcome, unreadable, written_reason


class ZjOfflineReportForm(Profile):
    name = "zj-offlinereport-form"
    content_type = "application/x-www-form-urlencoded"
    paths = {RATING: "/offlinereport"}
    default_pf = 5
    needs = (("dept_number", "dept_number", "proDepartCode: 省统一的部门编号 the province's "
              "department number (not the credit code)"),)

    def body(self, kind: str, jobs: list[Job], ctx: BuildContext) -> bytes:
        (job,) = jobs
        r, c, up = job.rating, job.case, ctx.config.upstream
        assert r is not None
        reasons = ctx.reasons(r)
        fields = {
            "areaCode": area_code(c["area_code"], self.area_length(up)),
            "areaName": up.area_name, "deptCode": c["dept_code"],
            "taskCode": c["task_code"], "taskName": c["task_name"],
            "projectNo": c["project_no"], "proStatus": str(c["status"]),
            "proDepartCode": up.dept_number or "", "proDepart": c["dept_name"],
            "proManager": c["staff_name"], "pf": str(self.pf(up, r)),
            "certkeyGOV": job.applicant.get("certNo") or "",
            "userName": job.applicant.get("name") or "",
            "userProp": str(job.applicant.get("userProp") or ""),
            "satisfaction": str(provincial(r["level"])), "evalDetail": ",".join(reasons.codes),
            "writingEvaluation": written_reason(r, reasons),
            "assessTime": cst(r["assess_time"], DASH),
            "assessNumber": str(r["assess_number"]), "promiseTime": str(c["promise_type"]),
            "acceptDate": cst(c["accepted_at"], DASH), "dataSource": up.data_source,
        }
        return urllib.parse.urlencode(fields, encoding="utf-8").encode("ascii")

    def classify(self, kind: str, jobs: list[Job], status: int, body: bytes,
                 retry_after: str | None) -> list[Outcome]:
        out = transport_outcome(status, retry_after)
        if out is None:
            data = read_json(body)
            if isinstance(data, dict) and "result" in data and (status == 200 or
                                                                400 <= status < 500):
                msg = str(data.get("resultmsg") or f"result={data['result']}")
                out = Outcome("done", msg, duplicate="重复" in msg) \
                    if str(data["result"]) == "0" and status == 200 else Outcome("park", msg)
            elif 400 <= status < 500:
                out = Outcome("park", f"http_{status}")
            else:
                out = unreadable(status)
        return [out] * len(jobs)

    def describe(self, up) -> list[str]:
        return super().describe(up) + [
            f"pf (channel): {self.pf(up)}", f"proDepartCode: {up.dept_number}",
            f"areaCode digits: {self.area_length(up)}", f"dataSource: {up.data_source}"]


PROFILE = ZjOfflineReportForm()
