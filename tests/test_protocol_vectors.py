"""RL1 test vectors: committed files match the codec, every vector passes under CPython and under
the real MicroPython runtime, and the wire bytes agree with an independent COBS implementation."""
from __future__ import annotations

import json
from pathlib import Path

import cobs.cobs as ref_cobs
import pytest

import vector_check
from tests import make_vectors

VECTOR_DIR = Path(__file__).resolve().parent.parent / "protocol" / "vectors"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))
REQUIRED = {"name", "valid", "device_key_hex", "nonce_device_hex", "nonce_agent_hex", "message",
            "frame_hex", "wire_hex"}


def load(p: Path) -> dict:
    return json.loads(p.read_text())


def test_committed_vectors_are_what_the_codec_produces():
    built = {v["name"]: v for v in make_vectors.build()}
    on_disk = {load(p)["name"]: load(p) for p in VECTORS}
    assert on_disk == json.loads(json.dumps(built)), \
        "protocol/vectors/ is stale: run `.venv/bin/python -m tests.make_vectors` and review the diff"


def test_vectors_cover_every_message_type_and_required_failures():
    vs = [load(p) for p in VECTORS]
    types = {v["message"]["fields"]["type"] for v in vs if v["valid"]}
    from protocol.messages import NAMES
    assert types == set(NAMES.values())
    errors = {v["error"] for v in vs if not v["valid"]}
    assert {"bad_crc", "bad_mac", "truncated", "oversize", "bad_version", "bad_flags",
            "replay", "bad_seq"} <= errors
    # SPEC §4.2 / §5.3: a replayed HELLO and an older counter are refused (both runtimes)
    assert {"hello_replayed", "hello_stale_counter", "hello_seq_nonzero",
            "hello_ack_seq_nonzero", "hello_without_counter"} <= {v["name"] for v in vs}
    ten = [v for v in vs if v["valid"] and len(v["message"]["fields"].get("records", [])) == 10]
    assert ten, "a RECORDS frame with 10 records"
    for v in vs:
        assert REQUIRED <= set(v), v["name"]
        assert (v["message"] is None) != v["valid"]
        assert v["valid"] or "error" in v


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_cpython(path):
    vector_check.check(load(path))


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_wire_decodes_with_reference_cobs(path):
    v = load(path)
    if not v["frame_hex"]:
        return   # line-noise vector: there is no frame
    wire = bytes.fromhex(v["wire_hex"])
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    assert ref_cobs.decode(wire[:-1]).hex() == v["frame_hex"]


def test_vectors_micropython(micropython):
    files = {"/lib/vector_check.py": (Path(vector_check.__file__)).read_text()}
    for p in VECTORS:
        files["/vectors/" + p.name] = p.read_text()
    out = micropython.run(
        "import os, json, vector_check\n"
        "names = sorted(os.listdir('/vectors'))\n"
        "for n in names:\n"
        "    with open('/vectors/' + n) as f:\n"
        "        v = json.load(f)\n"
        "    print(n, vector_check.check(v))\n"
        "print('checked', len(names))\n",
        files=files)
    assert f"checked {len(VECTORS)}" in out, out
