"""Fuzz every parser that reads bytes from outside: whole RL1 frames, each message's payload
behind a good MAC, the serial line's COBS stream fed in arbitrary chunks, CONFIG chunk
assembly and the catalogue blob. On CPython with hypothesis; then one seeded corpus of each
runs under MicroPython too and must give the same outcome, input by input (MicroPython's struct
and bytes raise other exceptions than CPython's, so a parser can hold on one and not the other).
The MQTT client has its own fuzz in test_firmware_mqtt_client.py."""
from __future__ import annotations

import json
import random
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fw_parser_fuzz as pf
from firmware import catalogue as catmod
from protocol import cobs, frame as fr, messages as m
from protocol.crc32 import crc32

HERE = Path(__file__).resolve().parent
TYPES = sorted(m.NAMES)
SIGNABLE = [t for t in TYPES if t != m.HELLO_ACK]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def good_frames() -> list[bytes]:
    dev, ag = pf.sessions()
    recs = [m.Record(i + 1, 1795000000, 0, 1, 1 + i % 5, 0, (3,) if i % 5 > 2 else ())
            for i in range(10)]
    return [dev.seal(m.RECORDS, {"low": 1, "records": recs})[1],
            dev.seal(m.DACK, {"seq": 1, "bitmap": 1})[1],
            ag.seal(m.ACK, {"cum": 5, "sack": bytes(16)})[1],
            ag.seal(m.CANCEL, {"invite_id": 9})[1],
            ag.seal(m.CONFIG, {"cat_version": 2, "index": 0, "count": 1, "total": 3,
                               "crc": 0, "data": b"abc"})[1]]


def mutate(rng: random.Random, data: bytes, fix_crc: bool = False) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b[rng.randrange(len(b) + 1):0] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    if fix_crc and len(b) > 4:     # reach the checks after the CRC
        body = bytes(b[:-4])
        b = bytearray(body + crc32(body).to_bytes(4, "big"))
    return bytes(b)


