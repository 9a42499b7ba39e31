"""Which tray host a desktop has, and the backend chosen for it (tray/systray.py),
asked of a real X server and a real D-Bus session bus; and GDK's thaw
assertion kept out of the terminal (ui.quiet_gdk_thaw_critical)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need, wait_for
from desktop import _read_line_from_fd, _stop

from tray_app.tray.systray import TrayHost, choose_backend

NONE = TrayHost(False, "none on this session bus", False, "no owner of _NET_SYSTEM_TRAY_S0 on :9")
XEMBED = TrayHost(False, "none on this session bus", True, "found (trayer)")
SNI = TrayHost(True, "org.kde.StatusNotifierWatcher on the session bus (:1.4)", False, "no owner")


@pytest.mark.parametrize("host, gtk, appind, forced, backend, menus, forces", [
    (XEMBED, True, True, None, "gtk", True, True),        # trayer: not appindicator's fallback
    (SNI, True, True, None, "appindicator", True, False),
    (NONE, True, True, None, "appindicator", True, False),  # shows once the GNOME extension is on
    (XEMBED, True, False, None, "gtk", True, False),       # pystray's own pick, nothing to force
    (XEMBED, False, False, None, "xorg", False, False),
    (XEMBED, True, True, "xorg", "xorg", False, False),    # the user's PYSTRAY_BACKEND wins
])
def test_backend_follows_the_tray_host(host: TrayHost, gtk: bool, appind: bool, forced: str | None,
                                       backend: str, menus: bool, forces: bool) -> None:
    choice = choose_backend(host, gtk, appind, forced=forced, platform="linux")
    assert (choice.backend, choice.menus, choice.forced) == (backend, menus, forces)
    if host is XEMBED and backend == "gtk" and forces:
        assert choice.why == ("appindicator needs a StatusNotifierWatcher (none on this bus); "
                              "XEmbed tray found (trayer): the gtk backend is used")


def test_fix_names_the_desktop() -> None:
    gnome = TrayHost(False, "", False, "", desktop="ubuntu:GNOME")
    assert "gnome-shell-extension-appindicator" in gnome.fix()
    assert "stalonetray" in TrayHost(False, "", False, "", desktop="XFCE").fix()
    assert gnome.found is False and XEMBED.found and SNI.found
    assert TrayHost(None, "?", False, "none").found is None


# ----------------------------------------------------------------------------- a real X server and bus

@pytest.fixture()
def session(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Xvfb and a D-Bus session bus, nothing else (no tray, no notification daemon)."""
    for tool in ("Xvfb", "dbus-daemon"):
        need(shutil.which(tool) is not None, f"{tool} not installed (packaging/system-deps.sh test)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_CURRENT_DESKTOP")}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        r, w = os.pipe()
        procs.append(subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "320x200x24",
                                       "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        os.close(w)
        try:
            env["DISPLAY"] = ":" + _read_line_from_fd(r, 20, "Xvfb's display")
        finally:
            os.close(r)
        r, w = os.pipe()
        procs.append(subprocess.Popen(["dbus-daemon", "--session", "--nofork", f"--print-address={w}"],
                                      pass_fds=(w,), env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        os.close(w)
        try:
            env["DBUS_SESSION_BUS_ADDRESS"] = _read_line_from_fd(r, 20, "dbus-daemon's address")
        finally:
            os.close(r)
        yield env
    finally:
        for p in reversed(procs):
            _stop(p)


def _py(code: str, env: dict[str, str], **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


DETECT = """
    from tray_app.tray import systray
    from tray_app.doctor import tray_check
    host = systray.detect()
    print(host.sni, host.xembed, systray.choose_backend(host, *systray.available()).backend)
    print(tray_check())
"""

# a StatusNotifierWatcher: what the GNOME extension / KDE / a panel's indicator plugin own
WATCHER = """
    import sys
    from gi.repository import Gio, GLib
    loop = GLib.MainLoop()
    Gio.bus_own_name(Gio.BusType.SESSION, "org.kde.StatusNotifierWatcher", Gio.BusNameOwnerFlags.NONE,
                     None, lambda *a: print("owned", flush=True), lambda *a: loop.quit())
    loop.run()
"""

# an XEmbed tray: the owner of the _NET_SYSTEM_TRAY_S0 selection (what trayer or stalonetray do)
XTRAY = """
    import Xlib.display, Xlib.X
    d = Xlib.display.Display()
    w = d.screen().root.create_window(0, 0, 1, 1, 0, d.screen().root_depth)
    w.set_wm_name("fake-tray")
    w.set_selection_owner(d.intern_atom("_NET_SYSTEM_TRAY_S0"), Xlib.X.CurrentTime)
    d.sync()
    print("owned", flush=True)
    import sys; sys.stdin.read()
"""


def _detect(env: dict[str, str]) -> list[str]:
    p = _py(DETECT, env)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    return out.splitlines()


def _hold(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    p = _py(code, env, stdin=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "owned", p.stderr.read() if p.stderr else ""
    return p


def test_detects_each_kind_of_tray_host(session: dict[str, str]) -> None:
    try:
        import gi  # noqa: F401
        import Xlib  # noqa: F401
    except ImportError as exc:
        need(False, f"{exc.name} not installed")
    # nothing: doctor names the problem and the fix
    none = _detect({**session, "XDG_CURRENT_DESKTOP": "GNOME"})
    assert none[0].startswith("False False ")
    assert "status='WARN'" in none[1] and "no system tray on this desktop (GNOME)" in none[1]
    assert "gnome-shell-extension-appindicator" in none[1]

    # an XEmbed tray: found, with its name; the gtk backend (or xorg without PyGObject)
    tray = _hold(XTRAY, session)
    try:
        found = _detect(session)
        assert found[0].split()[:2] == ["False", "True"], found
        assert found[0].split()[2] in ("gtk", "xorg")
        assert "status='OK'" in found[1] and "fake-tray" in found[1], found[1]
    finally:
        tray.kill()
        tray.wait()
    wait_for(lambda: _detect(session)[0].startswith("False False"), timeout=10, what="the tray gone")

    # a StatusNotifierWatcher
    watcher = _hold(WATCHER, session)
    try:
        found = _detect(session)
        assert found[0].startswith("True False"), found
        assert "status='OK'" in found[1] and "StatusNotifierWatcher" in found[1], found[1]
    finally:
        watcher.kill()
        watcher.wait()


GDK_THAW = """
    import logging, sys
    import gi
    gi.require_version("Gtk", "3.0")
    from gi.repository import Gtk
    from tray_app.tray.ui import quiet_gdk_thaw_critical
    logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="%(levelname)s %(message)s")
    if sys.argv[-1] == "quiet":
        quiet_gdk_thaw_critical()
    win = Gtk.Window()
    win.realize()
    gdk = win.get_window()
    for _ in range(3):   # created frozen: the first thaw is fine, the next ones are GDK's assertion
        gdk.thaw_toplevel_updates_libgtk_only()
"""


def test_gdk_thaw_assertion_kept_out_of_the_terminal(session: dict[str, str]) -> None:
    try:
        import gi

        gi.require_version("Gtk", "3.0")
    except (ImportError, ValueError) as exc:
        need(False, f"GTK 3 for PyGObject not installed: {exc}")
    env = {**session, "PYTHONWARNINGS": "ignore::DeprecationWarning", "NO_AT_BRIDGE": "1"}
    loud = subprocess.run([sys.executable, "-c", textwrap.dedent(GDK_THAW), "loud"], env=env,
                          cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert "Gdk-CRITICAL" in loud.stderr and "gdk_window_thaw_toplevel_updates" in loud.stderr  # the noise
    quiet = subprocess.run([sys.executable, "-c", textwrap.dedent(GDK_THAW), "quiet"], env=env,
                           cwd=str(ROOT), capture_output=True, text=True, timeout=30)
    assert quiet.returncode == 0, quiet.stderr
    assert "CRITICAL" not in quiet.stderr, quiet.stderr
    debug = [ln for ln in quiet.stdout.splitlines() if "gdk_window_thaw_toplevel_updates" in ln]
    assert len(debug) == 1 and debug[0].startswith("DEBUG GTK (harmless, shown once)"), quiet.stdout


# ----------------------------------------------------------------------------- the app's notice

def _app(monkeypatch: pytest.MonkeyPatch, hosts: list[TrayHost]) -> Any:
    from test_tray_threads import FakeNotifier, FakeRuntime

    from tray_app.config import load_config
    from tray_app.tray import app as app_mod

    seen = iter(hosts)
    monkeypatch.setattr(app_mod.systray, "detect", lambda *a, **k: next(seen, hosts[-1]))
    app = app_mod.TrayApp(load_config(), runtime=FakeRuntime(), notifier=FakeNotifier())  # type: ignore[arg-type]
    app.tray_host = NONE
    return app


def test_no_tray_notice_once_after_the_grace(app_home: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    app = _app(monkeypatch, [NONE])
    caplog.set_level("INFO", logger="tray_app.tray.app")
    assert app.check_tray_host(grace_s=0.6) is False
    assert [t for t, _ in app.notifier.sent] == ["Telemetry Tray is running without an icon"]
    body = app.notifier.sent[0][1]
    assert "keeps recording" in body and "telemetry-tray status" in body and "stalonetray" in body
    assert "tray: no system tray on this desktop" in caplog.text


def test_a_tray_that_comes_up_late_is_no_news(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A panel started with the session after the app: no notice."""
    app = _app(monkeypatch, [NONE, XEMBED])
    assert app.check_tray_host(grace_s=5) is True
    assert app.notifier.sent == []


def test_quit_during_the_grace_ends_the_check(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch, [NONE])
    app.quit_requested.set()
    started = time.monotonic()
    assert app.check_tray_host(grace_s=30) is False
    assert time.monotonic() - started < 1 and app.notifier.sent == []
