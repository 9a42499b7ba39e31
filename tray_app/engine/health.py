"""The engine's health snapshot: what the tray, `status` and diagnostics show.

The engine updates it from its own threads; readers call ``Health.snapshot()``
which returns an immutable copy under a lock (cheap: a few dozen fields).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# Engine states
RUNNING = "running"
PAUSED = "paused"
DEGRADED = "degraded"
STOPPED = "stopped"
STARTING = "starting"


@dataclass(frozen=True)
class HealthSnapshot:
    state: str = STARTING
    #: human-readable reasons for the state, most important first
    reasons: tuple[str, ...] = ()
    rate_10s: float = 0.0
    rate_1m: float = 0.0
    total_ingested: int = 0          # rows newly inserted since start
    total_acked: int = 0             # entries acknowledged since start
    total_dead_letters: int = 0      # sent to the DLQ since start
    total_duplicates: int = 0        # redelivered / duplicate event_ids since start
    total_not_recorded: int = 0      # dropped: their time fell in a "don't record" window
    total_forgotten: int = 0         # dropped: `telemetry-tray forget` removed their session/project/time
    db_rows: int = 0
    today_events: int = 0
    today_sessions: int = 0
    #: today's usage from the derived tables (tray_app.usage): tokens, cost
    #: (None: nothing priced yet, or unpriced models only), prompts
    usage_today_tokens: int = 0
    usage_today_cost_usd: float | None = None
    usage_today_prompts: int = 0
    backlog: int = 0                 # entries not yet delivered to the group (lag)
    pending: int = 0                 # delivered, not acknowledged
    dlq_length: int = 0
    dlq_dropped: int = 0             # dead letters lost to the DLQ cap
    spool_files: int = 0
    spool_bad: int = 0
    spool_oldest_age_s: float = 0.0
    redis_ok: bool = False
    redis_status: str = "unknown"    # "ok" or a short reason
    sqlite_ok: bool = True
    sqlite_status: str = "ok"        # "ok", "locked", "disk_full", "read_only", "corrupt", "io"
    last_error: str = ""
    last_error_at: float = 0.0       # unix time
    commit_p50_ms: float = 0.0
    commit_p95_ms: float = 0.0
    batch_size: int = 0
    started_at: float = 0.0
    updated_at: float = 0.0
    consumer: str = ""
    monitors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: engine threads (consumer, publisher, maintenance, monitors) that died and
    #: were restarted: one line each, "name: error (restarted N times)"
    thread_errors: tuple[str, ...] = ()
    thread_restarts: int = 0
    #: the private Redis server: "ok", "restarting", or why it is down
    server_status: str = ""
    server_restarts: int = 0
    #: consumers of the group that belong to another installation (another
    #: home on the same Redis splits the events between two databases)
    foreign_consumers: tuple[str, ...] = ()
    #: opt-in export of usage metrics to a team's collector ([export], tray_app/otlp/exporter.py):
    #: "" (off), "starting", "ok" or "error"
    export_status: str = ""
    #: where the metrics go (the URL only: headers and credentials never appear here)
    export_endpoint: str = ""
    export_last_success_at: float = 0.0   # unix time
    export_last_error: str = ""
    export_last_error_at: float = 0.0     # unix time
    export_points: int = 0                # data points the collector accepted since start
    export_failures: int = 0              # exports that failed since start
    #: the OTLP receiver (tray_app/otlp): "" when off, "listening on http://...",
    #: or why it is not ("port 4318 in use: ..."); requests answered 200 / refused,
    #: events it put on the stream, records it did not keep as their own event
    otlp_receiver: str = ""
    otlp_requests_accepted: int = 0
    otlp_requests_rejected: int = 0
    otlp_events_received: int = 0
    otlp_records_rejected: int = 0
    otlp_last_rejection: str = ""
    #: telemetry.db's pages in use and its file (bytes), its size cap (0: none), and
    #: the free space of its file system (engine/retention.py)
    db_used_bytes: int = 0
    db_file_bytes: int = 0
    db_cap_bytes: int = 0
    disk_free_bytes: int = 0
    #: "ok", "near_cap" or "disk_low", with one line for the tray ("" when ok)
    storage_state: str = "ok"
    storage_warning: str = ""
    #: what retention removed ({"auto_vacuum", "removed": {rule: {"rows", "bytes",
    #: "last_at"}}, "returned_bytes", "passes", "last_run_at", "max_txn_ms", "note"})
    retention: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in _TUPLE_FIELDS:
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HealthSnapshot":
        known = {f for f in cls.__dataclass_fields__}
        clean = {k: v for k, v in data.items() if k in known}
        for name in _TUPLE_FIELDS:
            if name in clean:
                clean[name] = tuple(clean[name])
        return cls(**clean)


_TUPLE_FIELDS = ("reasons", "thread_errors", "foreign_consumers")


class RateMeter:
    """Events per second over sliding windows, from per-second buckets.
    Thread-safe: the consumer adds, the maintenance thread reads."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list[float]] = deque()  # [second, count]

    def add(self, n: int) -> None:
        sec = int(self._clock())
        with self._lock:
            if self._buckets and self._buckets[-1][0] == sec:
                self._buckets[-1][1] += n
            else:
                self._buckets.append([sec, n])
            self._trim(sec)

    def _trim(self, now_sec: int) -> None:
        while self._buckets and self._buckets[0][0] <= now_sec - 60:
            self._buckets.popleft()

    def rate(self, window_s: int) -> float:
        now = int(self._clock())
        with self._lock:
            self._trim(now)
            total = sum(c for s, c in self._buckets if s > now - window_s)
        return total / float(window_s)


class LatencyWindow:
    """p50 / p95 of the last N commit latencies."""

    def __init__(self, size: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._values.append(ms)

    def percentiles(self) -> tuple[float, float]:
        if not self._values:
            return 0.0, 0.0
        s = sorted(self._values)
        return s[len(s) // 2], s[min(len(s) - 1, int(len(s) * 0.95))]


class Health:
    """Thread-safe holder of the current snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snap = HealthSnapshot(started_at=time.time(), updated_at=time.time())

    def snapshot(self) -> HealthSnapshot:
        with self._lock:
            return self._snap

    def update(self, **changes: Any) -> HealthSnapshot:
        with self._lock:
            changes.setdefault("updated_at", time.time())
            self._snap = replace(self._snap, **changes)
            return self._snap
