"""Delivering notifications: desktop-notifier first, the platform's command
second, the log always.

All delivery runs on one background thread with its own asyncio loop
(desktop-notifier needs a running loop for button callbacks on Linux), so
neither the UI thread nor the refresher ever waits on D-Bus. ``notify()``
returns at once.

When desktop-notifier cannot deliver (no D-Bus session, no notification
daemon, or its no-op backend on an unbundled macOS app), the platform's own
command is used: ``notify-send`` on Linux/BSD, ``osascript`` on macOS. On
Windows, or when that fails too, the notice is only logged; the state stays
visible in the icon and the menu.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tray_app.tray.menu import APP_TITLE

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Button:
    title: str
    on_pressed: Callable[[], None]


def fallback_command(title: str, message: str, urgency: str = "normal", icon: Path | None = None,
                     platform: str | None = None) -> list[str] | None:
    """The platform's own notification command, or None where there is none."""
    platform = platform or sys.platform
    if platform == "darwin":
        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        script = f"display notification {q(message)} with title {q(APP_TITLE)} subtitle {q(title)}"
        return ["osascript", "-e", script]
    if platform == "win32":
        return None
    cmd = ["notify-send", "--app-name", APP_TITLE, "--urgency",
           {"critical": "critical", "low": "low"}.get(urgency, "normal")]
    if icon is not None:
        cmd += ["--icon", str(icon)]
    return cmd + [title, message]


class Notifier:
    def __init__(self, enabled: bool = True, app_icon: Path | None = None,
                 use_desktop_notifier: bool = True) -> None:
        self.enabled = enabled
        self.app_icon = app_icon
        self.use_desktop_notifier = use_desktop_notifier
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._dn: Any = None
        self._dn_failed = False
        self.delivered: list[tuple[str, str]] = []  # (via, title): for tests and diagnostics

    # ---- lifecycle

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._run, name="tray-notify", daemon=True)
        self._thread.start()
        self._ready.wait(5.0)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout_s: float = 2.0) -> None:
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout_s)

    # ---- sending

    def notify(self, title: str, message: str, urgency: str = "normal", icon: Path | None = None,
               buttons: tuple[Button, ...] = (), kind: str = "") -> Future[str] | None:
        """Queue a notification; returns a future of how it was delivered."""
        if not self.enabled:
            log.info("notification (disabled in config) [%s] %s: %s", kind, title, message)
            return None
        if self._loop is None:
            raise RuntimeError("Notifier.start() was not called")
        coro = self._deliver(title, message, urgency, icon or self.app_icon, buttons, kind)
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _deliver(self, title: str, message: str, urgency: str, icon: Path | None,
                       buttons: tuple[Button, ...], kind: str) -> str:
        via = ""
        if self.use_desktop_notifier and not self._dn_failed:
            try:
                if await self._send_desktop_notifier(title, message, urgency, icon, buttons):
                    via = "desktop-notifier"
            except Exception as exc:  # noqa: BLE001 - any failure means: use the command
                log.warning("desktop-notifier failed: %s", exc)
        if not via:
            via = await self._send_command(title, message, urgency, icon)
        log.info("notification via %s [%s] %s: %s", via, kind or "-", title, message.replace("\n", " | "))
        self.delivered.append((via, title))
        return via

    def _desktop_notifier(self) -> Any:
        if self._dn is None:
            from desktop_notifier import DesktopNotifier, Icon

            logging.getLogger("desktop_notifier").setLevel(logging.ERROR)  # we log the outcome
            self._dn = DesktopNotifier(app_name=APP_TITLE,
                                       app_icon=Icon(path=self.app_icon) if self.app_icon else None)
            if type(self._dn._backend).__name__ == "DummyNotificationCenter":
                log.warning("desktop-notifier has no working backend here (e.g. an unbundled "
                            "macOS app); using the platform's notification command")
                self._dn_failed = True
        return self._dn

    async def _send_desktop_notifier(self, title: str, message: str, urgency: str,
                                     icon: Path | None, buttons: tuple[Button, ...]) -> bool:
        from desktop_notifier import Button as DnButton
        from desktop_notifier import Icon, Urgency

        dn = self._desktop_notifier()
        if self._dn_failed:
            return False
        dispatched = asyncio.Event()
        await asyncio.wait_for(dn.send(
            title=title, message=message,
            urgency={"critical": Urgency.Critical, "low": Urgency.Low}.get(urgency, Urgency.Normal),
            icon=Icon(path=icon) if icon else None,
            buttons=[DnButton(title=b.title, on_pressed=b.on_pressed) for b in buttons],
            on_dispatched=dispatched.set), SEND_TIMEOUT_S)
        # desktop-notifier logs and swallows delivery errors; on_dispatched tells success.
        return dispatched.is_set()

    async def _send_command(self, title: str, message: str, urgency: str, icon: Path | None) -> str:
        cmd = fallback_command(title, message, urgency, icon)
        if cmd is None:
            return "log only (no notification command on this platform)"
        if shutil.which(cmd[0]) is None:
            return f"log only ({cmd[0]} not installed)"
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), SEND_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            return f"log only ({cmd[0]} failed: {exc.__class__.__name__})"
        if proc.returncode != 0:
            reason = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or ["error"]
            return f"log only ({cmd[0]} exited {proc.returncode}: {reason[0][:100]})"
        return cmd[0]
