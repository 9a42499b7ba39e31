"""The tray app: wires the engine runtime, the view, the refresher, the
alerts and the action worker together, and runs pystray on the main thread.
The tray only renders the runtime's health and sends it commands; starting,
supervising and stopping the engine and the private Redis is
``tray_app.engine.runtime.EngineRuntime``, the same as ``run --headless``.

Threads:
  main            pystray's loop (GTK / AppKit / Xlib). Only renders; menu clicks
                  are queued to tray-actions. Touched only through ui.Marshal.
  (runtime threads)  engine-start (retries on failure), redis-supervisor,
                  engine-health-file, and the engine's consumer, publisher,
                  maintenance, monitors: see engine/runtime.py
  tray-refresh    snapshot -> menu model -> view (<= 1/s, on change) and alerts
  tray-actions    runs clicks: pause/resume, export, open folders, retry, quit
  tray-notify     asyncio loop delivering notifications (desktop-notifier / command)

Shutdown (Quit, SIGTERM, SIGINT all take this path): the icon's loop ends ->
refresher stops -> the runtime stops within the deadline (supervisor, then the
engine in order: stop reading, commit the batch in hand, XACK, close; then the
private Redis) -> notifier and worker stop -> the single-instance lock is released.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from tray_app.config import Config
from tray_app.engine.runtime import FACE_TRAY, EngineRuntime, RuntimeSettings
from tray_app.errors import AlreadyRunning
from tray_app.support import autostart
from tray_app.tray import icons, systray
from tray_app.tray.actions import ActionWorker, export_diagnostics, open_path
from tray_app.tray.alerts import AlertPolicy, Notice
from tray_app.tray.menu import (
    A_AUTOSTART,
    A_EXPORT,
    A_FORGET_HOUR,
    A_USAGE_REPORT,
    A_OPEN_DATA,
    A_OPEN_LOGS,
    A_PAUSE,
    A_QUIT,
    A_RECORD_AGAIN,
    A_RESUME,
    A_RETRY_DLQ,
    A_STATUS,
    APP_TITLE,
    I_STARTING,
    ICON_STATES,
    NO_RECORD_CHOICES,
    MenuModel,
    build_menu,
)
from tray_app.tray.notifier import Button, Notifier
from tray_app.tray.refresh import MENU_FILE, Refresher
from tray_app.tray.ui import (
    TrayView,
    backend_name,
    enable_xorg_clicks,
    marshal_for,
    pystray_menu,
    quiet_gdk_thaw_critical,
)

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0
# A panel started with the session may come up after the app (autostart): look
# again for this long before telling the user there is no tray.
NO_TRAY_GRACE_S = 5.0


class TrayApp:
    def __init__(self, cfg: Config, runtime: EngineRuntime | None = None,
                 notifier: Notifier | None = None, with_monitors: bool = True) -> None:
        self.cfg = cfg
        self.runtime = runtime or EngineRuntime(cfg, RuntimeSettings(face=FACE_TRAY,
                                                                      with_monitors=with_monitors))
        self.notifier = notifier or Notifier(enabled=cfg.tray.notifications)
        self.icon_files: dict[str, Path] = {}
        self.autostart = autostart
        self.actions = ActionWorker({
            A_STATUS: self.show_status,
            A_PAUSE: self.pause,
            A_RESUME: self.resume,
            A_RETRY_DLQ: self.retry_dead_letters,
            A_EXPORT: self.export,
            A_USAGE_REPORT: self.usage_report,
            A_FORGET_HOUR: self.forget_last_hour,
            A_OPEN_DATA: lambda: self.open_folder(cfg.paths.data_dir),
            A_OPEN_LOGS: lambda: self.open_folder(cfg.paths.log_dir),
            A_AUTOSTART: self.toggle_autostart,
            A_QUIT: self.quit,
            # "Don't record" (the runtime writes the window file; the refresher shows it)
            A_RECORD_AGAIN: self.runtime.record_again,
            **{action: partial(self.runtime.no_record, spec) for action, _, spec in NO_RECORD_CHOICES},
        })
        self.refresher = Refresher(
            health=self.runtime.health, paused=lambda: self.runtime.paused, tray=cfg.tray,
            show=self._show, alert=self._alert,
            server_recovery=lambda: self.runtime.server_recovery,
            not_recording=self.runtime.not_recording,
            policy=AlertPolicy(cfg.tray.notify_interval_s, cfg.tray.dlq_warn_threshold,
                               cfg.tray.spool_warn_threshold),
            menu_file=cfg.paths.state_dir / MENU_FILE)
        self.view: TrayView | None = None
        self.quit_requested = threading.Event()
        self.tray_host: systray.TrayHost | None = None  # what _run_locked found (Linux)

    # ---- wiring

    def model(self) -> MenuModel:
        return self.refresher.current() or build_menu(self.runtime.health(), self.cfg.tray,
                                                      paused=self.runtime.paused)

    def _show(self, model: MenuModel) -> None:
        if self.view is not None:
            self.view.show(model)

    def _alert(self, notice: Notice) -> None:
        self.notifier.notify(notice.title, notice.message, notice.urgency,
                             icon=self.icon_files.get(notice.icon_state), kind=notice.kind)

    def start_background(self) -> None:
        """Everything but the UI loop; called from pystray's setup thread."""
        self.cfg.paths.ensure()
        try:
            self.icon_files = icons.write_pngs(self.cfg.paths.runtime_dir / "icons")
        except OSError as exc:
            log.warning("cannot write notification icons: %s", exc)
        self.notifier.app_icon = self.icon_files.get("running")
        self.notifier.start()
        self.actions.start()
        self.runtime.start_background()
        self.refresher.autostart = self._autostart_enabled()
        self.refresher.start()
        if self.tray_host is not None and self.tray_host.found is False:
            threading.Thread(target=self.check_tray_host, name="tray-host-check", daemon=True).start()

    def check_tray_host(self, grace_s: float = NO_TRAY_GRACE_S) -> bool:
        """No tray host was found at start: look again for ``grace_s`` (a panel may
        start after us), then tell the user once, in the log and a notification,
        that recording goes on without an icon and how to reach the app.
        Runs on its own thread (D-Bus and X round trips). True if a tray appeared."""
        host = self.tray_host or systray.detect()
        deadline = time.monotonic() + grace_s
        while host.found is False:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.quit_requested.wait(min(0.5, left)):
                return False
            host = systray.detect()
        if host.found is not False:
            if host.found:
                log.info("tray: a system tray appeared (%s)", host.describe())
            return bool(host.found)
        log.warning("tray: no system tray on this desktop (%s), so no icon is shown; Telemetry Tray "
                    "keeps recording in the background. `telemetry-tray status` shows its state; "
                    "for an icon: %s", host.describe(), host.fix())
        self.notifier.notify(
            "Telemetry Tray is running without an icon",
            "This desktop has no system tray, so there is no icon. Telemetry Tray keeps recording "
            "in the background; run `telemetry-tray status` to see it. For an icon: "
            f"{host.fix()}.", "normal", icon=self.icon_files.get("running"), kind="no_tray")
        return False

    def _autostart_enabled(self) -> bool | None:
        try:
            return bool(self.autostart.is_enabled())
        except Exception as exc:  # noqa: BLE001 - unsupported platform, broken file
            log.warning("start at login unavailable: %s", exc)
            return None

    # ---- actions (tray-actions thread)

    def show_status(self) -> None:
        """A left click: the status as a notification, with the main actions as
        buttons (the whole UI on the xorg backend, which has no menus)."""
        model = self.model()
        paused = bool(self.runtime.paused)
        buttons = (
            Button("Resume" if paused else "Pause",
                   lambda: self.actions.submit(A_RESUME if paused else A_PAUSE)),
            Button("Export diagnostics", lambda: self.actions.submit(A_EXPORT)),
            Button("Open logs", lambda: self.actions.submit(A_OPEN_LOGS)),
        )
        self.notifier.notify(f"{APP_TITLE}: {model.status}", "\n".join(model.details), "low",
                             icon=self.icon_files.get(model.icon_state), buttons=buttons, kind="status")

    def _ready(self) -> bool:
        if not self.runtime.ready:
            self.notifier.notify(APP_TITLE, "The engine is still starting; try again in a moment.",
                                 kind="busy")
            return False
        return True

    def pause(self) -> None:
        self._toggle("Pausing...", "pause")

    def resume(self) -> None:
        self._toggle("Resuming...", "resume")

    def _toggle(self, busy: str, method: str) -> None:
        if not self._ready():
            return
        self.refresher.busy = busy
        try:
            getattr(self.runtime, method)()
            log.info("tray: %s requested by the user", method)
        finally:
            self.refresher.busy = ""
            self.refresher.poke()

    def retry_dead_letters(self) -> None:
        if not self._ready():
            return
        try:
            n = self.runtime.retry_dead_letters()
        except Exception as exc:  # noqa: BLE001 - e.g. Redis down: tell the user
            self.notifier.notify("Dead letters not retried", str(exc), "normal", kind="dlq")
            return
        self.notifier.notify("Dead letters re-queued", f"{n:,} dead letters were sent back for ingest.",
                             "low", kind="dlq")
        self.refresher.poke()

    def export(self) -> None:
        try:
            path = export_diagnostics(self.cfg, self.runtime.health())
        except Exception as exc:
            log.exception("diagnostics export failed")
            self.notifier.notify("Diagnostics export failed", str(exc), "normal", kind="export")
            return
        log.info("diagnostics bundle written: %s", path)
        self.notifier.notify("Diagnostics bundle saved", str(path), "low", kind="export",
                             icon=self.icon_files.get("running"))
        open_path(path.parent, on_failure=self.open_failed)

    def usage_report(self) -> None:
        """Write the local HTML usage report (0600, in the data folder) and open it
        in the browser; on the tray-actions thread, never the UI thread."""
        from tray_app.usage.html import write_report

        try:
            path = write_report(self.cfg)
        except Exception as exc:
            log.exception("usage report failed")
            self.notifier.notify("Usage report failed", str(exc), "normal", kind="usage")
            return
        log.info("usage report written: %s", path)
        open_path(path, on_failure=self.open_failed)

    def forget_last_hour(self) -> None:
        """Delete everything of the last hour everywhere (lifecycle/forget.py), on
        the tray-actions thread; a notification says what went."""
        from tray_app.lifecycle.inapp import forget_recent, summary

        self.refresher.busy = "Forgetting the last hour..."
        self.refresher.poke()
        try:
            out = forget_recent(self.cfg, self.runtime, 3600)
        except Exception as exc:
            log.exception("forget the last hour failed")
            self.notifier.notify("Could not forget the last hour", str(exc), "normal", kind="forget")
            return
        finally:
            self.refresher.busy = ""
            self.refresher.poke()
        self.notifier.notify("Forgot the last hour", summary(out), "low", kind="forget")

    def open_folder(self, path: Path) -> None:
        open_path(path, on_failure=self.open_failed)

    def open_failed(self, path: Path, reason: str) -> None:
        """The file manager could not be started or its opener failed (any thread)."""
        self.notifier.notify("Could not open the folder", f"{reason}.\nThe folder is {path}",
                             "normal", kind="open")

    def toggle_autostart(self) -> None:
        was = self._autostart_enabled()
        try:
            if was:
                self.autostart.disable()
            else:
                self.autostart.enable(config_file=self.cfg.paths.config_file)
        except Exception as exc:
            log.exception("start at login: toggle failed")
            self.notifier.notify("Start at login", f"Could not change it: {exc}", kind="autostart")
        now = self._autostart_enabled()
        try:
            where = self.autostart.for_platform().location()
        except Exception:  # noqa: BLE001 - only for the log line
            where = "?"
        log.info("start at login: %s -> %s (%s)", was, now, where)
        self.refresher.autostart = now
        self.refresher.poke()

    def quit(self) -> None:
        log.info("quit requested")
        self.quit_requested.set()
        if self.view is not None:
            self.view.stop()

    # ---- shutdown (main thread, after the UI loop ended)

    def shutdown(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        started = time.monotonic()
        self.refresher.stop()
        ok = self.runtime.stop(timeout_s)
        self.actions.stop()
        self.notifier.stop()
        if self.refresher.is_alive():
            self.refresher.join(1.0)
        log.info("tray: stopped %s in %.2f s", "cleanly" if ok else "past the deadline",
                 time.monotonic() - started)
        return ok


# ----------------------------------------------------------------------------- entry point

def _install_signals(app: TrayApp, backend: str) -> None:
    def on_signal(signum: int, *_: object) -> bool:
        log.info("received %s; quitting", signal.Signals(signum).name)
        app.actions.submit(A_QUIT)
        return True  # keep the GLib source

    if backend in ("gtk", "appindicator"):
        from gi.repository import GLib

        # after pystray's own setup (it resets SIGINT), inside the GLib loop
        def install() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, on_signal, sig)
        assert app.view is not None
        app.view.marshal.call(install)
    else:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: on_signal(s))


