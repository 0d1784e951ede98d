"""The agent pushes the reason-tag catalogue (CONFIG, SPEC §4.10) to a device holding another
version, over a real pty, and pushes it again when the device reports bad_config. The device
side assembles the chunks with the firmware's own Assembler."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from edge_agent.links import start_links, stop_links
from firmware import catalogue as fw_catalogue
from protocol import messages as m
from tests.agent_links_support import PtyPort, ScriptedDevice, write_links_config
from tests.agent_support import fast_tuning, running_agent, wait_for
from tests.conftest import require
from tools import bitmaps

SEED = Path(__file__).resolve().parent.parent / "edge_agent" / "deploy" / "catalogue.seed-0.json"


class CatalogueDevice(ScriptedDevice):
    """A scripted device that installs CONFIG chunks; it refuses the first complete set."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.assembler = fw_catalogue.Assembler()
        self.installed: fw_catalogue.Catalogue | None = None
        self.config_frames = 0
        self.refused_once = False

    def on_other(self, f, t: int, fields: dict) -> None:
        if t != m.CONFIG:
            return
        self.config_frames += 1
        self.send(self.seal(m.DACK, {"seq": self.session.rx.highest,
                                     "bitmap": self.session.rx.bitmap32()}))
        state, cat = self.assembler.add(fields)
        if state == fw_catalogue.INSTALLED:
            if not self.refused_once:
                self.refused_once = True
                self.assembler = fw_catalogue.Assembler()
                self.send(self.seal(m.ERROR, {"code": m.E_BAD_CONFIG, "ref_seq": f.seq}))
            else:
                self.installed = cat


def test_catalogue_pushed_to_a_device_with_another_version(tmp_path):
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))
    cat = json.loads(SEED.read_text(encoding="utf-8"))
    cat["version"] = 2                       # the device says it holds version 1
    (tmp_path / "cat.json").write_text(json.dumps(cat, ensure_ascii=False), encoding="utf-8")
    link_path = tmp_path / "ttyEVAL1001"
    cfg, keys = write_links_config(tmp_path, serial_port=link_path)
    text = cfg.read_text(encoding="utf-8").replace(
        'listen = "127.0.0.1:0"', 'listen = "127.0.0.1:0"\ncatalogue = "cat.json"')
    cfg.write_text(text, encoding="utf-8")

    async def scenario():
        port = PtyPort(link_path)
        dev = CatalogueDevice(1001, keys[1001])
        port.plug(dev)
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config)
            try:
                await wait_for(lambda: links[0].is_open, 5)
                dev.say_hello()
                dev.start()
                await wait_for(lambda: dev.installed is not None, 20)
                n_chunks = len(links[0].session.catalogue.chunks)
                assert dev.refused_once and dev.config_frames >= 2 * n_chunks
                assert dev.installed.version == 2 and dev.installed.count == len(cat["tags"])
                codes = {dev.installed.code(i, 4) for i in range(dev.installed.count)}
                assert 207 in codes and 299 in codes
            finally:
                await dev.stop()
                await stop_links(links)
        port.unplug()
    asyncio.run(scenario())
