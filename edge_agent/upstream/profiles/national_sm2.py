"""Profile `national-sm2`: the national transport envelope, service record first, batches.

* Every case's service record (service_record.py) goes to `POST /hcp/projectSubmit`, every rating
  to `POST /hcp/offlineTemp`, each as `params.evaluate = [C]`, C the SM2 ciphertext of the JSON
  array of up to `upstream.batch_size` records (default 20), inside the signed envelope of
  auth/sm2.py. A rating is sent only after its service record was confirmed.
* rating record: taskType, projectNo, satisfaction (1 非常不满意 … 5 非常满意), pf (5: 政务大厅
  其他终端), name (the rater), evalDetail (comma-separated code strings), writingEvaluation,
  assessTime `yyyy-MM-dd HH:mm:ss`, serviceNumber (integer), assessNumber 1.
* reason tags: fetched per grade from `POST /hcp/getEvalDetail` (signed, `params.grade`).
* reply `{"code": "0", "success": "true"}` confirms the batch; `results` (one per record, in
  order: `code`, `msg`) settles each record by its own result. A refusal of the envelope itself
  (signature, decryption, appMark) parks the batch with the province's message and the settings
  to check; a stale `time` is our clock, retried. Deployments that answer `C-Response-Desc`
  ("success" or a message) are read too.
"""
from __future__ import annotations

import json

from ...levels import provincial
from . import service_record as sr
from .base import DASH, RATING, SERVICE, BuildContext, Job, Outcome, Profile, cst, read_json, \
    transport_outcome, unreadable, written_reason

CATALOGUE = "catalogue"
SIGN_SETTINGS = ("upstream.sm2.private_key_file (the key registered with the platform), "
                 "upstream.sm2.signature_format, upstream.sm2.signer_id, "
                 "upstream.sm2.cipher_encoding (sign is written in it too), upstream.app_mark, "
                 "upstream.app_word")
CIPHER_SETTINGS = ("upstream.sm2.platform_public_key_file, upstream.sm2.cipher_order, "
                   "upstream.sm2.cipher_encoding")


def envelope_refusal(message: str) -> Outcome:
    """The province refused the envelope (not a record): say which settings to check."""
    low = message.lower()
    if "时间" in message or "time" in low:
        # our clock, not the batch: transient, so it backs off instead of parking everything
        return Outcome("retry", f"{message} — check the agent's clock (NTP)")
    if "签名" in message or "sign" in low:
        hint = SIGN_SETTINGS
    elif "解密" in message or "密文" in message or "decrypt" in low or "cipher" in low:
        hint = CIPHER_SETTINGS
    elif "appmark" in low or "应用" in message:
        hint = "upstream.app_mark, upstream.app_word"
    else:
        hint = f"{SIGN_SETTINGS}; {CIPHER_SETTINGS}"
    return Outcome("park", f"envelope refused: {message} — check {hint}")


class NationalSm2(Profile):
    name = "national-sm2"
    paths = {RATING: "/hcp/offlineTemp", SERVICE: "/hcp/projectSubmit",
             CATALOGUE: "/hcp/getEvalDetail"}
    needs_service = True
    max_batch = 100
    default_pf = 5
    area_code_length = 12
    fetches_catalogue = True
    auth_schemes = ("sm2",)
    needs = (
        ("app_mark", "app_mark", "appMark: 应用标识 the application id the platform issued"),
        ("app_word", "app_word", "appWord: 应用密钥 the application secret (signed, never sent)"),
        ("sm2.private_key_file", "sm2_private_key", "our SM2 private key (signs the envelope)"),
        ("sm2.platform_public_key_file", "sm2_platform_public_key",
         "the platform's SM2 public key (encrypts the records)"),
    )

    def headers(self, kind: str, jobs: list[Job]) -> dict[str, str]:
        return {}

    def record(self, kind: str, job: Job, ctx: BuildContext) -> dict:
        up = ctx.config.upstream
        if kind == SERVICE:
            return sr.service_record(job, up, self.area_length(up))
        r, c = job.rating, job.case
        assert r is not None
        reasons = ctx.reasons(r)
        return {
            "taskType": sr.task_type(c.get("task_type")),
            "projectNo": c["project_no"],
            "satisfaction": str(provincial(r["level"])),
            "pf": str(self.pf(up, r)),
            "name": job.applicant.get("name") or "",
            "evalDetail": ",".join(reasons.codes),
            "writingEvaluation": written_reason(r, reasons),
            "assessTime": cst(r["assess_time"], DASH),
            "serviceNumber": job.service_number,
            "assessNumber": r["assess_number"],
        }

    def body(self, kind: str, jobs: list[Job], ctx: BuildContext) -> bytes:
        records = [self.record(kind, j, ctx) for j in jobs]
        plain = json.dumps(records, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        envelope = ctx.auth.seal({"evaluate": [ctx.auth.encrypt(plain)]}, ctx.now or None)
        return json.dumps(envelope, ensure_ascii=False).encode("utf-8")

    def classify(self, kind: str, jobs: list[Job], status: int, body: bytes,
                 retry_after: str | None) -> list[Outcome]:
        out = transport_outcome(status, retry_after)
        if out is not None:
            return [out] * len(jobs)
        data = read_json(body)
        if not isinstance(data, dict) or not (status == 200 or 400 <= status < 500):
            return [unreadable(status)] * len(jobs)
        if "C-Response-Desc" in data:
            desc = str(data.get("C-Response-Desc") or "")
            return [sr.verdict(kind, desc == "success", desc)] * len(jobs)
        results = data.get("results")
        if isinstance(results, list):
            if len(results) != len(jobs) or not all(isinstance(r, dict) for r in results):
                return [unreadable(status)] * len(jobs)
            return [sr.verdict(kind, str(r.get("code")) == "0", str(r.get("msg") or ""))
                    for r in results]
        if "code" not in data:
            return [unreadable(status)] * len(jobs)
        if str(data.get("code")) == "0" and str(data.get("success")).lower() == "true":
            return [Outcome("done", str(data.get("msg") or "success"))] * len(jobs)
        return [envelope_refusal(str(data.get("msg") or f"code={data.get('code')}"))] * len(jobs)

    def upstream_ref(self, job: Job, up) -> str:
        assert job.rating is not None
        return f"{job.case['project_no']}#{job.rating['assess_number']}"

    def catalogue_request(self, grade: int, ctx: BuildContext) -> bytes:
        envelope = ctx.auth.seal({"grade": str(grade)})
        return json.dumps(envelope, ensure_ascii=False).encode("utf-8")

    def catalogue_items(self, status: int, body: bytes) -> list[tuple[str, str]]:
        data = read_json(body)
        if status != 200 or not isinstance(data, dict) or str(data.get("code")) != "0":
            msg = data.get("msg") if isinstance(data, dict) else body[:200]
            raise ValueError(f"catalogue refused (HTTP {status}): {msg!r}")
        from .sd_epoint_json import _items
        return _items(data.get("data"))

    def describe(self, up) -> list[str]:
        return super().describe(up) + [
            f"envelope: appMark {up.app_mark!r}, SM2 ciphertext {up.sm2_cipher_order} as "
            f"{up.sm2_cipher_encoding}, signature {up.sm2_signature_format} as "
            f"{up.sm2_cipher_encoding}, signer ID {up.sm2_signer_id!r}",
            f"pf (channel): {self.pf(up)}", f"areaCode digits: {self.area_length(up)}"]


PROFILE = NationalSm2()
