"""Pure session bookkeeping: how a batch of stored events changes a ``sessions`` row.

Rules (also in docs/monitors.md):

* every stored event counts in ``event_count``;
* every event except ``session_end``, ``error`` and ``otel_metric`` is *activity*:
  ``last_activity_at`` is the latest activity timestamp, ``started_at`` the
  earliest timestamp seen;
* a ``session_end`` at or after the last activity ends the session with its
  reason; an older one (delivered late) changes nothing; ``timeout`` ends
  come back from the idle check, which already recorded them, and only count;
* activity after an end re-opens the session; for a session ended by the
  idle timeout any newer activity re-opens it (it was not idle after all);
* sessions named ``cursor-state:…`` (Cursor data with no conversation) are
  not sessions and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from tray_app.events import parse_timestamp
from tray_app.monitors.cursor_items import SYNTHETIC_SESSION_PREFIX

#: counted, but not activity: an end, a problem, and Claude Code's metric data
#: points (their time is the export's, up to a minute after the session's last
#: action, so they would re-open every session that just ended)
NOT_ACTIVITY = frozenset({"session_end", "error", "otel_metric"})
TIMEOUT = "timeout"


def canonical(dt: datetime) -> str:
    """The one timestamp format of the sessions table (sorts as it compares)."""
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def tracked(platform: Any, session_id: Any) -> bool:
    return (isinstance(platform, str) and isinstance(session_id, str) and bool(session_id)
            and not session_id.startswith(SYNTHETIC_SESSION_PREFIX))


def end_reason(event: dict[str, Any]) -> str:
    payload = event.get("payload")
    if isinstance(payload, dict):
        for k in ("reason", "end_reason", "exit_reason"):
            if isinstance(payload.get(k), str) and payload[k]:
                return str(payload[k])[:100]
    return "session_end"


@dataclass
class Agg:
    """What one batch says about one session."""

    count: int = 0
    first: datetime | None = None
    last_activity: datetime | None = None
    workspace_hash: str | None = None
    end: datetime | None = None
    end_reason: str | None = None

    def add(self, event_type: str, ts: datetime | None, workspace_hash: str | None,
            reason: str | None = None) -> None:
        self.count += 1
        if workspace_hash and not self.workspace_hash:
            self.workspace_hash = workspace_hash
        if ts is None:
            return
        if self.first is None or ts < self.first:
            self.first = ts
        if event_type == "session_end":
            if reason == TIMEOUT:
                return  # our own idle ends are recorded when emitted, not again here
            if self.end is None or ts >= self.end:
                self.end, self.end_reason = ts, reason or "session_end"
        elif event_type not in NOT_ACTIVITY:
            if self.last_activity is None or ts > self.last_activity:
                self.last_activity = ts


@dataclass(frozen=True)
class Row:
    workspace_hash: str | None = None
    started_at: datetime | None = None
    last_activity_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    event_count: int = 0

    @classmethod
    def from_db(cls, r: tuple[Any, ...] | None) -> "Row | None":
        if r is None:
            return None
        return cls(r[0], parse(r[1]), parse(r[2]), parse(r[3]), r[4], int(r[5] or 0))

    def to_db(self) -> tuple[Any, ...]:
        def c(d: datetime | None) -> str | None:
            return canonical(d) if d else None
        return (self.workspace_hash, c(self.started_at), c(self.last_activity_at), c(self.ended_at),
                self.end_reason, self.event_count)


def merge(old: Row | None, agg: Agg) -> Row:
    row = old or Row()
    started = min((d for d in (row.started_at, agg.first) if d), default=None)
    last = row.last_activity_at
    if agg.last_activity and (last is None or agg.last_activity > last):
        last = agg.last_activity
    ended, reason = row.ended_at, row.end_reason
    if ended is not None and last is not None and last != row.last_activity_at:
        if reason == TIMEOUT or last > ended:
            ended, reason = None, None  # activity after the end: open again
    if agg.end is not None and (last is None or agg.end >= last):
        if ended is None or agg.end >= ended or reason == TIMEOUT:
            ended, reason = agg.end, agg.end_reason
    return replace(row, workspace_hash=row.workspace_hash or agg.workspace_hash, started_at=started,
                   last_activity_at=last, ended_at=ended, end_reason=reason,
                   event_count=row.event_count + agg.count)


def idle_end(last_activity: datetime, idle_timeout_s: float) -> datetime:
    """When a session with this last activity became idle."""
    return last_activity + timedelta(seconds=idle_timeout_s)
