"""Source art for the tray icon: writes the shape and glyph masks in this folder.

Each PNG is a 256x256 grayscale mask (white = ink), drawn at 1024 px and
downsampled, so the app can colour and scale it to any size with Pillow
(see tray_app/tray/icons.py). Strokes are at least 1/8 of the icon wide so
the glyphs keep two pixels at 16 px. Run: python assets/make_art.py
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
BIG = 1024
OUT = 256


def canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("L", (BIG, BIG), 0)
    return img, ImageDraw.Draw(img)


def save(img: Image.Image, name: str) -> None:
    img.resize((OUT, OUT), Image.Resampling.LANCZOS).save(HERE / name, optimize=True)


def shapes() -> None:
    img, d = canvas()
    d.ellipse((8, 8, BIG - 8, BIG - 8), fill=255)
    save(img, "shape-disc.png")

    # warning: a triangle with rounded corners (polygon + round joins)
    img, d = canvas()
    r = 90
    pts = [(BIG / 2, 40 + r), (BIG - 20 - r, BIG - 60 - r), (20 + r, BIG - 60 - r)]
    d.polygon(pts, fill=255)
    d.line(pts + [pts[0]], fill=255, width=2 * r, joint="curve")
    for x, y in pts:
        d.ellipse((x - r, y - r, x + r, y + r), fill=255)
    save(img, "shape-triangle.png")

    # error: an octagon, like a stop sign
    img, d = canvas()
    c, rad = BIG / 2, BIG / 2 - 8
    pts = [(c + rad * math.cos(math.radians(22.5 + 45 * i)),
            c + rad * math.sin(math.radians(22.5 + 45 * i))) for i in range(8)]
    d.polygon(pts, fill=255)
    save(img, "shape-octagon.png")


def glyphs() -> None:
    w = 150  # stroke width at 1024 px: ~2.3 px at 16 px

    img, d = canvas()  # running: a pulse line
    pts = [(170, 560), (340, 560), (440, 330), (590, 720), (690, 480), (854, 480)]
    d.line(pts, fill=255, width=w - 20, joint="curve")
    for x, y in (pts[0], pts[-1]):
        d.ellipse((x - (w - 20) / 2, y - (w - 20) / 2, x + (w - 20) / 2, y + (w - 20) / 2), fill=255)
    save(img, "glyph-pulse.png")

    img, d = canvas()  # paused: two bars
    d.rounded_rectangle((330, 270, 330 + w, 754), radius=30, fill=255)
    d.rounded_rectangle((694 - w, 270, 694, 754), radius=30, fill=255)
    save(img, "glyph-pause.png")

    img, d = canvas()  # degraded: "!" (sits low, inside the triangle)
    d.rounded_rectangle((512 - w / 2, 330, 512 + w / 2, 640), radius=40, fill=255)
    d.ellipse((512 - w / 2 - 5, 700, 512 + w / 2 + 5, 860), fill=255)
    save(img, "glyph-exclaim.png")

    img, d = canvas()  # error: a cross
    a, b = 320, 704
    d.line([(a, a), (b, b)], fill=255, width=w)
    d.line([(a, b), (b, a)], fill=255, width=w)
    save(img, "glyph-cross.png")

    img, d = canvas()  # starting: three dots
    r = 80
    for x in (272, 512, 752):
        d.ellipse((x - r, 512 - r, x + r, 512 + r), fill=255)
    save(img, "glyph-dots.png")

    img, d = canvas()  # not recording ("don't record"): a stop square
    d.rounded_rectangle((352, 352, 672, 672), radius=40, fill=255)
    save(img, "glyph-stop.png")


if __name__ == "__main__":
    shapes()
    glyphs()
