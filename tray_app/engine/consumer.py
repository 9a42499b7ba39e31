"""FastPathConsumer: telemetry:events -> raw_traces, acknowledging only after COMMIT.

One thread, one loop, in this order each turn:
  1. reclaim stale pending entries when due (XAUTOCLAIM), then our own pending
     entries after a (re)start or reconnect (XREADGROUP ... 0);
  2. read new entries (XREADGROUP ... >) into the batch in hand, never holding
     more than one batch;
  3. flush when the batch is full or old enough: decode/validate, poison to the
     DLQ, good events in one SQLite transaction, then ONE Redis round trip
     (MULTI: CDC entries, dead letters, XACK).
A SQLite failure keeps the batch in hand and stops reading until a retry
succeeds (backpressure); a Redis failure drops the connection, backs off and
reconnects (anything unacknowledged is redelivered: the insert is idempotent).

Shutdown order (stop()): stop reading -> finish the batch in hand -> COMMIT ->
XACK -> close.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from tray_app.config import Config
from tray_app.engine.backoff import Backoff
from tray_app.engine.dlq import dead_letter, retries_exhausted
from tray_app.engine.health import DEGRADED, PAUSED, RUNNING, STOPPED, Health, LatencyWindow, RateMeter
from tray_app.engine.writer import KIND_TEXT, SQLiteBatchWriter, Stored
from tray_app.errors import DatabaseError, RedisUnavailable
from tray_app.events import R_RETRIES, InvalidEntry, decode
from tray_app.engine.publisher import CDCPublisher, Job
from tray_app.redis_conn import EVENTS_STREAM, GROUP, Endpoint, close_quietly, ensure_group, stream_id_key
from tray_app.redis_conn import text as _s

log = logging.getLogger(__name__)

Fields = dict[bytes | str, bytes | str]
Entry = tuple[str, Fields]

CommitListener = Callable[[list[dict[str, Any]]], None]


class Batch:
    """Entries read but not yet committed and acknowledged."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Fields, int]] = []  # (id, fields, delivery count)
        self.started: float | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entries: list[Entry], deliveries: dict[str, int], now: float) -> None:
        if not entries:
            return
        if self.started is None:
            self.started = now
        for sid, fields in entries:
            self.entries.append((sid, fields, deliveries.get(sid, 1)))

    def clear(self) -> None:
        self.entries = []
        self.started = None


