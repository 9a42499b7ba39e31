"""The refresher thread: snapshot -> menu model -> view, and -> alerts.

Once a second (or sooner when poked after a click) it reads the engine's
in-memory health snapshot and the "don't record" window in force (the
runtime re-reads that small file only when it changed), builds the menu model, and hands it to the view
only when something shown changed and at most once a second
(``RefreshGate``). It also feeds the snapshot to the alert policy and sends
what that returns (with the runtime's last recovery message of the private
server, which is not part of the snapshot). It writes the model to ``tray-menu.json`` in the state
dir, so tests and support can read what the user sees.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tray_app.config import TraySettings
from tray_app.engine.health import HealthSnapshot
from tray_app.fileutil import atomic_write
from tray_app.tray.alerts import AlertPolicy, Notice
from tray_app.tray.menu import MenuModel, build_menu

log = logging.getLogger(__name__)

MENU_FILE = "tray-menu.json"


class RefreshGate:
    """Lets a model through only when it differs from the last one shown and
    ``min_interval_s`` has passed since then."""

    def __init__(self, min_interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._last: MenuModel | None = None
        self._last_at: float | None = None

    def offer(self, model: MenuModel) -> bool:
        if model == self._last:
            return False
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self.min_interval_s:
            return False
        self._last, self._last_at = model, now
        return True

    def wait_s(self) -> float:
        """Seconds until a changed model may be shown."""
        if self._last_at is None:
            return 0.0
        return max(0.0, self.min_interval_s - (self._clock() - self._last_at))

    @property
    def shown(self) -> MenuModel | None:
        return self._last


def write_menu_file(path: Path, model: MenuModel, snap: HealthSnapshot) -> None:
    data = model.to_dict()
    data["written_at"] = time.time()
    data["health_updated_at"] = snap.updated_at
    atomic_write(path, json.dumps(data, indent=1))


class Refresher(threading.Thread):
    def __init__(self, *, health: Callable[[], HealthSnapshot], paused: Callable[[], bool | None],
                 tray: TraySettings, show: Callable[[MenuModel], None],
                 alert: Callable[[Notice], None], policy: AlertPolicy,
                 menu_file: Path | None = None, interval_s: float = 1.0,
                 server_recovery: Callable[[], str] | None = None,
                 not_recording: Callable[[float], tuple[float, float | None] | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="tray-refresh", daemon=True)
        self._health = health
        self._paused = paused
        self.tray = tray
        self._show = show
        self._alert = alert
        self._server_recovery = server_recovery
        #: the "don't record" window in force at a time (EngineRuntime.not_recording)
        self._not_recording = not_recording
        self._clock = clock
        self.policy = policy
        self.menu_file = menu_file
        self.interval_s = interval_s
        self.gate = RefreshGate(interval_s)
        self.autostart: bool | None = None
        self.busy = ""
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def current(self) -> MenuModel | None:
        return self.gate.shown

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                pending = self.tick()
            except Exception:
                log.exception("tray refresh failed")
                pending = False
            # a change held back by the gate is shown as soon as it may be
            self._wake.wait(self.gate.wait_s() if pending else self.interval_s)

    def tick(self) -> bool:
        """One refresh. Returns True when a change is waiting for the gate."""
        snap = self._health()
        now = self._clock()
        window = self._not_recording(now) if self._not_recording is not None else None
        model = build_menu(snap, self.tray, paused=self._paused(), autostart=self.autostart,
                           busy=self.busy, not_recording=window, now=now)
        recovery = self._server_recovery() if self._server_recovery is not None else ""
        for notice in self.policy.observe(snap, server_recovery=recovery) + self.policy.recording(window, now):
            self._alert(notice)
        if self.gate.offer(model):
            self._show(model)
            if self.menu_file is not None:
                try:
                    write_menu_file(self.menu_file, model, snap)
                except OSError as exc:
                    log.debug("cannot write %s: %s", self.menu_file, exc)
            return False
        return model != self.gate.shown
