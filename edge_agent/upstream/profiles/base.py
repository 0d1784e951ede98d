"""What every upstream profile shares: the unit of work, the outcome of a reply, time formats,
area codes, and the reading of HTTP statuses every province answers the same way.

A profile module defines one `Profile` subclass instance named `PROFILE`; the registry
(`edge_agent.upstream.registry`) collects them. A profile turns jobs into one request body and a
reply into one `Outcome` per job. It never touches the database or the network.

Outcome kinds (what the worker does next):
  done    - the province confirmed; `duplicate` when it said it already had the record
  retry   - transport error, timeout, 5xx, 408, 429 (Retry-After honoured), unreadable reply
  park    - a permanent rejection, kept with the province's reason until `outbox retry`
  repush  - a rating whose service record the province does not know: push the service again,
            then the rating (service-first profiles only)
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Callable

from ...levels import is_bad

if TYPE_CHECKING:
    from ...config import Config, Upstream

RATING = "rating"
SERVICE = "service"

FLAG_REASON_TIMEOUT = 2
# A 差评 whose reason screen timed out carries no tag; the provinces require a tag or a text, so
# we state what happened instead of choosing a tag for the citizen.
REASON_TIMEOUT_TEXT = "评价人未选择具体原因（原因选择超时）"


@dataclass
class Job:
    """One record to send: a rating (outbox row) or a case's service record."""
    kind: str                 # RATING | SERVICE
    id: int                   # outbox.id or upstream_services.id
    key: str                  # the rating's global id, or the service record's key
    attempts: int
    case: dict                # the cases row
    service_number: int = 1
    rating: dict | None = None     # level, assess_time, assess_number, reasons, flags, cat_version
    applicant: dict = field(default_factory=dict)   # plaintext, lives only for the request


@dataclass(frozen=True)
class Outcome:
    kind: str                 # "done" | "retry" | "park" | "repush"
    reason: str
    retry_after: float | None = None
    duplicate: bool = False


@dataclass
class Reasons:
    """A rating's reason tags as the province's code strings, and tags it has no code for."""
    codes: list[str]
    texts: list[str] = field(default_factory=list)


@dataclass
class BuildContext:
    """What building a body needs beyond the jobs."""
    config: "Config"
    reasons: Callable[[dict], Reasons]     # rating -> Reasons (the catalogue of its version)
    auth: Any                              # the auth scheme object (auth/*.py)
    now: float = 0.0


def cst(ts: float, fmt: str) -> str:
    """A unix time as China Standard Time (UTC+8, no daylight saving) in `fmt`."""
    return time.strftime(fmt, time.gmtime(ts + 8 * 3600))


DASH = "%Y-%m-%d %H:%M:%S"


def written_reason(rating: dict, reasons: Reasons) -> str:
    """The written reason that goes with a rating: a timed-out reason screen, or tags the
    province has no code for (named in words rather than replaced by a code)."""
    parts = list(reasons.texts)
    if rating.get("written"):          # a paper form's own words
        parts.append(rating["written"])
    if is_bad(rating["level"]) and not reasons.codes and not parts \
            and rating["flags"] & FLAG_REASON_TIMEOUT:
        parts.append(REASON_TIMEOUT_TEXT)
    return "；".join(parts)


def area_code(code: str, length: int) -> str:
    """A GB/T 2260 code at the length the province wants: 6 → 12 pads with 000000 (as the
    platform does), longer → shorter keeps the leading digits."""
    if len(code) >= length:
        return code[:length]
    return code + "0" * (length - len(code))


def task_type(value: str | None) -> str:
    """事项类型 as the national data set takes it: 01 05 07 08 09 10 20, 11 → 20, else 99."""
    if value == "11":
        return "20"
    return value if value in ("01", "05", "07", "08", "09", "10", "20") else "99"


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def read_json(body: bytes) -> Any:
    """The reply as JSON, or None when it is not."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def transport_outcome(status: int, retry_after: str | None) -> Outcome | None:
    """The answer to statuses every province means the same way, or None to read the body."""
    if status == 429:
        return Outcome("retry", "http_429", parse_retry_after(retry_after))
    if status >= 500 or status == 408:
        return Outcome("retry", f"http_{status}", parse_retry_after(retry_after))
    return None


def unreadable(status: int) -> Outcome:
    # not confirmed, so not done; resending is safe (idempotency key, or the province's
    # duplicate answer)
    return Outcome("retry", f"unreadable_reply_http_{status}")


class Profile:
    """One upstream interface. Subclasses set the class attributes and the build/read methods."""

    name: str = ""
    content_type: str = "application/json"
    paths: dict[str, str] = {}           # RATING (always), SERVICE, "catalogue" where offered
    needs_service: bool = False          # push the case's service record before its rating
    max_batch: int = 1                   # records per request
    default_pf: int | None = None        # channel code sent for our evaluator
    area_code_length: int = 6
    fetches_catalogue: bool = False
    auth_schemes: tuple[str, ...] = ("none", "token", "hmac")
    orientation: str = "satisfaction 1 非常不满意 … 5 非常满意"
    # (config key, Upstream attribute, why) of settings this profile cannot go without
    needs: tuple[tuple[str, str, str], ...] = ()

    def missing(self, up: "Upstream") -> list[tuple[str, str]]:
        """(key, why) of the needed settings that are not set."""
        return [(key, why) for key, attr, why in self.needs if not getattr(up, attr, None)]

    def batch_limit(self, up: "Upstream") -> int:
        return max(1, min(self.max_batch, up.batch_size))

    def pf(self, up: "Upstream", rating: dict | None = None) -> int:
        """The channel code: our evaluator's, or `paper_pf` for a paper form's rating."""
        if rating is not None and rating.get("paper"):
            return up.paper_pf
        return up.pf if up.pf is not None else (self.default_pf or 5)

    def area_length(self, up: "Upstream") -> int:
        return up.area_code_length or self.area_code_length

    def headers(self, kind: str, jobs: list[Job]) -> dict[str, str]:
        """Headers besides Content-Type and authentication."""
        if len(jobs) == 1:
            return {"Idempotency-Key": jobs[0].key}
        return {}

    def body(self, kind: str, jobs: list[Job], ctx: BuildContext) -> bytes:
        raise NotImplementedError

    def classify(self, kind: str, jobs: list[Job], status: int, body: bytes,
                 retry_after: str | None) -> list[Outcome]:
        raise NotImplementedError

    def upstream_ref(self, job: Job, up: "Upstream") -> str:
        """What the province knows a confirmed rating as (shown to technicians)."""
        return job.key

    def describe(self, up: "Upstream") -> list[str]:
        """Lines for `hcp agent check-config`: the profile's effective settings, no secrets."""
        return [f"level orientation: {self.orientation}",
                f"records per request: {self.batch_limit(up)}, requests in flight: "
                f"{up.max_in_flight}",
                "service record first: " + ("yes" if self.needs_service else "no"),
                f"paper forms (纸质评价): pf {up.paper_pf}, channel {up.paper_channel}"]
