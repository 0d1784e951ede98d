"""Check characters and signing of the province reference server, against independent code.

The generators here (`synthetic_resident_id`, `synthetic_credit_code`) are the test helpers the
other province tests use. They are written differently from `simulator.province.idcodes` on
purpose (ISO 7064 recursion instead of a weight table; weights computed as 3^i mod 31), so the
two implementations check each other. Every number they make is obviously synthetic: resident
IDs are born on 1900-01-01, credit codes carry organisation code 00000000x.
"""
from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from simulator.province import idcodes, signing

CREDIT_SET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def iso7064_mod11_2(digits: str) -> str:
    """ISO 7064 MOD 11-2 check character by the standard's recursive (pure) method."""
    p = 0
    for d in digits:
        p = ((p + int(d)) * 2) % 11
    return "0123456789X"[(12 - p) % 11]


def synthetic_resident_id(seq: int = 1, area: str = "370000") -> str:
    """A valid-by-checksum resident ID for nobody: born 1900-01-01, sequence `seq`."""
    body = f"{area}19000101{seq % 1000:03d}"
    return body + iso7064_mod11_2(body)


def gb32100_check(first17: str) -> str:
    total = sum(CREDIT_SET.index(c) * pow(3, i, 31) for i, c in enumerate(first17))
    return CREDIT_SET[(31 - total % 31) % 31]


def synthetic_credit_code(serial: int = 1, kind: str = "11", area: str = "371400") -> str:
    """A valid-by-checksum credit code for no organisation: org code 00000000`serial`."""
    first17 = f"{kind}{area}{serial % 10**9:09d}"
    return first17 + gb32100_check(first17)


def wrong_last(value: str, charset: str) -> str:
    """Same number with a different (wrong) check character."""
    last = value[-1]
    return value[:-1] + next(c for c in charset if c != last)


def test_resident_id_check_matches_iso7064() -> None:
    rng = random.Random(7)
    for _ in range(500):
        body = f"{rng.choice(sorted(idcodes.PROVINCE_PREFIXES))}{rng.randrange(10**4):04d}" \
               f"19000101{rng.randrange(1000):03d}"
        assert idcodes.resident_id_check_char(body) == iso7064_mod11_2(body)
        assert idcodes.resident_id_valid(body + iso7064_mod11_2(body))


def test_resident_id_rejects_any_single_change() -> None:
    good = synthetic_resident_id(12)
    assert idcodes.resident_id_valid(good)
    for i in range(18):
        for c in "0123456789X":
            if c != good[i] and not (i < 17 and c == "X"):
                changed = good[:i] + c + good[i + 1:]
                assert not idcodes.resident_id_valid(changed), (i, c)


def test_resident_id_format_rules() -> None:
    assert not idcodes.resident_id_valid(synthetic_resident_id()[:17])  # 17 chars
    assert not idcodes.resident_id_valid(synthetic_resident_id(area="990000"))  # no province 99
    body = "37000019000230001"  # 30 February
    assert not idcodes.resident_id_valid(body + iso7064_mod11_2(body))
    # a lower-case x check character is accepted, as real systems do
    x_id = next(i for i in (synthetic_resident_id(s) for s in range(1000)) if i.endswith("X"))
    assert idcodes.resident_id_valid(x_id[:-1] + "x")


def test_credit_code_check_matches_independent() -> None:
    rng = random.Random(11)
    for _ in range(500):
        first17 = "".join(rng.choice("19Y")) + rng.choice("123") + "371400" + \
            "".join(rng.choice(CREDIT_SET) for _ in range(9))
        assert idcodes.credit_code_check_char(first17) == gb32100_check(first17)
        assert idcodes.credit_code_valid(first17 + gb32100_check(first17))


def test_credit_code_rejects_single_change_and_bad_chars() -> None:
    good = synthetic_credit_code(5)
    assert idcodes.credit_code_valid(good)
    for i in range(18):
        for c in CREDIT_SET:
            if c != good[i] and not (2 <= i < 8 and not c.isdigit()):
                assert not idcodes.credit_code_valid(good[:i] + c + good[i + 1:]), (i, c)
    assert not idcodes.credit_code_valid(good[:10] + "I" + good[11:])  # I is not in the set
    assert not idcodes.credit_code_valid(good.lower())


def test_masking() -> None:
    rid = synthetic_resident_id(3)
    masked = idcodes.mask_id(rid)
    assert masked == rid[:4] + "*" * 10 + rid[-4:]
    assert idcodes.mask_name("测试人") == "测**"


def test_area_codes() -> None:
    assert idcodes.area_code_valid("371400", (6,))
    assert idcodes.area_code_valid("150121001", (6, 9))
    assert not idcodes.area_code_valid("371400001", (6,))
    assert not idcodes.area_code_valid("991400", (6,))
    assert not idcodes.area_code_valid("37140A", (6,))


def test_sign_sha256_is_plain_hmac() -> None:
    body = "{\"a\": 1}".encode()
    expected = hmac.new(b"s3cret", b"app\n1700000000\nnonce123\n" + body,
                        hashlib.sha256).hexdigest()
    assert signing.sign("s3cret", "app", 1700000000, "nonce123", body) == expected
    assert signing.verify(expected.upper(), "s3cret", "app", "1700000000", "nonce123", body)
    assert not signing.verify(expected, "s3cret", "app", "1700000001", "nonce123", body)


def test_sign_sm3_is_real_sm3() -> None:
    from cryptography.hazmat.primitives import hashes
    digest = hashes.Hash(hashes.SM3())
    digest.update(b"abc")  # GB/T 32905 example 1
    assert digest.finalize().hex() == \
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    if "sm3" not in hashlib.algorithms_available:
        pytest.skip("hashlib has no sm3 here to cross-check the HMAC")
    expected = hmac.new(b"k", b"app\n1\nnonce123\nbody", lambda *a: hashlib.new("sm3", *a)
                        ).hexdigest()
    assert signing.sign("k", "app", 1, "nonce123", b"body", alg="sm3") == expected


def test_auth_headers_fresh_nonce_per_call() -> None:
    a = signing.auth_headers("app", "k", b"x", timestamp=5)
    b = signing.auth_headers("app", "k", b"x", timestamp=5)
    assert a[signing.HEADER_NONCE] != b[signing.HEADER_NONCE]
    assert a[signing.HEADER_SIGNATURE] == signing.sign("k", "app", 5, a[signing.HEADER_NONCE], b"x")
