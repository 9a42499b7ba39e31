"""The "forgotten" rule: what `telemetry-tray forget` removed must never come back.

Claude Code's transcripts and Cursor's database stay on disk (they are the
assistants' files, not ours), and a hook of a forgotten session may still
fire, so deleting rows is not enough: the monitors and the engine consult this
rule, as they do the don't-record windows (capture/norecord.py):

* the engine drops a matching event before it is stored (engine/batch.py);
* the monitors' emitter drops it before it reaches Redis (monitors/emit.py);
* the Claude transcript monitor does not even read the file of a forgotten
  session or project, so it keeps no offset naming it.

The rule is one small JSON file in the state directory (0600, replaced
atomically): ``{"version": 1, "sessions": [...], "workspaces": [...],
"dirs": [...], "ranges": [[start, end], ...]}``. It holds no session id or
project path in clear (the rule itself must not keep what was forgotten):
``sessions`` are sha256 digests of session ids, ``workspaces`` the events'
own ``workspace_hash`` (already a digest of the path), ``dirs`` digests of
Claude Code's project directory names, ``ranges`` unix times (``start`` None:
from the beginning).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock

from tray_app.capture.norecord import iso_to_unix
from tray_app.fileutil import atomic_write

FILE_NAME = "forgotten.json"
#: rules kept per kind (oldest dropped first); each is a few dozen bytes
MAX_RULES = 10_000


@functools.lru_cache(maxsize=4096)
def digest(text: str) -> str:
    """The rule's form of a session id or directory name: 32 hex of sha256
    (cached: the engine asks about the same few sessions over and over)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def path_in(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def utc_second(ts: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) of the whole second at or before ``ts``
    (clamped to years 1..9999, so an open end such as ``inf`` compares as the last)."""
    try:
        return datetime.fromtimestamp(math.floor(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "9999-12-31T23:59:59" if ts > 0 else "0001-01-01T00:00:00"


@dataclass(frozen=True)
class Forgotten:
    sessions: frozenset[str] = frozenset()
    workspaces: frozenset[str] = frozenset()
    dirs: frozenset[str] = frozenset()
    ranges: tuple[tuple[float | None, float], ...] = ()
    #: each range's whole seconds as UTC text: a ``...Z`` time outside all of them
    #: is answered without parsing it (the engine's case for nearly every event)
    _seconds: tuple[tuple[str | None, str], ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_seconds", tuple(
            (None if s is None else utc_second(s), utc_second(e)) for s, e in self.ranges))

    def __bool__(self) -> bool:
        return bool(self.sessions or self.workspaces or self.dirs or self.ranges)

    def session(self, session_id: str | None) -> bool:
        return bool(session_id) and bool(self.sessions) and digest(str(session_id)) in self.sessions

    def covers(self, ts: float) -> bool:
        return any((start is None or start <= ts) and ts < end for start, end in self.ranges)

    def covers_iso(self, value: str | None) -> bool:
        if not self.ranges or not value:
            return False
        if len(value) >= 20 and value[-1] == "Z" and value[19] in ".Z":
            head = value[:19]  # before a range's first second, or after its last: outside it
            for s, e in self._seconds:
                if head <= e and (s is None or head >= s):
                    break
            else:
                return False
        ts = iso_to_unix(value)
        return ts is not None and self.covers(ts)

    def matches(self, event: Mapping[Any, Any]) -> bool:
        """Whether an event (or a stream entry's fields, bytes or str) is forgotten."""
        if not self:
            return False
        if self.sessions:
            for key in ("session_id", "external_session_id"):
                if self.session(_field(event, key)):
                    return True
        if self.workspaces and _field(event, "workspace_hash") in self.workspaces:
            return True
        return bool(self.ranges) and self.covers_iso(_field(event, "timestamp"))

    def transcript_dir(self, dir_name: str) -> bool:
        return bool(self.dirs) and digest(dir_name) in self.dirs


def _field(event: Mapping[Any, Any], key: str) -> str | None:
    value = event.get(key)
    if value is None:
        value = event.get(key.encode())
    return _text(value)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def load(state_dir: Path) -> Forgotten:
    """The rule on disk; empty when the file is missing or unreadable."""
    try:
        doc = json.loads(path_in(state_dir).read_bytes())
        ranges = tuple((None if s is None else float(s), float(e)) for s, e in doc.get("ranges", []))
        return Forgotten(sessions=frozenset(map(str, doc.get("sessions", []))),
                         workspaces=frozenset(map(str, doc.get("workspaces", []))),
                         dirs=frozenset(map(str, doc.get("dirs", []))), ranges=ranges)
    except (OSError, ValueError, TypeError, AttributeError):
        return Forgotten()


def add(state_dir: Path, *, sessions: tuple[str, ...] = (), workspaces: tuple[str, ...] = (),
        dirs: tuple[str, ...] = (), span: tuple[float | None, float] | None = None) -> None:
    """Add to the rule: session ids and directory names in clear (stored as
    digests), workspace hashes as they are, one time range. Under a lock: the
    tray and the CLI forgetting at once each keep what the other added."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    with FileLock(str(path_in(state_dir)) + ".lock", mode=0o600):
        _add(state_dir, sessions, workspaces, dirs, span)


def _add(state_dir: Path, sessions: tuple[str, ...], workspaces: tuple[str, ...], dirs: tuple[str, ...],
         span: tuple[float | None, float] | None) -> None:
    try:
        doc = json.loads(path_in(state_dir).read_bytes())
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}

    def merged(key: str, new: list[Any]) -> list[Any]:
        old = [v for v in doc.get(key, []) if v not in new]
        return (old + new)[-MAX_RULES:]

    out = {"version": 1,
           "sessions": merged("sessions", [digest(s) for s in sessions]),
           "workspaces": merged("workspaces", list(workspaces)),
           "dirs": merged("dirs", [digest(d) for d in dirs]),
           "ranges": _merge_ranges(doc.get("ranges", []) + ([] if span is None else [list(span)]))}
    atomic_write(path_in(state_dir), json.dumps(out))


def _merge_ranges(ranges: list[list[Any]]) -> list[list[Any]]:
    """Overlapping or touching ranges as one (the engine checks every event
    against each: "Forget the last hour" every hour must not make that slow)."""
    spans = sorted((((None if s is None else float(s)), float(e)) for s, e in ranges),
                   key=lambda r: float("-inf") if r[0] is None else r[0])
    out: list[list[Any]] = []
    for start, end in spans:
        if out and (start is None or start <= out[-1][1]):
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return out[-MAX_RULES:]


class RuleCache:
    """The rule for a hot path: re-read only when the file changed (one stat)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.state_dir = state_dir
        self._rule = Forgotten()
        self._stamp: tuple[int, int, int] | None = None

    def get(self) -> Forgotten:
        if self.state_dir is None:
            return self._rule
        try:
            st = os.stat(path_in(self.state_dir))
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._rule = load(self.state_dir) if stamp else Forgotten()
        return self._rule


__all__ = ["FILE_NAME", "Forgotten", "RuleCache", "add", "digest", "load", "path_in", "utc_second"]
