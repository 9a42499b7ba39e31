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
Past windows are kept (at most MAX_WINDOWS): the engine's guard consults them
for events that arrive late (a monitor reading old data, a spool file).

Standard library only: the hook imports this module on every run, so its
import costs nothing measurable (no json, os, pathlib, datetime, dataclasses
at import time; tests/test_hook_faults.py checks the hook's imports). What
only the app uses imports its modules when called.
"""

from __future__ import annotations

import time

try:
    import posix as _os
except ImportError:  # Windows
    import nt as _os  # type: ignore[no-redef]

try:
    from . import fastjson
    from .hookconfig import read_file as _read
except ImportError:  # loaded as a top-level module by the hook
    import fastjson  # type: ignore[no-redef]
    from hookconfig import read_file as _read  # type: ignore[no-redef]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from os import PathLike
    from pathlib import Path

FILE_NAME = "no-record.json"
#: windows kept (oldest dropped first): the monitors consult them for old data
MAX_WINDOWS = 1000
#: the longest timed window (``--for``); longer: until resumed
MAX_DURATION_S = 7 * 24 * 3600

Window = tuple[float, "float | None"]


class NoRecord:
    """The windows read from the file (immutable; comparable)."""

    __slots__ = ("windows",)

    def __init__(self, windows: tuple[tuple[float, float | None], ...] = ()) -> None:
        self.windows = tuple(windows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoRecord) and other.windows == self.windows

    def __hash__(self) -> int:
        return hash(self.windows)

    def __repr__(self) -> str:
        return f"NoRecord(windows={self.windows!r})"

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
    from datetime import datetime, timezone

    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _file(state_dir: str | PathLike[str]) -> str:
    d = _os.fspath(state_dir)
    return d + ("" if d.endswith(("/", "\\")) else "/") + FILE_NAME  # "/" works on Windows too


def path_in(state_dir: str | PathLike[str]) -> Path:
    from pathlib import Path

    return Path(state_dir) / FILE_NAME


def _parse(data: bytes) -> NoRecord:
    try:
        doc = fastjson.loads(data.decode("utf-8", "replace"))
        windows = []
        for w in doc.get("windows", []):
            start, end = float(w[0]), (None if w[1] is None else float(w[1]))
            windows.append((start, end))
        return NoRecord(tuple(windows))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return NoRecord()


def load(state_dir: str | PathLike[str]) -> NoRecord:
    """The windows on disk; none when the file is missing or unreadable."""
    data = _read(_file(state_dir))
    return NoRecord() if data is None else _parse(data)


def recording_now(state_dir: str | PathLike[str], now: float | None = None) -> bool:
    """The hook's question: one stat when there is no file (recording), else
    one small read."""
    path = _file(state_dir)
    try:
        _os.stat(path)
    except OSError:
        return True
    data = _read(path)
    return data is None or _parse(data).active(now) is None


def _save(state_dir: str | PathLike[str], windows: list[tuple[float, float | None]]) -> None:
    # only the CLI and the tray write (never the hook): the app's one atomic writer
    import json
    from pathlib import Path

    from tray_app.fileutil import atomic_write

    directory = Path(state_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(Path(path_in(directory)),
                 json.dumps({"version": 1, "windows": [list(w) for w in windows[-MAX_WINDOWS:]]}))


def start(state_dir: str | PathLike[str], duration_s: float | None,
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


def stop(state_dir: str | PathLike[str], now: float | None = None) -> bool:
    """End the window in force now (recording resumes). False when none was."""
    now = time.time() if now is None else now
    state = load(state_dir)
    if state.active(now) is None:
        return False
    windows = [(s, now if s <= now and (e is None or e > now) else e) for s, e in state.windows]
    _save(state_dir, windows)
    return True


# ----------------------------------------------------------------------------- durations

#: what the CLI's ``--for`` and the tray's choices accept
DURATION_HELP = "30m, 1h, 90m, 2h, 1h30m, or tomorrow for the next local midnight"
TOMORROW = "tomorrow"


def next_local_midnight(now: float | None = None) -> float:
    """The unix time of the next local midnight after ``now``."""
    from datetime import datetime, timedelta

    now = time.time() if now is None else now
    local = datetime.fromtimestamp(now).astimezone()
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time())
    return midnight.astimezone().timestamp()  # naive local time -> aware: DST-correct


def parse_duration(text: str, now: float | None = None) -> float:
    """Seconds for ``30m``, ``1h``, ``90m``, ``2h``, ``1h30m``, ``45min``,
    ``tomorrow``. Raises ValueError with a one-line message."""
    import re

    spec = text.strip().lower()
    if spec in (TOMORROW, "midnight"):
        return max(1.0, next_local_midnight(now) - (time.time() if now is None else now))
    m = re.fullmatch(r"(?:(\d+)\s*h(?:ours?|rs?)?)?\s*(?:(\d+)\s*m(?:in(?:utes?)?|ins)?)?", spec)
    if not spec or m is None or (m.group(1) is None and m.group(2) is None):
        raise ValueError(f"not a duration: {text!r} (use {DURATION_HELP})")
    seconds = int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60
    if seconds <= 0:
        raise ValueError(f"the duration must be at least a minute, not {text!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than 7 days; leave out --for to not record until you resume")
    return float(seconds)


def describe_left(left_s: float | None) -> str:
    """``"25 min left"``, ``"2 h 5 min left"``, or ``"until you resume"``
    (minutes rounded up: 24 min 10 s is "25 min left")."""
    if left_s is None:
        return "until you resume"
    minutes = max(1, -int(-left_s // 60))
    if minutes < 60:
        return f"{minutes} min left"
    h, m = divmod(minutes, 60)
    return f"{h} h {m} min left" if m else f"{h} h left"


__all__ = ["NoRecord", "load", "start", "stop", "recording_now", "path_in", "iso_to_unix", "FILE_NAME",
           "parse_duration", "next_local_midnight", "describe_left", "DURATION_HELP", "MAX_DURATION_S"]
