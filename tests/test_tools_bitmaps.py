"""Host-rendered Chinese bitmaps, the catalogue blob (SPEC §4.10) and its CONFIG chunks, with the
real CJK font (Debian fonts-wqy-zenhei) and the real protocol codec."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from conftest import require
from protocol import messages
from protocol.crc32 import crc32
from tools import bitmaps, screen_layout
from tools.catalogue_blob import catalogue_entries, load_catalogue

ROOT = Path(__file__).resolve().parent.parent
# the placeholder catalogue as shipped with the agent (a copy of the project's seed catalogue)
SEED = ROOT / "edge_agent" / "deploy" / "catalogue.seed-0.json"


def _font_or_skip() -> None:
    try:
        bitmaps.find_font_file()
    except bitmaps.FontMissing as exc:
        require(str(exc))


@pytest.fixture(scope="module")
def seed() -> dict:
    _font_or_skip()
    return json.loads(SEED.read_text(encoding="utf-8"))


def pixel(w: int, data: bytes, x: int, y: int) -> int:
    return data[y * ((w + 7) // 8) + x // 8] >> (7 - x % 8) & 1


def test_render_text_is_mono_hlsb_with_ink(seed: dict) -> None:
    w, h, data = bitmaps.render_text("谢谢", 16)
    assert h == 16 and 24 <= w <= 32
    assert len(data) == (w + 7) // 8 * h
    ink = sum(pixel(w, data, x, y) for x in range(w) for y in range(h))
    assert 20 < ink < w * h // 2
    # bit 7 is the leftmost pixel: a bitmap round-trips through PIL's "1" mode unchanged
    img = bitmaps.hlsb_to_image(w, h, data)
    assert img.getpixel((0, 0)) // 255 == pixel(w, data, 0, 0)
    assert bitmaps.image_to_hlsb(img) == (w, h, data)


def test_bitmap_strike_is_crisp_and_stable(seed: dict) -> None:
    # "一" at 12 px is one thin horizontal stroke in the hand-made strike (no grey smear)
    w, h, data = bitmaps.render_text("一", 12)
    rows = [sum(pixel(w, data, x, y) for x in range(w)) for y in range(h)]
    assert sorted(rows)[-1] >= 9 and sum(1 for r in rows if r) <= 2
    assert bitmaps.render_text("服务态度", 12) == bitmaps.render_text("服务态度", 12)


def test_missing_glyph_is_refused_not_drawn_as_a_box(seed: dict) -> None:
    with pytest.raises(ValueError, match="U\\+1F600"):
        bitmaps.render_text("好\U0001F600", 16)
    with pytest.raises(ValueError):
        bitmaps.render_text("", 16)


def test_font_missing_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(bitmaps.FONT_ENV, str(tmp_path / "nope.ttc"))
    with pytest.raises(bitmaps.FontMissing, match="fonts-wqy-zenhei"):
        bitmaps.find_font_file()


def test_fit_shrinks_never_cuts(seed: dict) -> None:
    maxw = screen_layout.LABEL_MAX_W
    w, h, data, how = bitmaps.fit_text("推诿扯皮、不予受理未说明理由", 12, maxw)
    assert how == "condensed" and w <= maxw and h == 12
    natural_ink = bitmaps.render_text("推诿扯皮、不予受理未说明理由", 12)
    nw, _, nd = natural_ink
    # OR-merging never removes ink from a row (every stroke keeps at least one pixel)
    for y in range(12):
        if any(pixel(nw, nd, x, y) for x in range(nw)):
            assert any(pixel(w, data, x, y) for x in range(w))
    w2, _, _, how2 = bitmaps.fit_text("业务不熟练、解答不清", 12, maxw)
    assert how2 == "punct" and w2 <= maxw
    assert bitmaps.fit_text("其他原因", 12, maxw)[3] == "natural"


def test_codes_and_blob_layout(seed: dict) -> None:
    blob = bitmaps.build_catalogue_blob(seed, 12)
    version, n, h = struct.unpack_from(">HBB", blob, 0)
    assert (version, n, h) == (seed["version"], len(seed["tags"]), 12)
    cat = bitmaps.parse_catalogue_blob(blob)
    by_tag = {t["tag"]: e for t, e in zip(seed["tags"], cat["entries"])}
    assert (by_tag["07"]["code_l4"], by_tag["07"]["code_l5"]) == (207, 107)
    assert (by_tag["01"]["code_l4"], by_tag["01"]["code_l5"]) == (201, 101)
    assert (by_tag["99"]["code_l4"], by_tag["99"]["code_l5"]) == (299, 199)
    for e in cat["entries"]:
        assert 0 < e["w"] <= screen_layout.LABEL_MAX_W
        assert len(e["bitmap"]) == (e["w"] + 7) // 8 * 12
    # the same catalogue gives the same bytes (the agent compares versions, devices compare CRCs)
    assert bitmaps.build_catalogue_blob(json.dumps(seed, ensure_ascii=False), 12) == blob


def test_blob_is_read_by_the_firmware_catalogue(seed: dict) -> None:
    pytest.importorskip("firmware.catalogue")
    from firmware.catalogue import Catalogue
    blob = bitmaps.build_catalogue_blob(seed, 12)
    c = Catalogue(blob)
    assert c.count == len(seed["tags"]) and c.version == seed["version"]
    ours = bitmaps.parse_catalogue_blob(blob)["entries"]
    for i, e in enumerate(ours):
        assert (c.code(i, 4), c.code(i, 5)) == (e["code_l4"], e["code_l5"])
        assert tuple(c.label(i)) == (e["w"], 12, e["bitmap"])


def test_catalogue_errors_name_the_problem(seed: dict) -> None:
    bad = dict(seed, codes={"5": {"prefix": "1"}})
    with pytest.raises(ValueError, match="codes\\['4'\\]"):
        bitmaps.build_catalogue_blob(bad, 12)
    dup = dict(seed, tags=seed["tags"] + [seed["tags"][0]])
    with pytest.raises(ValueError, match="used twice"):
        bitmaps.build_catalogue_blob(dup, 12)
    with pytest.raises(ValueError, match="label height"):
        bitmaps.build_catalogue_blob(seed, 16)   # 4 rows + footer do not fit 64 px
    with pytest.raises(ValueError, match="version"):
        bitmaps.build_catalogue_blob(dict(seed, version=0), 12)


def test_short_text_is_used_for_the_label(seed: dict) -> None:
    cat = load_catalogue(seed)
    cat = dict(cat, tags=[dict(cat["tags"][0], short="效率低")] + cat["tags"][1:])
    e = catalogue_entries(cat, 12)[0]
    assert e["text"] == "效率低" and e["fit"] == "natural"


def test_chunks_decode_and_reassemble(seed: dict) -> None:
    blob = bitmaps.build_catalogue_blob(seed, 12)
    chunks = bitmaps.chunk_catalogue(blob, seed["version"])
    assert len(chunks) == (len(blob) + messages.CONFIG_CHUNK - 1) // messages.CONFIG_CHUNK
    out = b""
    for i, c in enumerate(chunks):
        payload = messages.encode(messages.CONFIG, c)
        assert len(payload) <= messages.CONFIG_HEADER + messages.CONFIG_CHUNK
        d = messages.decode(messages.CONFIG, payload)
        assert d == c and d["index"] == i and d["count"] == len(chunks)
        assert d["total"] == len(blob) and d["crc"] == crc32(blob)
        out += d["data"]
    assert out == blob
    with pytest.raises(ValueError):
        bitmaps.chunk_catalogue(blob, seed["version"] + 1)


def test_staff_name_fits_invite(seed: dict) -> None:
    w, h, data = bitmaps.render_text("欧阳小明", 16)
    fields = {"invite_id": 7, "lifetime": 120, "staff_no": "A0107", "name_w": w, "name_h": h,
              "name_bitmap": data}
    assert messages.decode(messages.INVITE, messages.encode(messages.INVITE, fields)) == fields
