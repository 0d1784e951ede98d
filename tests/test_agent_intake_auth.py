"""Authenticated intake (edge_agent/intake_auth.py): only signed reports from the clients of
hall.toml are taken. Forged ones — no key, a wrong key, an altered body, a replayed or stale
timestamp, text/plain, a web page, a window the client may not report for — are refused with
nothing stored; every authenticated report is audited with its client's id; clients are managed
with `hcp agent client` while the agent runs."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import stat
import time
from pathlib import Path

import aiohttp

from edge_agent.intake_auth import MAX_SKEW_S, sign, string_to_sign
from edge_agent.intake_client import IntakeClient
from tests.agent_support import (BIZ, CLIENT_KEYS, QUEUE, RecordingGateway, case_body,
                                 running_agent, run_cli, wait_for, write_config)

ROOT = Path(__file__).resolve().parent.parent


async def _raw(url: str, data: bytes, headers: dict, method: str = "POST") -> tuple[int, dict,
                                                                                    dict]:
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url, data=data, headers=headers) as r:
            text = await r.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = {"text": text}
            return r.status, body, dict(r.headers)


def _signed(client: str, key: bytes, body: bytes, path: str = "/v1/cases",
            ts: float | None = None, ctype: str = "application/json") -> dict:
    """Headers made here from the documented scheme, with hashlib/hmac directly (not the
    agent's helper): the scheme in the README is what the agent checks."""
    t = str(int((time.time() if ts is None else ts) * 1000))
    text = f"HCP1-HMAC-SHA256\nPOST\n{path}\n{t}\n{hashlib.sha256(body).hexdigest()}"
    sig = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": ctype, "X-HCP-Client": client, "X-HCP-Timestamp": t,
            "X-HCP-Signature": sig}


def _body(project_no: str, **over) -> bytes:
    return json.dumps(case_body(project_no, **over), ensure_ascii=False).encode()


