"""Commands to the running engine from another process, through files.

``telemetry-tray pause`` / ``resume`` must reach the engine whichever face
runs it (tray or headless) and also while Redis is down, so they do not go
through Redis: the command is a small request file, and the runtime's
``engine-control`` thread answers it.

* request: ``<state dir>/control/<time_ns>-<pid>-<random>.json`` (0600 in a
  0700 directory, written atomically): ``{"id", "command", "requested_at"}``,
  command ``pause`` or ``resume``;
* the runtime's ControlWatcher looks about five times a second, applies each
  request in order, deletes it, and records the outcome in
  ``<state dir>/engine-control.json`` (0600): the engine's pid, whether it is
  paused, and the ids of the last requests it handled. It rewrites that file
  whenever the pause flag changes (the tray's own Pause too), and removes it
  when the runtime stops;
* the CLI (engine/cli.py) writes a request only when the engine's health file
  says an engine is running, waits for its id to show up as handled, then for
  the health snapshot to show the new state. A request nobody handles within
  REQUEST_TTL_S (the engine died, an older version) is dropped by the CLI
  that wrote it, or by the next engine that starts.

"Don't record" needs no request: it is its own file (capture/norecord.py),
read by the hooks, the engine's guard and the faces.

No UI and no signals here; the runtime passes in what to call.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tray_app.fileutil import atomic_write, unlink_quietly

log = logging.getLogger(__name__)

CONTROL_DIR = "control"
STATE_FILE = "engine-control.json"
PAUSE = "pause"
RESUME = "resume"
COMMANDS = (PAUSE, RESUME)
#: a request older than this is never applied (its CLI gave up long ago)
REQUEST_TTL_S = 30.0
#: how many handled request ids the state file remembers
HANDLED_KEPT = 32


def control_dir(state_dir: Path) -> Path:
    return state_dir / CONTROL_DIR


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


# ----------------------------------------------------------------------------- the CLI's side

def submit(state_dir: Path, command: str, now: float | None = None) -> str:
    """Write a request; returns its id."""
    if command not in COMMANDS:
        raise ValueError(f"unknown engine command {command!r}")
    now = time.time() if now is None else now
    rid = f"{int(now * 1e9):020d}-{os.getpid()}-{secrets.token_hex(4)}"
    d = control_dir(state_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(d / f"{rid}.json", json.dumps({"id": rid, "command": command, "requested_at": now}))
    return rid


def withdraw(state_dir: Path, rid: str) -> bool:
    """Remove a request nobody handled. True when it was still there."""
    try:
        (control_dir(state_dir) / f"{rid}.json").unlink()
        return True
    except FileNotFoundError:
        return False


@dataclass(frozen=True)
class ControlState:
    pid: int
    paused: bool | None
    handled: tuple[str, ...]
    written_at: float

    @classmethod
    def from_json(cls, text: str) -> ControlState:
        data = json.loads(text)
        paused = data.get("paused")
        return cls(pid=int(data["pid"]), paused=None if paused is None else bool(paused),
                   handled=tuple(str(h) for h in data.get("handled") or ()),
                   written_at=float(data.get("written_at") or 0.0))

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "paused": self.paused, "handled": list(self.handled),
                           "written_at": self.written_at})


def read_state(state_dir: Path) -> ControlState | None:
    try:
        return ControlState.from_json(state_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.debug("cannot read %s: %s", state_path(state_dir), exc)
        return None


# ----------------------------------------------------------------------------- the engine's side

class ControlWatcher(threading.Thread):
    """Applies request files; keeps ``engine-control.json`` up to date.

    ``pause`` / ``resume`` return False while the engine cannot take the
    command yet (still starting): the request then waits (up to
    REQUEST_TTL_S). ``paused`` returns the engine's flag, None before it started."""

    def __init__(self, state_dir: Path, *, pause: Callable[[], bool], resume: Callable[[], bool],
                 paused: Callable[[], bool | None], on_change: Callable[[], None] = lambda: None,
                 interval_s: float = 0.2, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="engine-control", daemon=True)
        self.state_dir = state_dir
        self._do = {PAUSE: pause, RESUME: resume}
        self._paused = paused
        self._on_change = on_change
        self.interval_s = interval_s
        self._clock = clock
        self._stopping = threading.Event()
        self._handled: list[str] = []
        self._written: tuple[bool | None, tuple[str, ...]] | None = None
        self._failing = False

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            while True:
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - never take the engine down; say it once
                    if not self._failing:
                        log.exception("engine control: cannot handle requests")
                    self._failing = True
                else:
                    self._failing = False
                if self._stopping.wait(self.interval_s):
                    return
        finally:
            self._remove_state()

    def step(self) -> None:
        """One look: apply what is waiting, then publish the state if it changed."""
        changed = False
        for path in self._waiting():
            changed = self._handle(path) or changed
        self._publish()
        if changed:
            self._on_change()

    def _waiting(self) -> list[Path]:
        try:
            with os.scandir(control_dir(self.state_dir)) as it:
                names = sorted(e.name for e in it if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return []
        return [control_dir(self.state_dir) / n for n in names]

    def _handle(self, path: Path) -> bool:
        try:
            data = json.loads(path.read_text())
            rid, command = str(data["id"]), str(data["command"])
            requested_at = float(data["requested_at"])
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("engine control: ignoring unreadable request %s (%s)", path.name, exc)
            unlink_quietly(path)
            return False
        if self._clock() - requested_at > REQUEST_TTL_S:
            log.info("engine control: dropping a stale %s request from %.0f s ago", command,
                     self._clock() - requested_at)
            unlink_quietly(path)
            return False
        action = self._do.get(command)
        if action is None:
            log.warning("engine control: unknown command %r", command)
            unlink_quietly(path)
            return False
        if not action():
            return False  # still starting: the request waits for the engine
        log.info("engine: %s requested from the command line", command)
        unlink_quietly(path)
        self._handled = (self._handled + [rid])[-HANDLED_KEPT:]
        return True

    def _publish(self) -> None:
        now = (self._paused(), tuple(self._handled))
        if now == self._written:
            return
        state = ControlState(pid=os.getpid(), paused=now[0], handled=now[1], written_at=time.time())
        atomic_write(state_path(self.state_dir), state.to_json())
        self._written = now

    def _remove_state(self) -> None:
        state = read_state(self.state_dir)
        if state is not None and state.pid != os.getpid():
            return
        unlink_quietly(state_path(self.state_dir))


__all__ = ["COMMANDS", "PAUSE", "RESUME", "REQUEST_TTL_S", "ControlState", "ControlWatcher", "control_dir",
           "read_state", "state_path", "submit", "withdraw"]
