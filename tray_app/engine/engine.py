"""Engine: the ingest engine's one public face.

``start()``, ``pause()``, ``resume()``, ``stop()``, ``health()``. No UI, no
signals: the tray and the headless CLI are two faces on the same engine.

Threads it owns, joined against one shared deadline on stop():
  consumer     FastPathConsumer: stream -> SQLite -> CDC + XACK
  maintenance  health publishing, backlog/pending/DLQ counts, spool drain, trimming
  monitors     Cursor / Claude Code / sessions (tray_app.monitors), when present
  usage        the slow-path worker on cdc:events that keeps the derived usage
               tables (tray_app.usage.worker), when present
  otlp-export  opt-in ([export] otlp_endpoint): aggregated usage metrics to a
               team's OpenTelemetry Collector (tray_app.otlp.exporter)
  otlp-receiver  the loopback OTLP/HTTP receiver for Claude Code's own telemetry
               (tray_app.otlp.receiver), when ``[otlp] receiver_enabled``
  supervisor   notices any of the above that died and restarts it with backoff
               (tray_app.engine.supervisor); the consumer does the same for its
               CDC publisher
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from tray_app.config import Config
from tray_app.engine.consumer import FastPathConsumer
from tray_app.engine.health import STOPPED, Health, HealthSnapshot
from tray_app.engine.maintenance import Maintenance
from tray_app.engine.supervisor import Supervisor
from tray_app.monitors import MonitorThread, build_monitors
from tray_app.fileutil import kept_token
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)


def consumer_name(cfg: Config) -> str:
    """Stable across restarts of this installation (not the pid), so a restarted
    engine picks up its own pending entries first."""
    ident = kept_token(cfg.paths.state_dir / "consumer-id", 4)
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{ident}"


class Engine:
    def __init__(self, cfg: Config, endpoint: Endpoint, *, name: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 with_monitors: bool = True, with_usage: bool = True, with_otlp: bool = True) -> None:
        self.cfg = cfg
        self.endpoint = endpoint
        cfg.paths.ensure()
        self.name = name or consumer_name(cfg)
        self.health_state = Health()
        self.consumer = FastPathConsumer(cfg, endpoint, self.name, self.health_state, clock)
        self.monitors: list[MonitorThread] = []
        monitor_error = None
        if with_monitors:
            try:
                self.monitors = build_monitors(cfg, endpoint)
            except Exception as exc:  # noqa: BLE001 - ingest goes on; the error is shown, not hidden
                log.exception("monitors: could not start")
                monitor_error = f"{type(exc).__name__}: {exc}"
            for m in self.monitors:
                if hasattr(m, "on_commit"):
                    self.consumer.listeners.append(m.on_commit)
        self.maintenance = Maintenance(cfg, endpoint, self.health_state, self.consumer, self.monitors)
        self.usage: Any = None
        usage_error = None
        if with_usage:
            try:
                self.usage = self._new_usage(None)
            except Exception as exc:  # noqa: BLE001 - derived tables are not ingest: shown, not fatal
                log.exception("usage worker: could not start")
                usage_error = f"{type(exc).__name__}: {exc}"
        self.exporter: Any = None
        export_error = None
        if cfg.export.otlp_endpoint:
            try:
                self.exporter = self._new_exporter(None)
            except Exception as exc:  # noqa: BLE001 - export is not ingest: shown, not fatal
                log.exception("otlp export: could not start")
                export_error = f"{type(exc).__name__}: {exc}"
        self.otlp: Any = None
        otlp_error = None
        if with_otlp and cfg.otlp.receiver_enabled:
            try:
                self.otlp = self._new_otlp(None)
            except Exception as exc:  # noqa: BLE001 - hooks and monitors go on; shown, not hidden
                log.exception("otlp receiver: could not start")
                otlp_error = f"{type(exc).__name__}: {exc}"
                self.health_state.update(otlp_receiver=f"could not start: {otlp_error}")
        ing = cfg.ingest
        self.supervisor = Supervisor(self.health_state, self._replaced,
                                     backoff_initial_s=ing.backoff_initial_s, backoff_max_s=ing.backoff_max_s)
        self.consumer.on_thread_death = self.supervisor.report
        self.supervisor.watch("consumer", self.consumer, self._new_consumer)
        self.supervisor.watch("maintenance", self.maintenance, self._new_maintenance)
        for m in self.monitors:
            self.supervisor.watch(m.name, m, self._new_monitor)
        if self.usage is not None:
            self.supervisor.watch("usage", self.usage, self._new_usage)
        if self.exporter is not None:
            self.supervisor.watch("otlp-export", self.exporter, self._new_exporter)
        if export_error is not None:
            self.health_state.update(export_status="error", export_last_error=f"could not start: {export_error}",
                                     export_last_error_at=time.time())
            self.supervisor.report("otlp-export", f"could not start: {export_error}", restarted=False)
        if self.otlp is not None:
            self.supervisor.watch("otlp-receiver", self.otlp, self._new_otlp)
        if otlp_error is not None:
            self.supervisor.report("otlp-receiver", f"could not start: {otlp_error}", restarted=False)
        if usage_error is not None:
            self.supervisor.report("usage", f"could not start: {usage_error}", restarted=False)
        if monitor_error is not None:
            self.supervisor.report("monitors", f"could not start: {monitor_error}", restarted=False)
        self._started = False
        self._stopped = False

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        log.info("engine: starting consumer %s (database %s, redis %s)", self.name,
                 self.cfg.paths.database, self.endpoint.masked)
        self.consumer.start()
        self.maintenance.start()
        for m in self.monitors:
            m.start()
        if self.usage is not None:
            self.usage.start()
        if self.exporter is not None:
            self.exporter.start()
        if self.otlp is not None:
            self.otlp.start()
        self.supervisor.start()

    # -- restarts (the supervisor's factories, called on its thread) -------------------------

    def _new_consumer(self, old: FastPathConsumer) -> FastPathConsumer:
        new = FastPathConsumer(self.cfg, self.endpoint, self.name, self.health_state, self.consumer.clock)
        new.inherit(old)
        return new

    def _new_maintenance(self, old: Maintenance) -> Maintenance:
        return Maintenance(self.cfg, self.endpoint, self.health_state, self.consumer, self.monitors)

    def _new_monitor(self, old: Any) -> Any:
        new = type(old)(self.cfg, self.endpoint)
        if old.paused:
            new.pause()
        return new

    def _new_usage(self, old: Any) -> Any:
        from tray_app.usage.worker import UsageWorker  # the slow path is optional in a build

        new = UsageWorker(self.cfg, self.endpoint, busy=self._ingest_busy)
        if old is not None and old.paused:
            new.pause()
        return new

    def _new_exporter(self, old: Any) -> Any:
        from tray_app.otlp.exporter import UsageExporter  # the OpenTelemetry SDK loads only when enabled

        return UsageExporter(self.cfg, self.health_state)

    def _new_otlp(self, old: Any) -> Any:
        from tray_app.otlp.receiver import OtlpReceiver  # protobuf is loaded only when it runs

        return OtlpReceiver(self.cfg, self.endpoint, self.health_state,
                            stats=old.stats if old is not None else None)

    def _ingest_busy(self) -> bool:
        """Ingest stored events in the last few seconds (slow-path workers yield)."""
        return self.consumer.rate.rate(10) > 0

    def _replaced(self, name: str, old: Any, new: Any) -> None:
        if name == "usage":
            self.usage = new
        elif name == "otlp-export":
            self.exporter = new
        elif name == "otlp-receiver":
            self.otlp = new
        elif name == "consumer":
            self.consumer = new
            self.maintenance.consumer = new
        elif name == "maintenance":
            self.maintenance = new
        else:
            self.monitors[:] = [new if m is old else m for m in self.monitors]  # shared with maintenance
            if hasattr(old, "on_commit"):
                listeners = self.consumer.listeners
                listeners[:] = [new.on_commit if fn == old.on_commit else fn for fn in listeners]

    def pause(self) -> None:
        """Stop reading after the batch in hand commits; events keep queueing in Redis."""
        log.info("engine: pause")
        self.consumer.pause()
        for m in self.monitors:
            m.pause()
        if self.usage is not None:
            self.usage.pause()
        self.maintenance.poke()

    def resume(self) -> None:
        log.info("engine: resume")
        self.consumer.resume()
        for m in self.monitors:
            m.resume()
        if self.usage is not None:
            self.usage.resume()
        self.maintenance.poke()

    @property
    def paused(self) -> bool:
        return self.consumer.paused

    def health(self) -> HealthSnapshot:
        return self.health_state.snapshot()

    def retry_dead_letters(self) -> int:
        """Re-queue every dead letter to telemetry:events."""
        from tray_app.engine.dlq_ops import retry

        client = self.endpoint.client()
        try:
            return retry(client, None)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop in order within one deadline: monitors and reading stop, the batch
        in hand commits and is acknowledged, then connections close. True when
        every thread ended in time."""
        if self._stopped or not self._started:
            self._stopped = True
            return True
        self._stopped = True
        deadline = time.monotonic() + timeout_s
        log.info("engine: stopping")
        self.supervisor.stop()  # no restarts while stopping
        self.supervisor.join(max(0.0, deadline - time.monotonic()))
        if self.otlp is not None:  # producers first: nothing new is accepted while the rest stops
            self.otlp.stop()
        for m in self.monitors:
            m.stop()
        if self.usage is not None:
            self.usage.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.consumer.stop()
        for m in self.monitors:
            m.join(max(0.0, deadline - time.monotonic()))
        if self.usage is not None:
            self.usage.join(max(0.0, deadline - time.monotonic()))
        if self.otlp is not None:
            self.otlp.join(max(0.0, deadline - time.monotonic()))
        self.consumer.join(max(0.0, deadline - time.monotonic()))
        self.maintenance.stop()
        self.maintenance.join(max(0.0, deadline - time.monotonic()))
        if self.exporter is not None:
            # an export in flight ends within its own timeout; it holds nothing to commit
            self.exporter.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in (self.consumer, self.maintenance, *self.monitors,
                                  *([self.usage] if self.usage is not None else []),
                                  *([self.exporter] if self.exporter is not None else []),
                                  *([self.otlp] if self.otlp is not None else [])) if t.is_alive()]
        if alive:
            log.warning("engine: threads still running at the deadline: %s", ", ".join(alive))
        self.health_state.update(state=STOPPED, reasons=("Stopped",))
        log.info("engine: stopped (ingested %d, acknowledged %d, dead letters %d)",
                 self.consumer.totals["ingested"], self.consumer.totals["acked"],
                 self.consumer.totals["dead"])
        return not alive

    def wait_fatal(self) -> BaseException | None:
        return self.consumer.fatal


__all__ = ["Engine", "consumer_name"]
