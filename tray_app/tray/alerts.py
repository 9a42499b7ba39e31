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
  Redis is down (it grows by design then, and the Redis notice says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tray_app.engine.health import STARTING, STOPPED, HealthSnapshot
from tray_app.tray.menu import I_DEGRADED, I_ERROR, I_RUNNING, SQLITE_TEXT, plural

K_REDIS = "redis"
K_DATABASE = "database"
K_DLQ = "dead_letters"
K_SPOOL = "spool"
KINDS = (K_REDIS, K_DATABASE, K_DLQ, K_SPOOL)


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


class AlertPolicy:
    def __init__(self, interval_s: float, dlq_threshold: int, spool_threshold: int,
                 grace_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.dlq_threshold = dlq_threshold
        self.spool_threshold = spool_threshold
        self.grace_s = grace_s
        self._clock = clock
        self._kinds = {k: _KindState() for k in KINDS}

    def _allowed(self, st: _KindState, now: float) -> bool:
        return st.last_sent is None or now - st.last_sent >= self.interval_s

    def observe(self, snap: HealthSnapshot) -> list[Notice]:
        now = self._clock()
        if snap.state == STARTING:
            return []  # not connected yet is not an outage
        out: list[Notice] = []
        stopped = snap.state == STOPPED

        # Redis
        redis_down = not snap.redis_ok and not stopped
        spooled = f" {plural(snap.spool_files, 'event')} spooled so far; they will be stored once it is back." \
            if snap.spool_files else " New events are spooled to disk until it is back."
        out += self._failure(
            K_REDIS, redis_down, now, detail="down",
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
        return out

    def _failure(self, kind: str, failing: bool, now: float, detail: str,
                 notice: Callable[[], Notice], recovery: Callable[[], Notice]) -> list[Notice]:
        st = self._kinds[kind]
        if failing:
            if st.since is None:
                st.since = now
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