def config_chunks(rng: random.Random) -> list[dict]:
    """CONFIG chunks of a real catalogue, then shuffled, duplicated or mangled."""
    tags = [(rng.randrange(1, 999), rng.randrange(1, 999), w, bytes(rng.randrange(256)
             for _ in range(((w + 7) // 8) * 12))) for w in (rng.randrange(0, 129) for _ in range(rng.randrange(0, 12)))]
    blob = catmod.build_blob(rng.randrange(1, 9), tags, 12)
    if rng.random() < 0.3:
        blob = mutate(rng, blob)
    chunks = catmod.chunks(blob) if len(blob) >= 2 else []
    out = []
    for c in chunks:
        c = dict(c)
        r = rng.random()
        if r < 0.1:
            c["data"] = mutate(rng, c["data"])
        elif r < 0.2:
            c["total"] = rng.randrange(0x10000)
        elif r < 0.3:
            c["crc"] = rng.randrange(1 << 32)
        elif r < 0.35:
            c["count"] = rng.randrange(1, 256)
            c["index"] = rng.randrange(c["count"])
        out.append(c)
        if rng.random() < 0.2:
            out.append(dict(c))
    rng.shuffle(out)
    return out


def corpus(seed: int, n: int) -> dict:
    rng = random.Random(seed)
    frames = good_frames()
    return {
        "frames": [mutate(rng, rng.choice(frames), fix_crc=rng.random() < 0.5) if i % 4
                   else rng.randbytes(rng.randrange(0, 260)) for i in range(n)],
        "payloads": [[t, rng.randbytes(rng.randrange(0, 250))] for t in
                     (rng.choice(TYPES) for _ in range(n))],
        "signed": [[t, rng.randbytes(rng.randrange(0, 200))] for t in
                   (rng.choice(SIGNABLE) for _ in range(n))],
        "cobs": [[c[a:b] for a, b in zip([0, len(c) // 3], [len(c) // 3, len(c)])]
                 for c in (mutate(rng, b"".join(cobs.wire(f) for f in rng.sample(frames, 2)))
                           for _ in range(n))],
        "config": [config_chunks(rng) for _ in range(n // 4)],
        "blobs": [mutate(rng, catmod.build_blob(1, [(1, 2, 16, b"\x55" * 24)], 12))
                  for _ in range(n)],
    }


# -- CPython, hypothesis ---------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_frames(data):
    pf.frame_outcome(data)


@FUZZ
@given(st.sampled_from(TYPES), st.binary(max_size=260))
def test_fuzz_every_payload(type, payload):
    assert pf.payload_outcome(type, payload) in ("ok", "err:bad_payload")


@FUZZ
@given(st.sampled_from(SIGNABLE), st.binary(max_size=240))
def test_fuzz_signed_payloads_reach_the_parser(type, payload):
    out = pf.signed_outcome(type, payload)
    allowed = ("ok:", "err:bad_payload", "err:oversize", "err:bad_length")
    if type == m.HELLO:        # a counter not above the last accepted one (SPEC §4.2)
        allowed += ("err:replay",)
    assert out.startswith(allowed), out


@FUZZ
@given(st.lists(st.binary(max_size=120), max_size=6))
def test_fuzz_serial_stream_in_chunks(chunks):
    pf.cobs_outcome(chunks)


@FUZZ
@given(st.integers(0, 2**32 - 1))
def test_fuzz_config_assembly(seed):
    pf.config_outcome(config_chunks(random.Random(seed)))


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_catalogue_blob(blob):
    pf.blob_outcome(blob)


def test_config_chunks_out_of_order_install():
    """The fuzz's generator is not vacuous: intact chunks in any order install."""
    rng = random.Random(5)
    blob = catmod.build_blob(3, [(i, i + 1, 40, bytes(60)) for i in range(20)], 12)
    chunks = catmod.chunks(blob)
    rng.shuffle(chunks)
    assert pf.config_outcome(chunks).endswith("installed20")


# -- both runtimes, one corpus -----------------------------------------------------------------

def _hexify(c: dict) -> dict:
    def conv(v):
        if isinstance(v, (bytes, bytearray)):
            return {"h": bytes(v).hex()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(c)


UNHEX = (
    "import binascii\n"
    "def unhex(v):\n"
    "    if isinstance(v, dict):\n"
    "        if 'h' in v and len(v) == 1:\n"
    "            return binascii.unhexlify(v['h'])\n"
    "        return {k: unhex(x) for k, x in v.items()}\n"
    "    if isinstance(v, list):\n"
    "        return [unhex(x) for x in v]\n"
    "    return v\n")


def test_same_outcomes_on_micropython(micropython):
    c = corpus(2024, 1200)
    want = pf.run_all(c)
    # the corpus reaches past the outer checks: payload errors and accepted frames both occur
    assert any(o.startswith("ok:") for o in want["signed"])
    assert any(o == "err:bad_payload" for o in want["signed"])
    assert any("installed" in o for o in want["config"]) and any("bad" in o for o in want["config"])
    assert len({o for o in want["frames"]}) > 5
    out = micropython.run(
        UNHEX + "import json, fw_parser_fuzz\n"
        "c = unhex(json.loads(open('/corpus.json').read()))\n"
        "print('OUT', json.dumps(fw_parser_fuzz.run_all(c)))\n",
        packages=("protocol", "firmware"), timeout=240,
        files={"/lib/fw_parser_fuzz.py": (HERE / "fw_parser_fuzz.py").read_text(),
               "/corpus.json": json.dumps(_hexify(c))})
    got = json.loads(out.split("OUT ", 1)[1].splitlines()[0])
    for key in want:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(want[key], got[key])) if a != b]
        assert not diff, f"{key}: CPython and MicroPython disagree, first: {diff[:3]}"