def test_forged_intake_is_refused_and_nothing_is_stored(tmp_path):
    gw = RecordingGateway()

    async def scenario():
        cfg = write_config(tmp_path, biz_windows='"A01"')      # test-biz: window A01 only
        async with running_agent(cfg, gateway=gw) as h:
            url = h.url + "/v1/cases"
            key = CLIENT_KEYS[BIZ]
            refused = []

            async def expect(status, error, data, headers, method="POST"):
                st, body, hdrs = await _raw(url, data, headers, method)
                assert (st, body.get("error")) == (status, error), (st, body)
                assert not any(k.lower().startswith("access-control-") for k in hdrs), hdrs
                refused.append(error)
                return body

            b = _body("P-FORGED-1")
            # no credentials at all (what a web page or a stray script sends)
            await expect(401, "missing_credentials", b, {"Content-Type": "application/json"})
            # a client id hall.toml does not know
            await expect(401, "unknown_client", b, _signed("intruder", key, b))
            # the right id with a wrong key; a signature that is not even hex
            await expect(401, "bad_signature", b, _signed(BIZ, bytes(32), b))
            await expect(401, "bad_signature", b, {**_signed(BIZ, key, b),
                                                   "X-HCP-Signature": "签名".encode().decode(
                                                       "latin-1")})
            # signed, then altered on the way: another projectNo in the body
            h2 = _signed(BIZ, key, b)
            await expect(401, "bad_signature", _body("P-FORGED-2"), h2)
            # signed for another path
            await expect(401, "bad_signature", b, _signed(BIZ, key, b, path="/v1/queue/events"))
            # a timestamp outside ±300 s (a request captured long ago)
            await expect(401, "stale_timestamp", b,
                         _signed(BIZ, key, b, ts=time.time() - MAX_SKEW_S - 60))
            # text/plain: what a browser may send without a CORS preflight
            await expect(415, "unsupported_media_type", b, _signed(BIZ, key, b,
                                                                   ctype="text/plain"))
            # a browser (Origin header), even with valid credentials
            await expect(403, "browser_not_allowed", b,
                         {**_signed(BIZ, key, b), "Origin": "http://example.invalid"})
            # a body over the limit is not even read
            big = b" " * (17 * 1024)
            await expect(413, "body_too_large", big, _signed(BIZ, key, big))
            # a business system on the queue endpoint
            e = json.dumps({"eventId": "E1", "type": "issued", "ticket": "T1",
                            "at": "2026-11-21 10:00:00"}).encode()
            st, body, _ = await _raw(h.url + "/v1/queue/events", e,
                                     _signed(BIZ, key, e, path="/v1/queue/events"))
            assert (st, body["error"]) == (403, "wrong_endpoint")
            # a window this client may not report for
            other = _body("P-FORGED-A02", window="A02")
            body = await expect(403, "window_not_allowed", other, _signed(BIZ, key, other))
            assert body["fields"][0]["field"] == "window"
            assert h.q("SELECT COUNT(*) FROM cases") == [(0,)]
            assert gw.invites == [] and h.q("SELECT COUNT(*) FROM invitations") == [(0,)]
            # a browser's CORS preflight gets nothing that would let a page post
            st, _, hdrs = await _raw(url, b"", {"Origin": "http://example.invalid",
                                                "Access-Control-Request-Method": "POST"},
                                     method="OPTIONS")
            assert st == 405 and not any(k.lower().startswith("access-control-") for k in hdrs)

            # the genuine request is taken — once: the same signed request again is a replay
            good = _signed(BIZ, key, b)
            st, body, _ = await _raw(url, b, good)
            assert st == 201 and body["created"], body
            await expect(401, "replayed", b, good)
            assert h.q("SELECT project_no, client_id FROM cases") == [("P-FORGED-1", BIZ)]
            assert len(gw.invites) == 1

            # the audit: every authenticated report, with the client's id; never the body
            audit = h.q("SELECT client_id, endpoint, status, outcome, ref FROM intake_audit"
                        " ORDER BY id")
            assert audit == [(BIZ, "queue", 403, "wrong_endpoint", None),
                             (BIZ, "cases", 403, "window_not_allowed", "P-FORGED-A02"),
                             (BIZ, "cases", 201, "created", "P-FORGED-1")], audit
            # refusals are counted for the technician
            status, text = await _get_text(h.url + "/metrics")
            for reason in ("missing_credentials", "unknown_client", "bad_signature",
                           "stale_timestamp", "unsupported_media_type", "replayed"):
                assert f'hcp_intake_refused_total{{reason="{reason}"}}' in text, reason
            assert f'hcp_intake_reports_total{{client="{BIZ}",endpoint="cases",status="201"}} 1' \
                in text
    asyncio.run(scenario())


async def _get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.text()


def test_replay_is_refused_after_an_agent_restart(tmp_path):
    """The signatures of accepted reports live in the audit table: a restarted agent still
    refuses a request captured before the restart."""
    cfg = write_config(tmp_path)
    b = _body("P-RESTART-1")
    headers = _signed(BIZ, CLIENT_KEYS[BIZ], b)

    async def first():
        async with running_agent(cfg) as h:
            st, body, _ = await _raw(h.url + "/v1/cases", b, headers)
            assert st == 201, body

    async def second():
        async with running_agent(cfg) as h:
            st, body, _ = await _raw(h.url + "/v1/cases", b, headers)
            assert (st, body["error"]) == (401, "replayed")
            # a fresh signature of the same report is a normal, idempotent duplicate
            st, body, _ = await _raw(h.url + "/v1/cases", b, _signed(BIZ, CLIENT_KEYS[BIZ], b))
            assert st == 200 and body["created"] is False
            assert h.q("SELECT COUNT(*) FROM cases") == [(1,)]
    asyncio.run(first())
    asyncio.run(second())


