"""The one way into pystray from other threads, and the view that uses it.

Every change to the tray icon (image, tooltip, menu, stop) is a call to
``TrayView``, which hands it to the backend's UI thread through a
``Marshal``:

* gtk / appindicator: ``GLib.idle_add`` (runs in the GTK main loop, the main thread);
* darwin: ``PyObjCTools.AppHelper.callAfter`` (the Cocoa main thread: pystray's
  darwin backend crashes when the menu changes from another thread);
* xorg / win32 / dummy: pystray already funnels icon updates into its own
  thread (xorg rewrites them into a queue; win32 posts window messages), so
  the calls are only serialised under one lock.

Menu clicks arrive on the UI thread; the view only enqueues them (see
actions.py), so the UI thread never waits on Redis, SQLite or a file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from PIL import Image

from tray_app.tray.menu import MenuEntry, MenuModel

log = logging.getLogger(__name__)


class Marshal(Protocol):
    def call(self, fn: Callable[..., Any], *args: Any) -> None: ...


class GLibMarshal:
    def __init__(self) -> None:
        from gi.repository import GLib

        self._glib = GLib

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        def once() -> bool:
            try:
                fn(*args)
            except Exception:
                log.exception("UI call %s failed", getattr(fn, "__name__", fn))
            return False  # do not repeat

        self._glib.idle_add(once)


class DarwinMarshal:
    def __init__(self) -> None:
        from PyObjCTools import AppHelper

        self._helper = AppHelper

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self._helper.callAfter(_guarded(fn), *args)


class SerialMarshal:
    """For backends whose pystray calls are already thread-safe: one at a time,
    in order, on a thread of their own. The caller never waits: pystray's xorg
    backend hands each update to its X event loop and waits for it, which has
    been seen to take tens of seconds, and the refresher (menu file, alerts)
    must not stall behind the icon."""

    def __init__(self) -> None:
        import queue

        self._calls: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self._calls.put((fn, args))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tray-ui-calls", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            fn, args = self._calls.get()
            _guarded(fn)(*args)


def _guarded(fn: Callable[..., Any]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("UI call %s failed", getattr(fn, "__name__", fn))
    return run


def marshal_for(backend: str) -> Marshal:
    if backend in ("gtk", "appindicator"):
        return GLibMarshal()
    if backend == "darwin":
        return DarwinMarshal()
    return SerialMarshal()


def backend_name(icon: Any) -> str:
    """"gtk", "appindicator", "xorg", "darwin", "win32" or "dummy" for a pystray Icon."""
    return type(icon).__module__.rsplit(".", 1)[-1].lstrip("_")


def enable_xorg_clicks(icon: Any) -> bool:
    """pystray 0.19.5's xorg backend creates its tray window without selecting
    ButtonPress events, so clicks never reach it (pystray issue #151: "clicking
    does nothing"). Select them; its own handler then runs the default item.
    Called once, before the loop runs (python-xlib's threaded display)."""
    window = getattr(icon, "_window", None)
    display = getattr(icon, "_display", None)
    if window is None or display is None:
        return False
    import Xlib.X

    window.change_attributes(event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask
                             | Xlib.X.ButtonPressMask)
    display.flush()
    return True


GDK_THAW_CRITICAL = "gdk_window_thaw_toplevel_updates"


def quiet_gdk_thaw_critical() -> Callable[[str, Any, str], bool]:
    """Keep GDK's ``Gdk-CRITICAL ... gdk_window_thaw_toplevel_updates: assertion
    'window->update_and_descendants_freeze_count > 0' failed`` out of the terminal.

    GDK prints it when a tray icon's window gets a MapNotify it did not freeze
    for: libayatana-appindicator's XEmbed fallback (a GtkStatusIcon it makes
    when no StatusNotifierWatcher exists) triggers it on every start. The app
    avoids that fallback (systray.choose_backend picks gtk for an XEmbed tray),
    but the watcher can also go away while the app runs (the GNOME extension
    disabled), so that one message is logged once at debug level; every other
    GDK message goes to GLib's default handler as before. Call on the main
    thread after GTK is imported. Returns the handler (for tests)."""
    from gi.repository import GLib

    told: list[bool] = []

    def handler(domain: str, level: Any, message: str, user_data: Any = None) -> bool:
        if GDK_THAW_CRITICAL in (message or ""):
            if not told:
                told.append(True)
                log.debug("GTK (harmless, shown once): %s-CRITICAL %s", domain, message)
            return True
        GLib.log_default_handler(domain, level, message, user_data)
        return False

    GLib.log_set_handler("Gdk", GLib.LogLevelFlags.LEVEL_CRITICAL, handler, None)
    return handler


def pystray_menu(model: MenuModel, on_action: Callable[[str], None]) -> Any:
    import pystray

    def item(e: MenuEntry) -> Any:
        if e.separator:
            return pystray.Menu.SEPARATOR
        if e.submenu:
            return pystray.MenuItem(e.text, pystray.Menu(*[item(s) for s in e.submenu]),
                                    enabled=e.enabled)
        action = e.action

        def clicked(icon: Any, menu_item: Any) -> None:
            on_action(action)

        kwargs: dict[str, Any] = {"enabled": e.enabled, "default": e.default}
        if e.checked is not None:
            checked = e.checked
            kwargs["checked"] = lambda _item: checked
        return pystray.MenuItem(e.text, clicked if action else None, **kwargs)

    return pystray.Menu(*[item(e) for e in model.entries])


class TrayView:
    """Owns the pystray Icon; every method may be called from any thread."""

    def __init__(self, icon: Any, marshal: Marshal, images: dict[str, Image.Image],
                 on_action: Callable[[str], None], has_menu: bool = True) -> None:
        self.icon = icon
        self.marshal = marshal
        self.images = images
        self.on_action = on_action
        self.has_menu = has_menu
        self._shown: MenuModel | None = None  # touched on the UI thread only

    def show(self, model: MenuModel) -> None:
        self.marshal.call(self._apply, model)

    def stop(self) -> None:
        self.marshal.call(self._stop)

    # ---- below: UI thread only

    def _apply(self, model: MenuModel) -> None:
        old = self._shown
        if old is None or old.icon_state != model.icon_state:
            self.icon.icon = self.images[model.icon_state]
        if old is None or old.tooltip != model.tooltip:
            self.icon.title = model.tooltip
        if old is None or old.entries != model.entries:
            self.icon.menu = pystray_menu(model, self.on_action)
        if not self.icon.visible:
            self.icon.visible = True
        self._shown = model

    def _stop(self) -> None:
        self.icon.stop()
