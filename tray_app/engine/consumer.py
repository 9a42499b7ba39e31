"""FastPathConsumer: telemetry:events -> raw_traces, acknowledging only after COMMIT.

The consumer thread's loop, in this order each turn:
  1. reclaim stale pending entries when due (XAUTOCLAIM into our own pending
     list), then our own pending entries after a (re)start, reconnect or claim
     (XREADGROUP ... 0), counting each such attempt in SQLite first;
  2. read new entries (XREADGROUP ... >) into the batch in hand, never holding
     more than one batch, bounded by count and by bytes;
  3. flush when the batch is full, the stream drained, or the batch old enough:
     sort the entries into rows and dead letters (batch.EntryProcessor: any
     failure of one entry makes it a dead letter), the rows in one SQLite
     transaction; then the after-commit step hands the batch's one Redis round
     trip (dead letters, CDC entries, XACK) to the CDCPublisher thread, which
     runs it while this thread reads and writes the next batch.
An entry that keeps killing the process is not retried forever: the stream's
delivery counter does not survive a restart of the private server, so
attempts on recovered entries are committed to SQLite before they are
processed; after a crash during recovery, entries are processed one at a
time, so only the entry at fault reaches ``max_retries`` and is dead-lettered.
A SQLite failure keeps the batch in hand and stops reading until a retry
succeeds (backpressure); a Redis failure drops the connection, backs off and
reconnects (anything unacknowledged is redelivered: the insert is idempotent).

Shutdown order (stop()): stop reading -> finish the batch in hand -> COMMIT ->
the publisher's last round trip (CDC, XACK) -> close.
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
from tray_app.engine.batch import Batch, DeadLetter, Entry, EntryProcessor, Fields
from tray_app.engine.health import DEGRADED, PAUSED, RUNNING, STOPPED, Health, LatencyWindow, RateMeter
from tray_app.engine.writer import KIND_TEXT, SQLiteBatchWriter, Stored
from tray_app.errors import DatabaseError, RedisUnavailable
from tray_app.engine.publisher import CDCPublisher, Job
from tray_app.redis_conn import EVENTS_STREAM, GROUP, Endpoint, close_quietly, ensure_group
from tray_app.redis_conn import text as _s

log = logging.getLogger(__name__)

CommitListener = Callable[[list[dict[str, Any]]], None]
#: called with (thread name, error) when a thread of the consumer died and was replaced
ThreadDeath = Callable[[str, str], None]

#: before any entry size is known, assume entries this big (of max_batch_bytes)
INITIAL_SIZE_SHARE = 4


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
        self.processor = EntryProcessor(self.writer, consumer_name, self.ing.max_retries,
                                        self.ing.max_entry_bytes, cfg.paths.state_dir)
        self.batch = Batch()
        #: size of the entries to expect, for reading fewer when they are large:
        #: the largest of the last read, or half the previous estimate
        self.entry_bytes_est = max(1, self.ing.max_batch_bytes // INITIAL_SIZE_SHARE)
        self.batch_size = max(self.ing.batch_size_min, min(self.ing.batch_size_max, 500))
        self.rate = RateMeter(clock)
        self.latency = LatencyWindow()
        self.listeners: list[CommitListener] = []
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._wake = threading.Event()
        self._client: redis.Redis | None = None
        self._read_pending = True     # our own PEL first, after start and reconnect
        self._drained = False         # the last read of new entries got fewer than asked
        self._next_claim = 0.0
        self.publisher = CDCPublisher(cfg, endpoint, health)
        self.on_thread_death: ThreadDeath | None = None
        #: acknowledged / dead-lettered by publishers that were replaced, and by
        #: the consumer this one replaced
        self._acked_base = 0
        self._dead_base = 0
        self._not_recorded_base = 0
        self._forgotten_base = 0
        self._redis_backoff = Backoff(self.ing.backoff_initial_s, self.ing.backoff_max_s)
        self._db_backoff = Backoff(self.ing.backoff_initial_s, self.ing.backoff_max_s)
        self._db_error: DatabaseError | None = None
        self._redis_error: str | None = None
        self._counts = {"ingested": 0, "dups": 0}
        self.fatal: BaseException | None = None
        #: the exception that ended the thread, if one did (the engine restarts it)
        self.crashed: BaseException | None = None

    @property
    def totals(self) -> dict[str, int]:
        """Rows stored, entries acknowledged, dead letters, duplicates since start."""
        return {"ingested": self._counts["ingested"], "acked": self._acked_base + self.publisher.acked,
                "dead": self._dead_base + self.publisher.dead, "dups": self._counts["dups"]}

    def inherit(self, old: "FastPathConsumer") -> None:
        """Carry on from a consumer that died: counters, rates, listeners, pause."""
        totals = old.totals
        self._counts = {"ingested": totals["ingested"], "dups": totals["dups"]}
        self._acked_base, self._dead_base = totals["acked"], totals["dead"]
        self._not_recorded_base = old.processor.not_recorded + old._not_recorded_base
        self._forgotten_base = old.processor.forgotten + old._forgotten_base
        self.publisher.health_base = (self._acked_base, self._dead_base)
        self.rate, self.latency = old.rate, old.latency
        self.batch_size = old.batch_size
        self.listeners = old.listeners
        self.on_thread_death = old.on_thread_death
        if old.paused:
            self._paused.set()

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
        except Exception as exc:  # SchemaTooNew and the like: cannot run at all
            self.fatal = exc
            log.error("consumer cannot start: %s", exc)
            self._set_state()
            return
        self.publisher.start()
        try:
            while not self._stopping.is_set():
                self._turn()
            self._shutdown()
        except Exception as exc:  # noqa: BLE001 - noticed and restarted by the engine
            self.crashed = exc
            log.exception("consumer thread died; the engine restarts it")
        finally:
            self.publisher.stop()
            self.publisher.join(self.cfg.redis.socket_timeout_s + 1)
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001
                log.exception("closing the database failed")
            close_quietly(self._client)
            if self.crashed is None:
                self._set_state(final=True)

    def _check_publisher(self) -> None:
        """A publisher thread that died is replaced (its job, if any, was not
        acknowledged: our pending entries are read again)."""
        pub = self.publisher
        if pub.is_alive() or self._stopping.is_set():
            return
        error = f"{type(pub.crashed).__name__}: {pub.crashed}" if pub.crashed else "exited unexpectedly"
        log.error("cdc-publisher thread died (%s); starting a new one", error)
        self._acked_base += pub.acked
        self._dead_base += pub.dead
        self.publisher = CDCPublisher(self.cfg, self.endpoint, self.health)
        self.publisher.health_base = (self._acked_base, self._dead_base)
        self.publisher.start()
        self._read_pending = True
        if self.on_thread_death is not None:
            self.on_thread_death("cdc-publisher", error)

    def _turn(self) -> None:
        self._check_publisher()
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
        if len(self.batch) and (self._drained or len(self.batch) >= self.batch_size or self._batch_full_bytes() or
                                self.clock() - (self.batch.started or 0) >= self.ing.flush_interval_ms / 1000):
            self._flush()

    def _batch_full_bytes(self) -> bool:
        return self.batch.bytes >= self.ing.max_batch_bytes

    def _count_for_bytes(self, want: int) -> int:
        """How many entries to ask for so the batch stays under max_batch_bytes."""
        room = self.ing.max_batch_bytes - self.batch.bytes
        return max(1, min(want, room // self.entry_bytes_est))

    def _learn_size(self, biggest: int) -> None:
        self.entry_bytes_est = max(1, biggest, self.entry_bytes_est // 2)

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
        if want <= 0 or (len(self.batch) and self._batch_full_bytes()):
            return  # the batch in hand is full (COUNT 0 would mean "everything")
        want = self._count_for_bytes(want)
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
            got = _entries(reply)
            if got:
                self._learn_size(self.batch.add(got, {}, self.clock()))
            # fewer than asked for: the stream is drained, nothing is gained by
            # waiting for the flush deadline (group commit: under load each read
            # brings what arrived during the previous commit)
            self._drained = self.ing.flush_on_drain and len(got) < want

    def _read_own_pending(self, client: redis.Redis) -> None:
        """Entries delivered to this consumer name earlier and never acknowledged
        (the engine was killed, or they were claimed from a dead consumer): they
        come first after a (re)start. Each attempt on them is committed to SQLite
        before they are processed; when some were tried before without settling
        (a crash during recovery), they are taken one at a time."""
        # an acknowledgement still in flight would make us re-read stored entries
        self.publisher.wait_idle(self.cfg.redis.socket_timeout_s + 1)
        with _group_command(client):
            rows = client.xpending_range(EVENTS_STREAM, GROUP, min="-", max="+",
                                         count=self.batch_size, consumername=self.name_in_group)
        if not rows:
            self._read_pending = False
            return
        delivered = {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}
        try:
            tried = self.writer.attempts(list(delivered))
        except DatabaseError:
            tried = {}
        count = 1 if any(tried.values()) else self._count_for_bytes(len(delivered))
        with _group_command(client):
            reply = client.xreadgroup(GROUP, self.name_in_group, {EVENTS_STREAM: "0"}, count=count)
            entries = [(sid, f) for sid, f in _entries(reply) if f]
            deleted = [sid for sid, f in _entries(reply) if not f]
            if deleted:
                client.xack(EVENTS_STREAM, GROUP, *deleted)  # trimmed away: nothing to store
        if not entries:
            if not deleted:
                self._read_pending = False
            return
        ids = [sid for sid, _ in entries]
        try:
            tried = self.writer.record_attempts(ids)
        except DatabaseError as exc:
            log.warning("could not record attempts (%s); using the stream's delivery counts", exc)
        deliveries = {sid: max(delivered.get(sid, 0) + 1, tried.get(sid, 0) + 1) for sid in ids}
        self._learn_size(self.batch.add(entries, deliveries, self.clock(), recovered=ids))
        log.info("recovering %d pending entries of consumer %s%s", len(entries), self.name_in_group,
                 " (one at a time after a failed recovery)" if count == 1 and len(delivered) > 1 else "")

    def _claim_stale(self, client: redis.Redis) -> None:
        """XAUTOCLAIM entries idle longer than claim_idle_ms from any consumer into
        our own pending list; they are then read as our own pending entries, with
        the same attempt counting. (Not JUSTID: redis-py drops the cursor then.)"""
        with _group_command(client):
            start = "0-0"
            claimed = 0
            while claimed < self.batch_size:
                reply = client.xautoclaim(EVENTS_STREAM, GROUP, self.name_in_group,
                                          min_idle_time=self.ing.claim_idle_ms, start_id=start,
                                          count=self.batch_size - claimed)
                start = _s(reply[0])
                claimed += len(reply[1])  # read again below as our own pending entries
                if len(reply) > 2 and reply[2]:
                    # entries deleted from the stream while pending: nothing left to store
                    client.xack(EVENTS_STREAM, GROUP, *reply[2])
                if start == "0-0":
                    break
            if claimed:
                log.info("claimed %d stale pending entries", claimed)
                self._read_pending = True

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
        good, dead = self.processor.sort(self.batch.entries, self.batch.sizes)
        try:
            stored, unstorable = self.processor.store(good, self.batch.recovered, self._fields_of)
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        dead.extend(unstorable)
        if self._db_error is not None:
            log.info("database: writes succeed again")
            self._db_error = None
            self._db_backoff.reset()
        self._after_commit(stored, dead, len(good) - len(unstorable))

    def _after_commit(self, stored: Stored | None, dead: list[DeadLetter], n_good: int) -> None:
        """The batch is committed: hand its round trip (dead letters, CDC, XACK)
        to the publisher, reading the next batch first when there is a backlog;
        then counters, health and the commit listeners."""
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
        self.rate.add(n_good)
        if stored is not None:
            self.latency.add(stored.commit_ms)
            self._adapt(stored.commit_ms, n_good)
        self._set_state()
        if stored is not None and self.listeners:
            events = [{**ev, "sequence": seq} for seq, ev in stored.rows]
            for fn in self.listeners:
                try:
                    fn(events)
                except Exception:  # a listener must never stop ingest
                    log.exception("commit listener %r failed", fn)

    def _fields_of(self, sid: str) -> tuple[Fields, int]:
        for entry_id, fields, deliveries in self.batch.entries:
            if entry_id == sid:
                return fields, deliveries
        return {}, 0

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
            total_not_recorded=self.processor.not_recorded + self._not_recorded_base,
            total_forgotten=self.processor.forgotten + self._forgotten_base,
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
