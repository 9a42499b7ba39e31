"""What `telemetry-tray forget` is asked to forget (Selector: one session, one
project, or a time range) and what it did (Outcome: a count per place)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tray_app.errors import UsageError
from tray_app.events import InvalidEntry, decode, workspace_hash
from tray_app.lifecycle import rule

#: a workspace hash (events.workspace_hash): 16 hex
_HASH = re.compile(r"[0-9a-f]{16}")
_REL = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d|w)\s*$", re.I)
_REL_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HELP = "an ISO date or date-time (local time unless it has a zone), or 30m, 1h, 2d meaning that long ago"


def parse_time(value: str, now: float | None = None) -> float:
    """Unix time for ``2026-12-01``, ``2026-12-01T14:00``, ``...Z``/``+02:00``, or
    ``30m``/``1h``/``2d``/``1w`` ago. Raises UsageError with one line."""
    now = time.time() if now is None else now
    m = _REL.match(value)
    if m:
        ago = int(m.group(1)) * _REL_S[m.group(2).lower()]
        if ago > 200 * 365 * 86400:
            raise UsageError(f"{value!r} is too long ago")
        return now - ago
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {value!r} (use {TIME_HELP})") from None
    try:
        if dt.tzinfo is None:
            dt = dt.astimezone()  # a naive time is the user's local time
        return dt.timestamp()
    except (ValueError, OverflowError, OSError):
        raise UsageError(f"{value!r} is out of the range of times this system can use") from None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Selector:
    """Exactly one of: a session id, a project (its path, or only its
    workspace hash), a time range (``all`` is the range from the beginning up
    to now)."""

    session_id: str | None = None
    project: str | None = None
    #: a project given by its workspace hash (as reports show it), not its path
    project_hash: str | None = None
    start: float | None = None
    end: float | None = None
    everything: bool = False

    @classmethod
    def build(cls, *, session: str | None = None, project: str | None = None, since: str | None = None,
              until: str | None = None, everything: bool = False, now: float | None = None) -> Selector:
        now = time.time() if now is None else now
        chosen = [n for n, v in (("--session", session), ("--project", project), ("--since", since),
                                 ("--all", everything)) if v]
        if len(chosen) != 1:
            raise UsageError("give exactly one of --session ID, --project PATH, --since TIME, --all"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        if until and not since:
            raise UsageError("--until goes with --since")
        if session is not None:
            if not session.strip():
                raise UsageError("--session: the session id is empty")
            return cls(session_id=session.strip())
        if project is not None:
            if _HASH.fullmatch(project) and not os.path.exists(project):
                return cls(project_hash=project)
            path = os.path.normpath(os.path.abspath(os.path.expanduser(project)))
            return cls(project=path)
        if everything:
            return cls(end=now, everything=True)
        start = parse_time(since or "", now)
        end = parse_time(until, now) if until else now
        if end <= start:
            raise UsageError(f"--until ({_iso(end)}) is not after --since ({_iso(start)})")
        return cls(start=start, end=end)

    @property
    def workspace(self) -> str | None:
        return workspace_hash(self.project) if self.project else self.project_hash

    @property
    def transcript_dir(self) -> str | None:
        """Claude Code's directory name for the project (every character but an ASCII
        letter or digit a '-': its ``[^a-zA-Z0-9]``; str.isalnum alone keeps 'é')."""
        return "".join(ch if ch.isascii() and ch.isalnum() else "-" for ch in self.project) if self.project else None

    @property
    def kind(self) -> str:
        if self.session_id:
            return "a session"
        if self.workspace:
            return "a project"
        return "everything so far" if self.everything else f"{_iso(self.start or 0)} to {_iso(self.end or 0)}"

    def describe(self) -> str:
        if self.session_id:
            return f"session {self.session_id}"
        if self.workspace:
            return f"project {self.project or self.project_hash}"
        if self.everything:
            return f"everything up to {_iso(self.end or 0)}"
        return f"{_iso(self.start or 0)} to {_iso(self.end or 0)}"

    def as_rule(self) -> rule.Forgotten:
        return rule.Forgotten(
            sessions=frozenset([rule.digest(self.session_id)] if self.session_id else []),
            workspaces=frozenset([self.workspace] if self.workspace else []),
            dirs=frozenset([rule.digest(self.transcript_dir)] if self.transcript_dir else []),
            ranges=((self.start, self.end),) if self.end is not None else ())

    def persist(self, state_dir: Path) -> None:
        rule.add(state_dir, sessions=(self.session_id,) if self.session_id else (),
                 workspaces=(self.workspace,) if self.workspace else (),
                 dirs=(self.transcript_dir,) if self.transcript_dir else (),
                 span=(self.start, self.end) if self.end is not None else None)

    def matches_fields(self, fields: Mapping[Any, Any], r: rule.Forgotten | None = None) -> bool:
        """As the consumer decodes an entry: the indexed fields, else (an entry it
        could not decode) the session id or project anywhere in its bytes."""
        if (r or self.as_rule()).matches(fields):
            return True
        needles = self.raw_needles()
        if not needles:
            return False
        try:
            decode(fields)
            return False  # decoded: its fields said whose it is (its payload may quote any id or path)
        except InvalidEntry:
            pass
        for k, v in fields.items():
            for raw in (k, v):
                b = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
                if any(n in b for n in needles):
                    return True
        return False

    def raw_needles(self) -> list[bytes]:
        """Byte strings whose presence in an unparseable record ties it to the selector."""
        if self.session_id:
            return [self.session_id.encode()]
        if self.workspace:
            return ([self.project.encode()] if self.project else []) + [
                f'"workspace_hash":"{self.workspace}"'.encode(), f'"workspace_hash": "{self.workspace}"'.encode()]
        return []


@dataclass
class Outcome:
    selector: Selector
    dry_run: bool
    #: place -> count (what was deleted, or would be)
    counts: dict[str, int] = field(default_factory=dict)
    #: what could not be done (one line each); the exit code is 1 when there are any
    problems: list[str] = field(default_factory=list)
    #: what was done to make the deletion real on disk
    compacted: list[str] = field(default_factory=list)

    def add(self, place: str, n: int) -> None:
        self.counts[place] = self.counts.get(place, 0) + n

    @property
    def total_events(self) -> int:
        return self.counts.get("raw_traces", 0)