def test_rate_limit_per_client(tmp_path):
    cfg = write_config(tmp_path)
    text = cfg.read_text().replace("rate_per_min = 6000", "rate_per_min = 60", 1)
    cfg.write_text(text)

    async def scenario():
        async with running_agent(cfg) as h:
            answers = []
            for i in range(14):
                st, body = await h.post_case(case_body(f"P-RATE-{i:02d}", n=i + 1))
                answers.append(st)
            # a burst of 10 (a sixth of the minute's 60, at least 10), then 429 + Retry-After
            assert answers[:10] == [201] * 10 and set(answers[10:]) == {429}, answers
            data, headers = h.biz.encode("/v1/cases", case_body("P-RATE-X"))
            st, body, hdrs = await _raw(h.url + "/v1/cases", data, headers)
            assert st == 429 and int(hdrs["Retry-After"]) >= 1
            assert h.q("SELECT COUNT(*) FROM cases") == [(10,)]
            # another client has its own budget
            st, _ = await h.post_event({"eventId": "E-RATE", "type": "issued", "ticket": "T1",
                                        "at": "2026-11-21 10:00:00"})
            assert st == 201
    asyncio.run(scenario())


def test_signature_scheme_matches_the_readme_example():
    """The README's worked example is computed by the agent's own code."""
    readme = (ROOT / "edge_agent" / "README.md").read_text(encoding="utf-8")
    m = re.search(r"X-HCP-Signature: ([0-9a-f]{64})", readme)
    assert m, "README shows an example signature"
    key = bytes.fromhex(re.search(r"key \(hex\): ([0-9a-f]{64})", readme).group(1))
    body = re.search(r"body: (\{.*\})", readme).group(1).encode()
    ts = re.search(r"X-HCP-Timestamp: (\d+)", readme).group(1)
    assert sign(key, "POST", "/v1/cases", ts, body) == m.group(1)
    assert string_to_sign("POST", "/v1/cases", ts, body).decode() in readme.replace("\\n", "\n")


def test_client_add_list_remove_with_a_running_agent(tmp_path):
    cfg = write_config(tmp_path)

    async def scenario():
        async with running_agent(cfg) as h:
            r = run_cli("client", "add", "erp-2", "--windows", "A01,A02", "--config", str(cfg))
            assert r.returncode == 0, r.stderr
            key = re.search(r"^([0-9a-f]{64})$", r.stdout, re.M).group(1)
            kf = tmp_path / "clients" / "erp-2.key"
            assert stat.S_IMODE(kf.stat().st_mode) == 0o600
            assert kf.read_text().strip() == key
            assert 'id = "erp-2"' in cfg.read_text() and key not in cfg.read_text()
            erp = IntakeClient(h.url, "erp-2", bytes.fromhex(key))
            # the running agent picks the new client up from hall.toml
            await wait_for(lambda: _accepted(erp, "P-ERP-1"), timeout=10, interval=0.3)
            st, body = await erp.post_case(case_body("P-ERP-2", window="A03"))
            assert st == 403 and body["error"] == "window_not_allowed"
            r = run_cli("client", "list", "--json", "--config", str(cfg))
            rows = {x["id"]: x for x in json.loads(r.stdout)}
            assert rows["erp-2"]["windows"] == "A01,A02" and rows["erp-2"]["reports24h"] >= 2
            assert key not in r.stdout
            # adding it again is refused; the key is never shown again
            r = run_cli("client", "add", "erp-2", "--all-windows", "--config", str(cfg))
            assert r.returncode == 1 and key not in r.stdout + r.stderr
            r = run_cli("client", "remove", "erp-2", "--config", str(cfg))
            assert r.returncode == 0 and not kf.exists()
            assert "erp-2" not in cfg.read_text()
            # removed: refused from now on, by the same running agent
            await wait_for(lambda: _refused(erp, "P-ERP-3"), timeout=10, interval=0.3)
            r = run_cli("check-config", "--config", str(cfg))
            assert r.returncode == 0
            assert h.q("SELECT client_id FROM cases WHERE project_no = 'P-ERP-1'") == \
                [("erp-2",)]
    asyncio.run(scenario())


async def _accepted(client: IntakeClient, project_no: str) -> bool:
    st, _ = await client.post_case(case_body(project_no))
    return st == 201


async def _refused(client: IntakeClient, project_no: str) -> bool:
    st, body = await client.post_case(case_body(project_no))
    return st == 401 and body["error"] == "unknown_client"


def test_client_key_file_must_be_private(tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "clients" / f"{QUEUE}.key").chmod(0o644)
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode == 2 and "chmod 600" in r.stderr
    assert CLIENT_KEYS[QUEUE].hex() not in r.stderr + r.stdout
