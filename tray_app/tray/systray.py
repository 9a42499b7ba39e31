"""Which system tray this desktop has, and which pystray backend shows our icon in it.

Two kinds of tray host exist on Linux:

* a StatusNotifierWatcher (``org.kde.StatusNotifierWatcher``) on the D-Bus
  session bus: KDE, XFCE/MATE/Cinnamon panels with their indicator plugins,
  GNOME with the AppIndicator extension, waybar... The ``appindicator``
  backend talks to it.
* an XEmbed tray: the X11 selection ``_NET_SYSTEM_TRAY_S<screen>`` has an
  owner (trayer, stalonetray, XFCE/MATE/LXDE notification areas, i3bar...).
  The ``gtk`` and ``xorg`` backends embed their icon there.

Without either (stock GNOME without the extension, a bare X session) no icon
can appear. ``detect()`` asks both, each question bounded by a short timeout,
and never from the UI thread's loop (the app calls it before the loop starts,
and again from its own thread).

``choose_backend`` is the one place that decides the backend, used by the
app (before importing pystray) and by ``telemetry-tray doctor``, so both say
the same thing. When appindicator is installed but only an XEmbed tray
exists, the app uses ``gtk``: libayatana-appindicator would fall back to a
GtkStatusIcon in that tray anyway (the icon looks the same), but that
fallback makes GDK print ``Gdk-CRITICAL ... gdk_window_thaw_toplevel_updates``
on every start and behaves differently on a left click.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass

WATCHER = "org.kde.StatusNotifierWatcher"
DETECT_TIMEOUT_S = 2.0

GNOME_FIX = ("install GNOME's AppIndicator extension: sudo apt install gnome-shell-extension-appindicator, "
             "log out and in, and enable it if it is off (Extensions app, or `gnome-extensions enable "
             "appindicatorsupport@rgcjonas.gmail.com`)")
OTHER_FIX = ("add a system tray: your panel's tray / notification area applet, or a standalone "
             "tray such as stalonetray or trayer")


@dataclass(frozen=True)
class TrayHost:
    """What this desktop offers. ``None`` means "could not tell"."""

    sni: bool | None          # a StatusNotifierWatcher owns its name on the session bus
    sni_detail: str
    xembed: bool | None       # the _NET_SYSTEM_TRAY_S<n> selection has an owner
    xembed_detail: str        # e.g. "owned by trayer" or "no X display"
    desktop: str = ""         # XDG_CURRENT_DESKTOP

    @property
    def found(self) -> bool | None:
        """True: a tray exists; False: surely none; None: could not tell."""
        if self.sni or self.xembed:
            return True
        if self.sni is False and self.xembed is False:
            return False
        return None

    @property
    def gnome(self) -> bool:
        return "gnome" in self.desktop.lower()

    def describe(self) -> str:
        return f"StatusNotifierWatcher: {self.sni_detail}; XEmbed tray: {self.xembed_detail}"

    def fix(self) -> str:
        return GNOME_FIX if self.gnome else OTHER_FIX


# ----------------------------------------------------------------------------- detection

def _sni_gio(timeout_ms: int) -> tuple[bool | None, str]:
    from gi.repository import Gio, GLib

    conn = Gio.bus_get_sync(Gio.BusType.SESSION, None)
    reply = conn.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                           "GetNameOwner", GLib.Variant("(s)", (WATCHER,)), GLib.VariantType("(s)"),
                           Gio.DBusCallFlags.NONE, timeout_ms, None)
    return True, f"{WATCHER} on the session bus ({reply.unpack()[0]})"


def _sni_dbus_send(timeout_s: float) -> tuple[bool | None, str]:
    if shutil.which("dbus-send") is None:
        return None, "cannot check (neither PyGObject nor dbus-send)"
    out = subprocess.run(["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.DBus",
                          "/org/freedesktop/DBus", "org.freedesktop.DBus.NameHasOwner",
                          f"string:{WATCHER}"], capture_output=True, text=True, timeout=timeout_s)
    if out.returncode != 0:
        return None, (out.stderr.strip().splitlines() or ["dbus-send failed"])[-1][:120]
    if "boolean true" in out.stdout:
        return True, f"{WATCHER} on the session bus"
    return False, "none on this session bus"


def detect_sni(timeout_s: float = DETECT_TIMEOUT_S) -> tuple[bool | None, str]:
    if sys.platform != "linux" and not sys.platform.startswith("freebsd"):
        return None, "not used on this platform"
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not runtime or not os.path.exists(os.path.join(runtime, "bus")):
            return False, "no D-Bus session bus"  # (and no autolaunching one just to ask)
    try:
        import gi  # noqa: F401
    except ImportError:
        try:
            return _sni_dbus_send(timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            return None, f"cannot check ({exc.__class__.__name__})"
    try:
        return _sni_gio(int(timeout_s * 1000))
    except Exception as exc:  # noqa: BLE001 - GLib.Error: name has no owner, no bus...
        text = str(exc)
        if "NameHasNoOwner" in text or "has no owner" in text.lower():
            return False, "none on this session bus"
        return False, f"no session bus ({text.splitlines()[0][:100]})"


def detect_xembed() -> tuple[bool | None, str]:
    if sys.platform != "linux" and not sys.platform.startswith("freebsd"):
        return None, "not used on this platform"
    if not os.environ.get("DISPLAY"):
        return False, "no X display (DISPLAY unset)"
    try:
        import Xlib.display
        import Xlib.error
    except ImportError:
        return None, "cannot check (python-xlib not installed)"
    try:
        display = Xlib.display.Display()
    except Exception as exc:  # noqa: BLE001 - Xlib.error.DisplayError and friends
        return False, f"cannot open the X display {os.environ.get('DISPLAY')} ({exc.__class__.__name__})"
    try:
        screen = display.get_default_screen()
        atom = display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}")
        owner = display.get_selection_owner(atom)
        if not owner or owner == 0 or getattr(owner, "id", 0) == 0:
            return False, f"no owner of _NET_SYSTEM_TRAY_S{screen} on {os.environ['DISPLAY']}"
        name = ""
        try:
            name = owner.get_wm_name() or ""
            if not name:
                cls = owner.get_wm_class()
                name = cls[-1] if cls else ""
        except Exception:  # noqa: BLE001 - only for the detail
            pass
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        return True, f"found ({name})" if name else "found"
    except Exception as exc:  # noqa: BLE001 - X errors: cannot tell
        return None, f"cannot check ({exc.__class__.__name__}: {exc})"
    finally:
        try:
            display.close()
        except Exception:  # noqa: BLE001
            pass


def detect(timeout_s: float = DETECT_TIMEOUT_S) -> TrayHost:
    """Both questions, on a helper thread, answered within ``timeout_s`` (else "could not tell")."""
    result: list[TrayHost] = []

    def ask() -> None:
        sni, sni_detail = detect_sni(timeout_s)
        xembed, xembed_detail = detect_xembed()
        result.append(TrayHost(sni, sni_detail, xembed, xembed_detail,
                               os.environ.get("XDG_CURRENT_DESKTOP", "")))

    t = threading.Thread(target=ask, name="tray-host-detect", daemon=True)
    t.start()
    t.join(timeout_s + 0.5)
    if result:
        return result[0]
    return TrayHost(None, f"no answer within {timeout_s:g} s", None, f"no answer within {timeout_s:g} s",
                    os.environ.get("XDG_CURRENT_DESKTOP", ""))


# ----------------------------------------------------------------------------- the backend

def available() -> tuple[bool, bool]:
    """(PyGObject with GTK 3, an AppIndicator typelib) on this machine, without importing pystray."""
    try:
        import gi
    except ImportError:
        return False, False
    try:
        gi.require_version("Gtk", "3.0")
    except (ValueError, ImportError):
        return False, False
    for ns in ("AyatanaAppIndicator3", "AppIndicator3"):
        try:
            gi.require_version(ns, "0.1")
            return True, True
        except (ValueError, ImportError):
            continue
    return True, False


@dataclass(frozen=True)
class Choice:
    backend: str
    menus: bool
    why: str          # one line: why this backend
    forced: bool      # the app must set PYSTRAY_BACKEND (pystray would pick another)


def choose_backend(host: TrayHost, have_gtk: bool, have_appindicator: bool,
                   forced: str | None = None, platform: str | None = None) -> Choice:
    platform = platform or sys.platform
    if platform == "darwin":
        return Choice("darwin", True, "macOS menu bar", False)
    if platform == "win32":
        return Choice("win32", True, "Windows notification area", False)
    if forced:
        return Choice(forced, forced != "xorg", "forced by PYSTRAY_BACKEND", False)
    if not have_gtk:
        return Choice("xorg", False, f"no PyGObject, so an XEmbed icon without menus; XEmbed tray: "
                      f"{host.xembed_detail}", False)
    if not have_appindicator:
        return Choice("gtk", True, f"no AppIndicator library, so an XEmbed icon; XEmbed tray: "
                      f"{host.xembed_detail}", False)
    if host.sni is False and host.xembed:
        return Choice("gtk", True, "appindicator needs a StatusNotifierWatcher (none on this bus); "
                      f"XEmbed tray {host.xembed_detail}: the gtk backend is used", True)
    if host.sni:
        return Choice("appindicator", True, f"StatusNotifierWatcher: {host.sni_detail}", False)
    return Choice("appindicator", True, f"the icon shows once a StatusNotifierWatcher appears; "
                  f"{host.describe()}", False)
