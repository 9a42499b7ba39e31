"""What menu clicks do, run on one worker thread (never on the UI thread).

A click only puts the action's key on a queue (``submit`` never blocks);
the worker runs actions one at a time, in order, so a double-clicked Pause
cannot race a Resume. Anything slow (Redis round trips, writing a zip file,
spawning the file manager) happens here.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tray_app.config import Config
from tray_app.engine.health import HealthSnapshot

log = logging.getLogger(__name__)

_STOP = object()


class ActionWorker(threading.Thread):
    def __init__(self, handlers: dict[str, Callable[[], None]], name: str = "tray-actions") -> None:
        super().__init__(name=name, daemon=True)
        self.handlers = handlers
        self._queue: queue.Queue[object] = queue.Queue()

    def submit(self, action: str) -> None:
        """Called from the UI thread (menu clicks) or a notification button."""
        self._queue.put(action)

    def stop(self) -> None:
        self._queue.put(_STOP)

    def run(self) -> None:
        while True:
            action = self._queue.get()
            if action is _STOP:
                return
            handler = self.handlers.get(str(action))
            if handler is None:
                log.warning("no handler for tray action %r", action)
                continue
            started = time.monotonic()
            try:
                handler()
            except Exception:
                log.exception("tray action %s failed", action)
            else:
                log.info("tray action %s done in %.0f ms", action, (time.monotonic() - started) * 1000)


# ----------------------------------------------------------------------------- opening folders

def open_command(path: Path, platform: str | None = None) -> list[str] | None:
    """The command that shows ``path`` in the platform's file manager (None on Windows,
    where os.startfile does it)."""
    platform = platform or sys.platform
    if platform == "darwin":
        return ["open", str(path)]
    if platform == "win32":
        return None
    return ["xdg-open", str(path)]


# How long to wait for the opener's verdict. xdg-open (gio open, kde-open...)
# hands the folder to the file manager and exits at once; one still running
# after this is the viewer itself, so it worked (it is still waited for, and reaped).
OPEN_VERDICT_S = 10.0

# xdg-open(1) exit codes
OPEN_EXIT_MEANING = {
    1: "error in the command line",
    2: "the path does not exist",
    3: "no application found to open it (is a file manager installed?)",
    4: "the application failed",
}

OpenFailed = Callable[[Path, str], None]


def open_path(path: Path, on_failure: OpenFailed | None = None,
              verdict_s: float = OPEN_VERDICT_S) -> bool:
    """Show a folder or file to the user, without waiting for the viewer.

    Returns False (and calls ``on_failure(path, reason)``) when the command
    cannot be started. Otherwise a ``tray-open-wait`` thread waits for it, so
    the child is reaped (no zombie) and a non-zero exit within ``verdict_s``
    (xdg-open exits 3 when no file manager is installed) is reported through
    ``on_failure``. Never blocks the caller for the child."""
    cmd = open_command(path)
    try:
        if cmd is None:
            os.startfile(str(path))  # type: ignore[attr-defined]
            log.info("opened %s", path)
            return True
        if shutil.which(cmd[0]) is None:
            _failed(path, f"{cmd[0]} is not installed", on_failure)
            return False
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        _failed(path, f"{cmd[0] if cmd else 'startfile'} failed: {exc.strerror or exc}", on_failure)
        return False
    log.info("opening %s (%s, pid %d)", path, cmd[0], proc.pid)
    threading.Thread(target=_await_opener, args=(proc, path, cmd[0], on_failure, verdict_s),
                     name="tray-open-wait", daemon=True).start()
    return True


def _await_opener(proc: subprocess.Popen[bytes], path: Path, tool: str,
                  on_failure: OpenFailed | None, verdict_s: float) -> None:
    try:
        code = proc.wait(verdict_s)
    except subprocess.TimeoutExpired:
        log.info("opened %s (%s still running after %.0f s: the viewer itself)", path, tool, verdict_s)
        proc.wait()  # reap it whenever it ends
        return
    if code == 0:
        log.info("opened %s", path)
        return
    meaning = OPEN_EXIT_MEANING.get(code, "failed") if tool == "xdg-open" else "failed"
    _failed(path, f"{tool} exited {code}: {meaning}", on_failure)


def _failed(path: Path, reason: str, on_failure: OpenFailed | None) -> None:
    log.warning("cannot open %s: %s", path, reason)
    if on_failure is not None:
        try:
            on_failure(path, reason)
        except Exception:
            log.exception("reporting that %s could not be opened failed", path)


# ----------------------------------------------------------------------------- diagnostics

def export_diagnostics(cfg: Config, health: HealthSnapshot) -> Path:
    """The diagnostics bundle (tray_app.diagnostics), with the tray's own health snapshot."""
    from tray_app.diagnostics.bundle import export_bundle

    return Path(export_bundle(cfg, health=health))
