""""Don't record": windows of time in which nothing is stored.

Unlike "Pause ingest" (events wait in Redis and are stored later), a
don't-record window drops what happens in it: the hooks exit at once without
sending, the monitors skip what was written in it (and never import it
later), and the engine drops any event whose own timestamp falls in a window
(whatever produced it: a spool file, another producer).

The state is one small JSON file in the state directory (0600, replaced
atomically), so it survives a restart of the app and every process reads the
same truth: ``{"version": 1, "windows": [[start, end], ...]}`` with unix
times, ``end`` null for "until I resume". A window ends by itself at ``end``.

Standard library only: the hook imports this module.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

FILE_NAME = "no-record.json"
#: windows kept (oldest dropped first): the monitors consult them for old data
MAX_WINDOWS = 1000

Window = tuple[float, "float | None"]


@dataclass(frozen=True)
class NoRecord:
    windows: tuple[tuple[float, float | None], ...] = ()

    def active(self, now: float | None = None) -> tuple[float, float | None] | None:
        """The window in force at ``now``, if any."""
        now = time.time() if now is None else now
        for start, end in reversed(self.windows):
            if start <= now and (end is None or now < end):
                return (start, end)
        return None

    def covers(self, ts: float) -> bool:
        """Whether a moment falls in any window (past or current)."""
        return any(start <= ts and (end is None or ts < end) for start, end in self.windows)

    def covers_iso(self, value: str) -> bool:
        if not self.windows:
            return False
        ts = iso_to_unix(value)
        return ts is not None and self.covers(ts)

    def left_s(self, now: float | None = None) -> float | None:
        """Seconds left in the active window (None: until resumed or none active)."""
        now = time.time() if now is None else now
        w = self.active(now)
        return None if w is None or w[1] is None else max(0.0, w[1] - now)


def iso_to_unix(value: str) -> float | None:
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def path_in(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / FILE_NAME


def load(state_dir: str | os.PathLike[str]) -> NoRecord:
    """The windows on disk; none when the file is missing or unreadable."""
    try:
        with open(path_in(state_dir), "rb") as fh:
            data = json.loads(fh.read(1 << 20))
        windows = []
        for w in data.get("windows", []):
            start, end = float(w[0]), (None if w[1] is None else float(w[1]))
            windows.append((start, end))
        return NoRecord(tuple(windows))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return NoRecord()


def recording_now(state_dir: str | os.PathLike[str], now: float | None = None) -> bool:
    """The hook's question, answered with one small read (no file: recording)."""
    try:
        os.stat(path_in(state_dir))
    except OSError:
        return True
    return load(state_dir).active(now) is None


def _save(state_dir: str | os.PathLike[str], windows: Sequence[tuple[float, float | None]]) -> None:
    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps({"version": 1, "windows": [list(w) for w in list(windows)[-MAX_WINDOWS:]]})
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".no-record.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path_in(directory))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def start(state_dir: str | os.PathLike[str], duration_s: float | None,
          now: float | None = None) -> tuple[float, float | None]:
    """Begin not recording now, for ``duration_s`` (None: until resumed). A window
    already in force is replaced by the new one (from now)."""
    now = time.time() if now is None else now
    if duration_s is not None and duration_s <= 0:
        raise ValueError("the duration must be positive")
    windows = list(load(state_dir).windows)
    windows = [(s, now if (e is None or e > now) and s <= now else e) for s, e in windows]
    window = (now, None if duration_s is None else now + duration_s)
    windows.append(window)
    _save(state_dir, windows)
    return window


def stop(state_dir: str | os.PathLike[str], now: float | None = None) -> bool:
    """End the window in force now (recording resumes). False when none was."""
    now = time.time() if now is None else now
    state = load(state_dir)
    if state.active(now) is None:
        return False
    windows = [(s, now if s <= now and (e is None or e > now) else e) for s, e in state.windows]
    _save(state_dir, windows)
    return True


__all__ = ["NoRecord", "load", "start", "stop", "recording_now", "path_in", "iso_to_unix", "FILE_NAME"]
