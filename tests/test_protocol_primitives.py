"""CRC-32, COBS, HMAC and the replay window against published values and independent code."""
from __future__ import annotations

import binascii
import hashlib
import hmac as std_hmac
import zlib

import cobs.cobs as ref_cobs
import pytest
from hypothesis import given, strategies as st

from protocol import auth, cobs
from protocol.crc32 import crc32, crc32_into, crc32_table
from protocol.errors import ProtocolError
from protocol.replay import ReplayWindow, REPLAY_WINDOW


def test_crc32_check_value():
    assert crc32(b"123456789") == 0xCBF43926
    assert crc32_table(b"123456789") == 0xCBF43926


@given(st.binary(max_size=300), st.binary(max_size=50))
def test_crc32_table_matches_zlib_and_continues(a, b):
    assert crc32_table(a) == zlib.crc32(a)
    assert crc32_table(b, crc32_table(a)) == zlib.crc32(a + b) == crc32(b, crc32(a))


@given(st.binary(max_size=300))
def test_crc32_into_matches_zlib(data):
    out = bytearray(len(data) + 7)
    out[:len(data)] = data
    crc32_into(memoryview(out), len(data), out, len(data) + 2)
    assert int.from_bytes(out[len(data) + 2:len(data) + 6], "little") == zlib.crc32(data)


# RFC 4231 test cases 1-4, 6, 7 (full 32-byte HMAC-SHA-256) and 5 (truncated to 128 bits).
RFC4231 = [
    ("0b" * 20, b"Hi There".hex(),
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex(),
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("aa" * 20, "dd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    ("0102030405060708090a0b0c0d0e0f10111213141516171819", "cd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex(),
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ("aa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.".hex(),
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


@pytest.mark.parametrize("key,data,mac", RFC4231)
def test_hmac_rfc4231(key, data, mac):
    assert auth.hmac_sha256(bytes.fromhex(key), bytes.fromhex(data)).hex() == mac


def test_hmac_rfc4231_case5_truncated():
    got = auth.hmac_sha256(bytes.fromhex("0c" * 20), b"Test With Truncation")[:16]
    assert got.hex() == "a3b6167473100ee06e0c796c2955552b"


@given(st.binary(max_size=100), st.binary(max_size=300))
def test_hmac_matches_stdlib(key, msg):
    assert auth.hmac_sha256(key, msg) == std_hmac.new(key, msg, hashlib.sha256).digest()


def test_equal_is_exact():
    assert auth.equal(b"abcdefgh", b"abcdefgh")
    assert not auth.equal(b"abcdefgh", b"abcdefgi")
    assert not auth.equal(b"abc", b"abcd")


def test_session_key_binds_nonces_and_device():
    k = bytes(range(32))
    a = auth.session_key(k, b"1" * 8, b"2" * 8, 1)
    assert a != auth.session_key(k, b"1" * 8, b"3" * 8, 1)
    assert a != auth.session_key(k, b"1" * 8, b"2" * 8, 2)
    assert a == std_hmac.new(k, b"RL1 session" + b"1" * 8 + b"2" * 8 + (1).to_bytes(4, "big"),
                             hashlib.sha256).digest()


@given(st.one_of(st.binary(max_size=254), st.binary(min_size=250, max_size=254).map(
    lambda b: bytes(x or 1 for x in b))))
def test_cobs_matches_reference_package(data):
    enc = cobs.encode(data)
    assert enc == ref_cobs.encode(data)
    assert b"\x00" not in enc
    assert len(enc) == len(data) + 1
    assert cobs.decode(enc) == data


@pytest.mark.parametrize("raw,enc", [
    ("00", "0101"), ("0000", "010101"), ("11220033", "03112202 33".replace(" ", "")),
    ("11223344", "0511223344"), ("11000000", "0211010101"),
    ("01" * 254, "ff" + "01" * 254),
])
def test_cobs_known_encodings(raw, enc):
    assert cobs.encode(bytes.fromhex(raw)).hex() == enc


def test_stream_decoder_resyncs_after_garbage():
    f1, f2 = b"\x01\x02\x00\x03", b"hello"
    noise = bytes([0x05, 0xFF, 0x13])
    stream = noise + b"\x00" + cobs.wire(f1) + b"\x37\x00" + cobs.wire(f2)
    items = cobs.StreamDecoder().feed(stream)
    frames = [i for i in items if isinstance(i, bytes)]
    errors = [i for i in items if isinstance(i, ProtocolError)]
    assert frames == [f1, f2]
    assert [e.reason for e in errors] == ["bad_cobs", "bad_cobs"]


def test_stream_decoder_oversize_run_is_discarded_with_fixed_memory():
    dec = cobs.StreamDecoder()
    items = dec.feed(b"\x07" * 10_000 + b"\x00" + cobs.wire(b"ok"))
    assert [getattr(i, "reason", i) for i in items] == ["oversize", b"ok"]
    assert len(dec._buf) == cobs.MAX_ENCODED


@given(st.lists(st.binary(min_size=1, max_size=254), max_size=8), st.integers(1, 40))
def test_stream_decoder_any_chunking(frames, chunk):
    wire = b"".join(cobs.wire(f) for f in frames)
    dec = cobs.StreamDecoder()
    got = []
    for i in range(0, len(wire), chunk):
        got.extend(dec.feed(wire[i:i + chunk]))
    assert got == frames


def test_replay_window_accepts_reordered_once():
    w = ReplayWindow()
    for s in (1, 3, 2, 10, 5):
        w.check(s)
        w.mark(s)
    for s in (1, 2, 3, 5, 10):
        with pytest.raises(ProtocolError) as e:
            w.check(s)
        assert e.value.reason == "replay"
    w.check(4)
    w.mark(200)
    with pytest.raises(ProtocolError):
        w.check(200 - REPLAY_WINDOW)    # older than the window: rejected even though unseen
    w.check(200 - REPLAY_WINDOW + 1)


@given(st.lists(st.integers(0, 400), max_size=200))
def test_replay_window_never_accepts_twice(seqs):
    w = ReplayWindow()
    accepted = []
    for s in seqs:
        try:
            w.check(s)
        except ProtocolError:
            continue
        w.mark(s)
        accepted.append(s)
    assert len(accepted) == len(set(accepted))
    assert w.bitmap32() >= 0


def test_binascii_crc_is_what_the_device_uses():
    # MicroPython's binascii.crc32 is the same function; the table is only a fallback.
    assert binascii.crc32(b"123456789") == crc32(b"123456789")
