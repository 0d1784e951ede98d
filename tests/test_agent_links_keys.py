"""Device key files and start_links' handling of a device whose key can't be read."""
from __future__ import annotations

import asyncio
import os

import pytest

from edge_agent.links import start_links, stop_links
from edge_agent.links.keys import DeviceKeyError, load_device_key
from tests.agent_links_support import write_links_config
from tests.agent_support import fast_tuning, running_agent


def test_key_file_forms(tmp_path):
    key = os.urandom(32)
    raw, hexed, bad = tmp_path / "raw.key", tmp_path / "hex.key", tmp_path / "bad.key"
    raw.write_bytes(key)
    hexed.write_text(key.hex() + "\n")
    bad.write_text("00" * 10)
    assert load_device_key(str(raw)) == key
    assert load_device_key(str(hexed)) == key
    with pytest.raises(DeviceKeyError) as err:
        load_device_key(str(bad))
    assert "bad.key" in str(err.value) and "00" * 10 not in str(err.value)
    with pytest.raises(DeviceKeyError):
        load_device_key(str(tmp_path / "missing.key"))
    bad.write_text("ab" * 16)      # a 16-byte key in hex is 32 bytes long: still refused
    with pytest.raises(DeviceKeyError):
        load_device_key(str(bad))


def test_device_with_unreadable_key_is_left_out(tmp_path):
    cfg, _ = write_links_config(tmp_path, serial_port=tmp_path / "ttyNONE")
    os.remove(tmp_path / "keys" / "1001.key")

    async def scenario():
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config)
            try:
                assert links == []
                assert h.agent.gateway_for(1001) is None
            finally:
                await stop_links(links)
    asyncio.run(scenario())


def test_missing_port_is_retried_without_failing(tmp_path):
    cfg, _ = write_links_config(tmp_path, serial_port=tmp_path / "ttyNONE")

    async def scenario():
        async with running_agent(cfg, fast_tuning()) as h:
            links = await start_links(h.agent, h.config, reopen_s=0.05)
            try:
                assert len(links) == 1 and not links[0].is_open
                await asyncio.sleep(0.2)   # several retries; nothing raised, still closed
                assert not links[0].is_open and links[0].opens == 0
                # INVITE to a device without a port: the agent is told it is offline
                with pytest.raises(ConnectionError):
                    await links[0].send_invite(1001, 7, 60, "S001", "")
            finally:
                await stop_links(links)
    asyncio.run(scenario())