class FastPathConsumer(threading.Thread):
    def __init__(self, cfg: Config, endpoint: Endpoint, consumer_name: str, health: Health,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="consumer", daemon=True)
        self.cfg = cfg
        self.ing = cfg.ingest
        self.endpoint = endpoint
        self.name_in_group = consumer_name
        self.health = health
        self.clock = clock
        self.writer = SQLiteBatchWriter(cfg.paths.database)
        self.batch = Batch()
        self.batch_size = max(self.ing.batch_size_min, min(self.ing.batch_size_max, 500))
        self.rate = RateMeter(clock)
        self.latency = LatencyWindow()
        self.listeners: list[CommitListener] = []
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._wake = threading.Event()
        self._client: redis.Redis | None = None
        self._read_pending = True     # our own PEL first, after start and reconnect
        self._next_claim = 0.0
        self.publisher = CDCPublisher(cfg, endpoint)
        self._redis_backoff = Backoff(self.ing.backoff_initial_s, self.ing.backoff_max_s)
        self._db_backoff = Backoff(self.ing.backoff_initial_s, self.ing.backoff_max_s)
        self._db_error: DatabaseError | None = None
        self._redis_error: str | None = None
        self._counts = {"ingested": 0, "dups": 0}
        self.fatal: BaseException | None = None

    @property
    def totals(self) -> dict[str, int]:
        """Rows stored, entries acknowledged, dead letters, duplicates since start."""
        return {"ingested": self._counts["ingested"], "acked": self.publisher.acked,
                "dead": self.publisher.dead, "dups": self._counts["dups"]}

    # -- control (any thread) ------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def pause(self) -> None:
        self._paused.set()
        self._wake.set()

    def resume(self) -> None:
        self._paused.clear()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    # -- loop ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self.writer.open()
        except DatabaseError as exc:
            self._db_failed(exc)
        except BaseException as exc:  # SchemaTooNew and the like: cannot run at all
            self.fatal = exc
            log.error("consumer cannot start: %s", exc)
            self._set_state()
            return
        self.publisher.start()
        try:
            while not self._stopping.is_set():
                self._turn()
            self._shutdown()
        finally:
            self.publisher.stop()
            self.publisher.join(self.cfg.redis.socket_timeout_s + 1)
            self.writer.close()
            close_quietly(self._client)
            self._set_state(final=True)

    def _turn(self) -> None:
        failure = self.publisher.take_failure()
        if failure is not None:
            # a committed batch was not acknowledged: re-read our pending entries
            self._read_pending = True
            self._redis_failed(failure)
            return
        if self._db_error is not None:
            # backpressure: read nothing until the batch in hand commits
            if not self._wait(self._db_backoff.next_delay()):
                return
            self._flush()
            return
        if self._paused.is_set():
            if len(self.batch):
                self._flush()
                return
            self._set_state()
            self._wake.wait(0.5)
            self._wake.clear()
            return
        try:
            client = self._connection()
            now = self.clock()
            if not len(self.batch) and now >= self._next_claim:
                self._next_claim = now + self.ing.claim_interval_s
                self._claim_stale(client)
            if self._read_pending and not len(self.batch):
                self._read_own_pending(client)
            else:
                self._read_new(client)
        except RedisUnavailable as exc:
            self._redis_failed(str(exc))
            return
        if len(self.batch) and (len(self.batch) >= self.batch_size or
                                self.clock() - (self.batch.started or 0) >= self.ing.flush_interval_ms / 1000):
            self._flush()

    def _wait(self, seconds: float) -> bool:
        """Wait, waking early on stop(); False when stopping."""
        self._set_state()
        self._stopping.wait(seconds)
        return not self._stopping.is_set()

    # -- redis ---------------------------------------------------------------------------

    def _connection(self) -> redis.Redis:
        if self._client is None:
            timeout = self.cfg.redis.socket_timeout_s + self.ing.block_ms / 1000
            client = self.endpoint.client(socket_timeout=timeout,
                                          connect_timeout=self.cfg.redis.connect_timeout_s)
            try:
                client.ping()
                ensure_group(client)
            except (redis.RedisError, OSError) as exc:
                client.close()
                raise _unavailable(exc) from None
            self._client = client
            if self._redis_error is not None:
                log.info("redis: reconnected to %s", self.endpoint.masked)
            self._redis_error = None
            self._redis_backoff.reset()
            self._read_pending = True
            self._set_state()
        return self._client

    def _drop_connection(self) -> None:
        close_quietly(self._client)
        self._client = None

    def _redis_failed(self, message: str) -> None:
        if self._redis_error is None:
            log.warning("redis: %s; retrying with backoff", message)
        self._redis_error = message
        self._drop_connection()
        self.health.update(last_error=message, last_error_at=time.time())
        self._wait(self._redis_backoff.next_delay())

    def _read_new(self, client: redis.Redis, block: bool = True) -> None:
        want = self.batch_size - len(self.batch)
        if want <= 0:
            return  # the batch in hand is full (COUNT 0 would mean "everything")
        block_ms: int | None = self.ing.block_ms
        if len(self.batch):
            # a batch is open: wait no longer than its flush deadline
            left = self.ing.flush_interval_ms / 1000 - (self.clock() - (self.batch.started or 0))
            block_ms = max(1, min(self.ing.block_ms, int(left * 1000)))
        if not block:
            block_ms = None
        with _group_command(client):
            reply = client.xreadgroup(GROUP, self.name_in_group, {EVENTS_STREAM: ">"},
                                      count=want, block=block_ms)
            self.batch.add(_entries(reply), {}, self.clock())

    def _read_own_pending(self, client: redis.Redis) -> None:
        """Entries delivered to this consumer name earlier and never acknowledged
        (e.g. the engine was killed): they come first after a (re)start."""
        with _group_command(client):
            reply = client.xreadgroup(GROUP, self.name_in_group, {EVENTS_STREAM: "0"},
                                      count=self.batch_size)
            entries = [(sid, f) for sid, f in _entries(reply) if f]
            deleted = [sid for sid, f in _entries(reply) if not f]
            if deleted:
                client.xack(EVENTS_STREAM, GROUP, *deleted)  # trimmed away: nothing to store
            if not entries and not deleted:
                self._read_pending = False
                return
            self.batch.add(entries, self._deliveries(client, entries), self.clock())
            if entries:
                log.info("recovering %d pending entries of consumer %s", len(entries), self.name_in_group)

    def _claim_stale(self, client: redis.Redis) -> None:
        """XAUTOCLAIM entries idle longer than claim_idle_ms from any consumer."""
        with _group_command(client):
            start = "0-0"
            claimed: list[Entry] = []
            while len(claimed) < self.batch_size:
                reply = client.xautoclaim(EVENTS_STREAM, GROUP, self.name_in_group,
                                          min_idle_time=self.ing.claim_idle_ms, start_id=start,
                                          count=self.batch_size - len(claimed))
                start = _s(reply[0])
                got = [(_s(sid), f) for sid, f in reply[1] if f is not None]
                claimed.extend(got)
                if len(reply) > 2 and reply[2]:
                    # entries deleted from the stream while pending: nothing left to store
                    client.xack(EVENTS_STREAM, GROUP, *reply[2])
                if start == "0-0":
                    break
            if claimed:
                log.info("claimed %d stale pending entries", len(claimed))
                self.batch.add(claimed, self._deliveries(client, claimed), self.clock())

    def _deliveries(self, client: redis.Redis, entries: list[Entry]) -> dict[str, int]:
        if not entries:
            return {}
        ids = sorted((sid for sid, _ in entries), key=stream_id_key)
        rows = client.xpending_range(EVENTS_STREAM, GROUP, min=ids[0], max=ids[-1],
                                     count=len(ids) + 1000, consumername=self.name_in_group)
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    # -- flush ---------------------------------------------------------------------------

    def _flush(self) -> None:
        if not len(self.batch):
            if self._db_error is not None:
                try:
                    self.writer.open()  # the failure was at open: is the database back?
                except DatabaseError as exc:
                    self._db_failed(exc)
                    return
                self._db_error = None
                self._db_backoff.reset()
                self._set_state()
            return
        good: list[tuple[str, dict[str, Any]]] = []
        dead: list[dict[bytes | str, bytes | str]] = []
        for sid, fields, deliveries in self.batch.entries:
            if retries_exhausted(deliveries, self.ing.max_retries):
                dead.append(dead_letter(fields, reason=R_RETRIES,
                                        error=f"delivered {deliveries} times (max_retries={self.ing.max_retries})",
                                        delivery_count=deliveries, consumer=self.name_in_group,
                                        original_id=sid))
                continue
            try:
                good.append((sid, decode(fields, self.ing.max_entry_bytes)))
            except InvalidEntry as exc:
                dead.append(dead_letter(fields, reason=exc.reason, error=exc.error,
                                        delivery_count=deliveries, consumer=self.name_in_group,
                                        original_id=sid))
        stored: Stored | None = None
        if good:
            try:
                stored = self.writer.write(good)
            except DatabaseError as exc:
                self._db_failed(exc)
                return
        if self._db_error is not None:
            log.info("database: writes succeed again")
            self._db_error = None
            self._db_backoff.reset()
        ids = [sid for sid, _, _ in self.batch.entries]
        cdc = [] if stored is None else [
            (str(seq), ev["event_id"], ev["session_id"], ev["event_type"], ev["platform"], ev["timestamp"])
            for seq, ev in stored.rows]
        job = Job(cdc=cdc, ids=ids, dead=dead)
        backlog = (len(ids) >= self.batch_size and not self._read_pending
                   and not self._paused.is_set() and not self._stopping.is_set())
        self.batch.clear()
        if backlog and self._client is not None:
            # With a backlog, read the next batch before handing this one's round
            # trip to the publisher: the server answers the read first, then runs
            # the CDC/ack script while we decode and write (one batch in hand).
            try:
                self._read_new(self._client, block=False)
            except RedisUnavailable as exc:
                self.publisher.submit(job)
                self._redis_failed(str(exc))
                return
        # committed: the round trip (CDC, dead letters, XACK) runs in the publisher,
        # overlapping the next batch; a failure there means redelivery, not loss
        self.publisher.submit(job)
        self._counts["ingested"] += stored.inserted if stored else 0
        self._counts["dups"] += stored.duplicates if stored else 0
        self.rate.add(len(good))
        if stored is not None:
            self.latency.add(stored.commit_ms)
            self._adapt(stored.commit_ms, len(good))
        self._set_state()
        if stored is not None and self.listeners:
            events = [{**ev, "sequence": seq} for seq, ev in stored.rows]
            for fn in self.listeners:
                try:
                    fn(events)
                except Exception:  # a listener must never stop ingest
                    log.exception("commit listener %r failed", fn)

    def _adapt(self, commit_ms: float, n: int) -> None:
        """Keep commit latency near target_commit_ms within the configured bounds."""
        target = self.ing.target_commit_ms
        if commit_ms > target * 1.5:
            self.batch_size = max(self.ing.batch_size_min, int(self.batch_size * 0.7))
        elif commit_ms < target * 0.5 and n >= self.batch_size:
            self.batch_size = min(self.ing.batch_size_max, int(self.batch_size * 1.25) + 1)

    def _db_failed(self, exc: DatabaseError) -> None:
        if self._db_error is None or self._db_error.kind != exc.kind:
            log.error("database: %s; holding %d entries, retrying with backoff", exc, len(self.batch))
        self._db_error = exc
        self.health.update(last_error=str(exc), last_error_at=time.time())
        self._set_state()

    def _shutdown(self) -> None:
        """Finish the batch in hand: COMMIT then XACK, unless SQLite or Redis is down
        (then the entries stay pending and are redelivered at the next start)."""
        if len(self.batch) and self._db_error is None:
            self._flush()
        self.batch.clear()

    # -- health --------------------------------------------------------------------------

    def _set_state(self, final: bool = False) -> None:
        reasons: list[str] = []
        state = RUNNING
        if self._redis_error is not None:
            state = DEGRADED
            reasons.append(f"Redis unreachable: {self._redis_error}")
        if self._db_error is not None:
            state = DEGRADED
            reasons.append(f"Database: {KIND_TEXT.get(self._db_error.kind, self._db_error.kind)}")
        if self.fatal is not None:
            state = DEGRADED
            reasons.append(str(self.fatal))
        if state == RUNNING and self._paused.is_set():
            state = PAUSED
            reasons.append("Paused")
        if final:
            state = STOPPED
            reasons = ["Stopped"]
        p50, p95 = self.latency.percentiles()
        totals = self.totals
        self.health.update(
            state=state, reasons=tuple(reasons) or ("Running",),
            rate_10s=self.rate.rate(10), rate_1m=self.rate.rate(60),
            total_ingested=totals["ingested"], total_acked=totals["acked"],
            total_dead_letters=totals["dead"], total_duplicates=totals["dups"],
            redis_ok=self._redis_error is None and self._client is not None,
            redis_status="ok" if self._redis_error is None else self._redis_error,
            sqlite_ok=self._db_error is None,
            sqlite_status="ok" if self._db_error is None else self._db_error.kind,
            commit_p50_ms=round(p50, 2), commit_p95_ms=round(p95, 2), batch_size=self.batch_size,
            consumer=self.name_in_group)


def _entries(reply: Any) -> list[Entry]:
    out: list[Entry] = []
    if not reply:
        return out
    if isinstance(reply, dict):  # RESP3
        streams = reply.items()
    else:
        streams = reply
    for _, entries in streams:
        for sid, fields in entries:
            out.append((_s(sid), fields or {}))
    return out


@contextmanager
def _group_command(client: redis.Redis) -> Iterator[None]:
    """Redis errors of a group command become RedisUnavailable; a missing group
    (the stream was deleted or the server flushed) is created again and the
    command counts as having returned nothing."""
    try:
        yield
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise _unavailable(exc) from None
        try:
            ensure_group(client)
        except (redis.RedisError, OSError) as exc2:
            raise _unavailable(exc2) from None
    except (redis.RedisError, OSError) as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: BaseException) -> RedisUnavailable:
    from tray_app.redis_conn import translate

    return translate(exc)
