"""Icon rendering: every state, every size; told apart and readable at 16 px
on dark and light panels."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from tray_app.tray import icons
from tray_app.tray.menu import ICON_STATES

LIGHT = (240, 240, 240)
DARK = (32, 32, 32)


def on(bg: tuple[int, int, int], img: Image.Image) -> Image.Image:
    base = Image.new("RGBA", img.size, bg + (255,))
    base.alpha_composite(img)
    return base.convert("RGB")


def luminance(rgb: tuple[int, int, int]) -> float:
    def ch(c: int) -> float:
        c2 = c / 255
        return c2 / 12.92 if c2 <= 0.03928 else ((c2 + 0.055) / 1.055) ** 2.4
    r, g, b = rgb
    return 0.2126 * ch(r) + 0.7152 * ch(g) + 0.0722 * ch(b)


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def test_source_art_is_found_in_assets() -> None:
    d = icons.assets_dir()
    assert d is not None and (d / "shape-disc.png").is_file()
    for shape, glyph, _, _ in icons.LOOKS.values():
        assert (d / f"{shape}.png").is_file() and (d / f"{glyph}.png").is_file()


@pytest.mark.parametrize("state", ICON_STATES)
@pytest.mark.parametrize("size", icons.SIZES)
def test_every_state_renders_at_every_size(state: str, size: int) -> None:
    img = icons.render(state, size)
    assert img.mode == "RGBA" and img.size == (size, size)
    alpha = img.getchannel("A")
    # transparent corners (not a square blob), a solid body
    assert alpha.getpixel((0, 0)) < 60
    assert ImageStat.Stat(alpha).mean[0] > 255 * 0.35


@pytest.mark.parametrize("bg", [LIGHT, DARK], ids=["light-panel", "dark-panel"])
@pytest.mark.parametrize("state", ICON_STATES)
def test_readable_at_16px_on_dark_and_light_panels(state: str, bg: tuple[int, int, int]) -> None:
    img = on(bg, icons.render(state, 16))
    px = [img.getpixel((x, y)) for y in range(16) for x in range(16)]
    # a good part of the 16x16 cell clearly differs from the panel
    visible = sum(1 for p in px if max(abs(p[i] - bg[i]) for i in range(3)) > 60)
    assert visible >= 0.35 * 256, f"{state} barely visible on {bg}: {visible} px"
    # the glyph stands out from the fill
    _, _, fill, ink = icons.LOOKS[state]
    assert contrast(fill, ink) >= 3.0
    glyph_px = sum(1 for p in px if max(abs(p[i] - ink[i]) for i in range(3)) < 70)
    assert glyph_px >= 10, f"{state}: glyph lost at 16 px ({glyph_px} px)"


def test_states_are_distinct_at_16px_in_colour_and_in_grey() -> None:
    rendered = {s: on(LIGHT, icons.render(s, 16)) for s in ICON_STATES}
    for a, b in combinations(ICON_STATES, 2):
        diff = ImageStat.Stat(ImageChops.difference(rendered[a], rendered[b])).mean
        assert sum(diff) / 3 > 12, f"{a} and {b} look alike in colour"
        grey = ImageStat.Stat(ImageChops.difference(rendered[a].convert("L"),
                                                    rendered[b].convert("L"))).mean[0]
        # shape and glyph differ too, not only the hue (colour-blind users, mono panels)
        assert grey > 8, f"{a} and {b} look alike in grey"


def test_missing_art_falls_back_to_builtin_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(icons, "assets_dir", lambda: None)
    icons._mask.cache_clear()
    icons.render.cache_clear()
    try:
        img = icons.render("running", 32)
        assert img.size == (32, 32) and img.getchannel("A").getpixel((16, 16)) == 255
    finally:
        icons._mask.cache_clear()
        icons.render.cache_clear()


def test_unknown_state_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown icon state"):
        icons.render("sparkly", 16)


def test_write_pngs_for_notifications(tmp_path: Path) -> None:
    paths = icons.write_pngs(tmp_path / "icons")
    assert set(paths) == set(ICON_STATES)
    for p in paths.values():
        with Image.open(p) as im:
            assert im.size == (128, 128)


def test_platform_sizes() -> None:
    assert icons.platform_size("win32") == 32
    assert icons.platform_size("darwin") == 44
    assert icons.platform_size("linux") == 64
