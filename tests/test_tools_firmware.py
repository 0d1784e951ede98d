"""`hcp firmware`: catalogue previews (real PNGs) and the reproducible .mpy build (real mpy-cross)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import require
from tools import bitmaps, firmware_cli, screen_layout
from tools.firmware_build import ENTRY_POINTS, firmware_version, sources

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = {"catalogue": "t", "version": 3, "tags": [
    {"tag": f"{i:02d}", "text": t} for i, t in enumerate(
        ["办理时间长、效率低", "排队等候时间长", "推诿扯皮、不予受理未说明理由", "服务态度差、不耐烦",
         "擅自离岗、窗口无人"], start=1)] + [{"tag": "99", "text": "其他原因"}],
    "codes": {"5": {"prefix": "1"}, "4": {"prefix": "2"}}}


@pytest.fixture()
def font() -> None:
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))


def test_preview_catalogue_writes_pages(font: None, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps(CATALOGUE, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "preview"
    assert firmware_cli.main(["preview-catalogue", "--catalogue", str(cat), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "203/103" in text and "condensed" in text     # tag 03 is too long: reported
    pages = sorted(out.glob("page-*.png"))
    assert [p.name for p in pages] == ["page-1.png", "page-2.png"]
    for p in pages + [out / "staff-name.png"]:
        img = Image.open(p)
        assert img.size == (screen_layout.SCREEN_W * 4, screen_layout.SCREEN_H * 4)
        assert img.convert("L").getextrema()[1] > 0      # something is drawn
    # page 2 holds 2 tags: rows 3 and 4 (y 26..51) are dark, the footer is drawn
    img = Image.open(out / "page-2.png").convert("L")
    assert img.crop((0, 26 * 4, 512, 52 * 4)).getextrema()[1] == 0
    assert img.crop((0, 52 * 4, 512, 256)).getextrema()[1] > 0


def test_preview_bad_catalogue_says_what(font: None, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "cat.json"
    cat.write_text("{not json", encoding="utf-8")
    assert firmware_cli.main(["preview-catalogue", "--catalogue", str(cat), "--out",
                              str(tmp_path / "o")]) == 1
    assert "JSON" in capsys.readouterr().err
    assert firmware_cli.main(["preview-catalogue", "--catalogue", str(tmp_path / "none.json"),
                              "--out", str(tmp_path / "o")]) == 1


def test_catalogue_blob_and_render_text(font: None, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps(CATALOGUE, ensure_ascii=False), encoding="utf-8")
    assert firmware_cli.main(["catalogue-blob", "--catalogue", str(cat), "--out",
                              str(tmp_path / "c.bin")]) == 0
    assert (tmp_path / "c.bin").read_bytes() == bitmaps.build_catalogue_blob(CATALOGUE, 12)
    capsys.readouterr()
    assert firmware_cli.main(["render-text", "张三", "--height", "12"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["w"], d["h"]) == bitmaps.render_text("张三", 12)[:2]
    assert bytes.fromhex(d["hlsb"]) == bitmaps.render_text("张三", 12)[2]


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_build_is_reproducible_and_complete(font: None, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "deeper" / "b"
    assert firmware_cli.main(["build", "--out", str(a)]) == 0
    assert firmware_cli.main(["build", "--out", str(b)]) == 0
    ta, tb = _tree(a), _tree(b)
    assert ta == tb                                   # same sources -> same bytes
    manifest = json.loads(ta["manifest.json"])
    assert manifest["version"] == firmware_version()
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(ta) - {"manifest.json"}
    for path, f in listed.items():
        assert f["sha256"] == hashlib.sha256(ta[path]).hexdigest() and f["size"] == len(ta[path])
    assert manifest["total_size"] == sum(f["size"] for f in manifest["files"])
    for rel in sources():
        if rel.parent.as_posix() == "firmware" and rel.name in ENTRY_POINTS:
            assert rel.name in listed                 # entry point stays source at the root
        else:
            assert rel.with_suffix(".mpy").as_posix() in listed
    assert not any(p.startswith("tests/") or "/test_" in p for p in listed)
    for path, data in ta.items():
        assert str(tmp_path).encode() not in data and str(ROOT).encode() not in data
    assert "phrases.bin" in listed
    # rebuilding over an earlier build replaces it; a folder that is not a build is refused
    assert firmware_cli.main(["build", "--out", str(a)]) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert firmware_cli.main(["build", "--out", str(other)]) == 1
    assert (other / "keep.txt").exists()
