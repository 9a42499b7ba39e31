"""EngineRuntime: the one start-up and shutdown sequence of the engine, for
both faces (``run --headless`` and the tray).

Start: the Redis endpoint (the private valkey-server, started or adopted,
unless ``[redis] url`` points elsewhere) -> the start-up log lines ->
streams and consumer group -> the ``Engine`` and its threads -> the private
server's supervisor (``server_watch.py``). From the first moment, the health
snapshot is also written to a file in the state directory
(``health_file.py``), so ``status`` can tell "running, Redis down" from "not
running".

Stop, against one shared deadline: the supervisor and the start thread stop
-> the engine stops in order (stop reading, commit the batch in hand, XACK,
close) -> the private server stops -> the health file goes.

Commands from other processes (``telemetry-tray pause`` / ``resume``)
arrive as request files that the engine-control thread applies
(``control.py``), so both faces obey them, Redis up or down. "Don't
record" is a file of its own (``capture/norecord.py``): the runtime starts
and ends windows for the tray and reads the one in force, cheaply.

Threads it owns:
  engine-start        (tray only) starts the engine, retrying with backoff
  redis-supervisor    pings the private server, restarts it when it dies
  engine-health-file  writes the health file about once a second
  engine-control      applies pause/resume requests from the command line
  (engine threads)    consumer, publisher, maintenance, monitors

No UI and no signals: the faces install those.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tray_app import __version__
from tray_app.capture import norecord
from tray_app.config import Config
from tray_app.engine.backoff import Backoff
from tray_app.engine.control import ControlWatcher
from tray_app.engine.health import PAUSED, RUNNING, STARTING, STOPPED, HealthSnapshot
from tray_app.engine.health_file import HealthFileWriter, health_file_path
from tray_app.engine.server_watch import OK, ServerWatch

log = logging.getLogger(__name__)

#: the private server always gets this long to shut down cleanly
MIN_SERVER_STOP_S = 2.0

FACE_HEADLESS = "headless"
FACE_TRAY = "tray"


@dataclass(frozen=True)
class RuntimeSettings:
    face: str = FACE_HEADLESS
    with_monitors: bool = True
    #: how often the private server is pinged
    supervise_interval_s: float = 1.0
    restart_backoff_initial_s: float = 1.0
    restart_backoff_max_s: float = 15.0
    #: a restarted server that stays up this long resets the restart backoff
    restart_stable_after_s: float = 30.0
    health_file_interval_s: float = 1.0
    #: how often the control directory is looked at (pause/resume from the CLI)
    control_interval_s: float = 0.2
    #: tray: retries of a start that failed (no server binary, bad redis.url, ...)
    start_backoff_initial_s: float = 1.0
    start_backoff_max_s: float = 60.0


def log_startup(cfg: Config, endpoint: Any) -> None:
    """The start-up lines every face logs: config, Redis (masked), database, versions."""
    import sqlite3

    import redis as redis_mod

    log.info("config: %s", cfg.source)
    log.info("redis: %s%s", endpoint.masked, " (private server)" if endpoint.managed else "")
    log.info("database: %s", cfg.paths.database)
    log.info("versions: telemetry-tray %s, Python %s, redis-py %s, SQLite %s, %s",
             __version__, platform.python_version(), redis_mod.__version__, sqlite3.sqlite_version,
             platform.platform())


def _default_provider(cfg: Config) -> Any:
    from tray_app.redis_conn import RedisProvider

    return RedisProvider(cfg)


class EngineRuntime:
    def __init__(self, cfg: Config, settings: RuntimeSettings | None = None, *,
                 provider_factory: Callable[[Config], Any] = _default_provider) -> None:
        self.cfg = cfg
        self.settings = settings or RuntimeSettings()
        self._provider_factory = provider_factory
        self.provider: Any = None
        self.engine: Any = None
        self.watch: ServerWatch | None = None
        #: the private server's last recovery message (corrupt files set aside), "" if none
        self.server_recovery = ""
        now = time.time()
        self._pre = HealthSnapshot(state=STARTING, started_at=now, updated_at=now)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._begun = False
        self._stopped = False
        self._start_thread: threading.Thread | None = None
        self._health_file = HealthFileWriter(
            health_file_path(cfg.paths.state_dir), self.health, face=self.settings.face,
            server_recovery=lambda: self.server_recovery,
            interval_s=self.settings.health_file_interval_s)
        self._control = ControlWatcher(
            cfg.paths.state_dir, pause=self.pause, resume=self.resume, paused=lambda: self.paused,
            on_change=self._health_file.write_once, interval_s=self.settings.control_interval_s)
        self._no_record = norecord.NoRecord()
        self._no_record_stamp: tuple[int, int] | None = None

    # ---- read by the faces (memory only, never blocks on I/O)

    def health(self) -> HealthSnapshot:
        engine = self.engine
        return engine.health() if engine is not None else self._pre

    @property
    def paused(self) -> bool | None:
        """The engine's pause flag; None while it is not started."""
        engine = self.engine
        return bool(engine.paused) if engine is not None else None

    @property
    def ready(self) -> bool:
        return self.engine is not None

    def fatal(self) -> BaseException | None:
        """An error the engine cannot go on after (e.g. a database schema too new)."""
        engine = self.engine
        return engine.wait_fatal() if engine is not None else None

    # ---- commands

    def pause(self) -> bool:
        """Stop reading after the batch in hand commits. False: not started yet."""
        engine = self.engine
        if engine is None:
            return False
        engine.pause()
        return True

    def resume(self) -> bool:
        engine = self.engine
        if engine is None:
            return False
        engine.resume()
        # An idle consumer recomputes its state only when something happens;
        # without this, status would say "paused" until the next event.
        # "paused" is only ever set with nothing wrong, so running is right.
        if engine.health_state.snapshot().state == PAUSED:
            engine.health_state.update(state=RUNNING, reasons=("Running",))
        return True

    # ---- "don't record" (a file: works before the engine started, and after)

    def not_recording(self, now: float | None = None) -> tuple[float, float | None] | None:
        """The don't-record window in force at ``now`` (start, end or None for
        "until resumed"), None while recording. Re-reads the file only when it changed."""
        try:
            st = norecord.path_in(self.cfg.paths.state_dir).stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._no_record_stamp:
            self._no_record_stamp = stamp
            self._no_record = norecord.load(self.cfg.paths.state_dir) if stamp else norecord.NoRecord()
        return self._no_record.active(now)

    def no_record(self, duration: str | float | None = None) -> None:
        """Stop recording now: for ``duration`` seconds, or a spec such as "30m",
        "1h", "tomorrow"; None or "" until record_again(). Replaces a window in force."""
        seconds: float | None
        if duration is None or duration == "":
            seconds = None
        elif isinstance(duration, str):
            seconds = norecord.parse_duration(duration)
        else:
            seconds = float(duration)
        window = norecord.start(self.cfg.paths.state_dir, seconds)
        log.info("don't record: on %s", "until resumed" if window[1] is None
                 else f"for {norecord.describe_left(window[1] - window[0]).removesuffix(' left')}")

    def record_again(self) -> None:
        """End the don't-record window in force, if any."""
        if norecord.stop(self.cfg.paths.state_dir):
            log.info("don't record: off (recording again)")

    def retry_dead_letters(self) -> int:
        engine = self.engine
        if engine is None:
            raise RuntimeError("the engine is still starting")
        return int(engine.retry_dead_letters())

    # ---- lifecycle

    def start(self) -> None:
        """Start now; raises the one-line error (TelemetryTrayError) when it cannot.
        Call stop() afterwards either way."""
        self._begin()
        self._start_once()

    def start_background(self) -> None:
        """Start on a thread, retrying with backoff; health() says why meanwhile."""
        self._begin()
        self._start_thread = threading.Thread(target=self._start_loop, name="engine-start", daemon=True)
        self._start_thread.start()

    def _begin(self) -> None:
        if self._begun:
            raise RuntimeError("EngineRuntime: already started")
        self._begun = True
        self.cfg.paths.ensure()
        self._health_file.start()
        self._control.start()

    def _start_loop(self) -> None:
        s = self.settings
        backoff = Backoff(s.start_backoff_initial_s, s.start_backoff_max_s)
        while not self._stopping.is_set():
            try:
                self._start_once()
                return
            except Exception as exc:  # noqa: BLE001 - shown to the user, retried
                message = str(exc) or exc.__class__.__name__
                delay = backoff.next_delay()
                log.error("engine could not start: %s (retrying in %.0f s)", message, delay)
                now = time.time()
                self._pre = HealthSnapshot(state=STARTING, last_error=message, last_error_at=now,
                                           redis_status=message, started_at=self._pre.started_at,
                                           updated_at=now)
                if self._stopping.wait(delay):
                    return

    def _start_once(self) -> None:
        import redis

        from tray_app.engine import tuning
        from tray_app.engine.engine import Engine
        from tray_app.redis_conn import ensure_streams, translate

        with self._lock:
            if self._stopping.is_set():
                return
            if self.provider is None:
                provider = self._provider_factory(self.cfg)
                provider.start()
                self.provider = provider
            endpoint = self.provider.endpoint
            log_startup(self.cfg, endpoint)
            self._note_recovery()
            client = endpoint.client()
            try:
                ensure_streams(client)
            except redis.RedisError as exc:
                log.warning("redis not ready yet (%s); the engine will keep retrying",
                            translate(exc, endpoint))
            finally:
                client.close()
            engine = Engine(self.cfg, endpoint, with_monitors=self.settings.with_monitors)
            tuning.apply()
            if endpoint.managed:
                engine.health_state.update(server_status=OK, server_restarts=0)
            engine.start()
            self.engine = engine
            if endpoint.managed:
                s = self.settings
                self.watch = ServerWatch(
                    self.provider, self._publish_server, interval_s=s.supervise_interval_s,
                    backoff=Backoff(s.restart_backoff_initial_s, s.restart_backoff_max_s),
                    stable_after_s=s.restart_stable_after_s, on_restart=self._after_restart)
                self.watch.start()

    # ---- the private server

    def _publish_server(self, status: str, restarts: int) -> None:
        self._note_recovery()
        engine = self.engine
        if engine is not None:
            engine.health_state.update(server_status=status, server_restarts=restarts)

    def _note_recovery(self) -> None:
        message = getattr(self.provider, "last_recovery", None)
        if message and str(message) != self.server_recovery:
            self.server_recovery = str(message)
            log.warning("private redis: %s", self.server_recovery)

    def _after_restart(self) -> None:
        """A restarted server may have started empty (its data set aside): the
        streams and the group come back. (The provider rewrote the hooks' endpoint file.)"""
        from tray_app.redis_conn import ensure_streams

        self._note_recovery()
        client = self.provider.endpoint.client()
        try:
            ensure_streams(client)
        finally:
            client.close()

    # ---- stop

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop everything in order within one deadline. True when every part
        ended in time. Idempotent."""
        if self._stopped:
            return True
        self._stopped = True
        deadline = time.monotonic() + timeout_s

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self._stopping.set()
        self._control.stop()
        if self.watch is not None:
            self.watch.stop()
        ok = True
        if self._start_thread is not None and self._start_thread.is_alive():
            self._start_thread.join(left())
        if not self._lock.acquire(timeout=left()):
            log.warning("runtime: still starting at the stop deadline")
            ok = False
        else:
            try:
                ok = self._stop_parts(deadline) and ok
            finally:
                self._lock.release()
        if self._control.is_alive():
            self._control.join(max(0.1, left()))
        self._health_file.stop()
        if self._health_file.is_alive():
            self._health_file.join(max(0.1, left()))
        return ok

    def _stop_parts(self, deadline: float) -> bool:
        ok = True
        if self.engine is not None:
            ok = bool(self.engine.stop(timeout_s=max(0.1, deadline - time.monotonic())))
        else:
            self._pre = HealthSnapshot(state=STOPPED, reasons=("Stopped",), started_at=self._pre.started_at,
                                       updated_at=time.time())
        if self.watch is not None and self.watch.is_alive():
            self.watch.join(max(0.0, deadline - time.monotonic()))
            if self.watch.is_alive():
                log.warning("runtime: the redis supervisor is still restarting the server at the deadline")
                ok = False
        if self.provider is not None:
            try:
                # the shared deadline, but never less than it takes to flush the
                # append-only file (SHUTDOWN fsyncs it; a kill would lose events)
                self.provider.stop(timeout_s=max(MIN_SERVER_STOP_S, deadline - time.monotonic()))
            except Exception:
                log.exception("stopping the private Redis failed")
        return ok


__all__ = ["FACE_HEADLESS", "FACE_TRAY", "EngineRuntime", "RuntimeSettings", "log_startup"]
