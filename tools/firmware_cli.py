"""`hcp firmware ...`: build the device image and check what its screen will show.

  hcp firmware build --out DIR
  hcp firmware preview-catalogue --catalogue FILE --out DIR [--label-height 12] [--staff-name 张小明]
  hcp firmware catalogue-blob --catalogue FILE --out FILE [--label-height 12]
  hcp firmware render-text TEXT [--height 16] [--max-width N]

Exit codes: 0 ok, 1 failed (message says why and what to do), 2 usage.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools import screen_layout
from tools.hcp import parse_args


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hcp firmware", description="固件构建与屏幕预览 firmware build "
                                "and screen previews")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="编译固件 compile firmware/ + protocol/ to .mpy with manifest")
    b.add_argument("--out", required=True, help="output folder (replaced if it holds a build)")
    pc = sub.add_parser("preview-catalogue", help="原因页预览 PNG previews of the reason pages")
    pc.add_argument("--catalogue", required=True, help="catalogue JSON (e.g. seed-0.json)")
    pc.add_argument("--out", required=True, help="folder for page-N.png and staff-name.png")
    pc.add_argument("--label-height", type=int, default=screen_layout.DEFAULT_LABEL_H)
    pc.add_argument("--staff-name", default="张小明", help="sample staff name (synthetic)")
    pc.add_argument("--staff-no", default="A0107", help="sample staff number")
    cb = sub.add_parser("catalogue-blob", help="目录二进制 write the SPEC §4.10 catalogue blob")
    cb.add_argument("--catalogue", required=True)
    cb.add_argument("--out", required=True)
    cb.add_argument("--label-height", type=int, default=screen_layout.DEFAULT_LABEL_H)
    rt = sub.add_parser("render-text", help="文字点阵 print a text's MONO_HLSB bitmap as JSON")
    rt.add_argument("text")
    rt.add_argument("--height", type=int, default=16)
    rt.add_argument("--max-width", type=int, help="shrink (never cut) to this width")
    return p


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point for `hcp firmware`; returns the exit code."""
    args = parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    from tools.bitmaps import FontMissing
    from tools.firmware_build import BuildError
    try:
        return _dispatch(args)
    except FontMissing as exc:
        _err(str(exc))
        return 1
    except BuildError as exc:
        _err(f"构建失败 build failed: {exc}")
        return 1
    except (ValueError, OSError) as exc:
        _err(f"失败 failed: {exc}")
        return 1


def _fit_report(entries: list[dict]) -> None:
    for e in entries:
        note = {"natural": "", "punct": "  (标点半宽 punctuation half-width)",
                "condensed": "  (已压缩 condensed: consider a shorter \"short\" text)"}[e["fit"]]
        print(f"  {e['tag']:>3} → {e['code_l4']}/{e['code_l5']}  {e['w']:3d} px  {e['text']}{note}")


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "build":
        from tools.firmware_build import build
        out = Path(args.out)
        m = build(out)
        print(f"固件已构建 firmware {m['version']} built: {len(m['files'])} files, "
              f"{m['total_size']} bytes → {out}")
        print(f"清单 manifest: {out / 'manifest.json'}")
        return 0
    if args.cmd in ("preview-catalogue", "catalogue-blob"):
        from tools.catalogue_blob import build_catalogue_blob, catalogue_entries, load_catalogue
        cat = load_catalogue(Path(args.catalogue))
        entries = catalogue_entries(cat, args.label_height)
        blob = build_catalogue_blob(cat, args.label_height)
        print(f"目录 catalogue {cat.get('catalogue', '?')} v{cat['version']}: {len(entries)} tags, "
              f"blob {len(blob)} bytes, label height {args.label_height} px")
        _fit_report(entries)
        if args.cmd == "catalogue-blob":
            Path(args.out).write_bytes(blob)
            print(f"已写入 written: {args.out}")
            return 0
        from tools.catalogue_preview import write_previews
        paths = write_previews(blob, Path(args.out), args.staff_name, args.staff_no)
        print("预览 previews (128x64 ×4):")
        for p in paths:
            print(f"  {p}")
        return 0
    if args.cmd == "render-text":
        from tools.bitmaps import fit_text, render_text
        if args.max_width:
            w, h, data, how = fit_text(args.text, args.height, args.max_width)
        else:
            (w, h, data), how = render_text(args.text, args.height), "natural"
        print(json.dumps({"w": w, "h": h, "fit": how, "hlsb": data.hex()}))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
