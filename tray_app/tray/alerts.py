"""Which notifications a stream of health snapshots deserves: a pure policy.

``AlertPolicy.observe(snapshot)`` returns the notices to show now. It keeps
no threads and reads time only from the injected clock, so every rule is
unit-tested with a fake clock:

* a failure (Redis unreachable, database writes failing) is announced once
  it has lasted ``grace_s`` (a blip of a second is not worth a popup);
* each kind is announced at most once per ``interval_s``; a failure that is
  still there when the interval ends, and was not announced yet (flapping),
  is announced then; a change of cause (locked -> disk full) is announced
  again, within the same limit;
* recovery is announced once, and only for an outage that was announced;
* dead letters and the spool warn when they reach their threshold and again
  (at most once per interval) while they keep growing; the spool not while
  Redis is down (it grows by design then, and the Redis notice says so);
* the app's private Redis server (``server_status`` / ``server_restarts``):
  a restart by the runtime is announced once (at most once per interval, the
  count says how many); a server that stays down past the grace is announced
  as stopped, and its return as a recovery. While the server's own notices
  cover an outage, the generic "Redis unreachable" stays quiet;
* an engine thread that died and was restarted (a new entry in
  ``thread_errors``) is announced once, at most once per interval;
* the private server's recovery message (corrupt append-only files set
  aside, passed in as ``server_recovery``) is announced once per message;
* the database near its size cap, or its disk nearly full (``storage_state``,
  kept by the engine: engine/retention.py) is announced once per episode,
  after the grace, and its end once (a change from one to the other again);
* a timed "don't record" window that ends by itself is announced once
  ("Recording again"; ``recording()``, with wall-clock times). One the user
  ends early, or replaces, is not: they know.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tray_app.engine.health import STARTING, STOPPED, HealthSnapshot
from tray_app.tray.menu import I_DEGRADED, I_ERROR, I_RUNNING, SQLITE_TEXT, plural

K_REDIS = "redis"
K_DATABASE = "database"
K_DLQ = "dead_letters"
K_SPOOL = "spool"
K_SERVER = "redis_server"
K_THREADS = "threads"
K_RECOVERY = "redis_recovery"
K_STORAGE = "storage"
KINDS = (K_REDIS, K_DATABASE, K_DLQ, K_SPOOL, K_SERVER, K_THREADS, K_RECOVERY, K_STORAGE)
K_RECORDING = "recording"  # "don't record" ended by itself (not rate limited: once per window)
_K_RESTART = "redis_server_restart"  # rate limit of restart notices (not a notice kind of its own)

#: a Redis outage this close to a server event (down, restarted) is that event
SERVER_EVENT_SLACK_S = 5.0
_RESTART_STATE = re.compile(r"\s*\((?:restarting|restarted)[^)]*\)\s*$")


def thread_error_key(line: str) -> str:
    """``"consumer: TypeError: x (restarted 3 times)"`` -> ``"consumer: TypeError: x"``
    (also "(restarting)", "(restarted)"): the same failure again is not news,
    another failure is."""
    return _RESTART_STATE.sub("", line)


@dataclass(frozen=True)
class Notice:
    kind: str
    title: str
    message: str
    #: "critical" when events are not being stored, "normal" for warnings, "low" for recoveries
    urgency: str = "normal"
    recovery: bool = False

    @property
    def icon_state(self) -> str:
        """The tray look this notice reports (its notification carries that icon)."""
        if self.recovery:
            return I_RUNNING
        return I_ERROR if self.urgency == "critical" else I_DEGRADED


@dataclass
class _KindState:
    since: float | None = None        # when the current problem was first seen
    announced: bool = False           # the current problem was notified
    detail: str = ""                  # what was announced (cause, or a count)
    last_sent: float | None = None    # last notification of this kind (not recoveries)
    level: int = 0                    # last announced count (growth kinds)


def _storage_advice(snap: HealthSnapshot) -> str:
    """The storage notice's text: what is wrong, and what the user can do before
    the database can no longer be written."""
    if snap.storage_state == "near_cap":
        return (f"{snap.storage_warning}. Raise [retention] max_db_mb or lower raw_days to keep more "
                "history; the usage report keeps every day.")
    return (f"{snap.storage_warning}. Once the disk is full, events wait in Redis and are not stored. "
            "Free some space, or set [retention] raw_days / max_db_mb.")


class AlertPolicy:
    def __init__(self, interval_s: float, dlq_threshold: int, spool_threshold: int,
                 grace_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.dlq_threshold = dlq_threshold
        self.spool_threshold = spool_threshold
        self.grace_s = grace_s
        self._clock = clock
        self._kinds = {k: _KindState() for k in (*KINDS, _K_RESTART)}
        self._restarts_seen = 0
        self._server_event_at: float | None = None
        self._threads_seen: set[str] = set()
        self._recovery_seen = ""
        self._window: tuple[float, float | None] | None = None

    def recording(self, window: tuple[float, float | None] | None, now: float) -> list[Notice]:
        """``window``: the "don't record" window in force at ``now`` (unix time), or None."""
        before, self._window = self._window, window
        if before is None or before[1] is None or (window is not None and window[0] == before[0]):
            return []
        if window is None and now >= before[1]:
            return [Notice(K_RECORDING, "Recording again",
                           "The time without recording is over; events are stored again.", "low",
                           recovery=True)]
        return []

    def _allowed(self, st: _KindState, now: float) -> bool:
        return st.last_sent is None or now - st.last_sent >= self.interval_s

    def observe(self, snap: HealthSnapshot, server_recovery: str = "") -> list[Notice]:
        now = self._clock()
        out: list[Notice] = []
        if server_recovery and server_recovery != self._recovery_seen:
            self._recovery_seen = server_recovery
            out.append(Notice(K_RECOVERY, "Redis data set aside", server_recovery, "normal"))
        if snap.state == STARTING:
            return out  # not connected yet is not an outage
        stopped = snap.state == STOPPED

        # the private Redis server, then Redis as the engine sees it
        out += self._server(snap, now, stopped)
        redis_down = not snap.redis_ok and not stopped
        since = self._kinds[K_REDIS].since
        redis_since = now if since is None else since
        covered = (self._server_event_at is not None
                   and self._server_event_at >= redis_since - SERVER_EVENT_SLACK_S)
        spooled = f" {plural(snap.spool_files, 'event')} spooled so far; they will be stored once it is back." \
            if snap.spool_files else " New events are spooled to disk until it is back."
        out += self._failure(
            K_REDIS, redis_down, now, detail="down", quiet=covered,
            notice=lambda: Notice(K_REDIS, "Redis unreachable",
                                  "Telemetry cannot reach Redis." + spooled),
            recovery=lambda: Notice(K_REDIS, "Redis reachable again",
                                    "Telemetry is connected; spooled events are being stored.",
                                    "low", recovery=True))

        # SQLite
        db_down = not snap.sqlite_ok
        cause = SQLITE_TEXT.get(snap.sqlite_status, snap.sqlite_status.replace("_", " "))
        out += self._failure(
            K_DATABASE, db_down, now, detail=snap.sqlite_status,
            notice=lambda: Notice(K_DATABASE, f"Database writes failing: {cause}",
                                  "Events wait safely in Redis and will be stored when the database "
                                  f"works again. {snap.last_error}".strip(), "critical"),
            recovery=lambda: Notice(K_DATABASE, "Database writes recovered",
                                    "Telemetry is storing events again.", "low", recovery=True))

        out += self._growth(K_DLQ, snap.dlq_length, self.dlq_threshold, now,
                            lambda n: Notice(K_DLQ, f"{plural(n, 'dead letter')}",
                                             "Some events could not be stored and were set aside. "
                                             "Use \"Dead letters\" in the tray menu to retry them, "
                                             "or export a diagnostics bundle."))
        # While Redis is down the spool grows by design and the Redis notice says so;
        # its size then is the level a later warning must exceed.
        out += self._growth(K_SPOOL, snap.spool_files, self.spool_threshold, now, quiet=redis_down,
                            notice=lambda n: Notice(K_SPOOL, f"Spool growing: {plural(n, 'event')} waiting",
                                             "Events are being written to the local spool because "
                                             "they cannot reach Redis; nothing is lost."))
        out += self._threads(snap, now)
        out += self._failure(
            K_STORAGE, snap.storage_state not in ("", "ok") and not stopped, now, detail=snap.storage_state,
            notice=lambda: Notice(K_STORAGE, snap.storage_warning.split(":", 1)[0] or "Storage running out",
                                  _storage_advice(snap)),
            recovery=lambda: Notice(K_STORAGE, "Storage back to normal",
                                    "The database is under its size warning and the disk has room again.",
                                    "low", recovery=True))
        return out

    def _server(self, snap: HealthSnapshot, now: float, stopped: bool) -> list[Notice]:
        st = self._kinds[K_SERVER]
        down = snap.server_status not in ("", "ok") and not stopped
        restarted = snap.server_restarts > self._restarts_seen
        if down or restarted:
            self._server_event_at = now
        if down:
            if st.since is None:
                st.since = now
            if not st.announced and now - st.since >= self.grace_s and self._allowed(st, now):
                st.announced, st.last_sent = True, now
                return [Notice(K_SERVER, "Redis server stopped",
                               f"The app's private Redis server stopped ({snap.server_status}); it is "
                               "being restarted. Hook events are spooled to disk meanwhile; nothing is lost.")]
            return []
        was_announced = st.announced
        st.since, st.announced = None, False
        rst = self._kinds[_K_RESTART]
        if restarted and (was_announced or self._allowed(rst, now)):
            self._restarts_seen = snap.server_restarts
            rst.last_sent = now
            return [Notice(K_SERVER, "Redis server restarted",
                           "The app's private Redis server had stopped and was restarted "
                           f"({plural(snap.server_restarts, 'restart')} since the app started); "
                           "spooled events are being stored.", "low", recovery=True)]
        if was_announced:
            return [Notice(K_SERVER, "Redis server running again",
                           "The app's private Redis server answers again.", "low", recovery=True)]
        return []

    def _threads(self, snap: HealthSnapshot, now: float) -> list[Notice]:
        lines = {thread_error_key(line): line for line in snap.thread_errors}
        new = [key for key in lines if key not in self._threads_seen]
        st = self._kinds[K_THREADS]
        if not new or not self._allowed(st, now):
            return []
        self._threads_seen.update(new)
        st.last_sent = now
        name = lines[new[0]].split(":", 1)[0].strip() or "engine"
        # "(restarting)" / "(restarted ...)": a thread died and is restarted; without
        # it, a part that could not start at all (e.g. "monitors: could not start: ...")
        restarted = all(_RESTART_STATE.search(lines[k]) for k in new)
        if len(new) == 1:
            title = f"Engine thread died: {name}" if restarted else f"Not running: {name}"
        else:
            title = f"{len(new)} engine threads died" if restarted else f"{len(new)} engine parts failed"
        tail = "Restarted automatically; nothing is lost." if restarted else "Ingest goes on without it."
        return [Notice(K_THREADS, title, "; ".join(lines[k] for k in new) + f". {tail} The log has the details.")]

    def _failure(self, kind: str, failing: bool, now: float, detail: str,
                 notice: Callable[[], Notice], recovery: Callable[[], Notice],
                 quiet: bool = False) -> list[Notice]:
        st = self._kinds[kind]
        if failing:
            if st.since is None:
                st.since = now
            if quiet:
                return []  # another notice covers it; its recovery is not announced either
            due = not st.announced or st.detail != detail
            if due and now - st.since >= self.grace_s and self._allowed(st, now):
                st.announced, st.detail, st.last_sent = True, detail, now
                return [notice()]
            return []
        was_announced = st.announced
        st.since, st.announced, st.detail = None, False, ""
        return [recovery()] if was_announced else []

    def _growth(self, kind: str, value: int, threshold: int, now: float,
                notice: Callable[[int], Notice], quiet: bool = False) -> list[Notice]:
        st = self._kinds[kind]
        if value < threshold:
            st.announced, st.level = False, 0
            return []
        if quiet:
            st.level = max(st.level, value)
            return []
        if value > st.level and self._allowed(st, now):
            st.announced, st.level, st.last_sent = True, value, now
            return [notice(value)]
        return []
