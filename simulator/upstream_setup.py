"""What each upstream profile needs in a generated hall, on both sides: the agent's `[upstream]`
lines and the reference province's options. For `national-sm2` that is two SM2 key pairs — the
hall's (it signs) and the platform's (it decrypts) — written into the run directory, each side
getting only its own private key and the other's public key. Everything is synthetic."""
from __future__ import annotations

import secrets
from pathlib import Path

from .province.sm2 import generate_keypair

APP_MARK = "DEMOHALL01"


def profile_setup(run_dir: Path, profile: str, area_code: str) -> tuple[list[str], list[str]]:
    """(hall.toml lines for [upstream], `hcp province serve` options) for `profile`."""
    if profile == "zj-offlinereport-form":
        return ['dept_number = "DEMO-DEPT-0001"'], []
    if profile == "sd-epoint-json":
        return [], ["--province-prefix", area_code[:2]]
    if profile != "national-sm2":
        return [], []
    keys = run_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    hall_private, hall_public = generate_keypair()
    platform_private, platform_public = generate_keypair()
    word = secrets.token_hex(12)
    files = {"hall-sm2.key": hall_private, "hall-sm2.pub": hall_public,
             "platform-sm2.key": platform_private, "platform-sm2.pub": platform_public,
             "app-word": word}
    for name, value in files.items():
        path = keys / name
        path.write_text(value + "\n")
        path.chmod(0o600)
    lines = [f'app_mark = "{APP_MARK}"', 'app_word_file = "keys/app-word"', "",
             "[upstream.sm2]", 'private_key_file = "keys/hall-sm2.key"',
             'platform_public_key_file = "keys/platform-sm2.pub"']
    args = ["--app-mark", APP_MARK, "--sm2-key", str(keys / "platform-sm2.key"),
            "--sm2-hall-public-key", str(keys / "hall-sm2.pub")]
    return lines, args + ["--app-word", word]
