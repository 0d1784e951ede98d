"""SM2 on both sides against the published examples of GM/T 0003.5-2012 / GB/T 32918.5-2017
(Annex: signature of "message digest" and encryption of "encryption standard" on the recommended
curve, with the fixed k the standard gives), and against each other.

The agent signs and encrypts with snowland-smx (edge_agent/upstream/sm2.py); the reference
province verifies and decrypts with gmssl (simulator/province/sm2.py). Each is checked against the
standard's numbers on its own, so an encoding mistake cannot pass by cancelling out.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from edge_agent.upstream import sm2 as agent
from simulator.province import sm2 as province

D = "3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8"
PUBLIC = ("09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
          "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
K = int("59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21", 16)
SIGNER_ID = "1234567812345678"
R = "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
S = "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
C1 = ("04EBFC718E8D1798620432268E77FEB6415E2EDE0E073C0F4F640ECD2E149A73"
      "E858F9D81E5430A57B36DAAB8F950A3C64E6EE6A63094D99283AFF767E124DF0")
C3 = "59983C18F809E262923C53AEC295D30383B54E39D609D160AFCB1908D0BD8766"
C2 = "21886CA989CA9C7D58087307CA93092D651EFA"


def test_agent_signature_is_the_published_one():
    signer = agent.Signer(agent.load_private_key(D), SIGNER_ID, "raw")
    assert agent.public_from_private(D.lower()) == PUBLIC.lower()
    assert signer.sign(b"message digest", K).hex() == (R + S).lower()
    der = agent.Signer(D.lower(), SIGNER_ID, "der").sign(b"message digest", K)
    assert der[0] == 0x30 and bytes.fromhex(R) in der and bytes.fromhex(S) in der


def test_agent_ciphertext_is_the_published_one():
    ct = agent.Encryptor(PUBLIC.lower(), "C1C3C2").encrypt(b"encryption standard", K)
    assert ct.hex() == ("04" + C1 + C3 + C2).lower()
    ct = agent.Encryptor(PUBLIC.lower(), "C1C2C3").encrypt(b"encryption standard", K)
    assert ct.hex() == ("04" + C1 + C2 + C3).lower()


def test_province_verifies_and_decrypts_the_published_example():
    assert province.public_of(D.lower()) == PUBLIC.lower()
    raw = bytes.fromhex(R + S)
    assert province.verify(raw, b"message digest", PUBLIC.lower(), SIGNER_ID, "raw")
    assert not province.verify(raw, b"message digesT", PUBLIC.lower(), SIGNER_ID, "raw")
    assert not province.verify(raw, b"message digest", PUBLIC.lower(), "ALICE123@YAHOO.COM", "raw")
    published = bytes.fromhex("04" + C1 + C3 + C2)
    assert province.decrypt(published, D.lower(), "C1C3C2") == b"encryption standard"
    assert province.decrypt(published, D.lower(), "C1C2C3") is None          # wrong order
    assert province.decrypt(published[1:], D.lower(), "C1C3C2") is None      # no 04 prefix
    other, _ = province.generate_keypair()
    assert province.decrypt(published, other, "C1C3C2") is None              # wrong key


@pytest.mark.parametrize("order", agent.ORDERS)
@pytest.mark.parametrize("fmt", agent.SIGNATURE_FORMATS)
def test_each_side_reads_the_other_with_random_k(order, fmt):
    d, public = province.generate_keypair()
    text = ("[{\"projectNo\":\"SYN-0001\",\"name\":\"测试\"}]" * 50).encode("utf-8")
    ct = agent.Encryptor(public, order).encrypt(text)
    assert province.decrypt(ct, d, order) == text
    sig = agent.Signer(d, "hall-01@test", fmt).sign(b"20261121103000MARKword")
    assert province.verify(sig, b"20261121103000MARKword", public, "hall-01@test", fmt)
    assert not province.verify(sig, b"20261121103001MARKword", public, "hall-01@test", fmt)


def test_key_files_hex_and_errors_never_echo_the_key():
    assert agent.load_private_key("  " + D + "\n") == D.lower()
    assert agent.load_public_key("04" + PUBLIC) == PUBLIC.lower()
    for bad, loader in ((D[:-2], agent.load_private_key), ("Z" * 64, agent.load_private_key),
                        (PUBLIC[:-1] + "0", agent.load_public_key),
                        ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                         agent.load_private_key)):
        with pytest.raises(agent.SM2KeyError) as err:
            loader(bad)
        assert D[:16].lower() not in str(err.value).lower()
    with pytest.raises(agent.SM2KeyError, match="not a point on the SM2 curve"):
        agent.load_public_key(PUBLIC[:-1] + ("1" if PUBLIC[-1] != "1" else "2"))


def test_pem_keys_made_by_openssl(tmp_path):
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not installed")
    key = tmp_path / "hall.pem"
    made = subprocess.run([openssl, "genpkey", "-algorithm", "EC", "-pkeyopt",
                           "ec_paramgen_curve:SM2", "-out", str(key)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"this openssl cannot make SM2 keys: {made.stderr[-200:]!r}")
    pub = tmp_path / "hall.pub.pem"
    subprocess.run([openssl, "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    sec1 = tmp_path / "hall.sec1.pem"
    subprocess.run([openssl, "ec", "-in", str(key), "-out", str(sec1)], check=True,
                   capture_output=True)
    d = agent.load_private_key(key.read_text())
    assert agent.load_private_key(sec1.read_text()) == d
    public = agent.load_public_key(pub.read_text())
    assert public == agent.public_from_private(d)
    # the province reads the same files with its own DER walker
    assert province.load_private(key.read_text()) == d
    assert province.load_public(pub.read_text()) == public
    with pytest.raises(agent.SM2KeyError):
        agent.load_public_key(key.read_text())      # a private key where a public one belongs
