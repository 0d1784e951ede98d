"""Hall configuration: a good file loads; a bad one names the key and exits 2."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.cli import main
from edge_agent.config import ConfigError, load_config
from tests.agent_support import PRIVACY_KEY, ROOT, run_cli, write_config


def test_example_config_is_valid(tmp_path, capsys):
    # the example points at secret files; provide synthetic ones next to a copy
    text = (ROOT / "edge_agent/deploy/hall.example.toml").read_text(encoding="utf-8")
    for name in ("broker-password", "upstream-secret", "privacy.key"):
        (tmp_path / name).write_text(PRIVACY_KEY if name == "privacy.key" else "synthetic-secret")
        text = text.replace(f"/etc/hcp/secrets/{name}", str(tmp_path / name))
    p = tmp_path / "hall.toml"
    p.write_text(text, encoding="utf-8")
    (tmp_path / "clients").mkdir()
    for cid in ("erp-test", "queue-test"):
        kf = tmp_path / "clients" / f"{cid}.key"
        kf.write_text(PRIVACY_KEY + "\n")          # 64 synthetic hex digits
        kf.chmod(0o600)
    seed = ROOT / "edge_agent/deploy/catalogue.seed-0.json"
    (tmp_path / seed.name).write_bytes(seed.read_bytes())
    cfg = load_config(p)
    assert cfg.catalogue_path == str(tmp_path / seed.name)
    assert cfg.hall.hall_code == "TEST01"
    assert [d.id for d in cfg.devices] == [1001, 1002, 1003]
    assert cfg.device(1003).role == "waiting_area" and cfg.device(1003).window is None
    assert [(c.id, c.kind) for c in cfg.clients] == [("erp-test", "business"),
                                                    ("queue-test", "queue")]
    assert [w.unsolicited for w in cfg.windows] == ["keep", "keep"]
    assert cfg.invite_lifetime_s == 120 and cfg.binding_window_s == 600
    assert cfg.upstream.auth == "hmac" and cfg.upstream.app_secret == "synthetic-secret"
    assert cfg.privacy_key == bytes.fromhex(PRIVACY_KEY)
    assert main(["check-config", "--config", str(p)]) == 0
    assert "config OK" in capsys.readouterr().out


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    p = write_config(tmp_path)
    text = p.read_text(encoding="utf-8")
    assert old in text, old
    p.write_text(text.replace(old, new, 1), encoding="utf-8")
    return p


@pytest.mark.parametrize("old,new,key", [
    ('hall_code = "T01"', 'hall_code = "T 01"', "hall.hall_code"),
    ('area_code = "371402"', 'area_code = "3714"', "hall.area_code"),
    ('window = "A01"', 'window = "B99"', "devices[0].window"),
    ('id = 1001', 'id = 1002', "devices[1].id"),
    ('id = 1001', 'id = -5', "devices[0].id"),
    ('link = "serial"', 'link = "bluetooth"', "devices[0].link"),
    ('profile = "gbt39046-json"', 'profile = "bj-json"', "upstream.profile"),
    ('auth = "none"', 'auth = "hmac"', "upstream.app_id"),
    ('auth = "none"', 'auth = "token"', "upstream.token"),
    ('url = "http://127.0.0.1:9/"', 'url = "ftp://x"', "upstream.url"),
    ('timeout_s = 2', 'timeout_s = "2"', "upstream.timeout_s"),
    ('invite_lifetime_s = 120', 'invite_lifetime_s = 0', "agent.invite_lifetime_s"),
    (f'key = "{PRIVACY_KEY}"', 'key = "abc"', "privacy.key"),
    (f'key = "{PRIVACY_KEY}"', 'key_file = "missing.key"', "privacy.key_file"),
    ('[alerts]\n', '[alerts]\nmqtt_topic = "hcp/alerts"\n', "alerts.mqtt_topic"),
    ('[hall]', '[hal]', "hall"),
    ('unsolicited = "keep"', 'unsolicited = "guess"', "binding.unsolicited"),
    ('reference_max_age_s = 86400', 'reference_max_age_s = 5', "binding.reference_max_age_s"),
    ('window = "A01"', 'role = "waiting_area"\nwindow = "A01"', "devices[0].window"),
    ('window = "A01"', 'role = "lobby"', "devices[0].role"),
    ('window = "A01"', 'link2 = "x"', "devices[0].window"),
    ('kind = "business"', 'kind = "erp"', "clients[0].kind"),
    ('windows = ["*"]', 'windows = ["B99"]', "clients[0].windows"),
    ('windows = ["*"]', 'windows = []', "clients[0].windows"),
    ('id = "test-queue"', 'id = "test-biz"', "clients[1].id"),
    ('id = "test-biz"', 'id = "biz one"', "clients[0].id"),
    ('key_file = "clients/test-biz.key"', 'key_file = "clients/none.key"',
     "clients[0].key_file"),
    ('name = "测试大厅（虚构）"', 'name = "测试大厅', "(syntax)"),
])
def test_bad_config_names_key(tmp_path, capsys, old, new, key):
    p = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert err.value.key == key
    assert main(["check-config", "--config", str(p)]) == 2
    assert key in capsys.readouterr().err


def test_bad_privacy_key_is_not_echoed(tmp_path, capsys):
    secret_like = "zz" * 32
    p = _broken(tmp_path, f'key = "{PRIVACY_KEY}"', f'key = "{secret_like}"')
    assert main(["check-config", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "privacy.key" in err and secret_like not in err


def test_check_config_subprocess_exit_code(tmp_path):
    p = _broken(tmp_path, 'window = "A01"', 'window = "B99"')
    r = run_cli("check-config", "--config", str(p))
    assert r.returncode == 2
    assert "devices[0].window" in r.stderr and "B99" in r.stderr
    r = run_cli("check-config", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_relative_paths_resolve_next_to_config(tmp_path):
    cfg = load_config(write_config(tmp_path))
    assert cfg.storage == str(tmp_path / "agent.db")
    assert cfg.devices[0].key_file == str(tmp_path / "keys/1001.key")
    assert re.fullmatch(r"127\.0\.0\.1", cfg.listen_host) and cfg.listen_port == 0


def test_unusable_catalogue_names_the_key(tmp_path):
    p = write_config(tmp_path)
    text = p.read_text(encoding="utf-8").replace("[agent]\n", '[agent]\ncatalogue = "nope.json"\n', 1)
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "agent.catalogue" and "nope.json" in str(e.value)


def test_check_config_names_what_a_profile_needs(tmp_path, capsys):
    from tests.agent_support import APP_WORD, NationalKeys
    bare = write_config(tmp_path, profile="national-sm2", auth="sm2", name="bare.toml")
    assert main(["check-config", "--config", str(bare)]) == 2
    err = capsys.readouterr().err
    for key in ("upstream.app_mark", "app_word", "sm2.private_key_file",
                "sm2.platform_public_key_file"):
        assert key in err, err
    keys = NationalKeys(tmp_path)
    good = write_config(tmp_path, profile="national-sm2", auth="sm2",
                        extra_upstream=keys.agent_config(cipher_encoding="base64"))
    assert main(["check-config", "--config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "needs:" in out and "sm2.private_key_file" in out and "✓" in out
    assert "service → POST http://127.0.0.1:9/hcp/projectSubmit" in out
    assert "as base64" in out and "records per request: 20" in out
    assert APP_WORD not in out and keys.hall_private not in out
    # the envelope is this profile's only auth; other profiles cannot use it
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, profile="national-sm2", auth="hmac",
                                 extra_upstream=keys.agent_config(), name="h.toml"))
    assert e.value.key == "upstream.auth"
    zj = write_config(tmp_path, profile="zj-offlinereport-form", name="zj.toml")
    with pytest.raises(ConfigError) as e:
        load_config(zj)
    assert e.value.key == "upstream.dept_number" and "proDepartCode" in e.value.problem


@pytest.mark.parametrize("extra,key", [
    ('service_number = "T01"', "upstream.service_number"),
    ("max_in_flight = 0", "upstream.max_in_flight"),
    ("pf = 7", "upstream.pf"),
    ("batch_size = 2", "upstream.batch_size"),          # gbt39046-json: one record a request
    ('province_prefix = "3"', "upstream.province_prefix"),
    ("area_code_length = 8", "upstream.area_code_length"),
    ('rating_path = "evaluate"', "upstream.rating_path"),
])
def test_bad_upstream_settings_name_the_key(tmp_path, extra, key):
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, extra_upstream=extra))
    assert e.value.key == key


def test_unusable_sm2_key_file_is_named_not_echoed(tmp_path):
    from tests.agent_support import NationalKeys
    keys = NationalKeys(tmp_path)
    secret = keys.hall_private[:-1] + "Z"
    (tmp_path / "keys/broken.key").write_text(secret)
    p = write_config(tmp_path, profile="national-sm2", auth="sm2",
                     extra_upstream=keys.agent_config(private_key_file="keys/broken.key"))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "upstream.sm2.private_key_file"
    assert secret not in str(e.value) and "broken.key" in str(e.value)
    p = write_config(tmp_path, profile="national-sm2", auth="sm2", extra_upstream=keys.agent_config(
        platform_public_key_file="keys/hall-sm2.key"))      # a private key where a public one goes
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert e.value.key == "upstream.sm2.platform_public_key_file"
