"""Tray icons: drawn with Pillow from the masks in ``assets/``.

Each state has its own shape *and* glyph *and* colour, so the states stay
apart for colour-blind users and in monochrome panels:

=========  ========  =======  =========
state      shape     glyph    fill
=========  ========  =======  =========
running    disc      pulse    green
paused     disc      bars     slate
degraded   triangle  "!"      amber (dark glyph)
error      octagon   cross    red
starting   disc      dots     grey
not_rec.   disc      square   violet   ("don't record" is on: nothing is stored)
=========  ========  =======  =========

A dark 1-px (at 16 px) rim keeps the edge visible on light panels; the
saturated fill keeps it visible on dark ones (checked by tests at 16 px).
"""

from __future__ import annotations

import logging
import sys
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw

from tray_app.tray.menu import (
    I_DEGRADED,
    I_ERROR,
    I_NOT_RECORDING,
    I_PAUSED,
    I_RUNNING,
    I_STARTING,
    ICON_STATES,
)

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

#: state -> (shape mask, glyph mask, fill colour, glyph colour)
LOOKS: dict[str, tuple[str, str, RGB, RGB]] = {
    I_RUNNING: ("shape-disc", "glyph-pulse", (30, 150, 75), (255, 255, 255)),
    I_PAUSED: ("shape-disc", "glyph-pause", (84, 104, 140), (255, 255, 255)),
    I_DEGRADED: ("shape-triangle", "glyph-exclaim", (245, 170, 20), (30, 30, 30)),
    I_ERROR: ("shape-octagon", "glyph-cross", (200, 35, 40), (255, 255, 255)),
    I_STARTING: ("shape-disc", "glyph-dots", (120, 120, 120), (255, 255, 255)),
    I_NOT_RECORDING: ("shape-disc", "glyph-stop", (128, 58, 170), (255, 255, 255)),
}
RIM: RGB = (20, 20, 20)

#: the size each platform's tray wants (pystray takes one image and scales it)
PLATFORM_SIZE = {"win32": 32, "darwin": 44}  # darwin: 22 pt at 2x
DEFAULT_SIZE = 64  # Linux panels are 16-48 px; GTK/AppIndicator scale down smoothly
SIZES = (16, 22, 24, 32, 44, 48, 64, 128, 256)


def assets_dir() -> Path | None:
    """Where the source art lives: package data when installed (``tray_app/assets``,
    mapped from the repo's ``assets/``), else the repo checkout next to the package."""
    candidates: list[Path] = []
    try:
        candidates.append(Path(str(resources.files("tray_app") / "assets")))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "assets")
    for c in candidates:
        if (c / "shape-disc.png").is_file():
            return c
    return None


@cache
def _mask(name: str) -> Image.Image:
    d = assets_dir()
    if d is not None:
        try:
            with Image.open(d / f"{name}.png") as im:
                return im.convert("L")
        except OSError as exc:
            log.warning("icon art %s unreadable (%s); using the built-in shape", name, exc)
    else:
        log.warning("icon art folder not found; using built-in shapes")
    return _fallback_mask(name)


def _fallback_mask(name: str) -> Image.Image:
    """A plain stand-in so a broken install still shows a usable icon."""
    img = Image.new("L", (256, 256), 0)
    d = ImageDraw.Draw(img)
    if name.startswith("shape-"):
        d.ellipse((2, 2, 253, 253), fill=255)
    else:
        d.rectangle((88, 88, 168, 168), fill=255)
    return img


def _scaled(name: str, size: int) -> Image.Image:
    return _mask(name).resize((size, size), Image.Resampling.LANCZOS)


@lru_cache(maxsize=64)
def render(state: str, size: int = DEFAULT_SIZE) -> Image.Image:
    """The RGBA icon for ``state`` at ``size`` x ``size`` pixels."""
    if state not in LOOKS:
        raise ValueError(f"unknown icon state {state!r} (expected one of {', '.join(ICON_STATES)})")
    shape, glyph, fill, ink = LOOKS[state]
    rim_px = max(1, round(size / 16))
    outer = _scaled(shape, size)
    inner_size = size - 2 * rim_px
    inner = Image.new("L", (size, size), 0)
    inner.paste(_scaled(shape, inner_size), (rim_px, rim_px))
    glyph_mask = ImageChops.multiply(_scaled(glyph, size), inner)

    img = Image.new("RGBA", (size, size), RIM + (0,))
    img.putalpha(outer)
    img.paste(Image.new("RGBA", (size, size), fill + (255,)), (0, 0), inner)
    img.paste(Image.new("RGBA", (size, size), ink + (255,)), (0, 0), glyph_mask)
    img.putalpha(outer)
    return img


def platform_size(platform: str | None = None) -> int:
    return PLATFORM_SIZE.get(platform or sys.platform, DEFAULT_SIZE)


def write_pngs(out_dir: Path, size: int = 128) -> dict[str, Path]:
    """One PNG per state, for notifications (which want a file) and docs."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths: dict[str, Path] = {}
    for state in ICON_STATES:
        p = out_dir / f"telemetry-tray-{state}.png"
        render(state, size).save(p)
        paths[state] = p
    return paths
