"""`hcp sim` against a running agent (`hcp agent run`): the devices come from the agent's
hall.toml (ids, windows, key files, pty paths), staff post cases over HTTP, citizens press, and
every accepted press is stored by the agent; a power cut and line noise on the way."""
from __future__ import annotations

import json

import pytest

from simulator import accounting, rundir, services
from simulator.cli import parse_levels, sim_main

pytestmark = pytest.mark.timeout(90)


def test_hcp_sim_against_the_agent(tmp_path):
    specs = rundir.make_devices(tmp_path, 2, "serial")
    # the province is not needed here: uploads wait and retry; we check the agent's store
    cfg = rundir.write_hall_config(tmp_path, specs, "http://127.0.0.1:9")
    agent = services.agent(cfg, tmp_path)
    try:
        url = agent.start()
        out = tmp_path / "sim.json"
        rc = sim_main(["--agent", url, "--config", str(cfg), "--duration", "8", "--arrival",
                       "2", "--faults", "power-cut,noise,clock-skew", "--seed", "5",
                       "--run-dir", str(tmp_path / "sim"), "--json", str(out)])
        assert rc == 0
        s = json.loads(out.read_text())
        assert s["devices"] == 2 and s["cases"] > 0 and s["presses"] > 0 and s["drained"]
        assert "power-cut A02" in s["faults"]
        view = accounting.agent_view(tmp_path / "agent.db")
        stored = set(view["ratings"])
        for d in s["per_device"]:      # every press a device showed as accepted is stored
            for r in d["accepted"]:
                assert f"{rundir.HALL_CODE}-{d['deviceId']}-{r}" in stored
        assert len(stored) >= s["presses"]
        # the device folders are real "flash": config, key, catalogue, journal
        root = tmp_path / "sim" / "devices" / "1001"
        assert {p.name for p in root.iterdir()} >= {"config.json", "device.key",
                                                    "catalogue.bin", "journal"}
    finally:
        agent.stop()


def test_hcp_sim_refuses_a_real_port_and_bad_options(tmp_path):
    specs = rundir.make_devices(tmp_path, 1, "serial")
    specs[0].port_path.write_text("not a symlink")      # stands in for a real /dev/tty*
    cfg = rundir.write_hall_config(tmp_path, specs, "http://127.0.0.1:9")
    assert sim_main(["--agent", "http://127.0.0.1:9", "--config", str(cfg),
                     "--duration", "1"]) == 2
    assert sim_main(["--agent", str(cfg), "--duration", "1"]) == 2      # listens on port 0
    assert sim_main(["--agent", "http://x", "--config", str(cfg), "--faults", "bogus"]) == 2
    assert parse_levels("1=1,5=3") == {1: 1.0, 5: 3.0}
    with pytest.raises(ValueError):
        parse_levels("6=1")
