"""Packaging: bundle settings, the .desktop file, icons, and (slow) a real
PyInstaller build checked by packaging/smoke.sh."""

from __future__ import annotations

import importlib.util
import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import need, ROOT
from tray_app.support.autostart import LABEL, parse_desktop_entry

PACKAGING = ROOT / "packaging"
sys.path.insert(0, str(PACKAGING))
import make_icons  # noqa: E402


def test_macos_bundle_settings() -> None:
    info = plistlib.loads((PACKAGING / "macos" / "Info.plist").read_bytes())
    assert info["LSUIElement"] is True  # no Dock icon
    assert info["CFBundleIdentifier"] == LABEL  # the LaunchAgent label too
    assert info["CFBundleName"] == "Telemetry Tray"


def test_linux_desktop_file() -> None:
    path = PACKAGING / "linux" / "telemetry-tray.desktop"
    keys = parse_desktop_entry(path.read_text())
    assert keys["Type"] == "Application" and keys["Exec"] == "telemetry-tray"
    assert keys["Icon"] == "telemetry-tray" and keys["Terminal"] == "false"
    tool = shutil.which("desktop-file-validate")
    if tool:
        r = subprocess.run([tool, str(path)], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_spec_names_what_exists() -> None:
    text = (PACKAGING / "telemetry-tray.spec").read_text()
    compile(text, "telemetry-tray.spec", "exec")
    for rel in ("entry.py", "make_icons.py", "macos/Info.plist", "linux/telemetry-tray.desktop"):
        assert rel.split("/")[-1] in text and (PACKAGING / rel).is_file()
    assert "LSUIElement" not in text  # comes from Info.plist, the one place it is set
    assert os.access(PACKAGING / "smoke.sh", os.X_OK)


def _check_icons(out: Path, written: dict[str, Path]) -> Image.Image:
    with Image.open(written["ico"]) as ico:
        assert ico.info["sizes"] >= {(16, 16), (32, 32), (48, 48), (256, 256)}
    with Image.open(written["icns"]) as icns:
        assert {(s[0], s[1]) for s in icns.info["sizes"]} >= {(16, 16), (128, 128), (512, 512)}
    for size in make_icons.PNG_SIZES:
        with Image.open(out / "hicolor" / f"{size}x{size}" / "apps" / "telemetry-tray.png") as im:
            assert im.size == (size, size) and im.mode == "RGBA"
    return Image.open(written["png"]).convert("RGBA")


def test_icons_from_assets(tmp_path: Path) -> None:
    # art with a square shape: the icon's corners are opaque only if the art was used
    art = tmp_path / "art"
    art.mkdir()
    Image.new("L", (256, 256), 255).save(art / "shape-disc.png")
    glyph = Image.new("L", (256, 256), 0)
    glyph.paste(255, (96, 96, 160, 160))
    glyph.save(art / "glyph-pulse.png")
    png = _check_icons(tmp_path / "a", make_icons.write_icons(tmp_path / "a", art))
    assert png.size == (512, 512)
    assert png.getpixel((4, 4))[3] == 255  # square shape, opaque corner (the rim)
    assert png.getpixel((256, 256))[:3] == make_icons.INK  # glyph in the middle
    assert png.getpixel((60, 60))[:3] == make_icons.FILL


def test_icons_fallback_without_assets(tmp_path: Path) -> None:
    png = _check_icons(tmp_path / "f", make_icons.write_icons(tmp_path / "f", tmp_path / "no-such-dir"))
    assert png.getpixel((4, 4))[3] == 0  # a disc: transparent corner
    assert png.getpixel((256, 100))[:3] == make_icons.FILL


def test_icons_from_the_repository_art(tmp_path: Path) -> None:
    if not (ROOT / "assets" / "shape-disc.png").is_file():
        pytest.skip("no tray art in assets/ yet")
    png = _check_icons(tmp_path / "r", make_icons.write_icons(tmp_path / "r"))
    assert png.getpixel((4, 4))[3] == 0 and png.getpixel((256, 60))[:3] == make_icons.FILL


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_pyinstaller_build_smoke(tmp_path: Path) -> None:
    """Build the one-folder app and run it: --version, doctor, 100 events -> 100 rows."""
    need(importlib.util.find_spec("PyInstaller") is not None,
         "PyInstaller not installed (it is in the [test] extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_TRAY_")}
    env.update(PYTHON=sys.executable, BUILD_DIR=str(tmp_path / "build"))
    r = subprocess.run(["bash", str(PACKAGING / "smoke.sh")], capture_output=True, text=True, env=env,
                       timeout=1100)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for line in ("--version ok", "doctor ok (bundled valkey-server found)", "ingest ok: 100 events -> 100 rows",
                 "shutdown ok"):
        assert line in r.stdout, r.stdout
    dist = tmp_path / "build" / "dist" / "telemetry-tray"
    assert (dist / "share" / "applications" / "telemetry-tray.desktop").is_file()
    assert (dist / "share" / "icons" / "hicolor" / "256x256" / "apps" / "telemetry-tray.png").is_file()
    assert (dist / "_internal" / "tray_app" / "assets" / "shape-disc.png").is_file()
