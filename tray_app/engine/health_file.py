"""The engine's health on disk: readable when Redis is not.

The runtime writes ``<state dir>/engine-health.json`` (0600, atomically)
about once a second: the health snapshot, the engine's pid, when it was
written, which face runs it, and the last recovery message of the private
server. ``status`` reads it when Redis does not answer, so it can tell "no
engine running" from "engine running, Redis down". A file whose pid is gone
or that was not rewritten for ``STALE_AFTER_S`` says nothing about a running
engine; the runtime removes the file when it stops.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tray_app.engine.health import HealthSnapshot
from tray_app.fileutil import atomic_write, pid_alive, unlink_quietly

log = logging.getLogger(__name__)

HEALTH_FILE = "engine-health.json"
#: a file not rewritten for this long belongs to an engine that is gone or hung
STALE_AFTER_S = 10.0


def health_file_path(state_dir: Path) -> Path:
    return state_dir / HEALTH_FILE


@dataclass(frozen=True)
class HealthRecord:
    pid: int
    written_at: float          # unix time
    face: str                  # "headless" or "tray"
    snapshot: HealthSnapshot
    server_recovery: str = ""  # the private server's last recovery message, if any

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "written_at": self.written_at, "face": self.face,
                           "server_recovery": self.server_recovery,
                           "health": self.snapshot.to_dict()}, default=str)

    @classmethod
    def from_json(cls, text: str) -> HealthRecord:
        data = json.loads(text)
        return cls(pid=int(data["pid"]), written_at=float(data["written_at"]),
                   face=str(data.get("face") or ""),
                   snapshot=HealthSnapshot.from_dict(dict(data["health"])),
                   server_recovery=str(data.get("server_recovery") or ""))

    def age_s(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.written_at

    def is_live(self, now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> bool:
        """The engine that wrote it is running: its pid is alive and it wrote recently."""
        return self.age_s(now) <= stale_after_s and process_running(self.pid)


def process_running(pid: int) -> bool:
    """Whether ``pid`` is a running process (never signals it, on any OS)."""
    return pid_alive(pid)


def write_health_file(path: Path, snapshot: HealthSnapshot, *, face: str,
                      server_recovery: str = "", pid: int | None = None) -> None:
    record = HealthRecord(pid=os.getpid() if pid is None else pid, written_at=time.time(), face=face,
                          snapshot=snapshot, server_recovery=server_recovery)
    atomic_write(path, record.to_json())


def read_health_file(path: Path) -> HealthRecord | None:
    """The record, or None when there is none or it cannot be read."""
    try:
        return HealthRecord.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None


def remove_health_file(path: Path, pid: int | None = None) -> None:
    """Remove the file if this process (or ``pid``) wrote it."""
    record = read_health_file(path)
    if record is not None and record.pid != (os.getpid() if pid is None else pid):
        return
    unlink_quietly(path)


class HealthFileWriter(threading.Thread):
    """Rewrites the file every ``interval_s`` until stopped; removes it at the end."""

    def __init__(self, path: Path, snapshot: Callable[[], HealthSnapshot], *, face: str,
                 server_recovery: Callable[[], str] = lambda: "", interval_s: float = 1.0) -> None:
        super().__init__(name="engine-health-file", daemon=True)
        self.path = path
        self.snapshot = snapshot
        self.face = face
        self.server_recovery = server_recovery
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._failing = False

    def stop(self) -> None:
        self._stopping.set()

    def write_once(self) -> None:
        try:
            write_health_file(self.path, self.snapshot(), face=self.face,
                              server_recovery=self.server_recovery())
            self._failing = False
        except OSError as exc:
            if not self._failing:  # a full disk: say it once, keep trying
                log.warning("cannot write %s: %s", self.path, exc)
            self._failing = True

    def run(self) -> None:
        try:
            while True:
                self.write_once()
                if self._stopping.wait(self.interval_s):
                    return
        finally:
            remove_health_file(self.path)


__all__ = [
    "HEALTH_FILE",
    "STALE_AFTER_S",
    "HealthFileWriter",
    "HealthRecord",
    "health_file_path",
    "read_health_file",
    "remove_health_file",
    "write_health_file",
]
