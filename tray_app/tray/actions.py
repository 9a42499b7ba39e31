"""What menu clicks do, run on one worker thread (never on the UI thread).

A click only puts the action's key on a queue (``submit`` never blocks);
the worker runs actions one at a time, in order, so a double-clicked Pause
cannot race a Resume. Anything slow (Redis round trips, writing a zip file,
spawning the file manager) happens here.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tray_app.config import Config, masked_dict
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


def open_path(path: Path) -> bool:
    """Show a folder or file to the user, without waiting for the viewer."""
    cmd = open_command(path)
    try:
        if cmd is None:
            os.startfile(str(path))  # type: ignore[attr-defined]
        else:
            if shutil.which(cmd[0]) is None:
                log.warning("cannot open %s: %s not installed", path, cmd[0])
                return False
            subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        log.warning("cannot open %s: %s", path, exc)
        return False
    log.info("opened %s", path)
    return True


# ----------------------------------------------------------------------------- diagnostics

def export_diagnostics(cfg: Config, health: HealthSnapshot, menu_text: str = "") -> Path:
    """The support team's bundle (tray_app.support.diagnostics) when this build
    has it, else a minimal zip: health snapshot, masked config, menu, log tail."""
    try:
        from tray_app.support.diagnostics import export_bundle
    except ModuleNotFoundError as exc:
        if exc.name not in ("tray_app.support", "tray_app.support.diagnostics"):
            raise  # the module exists but something it needs is missing: a real bug
        return minimal_bundle(cfg, health, menu_text)
    return Path(export_bundle(cfg, health=health))


LOG_TAIL_BYTES = 256 * 1024


def minimal_bundle(cfg: Config, health: HealthSnapshot, menu_text: str = "",
                   out_dir: Path | None = None) -> Path:
    out_dir = out_dir or cfg.paths.data_dir / "diagnostics"
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"telemetry-tray-diagnostics-{stamp}.zip"
    n = 1
    while path.exists():
        n += 1
        path = out_dir / f"telemetry-tray-diagnostics-{stamp}-{n}.zip"
    tmp = path.with_suffix(".zip.tmp")
    from tray_app import __version__

    info: dict[str, Any] = {"version": __version__, "python": sys.version.split()[0],
                            "platform": sys.platform, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "bundle": "minimal (tray fallback)"}
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("info.json", json.dumps(info, indent=2))
        zf.writestr("health.json", json.dumps(health.to_dict(), indent=2, default=str))
        zf.writestr("config.json", json.dumps(masked_dict(cfg), indent=2, default=str))
        if menu_text:
            zf.writestr("tray-menu.txt", menu_text + "\n")
        try:
            with open(cfg.paths.log_file, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
                zf.writestr("telemetry-tray.log", fh.read())
        except OSError:
            pass
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path
