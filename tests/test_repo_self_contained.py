"""The repository is self-contained: no code, test or doc reaches for a path outside it (a fresh
clone anywhere must work). Checks every tracked text file for absolute paths into the machine
this was written on and for parent-directory escapes to reference folders beside the clone."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# spelled in pieces so this file does not match itself
OUTSIDE = re.compile("|".join(("/" + "work/", r"\.\./" + r"shared\b", r"\.\./\." + r"library\b")))


def test_no_tracked_file_points_outside_the_repository():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    bad = []
    for name in files:
        p = ROOT / name
        if p.suffix in (".png", ".bin", ".mpy", ".ttc", ".xlsx") or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                bad.append(f"{name}:{i}: {line.strip()[:100]}")
    assert not bad, "paths outside the repository:\n" + "\n".join(bad)
