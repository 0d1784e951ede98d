"""`hcp demo` end to end, as `make demo` runs it: province server, agent (`hcp agent run`),
six virtual evaluators and a waiting-area evaluator on pty serial lines (or MQTT through
Mosquitto), scripted citizens, staff and queue system, and faults. Nothing the devices showed as
accepted may be lost — waiting-area ratings included, each bound through its scanned ticket or
receipt — every press is accounted for, and nothing the demo started may outlive it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import require
from simulator import services

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(150)


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line mentions `marker` (our run dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmd:
            found.append(f"{pid}: {cmd}")
    return found


def _demo(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "summary.json"
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "tools.hcp", "demo", *args, "--json", str(out),
                           "--run-dir", str(run_dir)], cwd=ROOT, capture_output=True,
                          text=True, timeout=140, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "汇总 summary" in proc.stdout and "lost" in proc.stdout
    assert _leftovers(str(run_dir)) == []
    return json.loads(out.read_text(encoding="utf-8"))


def _check_accounting(s: dict) -> None:
    assert s["drained"] is True
    assert s["lost"] == 0, s["lost_detail"]
    assert s["presses"] > 0 and s["cases"] > 0
    o = s["press_outcomes"]
    # every press is accounted for: at the province, kept unbound, or parked with a reason
    assert o["uploaded"] + o["unbound"] + o["parked"] == s["presses"]
    assert all(p["reason"] for p in s["parked_detail"])
    # uploads: exactly the bound ratings (none parked in a healthy run), each once
    assert s["parked"] == 0, s["parked_detail"]
    assert s["uploaded_unique"] == s["bound"] == s["ratings_stored"] - s["unbound"]
    assert s["pending_uploads"] == 0
    assert s["ratings_stored"] >= s["presses"]
    if s["uploaded_unique"]:    # a short run with faults may have only unsolicited presses
        assert s["latency_ms"]["p99"] >= s["latency_ms"]["p50"] is not None
    # every 差评 raised an alert (one more when a late case binds an unbound one), and the
    # supervisor's webhook got each
    assert s["alerts"] >= s["bad_ratings"] and s["alerts_delivered"] == s["alerts"]
    assert set(s) >= {"devices", "cases", "presses", "ratings_stored", "uploaded_unique",
                      "province_duplicates", "unbound", "lost", "latency_ms", "bad_ratings",
                      "alerts"}


def _check_waiting_area(s: dict) -> None:
    wa = s["waiting_area"]
    assert wa["devices"] == 1 and s["waiting_area_citizens"] > 0
    # every citizen who went there rated; each rating found its case through the code scanned
    assert wa["presses"] > 0 and wa["bound"] == wa["presses"], wa
    assert s["queue_events"] > 0 and s["queue_errors"] == 0 and s["case_errors"] == 0
    assert s["agent_url"].startswith("http://127.0.0.1:")


def test_demo_with_faults_loses_nothing(tmp_path):
    s = _demo(tmp_path, "--duration", "20", "--faults", "--seed", "7", "--waiting-share", "0.35")
    _check_accounting(s)
    _check_waiting_area(s)
    assert s["devices"] == 6
    faults = " ".join(s["faults"])
    assert "power-cut" in faults and "unplug" in faults and "province-outage" in faults
    assert s["power_cuts"], "the power cut happened"


def test_demo_over_mqtt(tmp_path):
    require(services.mosquitto_missing())
    s = _demo(tmp_path, "--duration", "10", "--link", "mqtt", "--faults", "--devices", "4",
              "--seed", "3", "--waiting-share", "0.5")
    _check_accounting(s)
    _check_waiting_area(s)
    assert s["link"] == "mqtt" and "broker-restart" in s["faults"]


def test_demo_on_micropython(tmp_path):
    """`hcp demo --runtime micropython`: each evaluator is a MicroPython unix-port process
    (littlefs journal image, pty stdin); a power cut is SIGKILL of that process."""
    from simulator.mpy_device import missing
    require(missing())
    s = _demo(tmp_path, "--duration", "10", "--faults", "--devices", "3", "--runtime",
              "micropython", "--seed", "5")
    _check_accounting(s)
    assert s["runtime"] == "micropython" and s["devices"] == 3
    assert s["power_cuts"], "the power cut happened"


def test_demo_says_clearly_when_mqtt_is_unavailable(tmp_path, monkeypatch):
    from simulator import demo
    monkeypatch.setattr(services, "MOSQUITTO", str(tmp_path / "no-mosquitto"))
    assert demo.main(["--link", "mqtt", "--duration", "1"]) == 2


def test_demo_hold_keeps_the_hall_and_console_up_after_the_summary(tmp_path):
    """`--hold S`: the JSON summary (agent and console addresses, the demo-only account) is
    written first; the hall keeps running and its agent and console answer; SIGTERM ends the
    hold with a normal exit and nothing left behind."""
    import asyncio
    import signal
    from tests.console_support import Client
    out = tmp_path / "summary.json"
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tools.hcp", "demo", "--duration", "5",
                             "--devices", "2", "--hold", "120", "--json", str(out),
                             "--run-dir", str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 110
        while not out.exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no summary before the hold"
            time.sleep(0.3)
        time.sleep(0.3)      # the file is written in one call; let it land
        s = json.loads(out.read_text(encoding="utf-8"))
        assert s["lost"] == 0 and s["waiting_area"]["devices"] == 1
        assert s["console_user"] == "demo" and s["console_password"]
        assert s["agent_url"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(s["agent_url"] + "/v1/status", timeout=5) as r:
            assert json.loads(r.read())["devices"]["configured"] == 3
        with urllib.request.urlopen(s["console_url"] + "/login", timeout=5) as r:
            assert r.status == 200 and "登录" in r.read().decode("utf-8")

        async def login():     # the demo account logs in (the real console, real argon2)
            async with Client(s["console_url"]) as c:
                assert await c.login("demo", s["console_password"]) == 303
                status, body = await c.get("/overview.json")
                assert status == 200
                return json.loads(body)
        overview = asyncio.run(login())
        assert overview["periods"][0]["total"] >= s["bound"]   # the held hall goes on rating
        assert proc.poll() is None, "the hall should still be held"
        proc.send_signal(signal.SIGTERM)
        text, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, text[-3000:]
    assert "holding the hall" in text and s["console_url"] in text
    assert _leftovers(str(run_dir)) == []


def test_demo_national_sm2_envelope(tmp_path):
    """The national envelope end to end: service records first, batches, SM2 both ways (the
    agent's snowland-smx, the province's gmssl), the platform's tag table pushed to devices."""
    s = _demo(tmp_path, "--duration", "15", "--profile", "national-sm2", "--faults",
              "--devices", "4", "--seed", "5")
    _check_accounting(s)
    assert s["province_rejected"] == {}
    import sqlite3
    db = sqlite3.connect(tmp_path / "run" / "agent.db")
    try:
        services = dict(db.execute("SELECT state, COUNT(*) FROM upstream_services GROUP BY state"))
        sources = [r[0] for r in db.execute("SELECT source FROM catalogues ORDER BY version")]
    finally:
        db.close()
    assert services == {"done": s["cases"]}          # every reported case, rated or not
    assert sources == ["file", "platform"]
    blob = (tmp_path / "run" / "devices" / "1001" / "catalogue.bin").read_bytes()
    assert int.from_bytes(blob[:2], "big") == 2      # the devices show the platform's version
