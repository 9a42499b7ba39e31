"""The engine's housekeeping thread: keeps the health snapshot current and
published, drains the hook spool, trims the stream, applies retention.

It never touches the batch in hand; all its Redis work uses its own
connection. Its only SQLite writes are retention's (engine/retention.py):
transactions of a few milliseconds, in a slice of at most RETENTION_SLICE_S
per tick, after the snapshot is published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from tray_app.config import Config
from tray_app.engine import dlq, retention, schema, spool_drain, storage, tuning
from tray_app.engine.health import Health
from tray_app.engine.schema import TOMBSTONE
from tray_app.redis_conn import (DLQ_DROPPED_KEY, DLQ_STREAM, EVENTS_STREAM, GROUP, HEALTH_KEY, Endpoint,
                                 LazyClient, stream_id_key)
from tray_app.redis_conn import text as _s

if TYPE_CHECKING:  # the engine builds both; only their types are needed here
    from tray_app.engine.consumer import FastPathConsumer
    from tray_app.monitors.base import MonitorThread

log = logging.getLogger(__name__)

#: how often the health snapshot's "usage today" is read from the usage tables
USAGE_REFRESH_S = 15.0

DB_STATS_INTERVAL_S = 5.0
#: every engine writes its installation here (consumer name -> JSON {"home", "seen"})
INSTALLATIONS_KEY = "telemetry:installations"
#: a consumer of the group that acted this recently is "active"
ACTIVE_CONSUMER_MS = 5 * 60 * 1000
#: how often the foreign-consumer check runs (one HSET + XINFO CONSUMERS + HGETALL)
FOREIGN_CHECK_INTERVAL_S = 2.0
#: registry entries not refreshed for this long are removed
INSTALLATION_TTL_S = 7 * 86_400
#: checkpoint the WAL into the database once it is this big
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
#: retention works at most this long per tick (its transactions and the pauses between them)
RETENTION_SLICE_S = 0.5


def checkpoint(path: Path, min_wal_bytes: int = CHECKPOINT_WAL_BYTES) -> bool:
    """Checkpoint the WAL from a short-lived connection of this thread. The
    engine's writer turns automatic checkpoints off so that commits never pay
    for one; this thread does them instead."""
    try:
        if os.stat(f"{path}-wal").st_size < min_wal_bytes:
            return False  # the common case costs one stat, no connection
        conn = sqlite3.connect(str(path), timeout=0.1, isolation_level=None)
    except (OSError, sqlite3.Error):
        return False
    try:
        return schema.checkpoint_if_large(conn, path, min_wal_bytes)
    except sqlite3.Error as exc:
        log.debug("checkpoint: %s", exc)
        return False
    finally:
        conn.close()


def safe_trim_id(client: redis.Redis, stream: str = EVENTS_STREAM) -> str | None:
    """The lowest stream id that some group still needs: every entry below it has
    been delivered to and acknowledged by every group. None: trim nothing."""
    groups = client.xinfo_groups(stream)
    if not groups:
        return None
    floor: tuple[int, int] | None = None
    for g in groups:
        name = _s(g["name"])
        last = stream_id_key(_s(g["last-delivered-id"]))
        need = (last[0], last[1] + 1)  # everything up to last-delivered was delivered
        if int(g.get("pending", 0)):
            summary = client.xpending(stream, name)
            lowest = summary.get("min")
            if lowest:
                need = min(need, stream_id_key(_s(lowest)))
        floor = need if floor is None else min(floor, need)
    if floor is None or floor == (0, 1):
        return None
    return f"{floor[0]}-{floor[1]}"


def trim_events(client: redis.Redis, stream: str = EVENTS_STREAM) -> int:
    """Trim acknowledged entries only (MINID, never past a pending/unread entry)."""
    minid = safe_trim_id(client, stream)
    if minid is None:
        return 0
    return int(client.xtrim(stream, minid=minid, approximate=True) or 0)


def installation_id(database: Path) -> str:
    """A short, stable hash of where this installation stores its events (its
    database path): two homes give two ids, without writing the path to Redis."""
    return hashlib.sha256(str(Path(database).absolute()).encode()).hexdigest()[:12]


def register_installation(client: redis.Redis, consumer: str, home: str, now: float | None = None) -> None:
    """Record in Redis that ``consumer`` belongs to the installation ``home``."""
    value = json.dumps({"home": home, "seen": round(time.time() if now is None else now, 1)})
    client.hset(INSTALLATIONS_KEY, consumer, value)


def foreign_consumers(client: redis.Redis, own: str, home: str, *, now: float | None = None,
                      active_ms: int = ACTIVE_CONSUMER_MS) -> tuple[str, ...]:
    """Consumers of the group ``processors`` other than ``own`` that were active in
    the last ``active_ms``: each one is another installation splitting the events
    with this one (a consumer name is per installation). One line each, naming
    the consumer and what the registry knows of it. Stale registry entries are
    removed on the way."""
    now = time.time() if now is None else now
    try:
        consumers = client.xinfo_consumers(EVENTS_STREAM, GROUP)
    except redis.ResponseError:  # no stream or group yet
        return ()
    registry = {_s(k): _s(v) for k, v in (client.hgetall(INSTALLATIONS_KEY) or {}).items()}
    stale = []
    known: dict[str, dict[str, Any]] = {}
    for name, raw in registry.items():
        try:
            entry = json.loads(raw)
            seen = float(entry.get("seen", 0))
        except (ValueError, TypeError, AttributeError):
            stale.append(name)
            continue
        if now - seen > INSTALLATION_TTL_S:
            stale.append(name)
        else:
            known[name] = entry
    if stale:
        client.hdel(INSTALLATIONS_KEY, *stale)
    out = []
    for c in consumers:
        name = _s(c["name"])
        idle = int(c.get("idle") or 0)
        if name == own or idle > active_ms:
            continue
        entry = known.get(name)
        if entry is None:
            what = "an installation that did not register (an older version?)"
        elif entry.get("home") == home:
            what = "the same data directory under another consumer id"
        else:
            what = f"another installation (home {entry.get('home')})"
        out.append(f"{name}: {what}, active {idle // 1000} s ago, {int(c.get('pending') or 0)} pending")
    return tuple(sorted(out))


def trim_dlq_bytes(client: redis.Redis, max_bytes: int, *, stream: str = DLQ_STREAM,
                   dropped_key: str = DLQ_DROPPED_KEY, rounds: int = 4) -> int:
    """Drop the oldest dead letters while the DLQ takes more than ``max_bytes``
    of Redis memory (MEMORY USAGE, every node counted), down to 90% of it, and
    add what was dropped to ``dropped_key`` (health's ``dlq_dropped``). The
    publisher caps the DLQ by count as it writes; this caps it by bytes.
    Returns how many were dropped."""
    dropped = 0
    for _ in range(rounds):
        used = client.memory_usage(stream, samples=0)
        if not used:
            break
        length = int(client.xlen(stream))
        n = dlq.over_byte_cap(int(used), length, max_bytes)
        if n <= 0:
            break
        got = int(client.xtrim(stream, maxlen=length - n, approximate=False) or 0)
        if not got:
            break
        client.incrby(dropped_key, got)
        dropped += got
    if dropped:
        log.warning("DLQ byte cap (%d bytes) reached: %d oldest dead letters dropped", max_bytes, dropped)
    return dropped


class Maintenance(threading.Thread):
    def __init__(self, cfg: Config, endpoint: Endpoint, health: Health, consumer: FastPathConsumer,
                 monitors: list[MonitorThread]) -> None:
        super().__init__(name="maintenance", daemon=True)
        self.cfg = cfg
        self.endpoint = endpoint
        self.health = health
        self.consumer = consumer
        self.monitors = monitors
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._redis = LazyClient(endpoint, socket_timeout=cfg.redis.socket_timeout_s,
                                 connect_timeout=cfg.redis.connect_timeout_s)
        self._next_usage = 0.0
        self._next = {"spool": 0.0, "trim": 0.0, "db": 0.0, "foreign": 0.0}
        self._home = installation_id(cfg.paths.database)
        self._foreign: tuple[str, ...] = ()
        self._spool_state = spool_drain.DrainState()
        self._was_busy = False
        self._dlq_cap_failed = False
        self._retention = retention.Retention(cfg.retention, cfg.paths.database, wait=self._stopping.wait,
                                              busy=lambda: self.consumer.rate.rate(10) > 0)
        self._retention_note = ""
        self._retention_next_s = float("inf")  # when retention's next slice is due, after this tick

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def poke(self) -> None:
        """Refresh and publish now (after pause/resume)."""
        self._wake.set()

    def run(self) -> None:
        interval = self.cfg.ingest.health_publish_interval_s
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                self.tick()
                # retention with work left goes on when its rest is over, not a whole interval later
                self._wake.wait(min(interval, self._retention_next_s))
            self.tick(final=True)
        finally:
            self._redis.drop()

    def tick(self, final: bool = False) -> None:
        now = time.monotonic()
        # the consumer only refreshes its numbers when it does something; the
        # rates must also fall back to 0 when nothing arrives
        rate = self.consumer.rate
        changes: dict[str, Any] = {"rate_10s": rate.rate(10), "rate_1m": rate.rate(60)}
        if self.monitors:
            changes["monitors"] = {getattr(m, "name", type(m).__name__): _monitor_health(m)
                                   for m in self.monitors}
        if now >= self._next["db"] and not final:
            self._next["db"] = now + DB_STATS_INTERVAL_S
            changes.update(self._db_stats())
        try:
            # files sent but impossible to delete are not waiting: they need
            # the user, like the bad ones
            stuck = self._spool_state.stuck_names
            st = spool_drain.stats(self.cfg.paths.spool_dir, exclude=stuck)
            changes.update(spool_files=st.files, spool_bad=st.bad + len(stuck),
                           spool_oldest_age_s=st.oldest_age_s)
        except Exception as exc:  # noqa: BLE001
            log.debug("spool stats failed: %s", exc)
        self.health.update(**changes)
        self._trim_after_burst()
        if not final and self.health.snapshot().sqlite_ok:
            checkpoint(self.cfg.paths.database)
        try:
            client = self._connection()
            self._redis_work(client, now, final)
        except (redis.RedisError, OSError) as exc:
            log.debug("maintenance: redis: %s", exc)
            self._drop()
        if not final:
            self._apply_retention()

    def _apply_retention(self) -> None:
        """A slice of retention, when due and the database works; a database
        made before incremental vacuum is switched over when ingest is quiet.
        A failure is retention's (logged, shown in health), never the thread's."""
        snap = self.health.snapshot()
        ret = self._retention
        self._retention_next_s = float("inf")
        if not snap.sqlite_ok or not ret.enabled:
            return
        try:
            if ret.due():
                self._retention_note = ret.run(RETENTION_SLICE_S).note
                self._retention_next_s = max(0.01, ret.wait_s())
            quiet = snap.rate_1m == 0 and snap.backlog == 0 and snap.pending == 0
            converted = ret.convert_old(quiet)
            if converted:
                self._retention_note = converted
        except (sqlite3.Error, OSError) as exc:  # OSError: the file system, around the old database's switch
            if "locked" in str(exc) or "busy" in str(exc):
                log.debug("retention: %s (tried again next tick)", exc)  # the writer had the lock: normal
                return
            ret.postpone()
            log.warning("retention: %s (tried again in %.0f s)", exc, self.cfg.retention.check_interval_s)
            self._retention_note = f"failed: {exc}"

    def _trim_after_burst(self) -> None:
        """Once ingest has been quiet for 10 s after a burst, return the memory
        the burst used to the OS (the app sits idle most of the day)."""
        busy = self.health.snapshot().rate_10s > 0
        if busy:
            self._was_busy = True
        elif self._was_busy:
            self._was_busy = False
            tuning.release_memory()

    def _connection(self) -> redis.Redis:
        return self._redis.get()

    def _drop(self) -> None:
        self._redis.drop()

    def _redis_work(self, client: redis.Redis, now: float, final: bool) -> None:
        ing = self.cfg.ingest
        if not final and not self.consumer.paused and now >= self._next["spool"]:
            self._next["spool"] = now + ing.spool_drain_interval_s
            try:
                res = spool_drain.drain(self.cfg.paths.spool_dir, client, state=self._spool_state)
                if getattr(res, "sent", 0):
                    log.info("spool: re-queued %d spooled events", res.sent)
            except (redis.RedisError, OSError):
                raise
            except Exception:  # noqa: BLE001 - a spool bug must not stop the engine
                log.exception("spool drain failed")
        if not final and now >= self._next["trim"]:
            self._next["trim"] = now + ing.trim_interval_s
            trimmed = trim_events(client)
            if trimmed:
                log.debug("trimmed %d acknowledged entries from %s", trimmed, EVENTS_STREAM)
            self._trim_dlq(client)
        if not final and now >= self._next["foreign"]:
            self._next["foreign"] = now + FOREIGN_CHECK_INTERVAL_S
            self._check_foreign(client)
        pipe = client.pipeline(transaction=False)
        pipe.xinfo_groups(EVENTS_STREAM)
        pipe.xlen(DLQ_STREAM)
        pipe.get(DLQ_DROPPED_KEY)
        pipe.xlen(EVENTS_STREAM)
        groups, dlq_len, dropped, events_len = pipe.execute(raise_on_error=False)
        changes: dict[str, Any] = {}
        if isinstance(groups, list):
            for g in groups:
                if _s(g["name"]) == GROUP:
                    changes["pending"] = int(g.get("pending") or 0)
                    lag = g.get("lag")
                    if lag is None and isinstance(events_len, int):
                        lag = 0 if not events_len else None
                    changes["backlog"] = int(lag) if lag is not None else 0
        if isinstance(dlq_len, int):
            changes["dlq_length"] = dlq_len
        if not isinstance(dropped, Exception):
            changes["dlq_dropped"] = int(dropped or 0)
        snap = self.health.update(**changes)
        client.set(HEALTH_KEY, json.dumps(snap.to_dict(), default=str),
                   ex=max(5, int(ing.health_publish_interval_s * 5)))
        if final:
            client.delete(HEALTH_KEY)

    def _check_foreign(self, client: redis.Redis) -> None:
        own = str(getattr(self.consumer, "name_in_group", "") or "")
        if not own:
            return
        register_installation(client, own, self._home)
        found = foreign_consumers(client, own, self._home)
        if found != self._foreign:
            for line in found:
                if line.split(":", 1)[0] not in {f.split(":", 1)[0] for f in self._foreign}:
                    log.warning("another engine consumes %s on this Redis and stores its share of the "
                                "events elsewhere: %s", EVENTS_STREAM, line)
            self._foreign = found
            self.health.update(foreign_consumers=found)

    def _trim_dlq(self, client: redis.Redis) -> None:
        try:
            trim_dlq_bytes(client, self.cfg.ingest.dlq_max_bytes)
        except redis.ResponseError as exc:  # MEMORY disabled on someone's own Redis: count cap only
            if not self._dlq_cap_failed:
                log.warning("DLQ byte cap not applied: %s", exc)
            self._dlq_cap_failed = True

    def _usage_today(self, db: sqlite3.Connection) -> dict[str, Any]:
        """Today's tokens, cost and prompts from the derived usage tables (never
        raw rows), at most every USAGE_REFRESH_S; nothing before the tables exist."""
        now = time.monotonic()
        if now < self._next_usage:
            return {}
        self._next_usage = now + USAGE_REFRESH_S
        from tray_app.usage import query

        try:
            t = query.today(db)
        except (sqlite3.Error, LookupError, ValueError) as exc:
            log.debug("usage today: %s", exc)
            return {}
        return {"usage_today_tokens": int(t["total_tokens"] or 0), "usage_today_cost_usd": t["cost_usd"],
                "usage_today_prompts": int(t["prompts"] or 0)}

    def _db_stats(self) -> dict[str, Any]:
        """Rows and today's counts, from a short-lived read-only connection.

        Not kept open between ticks: SQLite shares one WAL-index mapping per file
        within a process, and one opened while the volume was read-only would keep
        the writer failing with "readonly database" after the volume recovers."""
        path = self.cfg.paths.database
        if not path.exists():
            return {}
        try:
            db = schema.connect(path, readonly=True, timeout_s=0.1)
        except sqlite3.Error as exc:
            log.debug("db stats: %s", exc)
            return {}
        try:
            rows = db.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
            midnight = datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
            since = midnight.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            # forget's content-free row that keeps the newest sequence is no event, its '' no session
            today, sessions = db.execute(
                "SELECT COUNT(*), COUNT(DISTINCT session_id) FROM raw_traces WHERE timestamp >= ? "
                "AND event_type != ?", (since, TOMBSTONE)).fetchone()
            out: dict[str, Any] = {"db_rows": int(rows), "today_events": int(today),
                                   "today_sessions": int(sessions)}
            out.update(self._usage_today(db))
            out.update(self._storage(db))
            return out
        except sqlite3.Error as exc:
            log.debug("db stats: %s", exc)
            return {}
        finally:
            db.close()

    def _storage(self, db: sqlite3.Connection) -> dict[str, Any]:
        """Sizes, free disk, the tray's storage warning and retention's counts."""
        s = self.cfg.retention
        p = storage.pages(db)
        try:
            free, total = storage.disk_space(self.cfg.paths.database)
        except OSError:
            free = total = 0
        state, warning = storage.storage_state(s, p.used_bytes, free, total) if total else (storage.OK, "")
        info = retention.status(db)
        info.update(max_txn_ms=round(self._retention.peak_txn_ms, 1), note=self._retention_note)
        return {"db_used_bytes": p.used_bytes, "db_file_bytes": p.file_bytes,
                "db_cap_bytes": s.max_db_mb * 1_000_000, "disk_free_bytes": free, "storage_state": state, "storage_warning": warning, "retention": info}


def _monitor_health(m: Any) -> dict[str, Any]:
    try:
        h = m.health()
        return dict(h) if isinstance(h, dict) else {"state": str(h)}
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}
