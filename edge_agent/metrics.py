"""Prometheus text exposition of the agent's state (no rater data, no case numbers)."""
from __future__ import annotations

import time
from typing import Any

from . import queries


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def render(agent: Any) -> str:
    """The /metrics body for a running agent."""
    db = agent.reader()
    now = time.time()
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:g}" if isinstance(value, float)
                         else f"{name}{labels} {value}")

    counts = queries.outbox_counts(db)
    metric("hcp_outbox_jobs", "gauge", "Outbox jobs by state.",
           [(f'{{state="{s}"}}', n) for s, n in sorted(counts.items())])
    metric("hcp_outbox_depth", "gauge", "Jobs not yet confirmed upstream (pending + parked).",
           [("", counts.get("pending", 0) + counts.get("parked", 0))])
    metric("hcp_outbox_oldest_pending_age_seconds", "gauge",
           "Age of the oldest pending upload job.", [("", round(queries.oldest_pending_age(db, now), 3))])
    services = dict(db.execute("SELECT state, COUNT(*) FROM upstream_services GROUP BY state")
                    .fetchall())
    metric("hcp_upstream_service_records", "gauge",
           "Case service records (服务数据) by state (service-first profiles).",
           [(f'{{state="{s}"}}', services.get(s, 0)) for s in ("pending", "done", "parked")])
    h = agent.uploader.latency
    lines.append("# HELP hcp_upload_latency_seconds Upstream request latency.")
    lines.append("# TYPE hcp_upload_latency_seconds histogram")
    for b, c in zip(h.buckets, h.counts):
        lines.append(f'hcp_upload_latency_seconds_bucket{{le="{b:g}"}} {c}')
    lines.append(f'hcp_upload_latency_seconds_bucket{{le="+Inf"}} {h.total}')
    lines.append(f"hcp_upload_latency_seconds_sum {h.sum:.6f}")
    lines.append(f"hcp_upload_latency_seconds_count {h.total}")
    metric("hcp_upload_results_total", "counter",
           "Records sent, by outcome (duplicate: the province already had it, confirmed).",
           [(f'{{outcome="{k}"}}', v) for k, v in sorted(agent.uploader.results.items())])
    metric("hcp_upstream_circuit_open", "gauge", "1 while the upstream circuit breaker is open.",
           [("", 1 if agent.uploader.breaker == "open" else 0)])
    devs = queries.devices(db)
    metric("hcp_devices_online", "gauge", "Devices whose link is up.",
           [("", sum(1 for d in devs if d["online"]))])
    metric("hcp_devices_configured", "gauge", "Devices known to the agent.", [("", len(devs))])
    metric("hcp_frames_rejected_total", "counter", "Device frames rejected by the links, by reason.",
           [(f'{{reason="{_esc(r)}"}}', n) for r, n in sorted(agent.rejected.items())])
    metric("hcp_device_hellos_total", "counter",
           "HELLOs per device: accepted (answered), replayed (refused), limited (not answered).",
           [(f'{{device="{d["deviceId"]}",outcome="{k}"}}', d["hello"][key])
            for d in devs for k, key in (("accepted", "accepted"), ("replayed", "replays"),
                                          ("limited", "limited"))])
    metric("hcp_device_hello_bursts_total", "counter",
           "Times a device started sessions in a burst (boot loop, flapping link).",
           [(f'{{device="{d["deviceId"]}"}}', d["hello"]["bursts"]) for d in devs])
    by_level = queries.ratings_by_level(db)
    metric("hcp_ratings_total", "counter", "Ratings stored, by GB/T 39046 level code.",
           [(f'{{level="{lvl}"}}', by_level.get(lvl, 0)) for lvl in range(1, 6)])
    unbound = db.execute("SELECT COUNT(*) FROM ratings WHERE binding = 'unbound'").fetchone()[0]
    metric("hcp_ratings_unbound", "gauge", "Ratings kept without a case (never uploaded).",
           [("", unbound)])
    alerts = dict(db.execute("SELECT state, COUNT(*) FROM alerts GROUP BY state").fetchall())
    metric("hcp_alerts", "gauge", "差评 alerts by state.",
           [(f'{{state="{s}"}}', alerts.get(s, 0)) for s in ("pending", "done")])
    gate = agent.gate
    metric("hcp_intake_refused_total", "counter", "Case/queue reports refused before anything "
           "was stored, by reason (401 credentials, 413, 415, 429, ...).",
           [(f'{{reason="{_esc(r)}"}}', n) for r, n in sorted(gate.refused.items())])
    metric("hcp_intake_reports_total", "counter", "Authenticated reports by client, endpoint "
           "and HTTP status.",
           [(f'{{client="{_esc(c)}",endpoint="{e}",status="{st}"}}', n)
            for (c, e, st), n in sorted(gate.reports.items())])
    presses = db.execute("SELECT window, COUNT(*), SUM((flags & 8) != 0), SUM((flags & 4) != 0)"
                         " FROM ratings WHERE window IS NOT NULL GROUP BY window").fetchall()
    metric("hcp_window_presses_total", "counter", "Presses stored per window, by kind: all, "
           "unsolicited (no invitation showing), too_fast (< 300 ms after the invitation). "
           "High unsolicited or too_fast shares are a misuse signal.",
           [(f'{{window="{_esc(w)}",kind="{k}"}}', v) for w, n, u, f in presses
            for k, v in (("all", n), ("unsolicited", u or 0), ("too_fast", f or 0))])
    signals = queries.press_signals(db, 0, now + 1)["staff"]
    metric("hcp_staff_presses_total", "counter", "Presses attributed to a staff member (the "
           "case's, or on duty at the window for an unsolicited press), by kind.",
           [(f'{{staff="{_esc(e["staffId"])}",kind="{k}"}}', e[field]) for e in signals
            for k, field in (("all", "presses"), ("unsolicited", "unsolicited"),
                             ("too_fast", "tooFast"))])
    wa = queries.waiting_area(db)
    metric("hcp_waiting_area_ratings", "gauge", "Ratings from waiting-area evaluators, bound "
           "to a case by their scanned reference or kept unbound.",
           [('{state="bound"}', wa["bound"]), ('{state="unbound"}', wa["ratings"] - wa["bound"])])
    metric("hcp_writer_commits_total", "counter", "Group commits by the SQLite writer.",
           [("", agent.writer.commits)])
    return "\n".join(lines) + "\n"
