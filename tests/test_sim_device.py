"""The simulator's virtual evaluator runs the repository's firmware (no copy), and its power
cuts are real: cut inside journal writes at random points, the device reboots from its journal
folder and every press it showed as accepted is still there."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

import firmware.app
import firmware.journal
from simulator import device as vdev
from simulator import rundir
from simulator.ptyport import PtyPort

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(60)


def test_simulator_loads_the_repository_firmware_and_holds_no_copy(tmp_path):
    assert Path(firmware.app.__file__).resolve() == ROOT / "firmware" / "app.py"
    assert vdev.App is firmware.app.App
    assert issubclass(vdev.TrackedJournal, firmware.journal.Journal)
    # a booted virtual device runs exactly those classes
    key = os.urandom(32)
    vdev.provision(tmp_path / "d", 1001, key, "T01", "serial")
    port = PtyPort(tmp_path / "tty1001")
    port.plug()
    d = vdev.VirtualDevice(tmp_path / "d", "A01", port)
    try:
        d.boot()
        assert type(d.app) is firmware.app.App
        assert type(d.app.journal).__mro__[1] is firmware.journal.Journal
        # the app's maintenance restart (board.restart) is a reboot from the journal folder
        first = d.app
        d.board.restart()
        assert d.step(time.monotonic()) and d.boots == 2 and d.app is not first
    finally:
        d.shutdown()
        port.close()
    # and simulator/ holds no firmware module, not even renamed
    fw_hashes = {hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (ROOT / "firmware").rglob("*.py") if p.stat().st_size > 200}
    for p in (ROOT / "simulator").rglob("*.py"):
        text = p.read_text(encoding="utf-8")
        assert hashlib.sha256(p.read_bytes()).hexdigest() not in fw_hashes, p
        assert "def sample_buttons" not in text and "class Flow" not in text, p
        assert "def _recover" not in text, p


def _run(d: vdev.VirtualDevice, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        d.step(time.monotonic())
        time.sleep(0.004)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_power_cut_mid_write_keeps_every_accepted_press(tmp_path, seed):
    """No agent: presses are unsolicited and stay in the journal. Cut inside the k-th next
    journal operation while pressing; after each reboot every accepted rseq is on flash."""
    vdev.provision(tmp_path / "d", 1001, os.urandom(32), "T01", "serial", None,
                   flow={"thanks_s": 0})
    port = PtyPort(tmp_path / "tty1001")
    port.plug()
    d = vdev.VirtualDevice(tmp_path / "d", "A01", port, seed=seed)
    d.off_s = 0.05
    try:
        d.boot()
        cuts = 0
        for round_ in range(4):
            d.power_cut(within_ops=1 + (seed + round_) % 3, grace_s=30)
            for i in range(6):
                up = d.press(1 + i % 3)
                _run(d, up - time.monotonic() + 0.12)
                if len(d.power_cuts) > cuts:
                    break
            assert len(d.power_cuts) == cuts + 1, "the armed cut fires in a next journal op"
            cuts += 1
            _run(d, 0.2)                       # off, then boots from its journal
            assert d.on
            j = d.app.journal
            accepted = [a.rseq for a in d.accepted]
            assert accepted == sorted(set(accepted))
            assert not accepted or j.next_rseq - 1 >= accepted[-1]
            for r in accepted:                 # nothing acked here: all still readable
                assert j.read(r) is not None, (r, d.power_cuts)
        assert d.boots == 1 + cuts and len(d.power_cuts) == cuts
    finally:
        d.shutdown()
        port.close()
