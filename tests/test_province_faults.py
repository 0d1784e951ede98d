"""Province reference server: injected faults and the `hcp province serve` command line.

Faults are observed from the client side over real HTTP; the store is checked afterwards through
`/_records` so a fault can be seen never to lose or double a record.
"""
from __future__ import annotations

import http.client
import os
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest

from simulator.province import cli, signing
from simulator.province.server import ServerConfig, running_server
from tests.test_province_server import (GBT, ZJ, Answer, encode, gbt_rating, get_json,
                                        province, records, stats, upload, upload_to,
                                        verdict, zj_rating)

__all__ = ["province"]  # the fixture, re-exported so pytest finds it here

CONNECTION_ERRORS = (ConnectionError, http.client.HTTPException, urllib.error.URLError,
                     TimeoutError, OSError)


def test_fail_rate_answers_500_and_stores_nothing(province) -> None:
    srv = province(GBT, fail_rate=1.0)
    ans = upload(srv, gbt_rating(), "K-1")
    assert ans.status == 500 and ans.headers["X-Fault"] == "fail"
    s = stats(srv)
    assert s["accepted"] == 0 and s["faults"] == {"fail": 1}
    assert records(srv) == {}


def test_rate_limit_answers_429_with_retry_after(province) -> None:
    srv = province(ZJ, rate_limit=1)
    answers = [upload(srv, zj_rating(f"SYN{i}"), f"K-{i}") for i in range(10)]
    limited = [a for a in answers if a.status == 429]
    # ten requests cannot all fall into different one-second windows on any sane machine
    assert limited
    for ans in limited:
        assert int(ans.headers["Retry-After"]) >= 1
    ok = [a for a in answers if a.status == 200]
    assert all(verdict(ZJ, a) == ("ok", None) for a in ok)
    s = stats(srv)
    assert s["accepted"] == len(ok) == len(records(srv))
    assert s["faults"]["rate_limited"] == len(limited)


def test_drop_response_stores_then_client_sees_connection_error(province, tmp_path) -> None:
    db = tmp_path / "drop.sqlite3"
    with running_server(ServerConfig(profile=ZJ, db=db, drop_response_rate=1.0)) as srv:
        with pytest.raises(CONNECTION_ERRORS):
            upload(srv, zj_rating(), "HALL1-DEV1-7")
        assert list(records(srv)) == ["HALL1-DEV1-7"]
        assert stats(srv)["faults"] == {"drop": 1}
    # the uploader retries the unconfirmed rating: a duplicate, answered success, stored once
    healthy = province(ZJ, db=db)
    ans = upload(healthy, zj_rating(), "HALL1-DEV1-7")
    assert verdict(ZJ, ans) == ("ok", None) and ans.headers["X-Result"] == "duplicate"
    s = stats(healthy)
    assert s["accepted"] == 1 and s["duplicates"] == 1


def test_timeout_holds_request_and_stores_nothing(province) -> None:
    srv = province(GBT, timeout_rate=1.0, hold_s=30.0)
    with pytest.raises(CONNECTION_ERRORS):
        upload(srv, gbt_rating(), "K-1", timeout=0.5)
    s = stats(srv)
    assert s["accepted"] == 0 and s["faults"] == {"timeout": 1}


def test_short_hold_answers_504(province) -> None:
    srv = province(GBT, timeout_rate=1.0, hold_s=0.05)
    ans = upload(srv, gbt_rating(), "K-1")
    assert ans.status == 504 and ans.headers["X-Fault"] == "timeout"
    assert records(srv) == {}


def test_outage_window_answers_503(province) -> None:
    down = province(ZJ, outages=[(0.0, 3600.0)])
    ans = upload(down, zj_rating(), "K-1")
    assert ans.status == 503 and 1 <= int(ans.headers["Retry-After"]) <= 3600
    assert stats(down)["faults"] == {"outage": 1} and records(down) == {}
    # a window that has not begun yet does not affect requests
    later = province(ZJ, outages=[(3600.0, 10.0)])
    assert verdict(ZJ, upload(later, zj_rating(), "K-1")) == ("ok", None)


def test_latency_still_answers(province) -> None:
    srv = province(ZJ, latency_ms=20)
    assert verdict(ZJ, upload(srv, zj_rating(), "K-1")) == ("ok", None)


def _fault_sequence(province: Any, seed: int) -> list[int]:
    srv = province(GBT, fail_rate=0.5, seed=seed)
    return [upload(srv, gbt_rating(f"SYN{i}"), f"K-{i}").status for i in range(20)]


def test_seed_makes_faults_deterministic(province) -> None:
    first = _fault_sequence(province, 42)
    assert first == _fault_sequence(province, 42)
    assert set(first) == {200, 500}


def test_faults_never_lose_or_double_a_record(province) -> None:
    """A minimal uploader loop against every fault at once: each rating stored exactly once."""
    srv = province(ZJ, fail_rate=0.3, drop_response_rate=0.3, timeout_rate=0.2, hold_s=0.01,
                   rate_limit=50, seed=7)
    keys = [f"HALL1-DEV2-{i}" for i in range(15)]
    attempts = 0
    for i, key in enumerate(keys):
        payload = zj_rating(f"SYN{i}", satisfaction=str(1 + i % 5), evalDetail="101")
        for _ in range(100):
            attempts += 1
            try:
                ans: Answer = upload(srv, payload, key)
            except CONNECTION_ERRORS:
                continue
            if ans.status == 200:
                assert verdict(ZJ, ans) == ("ok", None)
                break
        else:
            pytest.fail(f"{key} never confirmed")
    recs = records(srv)
    assert sorted(recs) == sorted(keys)
    s = stats(srv)
    assert s["accepted"] == 15 and sum(s["by_level"].values()) == 15
    assert s["by_level"] == {"1": 3, "2": 3, "3": 3, "4": 3, "5": 3}
    assert s["rejected"] == {}
    assert attempts > 15 and s["faults"]


# --- command line ----------------------------------------------------------------------------

def test_cli_serve_subprocess(tmp_path: Path) -> None:
    db = tmp_path / "cli.sqlite3"
    env = {**os.environ, "HCP_PROVINCE_SECRET": "synthetic-secret"}
    with subprocess.Popen(
            [sys.executable, "-m", "tools.hcp", "province", "serve", "--profile", ZJ,
             "--port", "0", "--db", str(db), "--auth", "hmac", "--app-id", "hall-test",
             "--seed", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            line = proc.stdout.readline().strip()  # type: ignore[union-attr]
            assert line.startswith("listening http://127.0.0.1:"), line
            url = line.split(" ", 1)[1]
            body = encode(ZJ, zj_rating())
            headers = signing.auth_headers("hall-test", "synthetic-secret", body)
            assert verdict(ZJ, upload_to(url, ZJ, {}, "K-1", headers, body=body)) == ("ok", None)
            assert get_json(url + "/_stats")["accepted"] == 1
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "province reference server" in err


def test_cli_rejects_bad_options(tmp_path: Path, capsys) -> None:
    db = str(tmp_path / "x.sqlite3")
    assert cli.main(["serve", "--profile", GBT, "--db", db, "--fail-rate", "2"]) == 2
    assert "fail_rate" in capsys.readouterr().err
    assert cli.main(["serve", "--profile", GBT, "--db", db, "--auth", "token"]) == 2
    assert "--token" in capsys.readouterr().err
    assert cli.main(["serve", "--profile", GBT, "--db", db, "--outage", "soon"]) == 2
    assert "START:SECONDS" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["serve", "--profile", "no-such-profile", "--db", db]) == 2
    assert cli.main(["serve", "--help"]) == 0
