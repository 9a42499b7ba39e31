"""Application icons for the packaged app, drawn with Pillow at build time.

From the tray art in ``assets/`` when it is there (the "running" look: the
disc shape filled green with the pulse glyph in white, as tray_app/tray/icons.py
draws it), else a simple built-in drawing, so a build never fails for want
of art. Writes into OUT_DIR:

    telemetry-tray.png           512 px, for Linux (.desktop Icon=) and docs
    hicolor/<N>x<N>/apps/telemetry-tray.png   16..512 px, freedesktop icon theme layout
    telemetry-tray.ico           16..256 px, the Windows executable's icon
    telemetry-tray.icns          16..1024 px, the macOS bundle's icon

Run: python packaging/make_icons.py OUT_DIR [--assets DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
NAME = "telemetry-tray"
FILL = (30, 150, 75)
INK = (255, 255, 255)
RIM = (20, 20, 20)
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
PNG_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
BASE = 1024


def _from_assets(assets: Path) -> Image.Image | None:
    shape, glyph = assets / "shape-disc.png", assets / "glyph-pulse.png"
    if not (shape.is_file() and glyph.is_file()):
        return None
    with Image.open(shape) as s, Image.open(glyph) as g:
        outer = s.convert("L").resize((BASE, BASE), Image.Resampling.LANCZOS)
        glyph_mask = g.convert("L").resize((BASE, BASE), Image.Resampling.LANCZOS)
    rim = BASE // 32
    inner = Image.new("L", (BASE, BASE), 0)
    inner.paste(outer.resize((BASE - 2 * rim, BASE - 2 * rim), Image.Resampling.LANCZOS), (rim, rim))
    img = Image.new("RGBA", (BASE, BASE), RIM + (255,))
    img.paste(Image.new("RGBA", (BASE, BASE), FILL + (255,)), (0, 0), inner)
    glyph_in = Image.new("L", (BASE, BASE), 0)
    glyph_in.paste(glyph_mask, (0, 0), inner)
    img.paste(Image.new("RGBA", (BASE, BASE), INK + (255,)), (0, 0), glyph_in)
    img.putalpha(outer)
    return img


def fallback() -> Image.Image:
    """A green disc with a white pulse line: recognisable, and needs no files."""
    img = Image.new("RGBA", (BASE, BASE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((8, 8, BASE - 8, BASE - 8), fill=RIM + (255,))
    d.ellipse((40, 40, BASE - 40, BASE - 40), fill=FILL + (255,))
    pts = [(180, 540), (380, 540), (450, 330), (560, 720), (640, 470), (700, 540), (844, 540)]
    d.line(pts, fill=INK + (255,), width=BASE // 12, joint="curve")
    return img


def base_image(assets: Path | None) -> tuple[Image.Image, str]:
    if assets is not None:
        img = _from_assets(assets)
        if img is not None:
            return img, f"art from {assets}"
    return fallback(), "built-in fallback drawing"


def write_icons(out_dir: Path, assets: Path | None = ROOT / "assets") -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    img, source = base_image(assets)
    written: dict[str, Path] = {}
    for size in PNG_SIZES:
        p = out_dir / "hicolor" / f"{size}x{size}" / "apps" / f"{NAME}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        img.resize((size, size), Image.Resampling.LANCZOS).save(p)
    written["png"] = out_dir / f"{NAME}.png"
    img.resize((512, 512), Image.Resampling.LANCZOS).save(written["png"])
    written["ico"] = out_dir / f"{NAME}.ico"
    img.save(written["ico"], sizes=[(s, s) for s in ICO_SIZES])
    written["icns"] = out_dir / f"{NAME}.icns"
    img.save(written["icns"])
    print(f"icons: {source} -> {out_dir}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Draw the app's .png/.ico/.icns icons.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--assets", type=Path, default=ROOT / "assets", help="tray art folder (default: assets/)")
    args = ap.parse_args(argv)
    write_icons(args.out_dir, args.assets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
