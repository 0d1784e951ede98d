"""PNG previews of the reason-tag pages as the device shows them, for people to check by eye.

Pages are drawn from the *blob* (decoded as the device decodes it), so the preview shows exactly
the bytes that go out in CONFIG. The digits and page counter stand in for the firmware's 8×8
ASCII font (drawn here with the CJK font's ASCII glyphs; positions are the device's).
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from tools import screen_layout as L
from tools.bitmaps import fit_text, hlsb_to_image, render_text
from tools.catalogue_blob import parse_catalogue_blob

SCALE = 4
_ON = (120, 200, 255)   # SSD1306 modules are often blue or white on black; blue-ish reads well
_OFF = (0, 0, 0)


def _ascii(text: str, label_h: int) -> Image.Image:
    w, h, data = render_text(text, label_h)
    return hlsb_to_image(w, h, data)


def render_page(blob: bytes, page: int) -> Image.Image:
    """The 128×64 1-bit screen for page `page` (0-based) of the catalogue in `blob`."""
    cat = parse_catalogue_blob(blob)
    h = cat["label_h"]
    entries = cat["entries"]
    n_pages = L.pages(len(entries))
    if not 0 <= page < n_pages:
        raise ValueError(f"page {page} outside 0..{n_pages - 1}")
    screen = Image.new("1", (L.SCREEN_W, L.SCREEN_H), 0)
    for row, e in enumerate(entries[page * L.TAGS_PER_PAGE:(page + 1) * L.TAGS_PER_PAGE]):
        y = L.row_y(row, h)
        screen.paste(_ascii(str(row + 1), h), (0, y))
        screen.paste(hlsb_to_image(e["w"], h, e["bitmap"]), (L.LABEL_X, y))
    if n_pages > 1:
        y = L.row_y(L.TAGS_PER_PAGE, h)
        screen.paste(_ascii(str(L.NEXT_PAGE_BUTTON), h), (0, y))
        w, _, data = render_text(L.NEXT_PAGE_TEXT, h)
        screen.paste(hlsb_to_image(w, h, data), (L.LABEL_X, y))
        counter = _ascii(f"{page + 1}/{n_pages}", h)
        screen.paste(counter, (L.SCREEN_W - counter.width, y))
    return screen


def to_png(screen: Image.Image, path: Path, scale: int = SCALE) -> None:
    """Save a 1-bit screen scaled up (nearest neighbour, so pixels stay square) as an RGB PNG."""
    rgb = Image.new("RGB", screen.size, _OFF)
    rgb.paste(Image.new("RGB", screen.size, _ON), mask=screen.convert("L"))
    rgb.resize((screen.width * scale, screen.height * scale), Image.NEAREST).save(path)


def name_sample(name: str, staff_no: str = "") -> Image.Image:
    """The INVITE screen's staff line: name bitmap (16 px, ≤ 96 px wide, as the agent sends it)."""
    w, h, data, _ = fit_text(name, 16, 96)
    screen = Image.new("1", (L.SCREEN_W, L.SCREEN_H), 0)
    screen.paste(hlsb_to_image(w, h, data), (0, 0))
    if staff_no:
        screen.paste(_ascii(staff_no, 12), (0, 20))
    return screen


def write_previews(blob: bytes, out_dir: Path, staff_name: str = "张小明",
                   staff_no: str = "A0107") -> list[Path]:
    """page-1.png … page-N.png and staff-name.png in out_dir; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cat = parse_catalogue_blob(blob)
    paths = []
    for p in range(L.pages(len(cat["entries"]))):
        path = out_dir / f"page-{p + 1}.png"
        to_png(render_page(blob, p), path)
        paths.append(path)
    path = out_dir / "staff-name.png"
    to_png(name_sample(staff_name, staff_no), path)
    paths.append(path)
    return paths
