"""The end-of-run account: every press a device showed as accepted, followed to where it ended.

Sources: the devices' own press logs (a press is accepted when `journal.append()` returned — the
moment the device shows 谢谢), the agent's SQLite database (read-only: ratings, bindings, outbox
and alert rows), and the province's `/_stats` and `/_records`. A press is

- `uploaded` — the province holds it: under its global id (`{hall}-{device}-{rseq}`, the
  idempotency key), or under what the agent recorded the province knows it as (`upstream_ref`,
  e.g. `{projectNo}#{assessNumber}` where the interface has no idempotency key);
- `unbound` — the agent stored it but could not bind it to a case (kept, listed, not uploaded);
- `parked` — bound, but the province refused it: the outbox job is parked with the reason;
- `lost` — none of these (not stored at the agent, or its upload never confirmed).

`lost` must be 0. Latency is press (append returned) → the province's receipt time, both on this
host's clock.
"""
from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def province_view(url: str) -> tuple[dict, dict]:
    """(stats, records by idempotency key) from the reference server's test endpoints."""
    return _get(url + "/_stats"), _get(url + "/_records")["records"]


def agent_view(db_path: Path) -> dict:
    """What the agent's database holds (read-only connection; the agent may still run)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        ratings = {}
        for gid, level, binding, reason, ostate, oerr, ref in conn.execute(
                "SELECT r.global_id, r.level, r.binding, r.unbound_reason, o.state, o.last_error,"
                " o.upstream_ref FROM ratings r LEFT JOIN outbox o ON o.rating_id = r.id"):
            ratings[gid] = {"level": level, "binding": binding, "unbound_reason": reason,
                            "outbox": ostate, "error": oerr, "ref": ref}
        cases = conn.execute("SELECT COUNT(*) FROM cases").fetchone()[0]
        alerts = dict(conn.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state"))
        outbox = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
    finally:
        conn.close()
    return {"ratings": ratings, "cases": cases, "alerts": alerts, "outbox": outbox}


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(q / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def summarise(accepted: list, hall_code: str, agent: dict, stats: dict, records: dict,
              devices: int, extra: dict | None = None) -> dict:
    """The summary dict (`hcp demo --json`): the issue's keys first, then details."""
    ratings = agent["ratings"]
    outcomes = {"uploaded": 0, "unbound": 0, "parked": 0, "lost": 0}
    lost_detail: list[dict] = []
    parked_detail: list[dict] = []
    latencies: list[float] = []
    shown: set[str] = set()
    for p in accepted:
        gid = f"{hall_code}-{p.device_id}-{p.rseq}"
        shown.add(gid)
        row = ratings.get(gid)
        rec = _province_record(records, gid, row)
        if rec is not None:
            outcomes["uploaded"] += 1
            latencies.append((rec["receivedAt"] - p.at) * 1000.0)
        elif row is not None and row["binding"] == "unbound":
            outcomes["unbound"] += 1
        elif row is not None and row["outbox"] == "parked":
            outcomes["parked"] += 1
            parked_detail.append({"ratingId": gid, "reason": row["error"]})
        else:
            outcomes["lost"] += 1
            lost_detail.append({"ratingId": gid, "where": "not stored at the agent"
                                if row is None else f"outbox {row['outbox']}: {row['error']}"})
    bound = sum(1 for r in ratings.values() if r["binding"] != "unbound")
    ours = [g for g, r in ratings.items() if _province_record(records, g, r) is not None]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    out = {
        "devices": devices,
        "cases": agent["cases"],
        "presses": len(accepted),
        "ratings_stored": len(ratings),
        "uploaded_unique": len(ours),
        "province_duplicates": stats.get("duplicates", 0),
        "unbound": sum(1 for r in ratings.values() if r["binding"] == "unbound"),
        "lost": outcomes["lost"],
        "latency_ms": {"p50": round(p50, 1) if p50 is not None else None,
                       "p99": round(p99, 1) if p99 is not None else None},
        "bad_ratings": sum(1 for r in ratings.values() if r["level"] in (4, 5)),
        "alerts": sum(agent["alerts"].values()),
        # details
        "bound": bound,
        "parked": sum(1 for r in ratings.values() if r["outbox"] == "parked"),
        "pending_uploads": agent["outbox"].get("pending", 0),
        "press_outcomes": outcomes,
        "stored_not_shown": len([g for g in ratings if g not in shown]),
        "province_rejected": stats.get("rejected", {}),
        "province_faults": stats.get("faults", {}),
        "alerts_by_state": agent["alerts"],
        "unbound_reasons": _count(r["unbound_reason"] for r in ratings.values()
                                  if r["binding"] == "unbound"),
        "lost_detail": lost_detail[:50],
        "parked_detail": parked_detail[:50],
    }
    if extra:
        out.update(extra)
    return out


def _province_record(records: dict, gid: str, row: dict | None) -> dict | None:
    rec = records.get(gid)
    if rec is None and row is not None and row.get("ref"):
        rec = records.get(row["ref"])
    return rec


def _count(items: Any) -> dict:
    out: dict = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out