def _tell_already_running(cfg: Config, message: str) -> None:
    print(message, file=sys.stderr)
    log.info("second launch: %s", message)
    if not cfg.tray.notifications:
        return
    notifier = Notifier().start()  # launched from a menu there is no terminal to read
    try:
        fut = notifier.notify(APP_TITLE, "Telemetry Tray is already running; look for its icon "
                                         "in the system tray.", "low", kind="already_running")
        if fut is not None:
            fut.result(6.0)
    except Exception as exc:  # noqa: BLE001 - best effort; the message went to stderr and the log
        log.debug("could not notify the second launch: %s", exc)
    finally:
        notifier.stop()


def run_tray(cfg: Config, with_monitors: bool = True) -> int:
    from tray_app.logsetup import setup_logging
    from tray_app.single_instance import SingleInstance

    setup_logging(cfg, console=sys.stderr.isatty())
    lock = SingleInstance(cfg.paths.lock_file)
    try:
        lock.__enter__()
    except AlreadyRunning as exc:
        _tell_already_running(cfg, f"{exc}.")
        return 0
    try:
        return _run_locked(cfg, with_monitors)
    finally:
        lock.__exit__(None, None, None)


def _run_locked(cfg: Config, with_monitors: bool = True) -> int:
    if sys.platform.startswith("linux"):
        # An icon and a popup menu never draw with OpenGL, but GDK probes GLX on
        # some X servers and maps Mesa (libLLVM, ~50 MB RSS). bench/tray_footprint.py.
        os.environ.setdefault("GDK_GL", "disable")
    host = systray.detect() if sys.platform.startswith("linux") else None
    forced = os.environ.get("PYSTRAY_BACKEND")
    if host is not None:
        choice = systray.choose_backend(host, *systray.available(), forced=forced)
        log.info("tray: %s; backend %s: %s", host.describe(), choice.backend, choice.why)
        if choice.forced:
            os.environ["PYSTRAY_BACKEND"] = choice.backend  # only for pystray's import below
    try:
        import pystray
    except Exception as exc:  # noqa: BLE001 - no display, no GTK, no Xlib...
        print(f"telemetry-tray: error: cannot show a tray icon ({exc.__class__.__name__}: {exc}); "
              "is this a desktop session? To capture without a tray: telemetry-tray run --headless",
              file=sys.stderr)
        return 1
    finally:
        if forced is None:
            os.environ.pop("PYSTRAY_BACKEND", None)  # children (xdg-open, notify-send) pick their own
    app = TrayApp(cfg, with_monitors=with_monitors)
    app.tray_host = host
    size = icons.platform_size()
    images = {s: icons.render(s, size) for s in ICON_STATES}
    first = app.model()
    icon = pystray.Icon("telemetry-tray", images[I_STARTING], first.tooltip,
                        menu=pystray_menu(first, app.actions.submit))
    backend = backend_name(icon)
    if backend in ("gtk", "appindicator"):
        quiet_gdk_thaw_critical()
    if backend == "xorg" and not enable_xorg_clicks(icon):
        log.warning("xorg backend: could not enable clicks on the icon")
    app.view = TrayView(icon, marshal_for(backend), images, app.actions.submit,
                        has_menu=bool(getattr(icon, "HAS_MENU", True)))
    log.info("tray: pystray backend %s (%s)", backend,
             "menus" if app.view.has_menu else "no menus: a click shows the status notification")
    _install_signals(app, backend)

    def setup(_icon: Any) -> None:
        app.view.show(first)  # type: ignore[union-attr]
        app.start_background()

    try:
        icon.run(setup)
    finally:
        ok = app.shutdown()
    return 0 if ok else 1
