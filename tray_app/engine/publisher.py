"""CDCPublisher: after a batch commits, one Redis round trip publishes its CDC
entries, writes its dead letters and acknowledges it.

It runs in its own thread with its own connection, so the round trip for
batch N overlaps the reading, decoding and SQLite work of batch N+1 (on a
laptop's two cores the Redis server and the consumer then both stay busy).
At most one job is in flight: ``submit`` waits for the previous one, which
bounds what is held in memory to the batch in hand plus the small CDC
arguments of the batch being acknowledged.

A failed round trip loses nothing: the batch is committed but not
acknowledged, so its entries are redelivered (the consumer re-reads its own
pending entries after ``failure`` is reported) and stored as duplicates,
which the idempotent insert ignores and CDC publishes again (at least once).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import orjson
import redis

from tray_app.config import Config
from tray_app.engine.health import Health
from tray_app.redis_conn import (CDC_STREAM, DLQ_DROPPED_KEY, DLQ_STREAM, EVENTS_STREAM, GROUP, Endpoint,
                                 LazyClient, translate)

log = logging.getLogger(__name__)

#: CDC entries and XACK for a committed batch in one atomic server-side step.
#: KEYS = cdc stream, events stream; ARGV = group, cdc maxlen, a JSON array of
#: [sequence, event_id, session_id, event_type, platform, timestamp] rows, a JSON
#: array of the stream ids to acknowledge. Two JSON strings instead of one
#: argument per value keep the client's work per batch, not per event, which
#: matters because the client is CPU-bound (bench/ingest_bench.py).
CDC_ACK_LUA = """
local rows = cjson.decode(ARGV[3])
for _, r in ipairs(rows) do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
    'sequence', r[1], 'event_id', r[2], 'session_id', r[3],
    'event_type', r[4], 'platform', r[5], 'timestamp', r[6])
end
local ids = cjson.decode(ARGV[4])
local acked = 0
local i = 1
while i <= #ids do
  local last = math.min(i + 999, #ids)
  acked = acked + redis.call('XACK', KEYS[2], ARGV[1], unpack(ids, i, last))
  i = last + 1
end
return acked
"""


@dataclass
class Job:
    cdc: list[tuple[str, str, str, str, str, str]]  # (sequence, event_id, ..., timestamp)
    ids: list[str]                                  # stream ids to acknowledge
    dead: list[dict[bytes | str, bytes | str]] = field(default_factory=list)


class CDCPublisher(threading.Thread):
    def __init__(self, cfg: Config, endpoint: Endpoint, health: Health | None = None) -> None:
        super().__init__(name="cdc-publisher", daemon=True)
        self.health = health
        #: acknowledged / dead-lettered before this publisher (a replaced one's)
        self.health_base = (0, 0)
        self.crashed: BaseException | None = None
        self.cfg = cfg
        self.endpoint = endpoint
        self._job: Job | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._redis = LazyClient(endpoint, socket_timeout=cfg.redis.socket_timeout_s,
                                 connect_timeout=cfg.redis.connect_timeout_s)
        self._sha_generation = 0
        self._sha: str | None = None
        #: set when a round trip failed; the consumer reads and clears it
        self.failure: str | None = None
        self.acked = 0
        self.dead = 0

    # -- consumer side -------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Hand over a committed batch; waits while the previous one is in flight."""
        with self._cond:
            while self._job is not None and self.is_alive():
                self._cond.wait(0.5)
            if not self.is_alive():
                self._run_job(job)  # not started or already stopped: do it inline
                return
            self._job = job
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._job is None, timeout)

    def take_failure(self) -> str | None:
        with self._cond:
            failure, self.failure = self.failure, None
            return failure

    def stop(self) -> None:
        """Finish the job in hand, then end."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    # -- thread --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # noqa: BLE001 - the consumer notices and replaces us
            self.crashed = exc
            log.exception("cdc-publisher thread died")
        finally:
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._job is not None or self._stopping)
                    job = self._job
                    if job is None:
                        return
                self._run_job(job)
                with self._cond:
                    self._job = None
                    self._cond.notify_all()
        finally:
            self._close()

    def _run_job(self, job: Job) -> None:
        try:
            self._round_trip(job)
        except Exception as exc:  # noqa: BLE001 - any failure means: not acknowledged
            if isinstance(exc, (redis.RedisError, OSError)):
                message = str(translate(exc, self.endpoint))
            else:
                message = f"{type(exc).__name__}: {exc}"
            log.warning("cdc/ack round trip failed (%s); the batch will be redelivered", message)
            self._close()
            with self._cond:
                self.failure = message
        if self.health is not None:
            # the counters move when the round trip is done, not at the next batch
            base_acked, base_dead = self.health_base
            self.health.update(total_acked=base_acked + self.acked, total_dead_letters=base_dead + self.dead)

    def _connection(self) -> redis.Redis:
        client = self._redis.get()
        if self._sha_generation != self._redis.generation:
            self._sha = None  # a new connection: maybe a restarted server without the script
            self._sha_generation = self._redis.generation
        return client

    def _close(self) -> None:
        self._redis.drop()

    def _round_trip(self, job: Job) -> None:
        ing = self.cfg.ingest
        client = self._connection()
        if self._sha is None:
            self._sha = client.script_load(CDC_ACK_LUA)
        args: list[str | int | bytes] = [GROUP, ing.cdc_maxlen, orjson.dumps(job.cdc), orjson.dumps(job.ids)]
        pipe = client.pipeline(transaction=True)
        for d in job.dead:
            pipe.xadd(DLQ_STREAM, d)  # type: ignore[arg-type]
        if job.dead:
            pipe.xtrim(DLQ_STREAM, maxlen=ing.dlq_maxlen, approximate=False)
        pipe.evalsha(self._sha, 2, CDC_STREAM, EVENTS_STREAM, *args)
        results = pipe.execute(raise_on_error=False)
        script = results[-1]
        if isinstance(script, redis.exceptions.NoScriptError) or (
                isinstance(script, redis.ResponseError) and "NOSCRIPT" in str(script)):
            # the server restarted or flushed its scripts: load it and run it again
            self._sha = client.script_load(CDC_ACK_LUA)
            client.evalsha(self._sha, 2, CDC_STREAM, EVENTS_STREAM, *args)
        elif isinstance(script, Exception):
            raise script
        self.acked += len(job.ids)
        self.dead += len(job.dead)
        if job.dead:
            dropped = results[len(job.dead)]
            if isinstance(dropped, int) and dropped:
                try:
                    client.incrby(DLQ_DROPPED_KEY, dropped)
                except (redis.RedisError, OSError):
                    pass
                log.warning("DLQ cap (%d) reached: %d dead letters dropped", ing.dlq_maxlen, dropped)
            # the byte cap too, as soon as dead letters are written (maintenance
            # also applies it every trim_interval_s); it counts what it drops
            from tray_app.engine.maintenance import trim_dlq_bytes

            try:
                trim_dlq_bytes(client, ing.dlq_max_bytes)
            except (redis.RedisError, OSError) as exc:
                log.warning("DLQ byte cap not applied now (%s); maintenance retries", exc)
            log.warning("dead-lettered %d entries (%s)", len(job.dead), ", ".join(sorted(reasons_of(job.dead))))


def reasons_of(dead: list[dict[bytes | str, bytes | str]]) -> set[str]:
    out = set()
    for d in dead:
        reason = d.get("dlq:reason", d.get("reason", "?"))
        out.add(reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason))
    return out
