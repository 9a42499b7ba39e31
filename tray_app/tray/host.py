"""Hosting the engine inside the tray: start it in the background, keep a
snapshot to show before it exists, stop it in order.

Starting can be slow (spawning the private Redis) or fail (no server binary,
bad redis.url); the icon is up before any of that, showing "Starting..."
and then the reason, while this thread retries with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tray_app.config import Config
from tray_app.engine.health import STARTING, HealthSnapshot

log = logging.getLogger(__name__)


class EngineHost:
    def __init__(self, cfg: Config, with_monitors: bool = True) -> None:
        self.cfg = cfg
        self.with_monitors = with_monitors
        self.engine: Any = None
        self.provider: Any = None
        self._pre = HealthSnapshot(state=STARTING, started_at=time.time(), updated_at=time.time())
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start_loop, name="tray-engine-start", daemon=True)

    # ---- read by the refresher (memory only)

    def health(self) -> HealthSnapshot:
        engine = self.engine
        return engine.health() if engine is not None else self._pre

    def paused(self) -> bool | None:
        engine = self.engine
        return bool(engine.paused) if engine is not None else None

    # ---- lifecycle

    def start(self) -> None:
        self._thread.start()

    def _start_loop(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                self._start_once()
                return
            except Exception as exc:  # noqa: BLE001 - shown to the user, retried
                message = str(exc) or exc.__class__.__name__
                log.error("engine could not start: %s (retrying in %.0f s)", message, delay)
                self._pre = HealthSnapshot(state=STARTING, last_error=message, last_error_at=time.time(),
                                           redis_status=message, updated_at=time.time())
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 60.0)

    def _start_once(self) -> None:
        import redis

        from tray_app.engine.engine import Engine
        from tray_app.redis_conn import RedisProvider, ensure_streams, translate

        with self._lock:
            if self._stopping.is_set():
                return
            if self.provider is None:
                provider = RedisProvider(self.cfg)
                endpoint = provider.start()
                self.provider = provider
            endpoint = self.provider.endpoint
            from tray_app.engine.cli import log_startup

            log_startup(self.cfg, endpoint)  # config, redis (masked), database, versions
            client = endpoint.client()
            try:
                ensure_streams(client)
            except redis.RedisError as exc:
                log.warning("redis not ready yet (%s); the engine will keep retrying",
                            translate(exc, endpoint))
            finally:
                client.close()
            engine = Engine(self.cfg, endpoint, with_monitors=self.with_monitors)
            from tray_app.engine import tuning

            tuning.apply()
            engine.start()
            self.engine = engine

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop the engine in order (see Engine.stop), then the private Redis
        this process started. True when everything ended within the deadline."""
        deadline = time.monotonic() + timeout_s
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            ok = True
            if self.engine is not None:
                ok = bool(self.engine.stop(timeout_s=max(0.1, deadline - time.monotonic())))
            if self.provider is not None:
                try:
                    self.provider.stop()
                except Exception:
                    log.exception("stopping the private Redis failed")
        return ok
