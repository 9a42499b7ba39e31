"""Opt-in export of aggregated usage metrics to a team's OpenTelemetry Collector.

Off unless ``[export] otlp_endpoint`` is set. Then the engine runs one more
supervised thread, ``otlp-export``, that every ``interval_s``:

1. reads the cumulative totals from the derived usage tables
   (tray_app/usage/schema.py) over its own read-only SQLite connection, in
   one read transaction, with a time budget (a SQLite progress handler cuts a
   query that runs past it): a handful of GROUP BY queries whose result size
   is the number of (assistant, project hash, model) series, not of rows.
   They scan the tables (about 1 s per 600,000 rows on a busy 2-core
   machine), so they run only when the tables changed (:func:`change_key`,
   index-only) or every REREAD_AFTER_S; otherwise the last totals are sent;
2. hands them to the OpenTelemetry SDK as ObservableCounters and collects
   them through a PeriodicExportingMetricReader whose own timer is off
   (interval = inf): the collection and the OTLP/HTTP export (protobuf,
   gzip, the SDK's retries with backoff, all within ``timeout_s``) run on
   this thread, so the Supervisor sees it, restarts it, and stop() bounds it.

Why cumulative totals: an export carries the whole state, so an export that
fails loses nothing and nothing has to be queued: the next one that gets
through carries everything. When the collector is down, memory stays what
one export needs (the SDK keeps one value per series), whatever the outage's
length. A backend computes per-interval numbers with rate()/increase(); what
is sent never goes down (:class:`NeverDown`), and a rebuild's partial totals
are not sent.

What leaves the computer (docs/operations.md, "Team setup"): the metric
names and attributes below, numbers only. Never prompt text, code, paths,
file names or tool names: ``project`` is the 16-hex workspace hash, and tool
calls are counted by kind. Resource: service.name, service.version and
service.instance.id (a random id kept in the state dir, not the host name).

Health (``export_*`` fields of the snapshot): status, the metrics URL,
last success, last error, points accepted. The headers (credentials) are
never logged, never in health, and masked in the diagnostics bundle.

The SDK (the ``export`` extra: pip install 'telemetry-tray[export]') is
imported lazily, in the thread; without it, an [export] endpoint is a
one-line error in health, and ingest goes on.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tray_app import __version__
from tray_app.config import Config, parse_headers
from tray_app.engine.health import Health
from tray_app.fileutil import kept_token
from tray_app.usage import schema as usage_schema

log = logging.getLogger(__name__)

#: metric names (all counters, cumulative, monotonic) and their attributes
TOKENS = "telemetry_tray.tokens"            # assistant, project, model, type
COST = "telemetry_tray.cost"                # assistant, project, model (priced requests only)
REQUESTS = "telemetry_tray.requests"        # assistant, project, model
PROMPTS = "telemetry_tray.prompts"          # assistant, project
SESSIONS = "telemetry_tray.sessions"        # assistant, project
TOOL_CALLS = "telemetry_tray.tool_calls"    # assistant, project, kind
METRICS = (TOKENS, COST, REQUESTS, PROMPTS, SESSIONS, TOOL_CALLS)
TOKEN_TYPES = {"input": 0, "output": 1, "cache_creation": 2, "cache_read": 3}
#: value of ``project`` / ``model`` when the source did not say
UNKNOWN = "unknown"
INSTANCE_FILE = "export-instance-id"
METRICS_PATH = "/v1/metrics"
SDK_LOGGER = "opentelemetry.exporter.otlp.proto.http.metric_exporter"
#: the longest last-error text kept in health
MAX_ERROR_CHARS = 300
#: totals read while the usage tables did not change are reused for at most this long
REREAD_AFTER_S = 600.0

Attrs = tuple[tuple[str, str], ...]


def metrics_url(endpoint: str) -> str:
    """The OTLP/HTTP metrics URL of a base endpoint: ``/v1/metrics`` appended
    (as OTEL_EXPORTER_OTLP_ENDPOINT does), unless the URL already ends with it."""
    parts = urlsplit(endpoint)
    path = parts.path.rstrip("/")
    if not path.endswith(METRICS_PATH):
        path += METRICS_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def instance_id(state_dir: Path) -> str:
    """A random id for this installation, kept across restarts: tells one
    laptop's series from another's without naming the host or the user."""
    return kept_token(state_dir / INSTANCE_FILE, 8)


# ----------------------------------------------------------------------------- reading

@dataclass
class Totals:
    """One consistent reading of the usage tables: per metric, (attributes, value)."""
    points: dict[str, list[tuple[Attrs, float]]] = field(default_factory=lambda: {m: [] for m in METRICS})

    def add(self, metric: str, value: float, **attrs: str) -> None:
        self.points[metric].append((tuple(sorted(attrs.items())), value))


class QueryBudgetExceeded(Exception):
    pass


class NeverDown:
    """What is exported never goes down, and what comes next still adds up.

    The usage tables lose rows (``forget``, retention's ``usage_days``, a new
    database); a cumulative counter that goes down is read by every backend as
    a reset, and ``increase()`` over it counts the whole remaining total again.
    So per series the drop is kept as an offset: the series stays at what was
    sent and grows by what is new. A series gone from the tables is sent at its
    last value. Within one run of the thread; a restart starts new series (new
    start time), which is a reset in the OpenTelemetry data model too."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, Attrs], float] = {}
        self._offset: dict[tuple[str, Attrs], float] = {}

    def apply(self, totals: Totals) -> Totals:
        out = Totals()
        seen = set()
        for metric, pts in totals.points.items():
            for attrs, value in pts:
                key = (metric, attrs)
                seen.add(key)
                last = self._last.get(key, 0.0)
                if value < last:
                    self._offset[key] = self._offset.get(key, 0.0) + last - value
                self._last[key] = value
                out.points[metric].append((attrs, value + self._offset.get(key, 0.0)))
        for key, last in self._last.items():
            if key not in seen:
                self._offset[key] = self._offset.get(key, 0.0) + last
                self._last[key] = 0.0
                out.points[key[0]].append((key[1], self._offset[key]))
        return out


def change_key(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
    """Cheap (index-only) marks that move whenever the usage tables change: the
    workers' positions and times (every derived write moves them), and how many
    requests wait for a price (pricing writes do not move a position). None
    before the tables exist."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='usage_state'").fetchone() is None:
        return None
    state = conn.execute("SELECT worker, last_sequence, updated_at FROM usage_state ORDER BY worker").fetchall()
    unpriced = conn.execute("SELECT COUNT(*) FROM usage_requests WHERE pricing_version IS NULL").fetchone()[0]
    # deletions (forget, retention's usage_days) move no position: the rollups' sums
    # (small tables) see them
    sums = conn.execute("SELECT (SELECT TOTAL(requests) FROM usage_rollup_models), "
                        "(SELECT TOTAL(row_count) FROM usage_rollup_sessions)").fetchone()
    return (tuple(state), unpriced, tuple(sums))


def read_totals(conn: sqlite3.Connection, budget_s: float,
                clock: Callable[[], float] = time.monotonic) -> Totals:
    """The all-time totals of the derived usage tables (empty when they do not exist yet),
    from their per-quarter-hour rollups (usage/rollup.py) where they have the numbers.
    Raises QueryBudgetExceeded when the queries run longer than ``budget_s``."""
    from tray_app.usage.query import PREFERRED, TOOL_KINDS  # read-only use of the report's rules

    out = Totals()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='usage_state'").fetchone() is None:
        return out
    deadline = clock() + budget_s
    conn.set_progress_handler(lambda: int(clock() > deadline), 10_000)
    try:
        conn.execute("BEGIN")  # one snapshot for every metric
        try:
            for platform, ws, model, inp, outp, cw, cr, n, cost, priced in conn.execute(
                    "SELECT platform, workspace_hash, model, SUM(input_tokens), SUM(output_tokens), "
                    "SUM(cache_creation_tokens), SUM(cache_read_tokens), SUM(requests), SUM(cost_pusd), "
                    "SUM(priced) FROM usage_rollup_models GROUP BY 1, 2, 3"):
                a = {"assistant": platform, "project": ws or UNKNOWN, "model": model or UNKNOWN}
                for kind, value in zip(TOKEN_TYPES, (inp, outp, cw, cr)):
                    out.add(TOKENS, int(value or 0), type=kind, **a)
                out.add(REQUESTS, int(n), **a)
                if priced:
                    out.add(COST, int(cost or 0) / 1e12, **a)  # cost_pusd: pico-USD
            for platform, ws, n in conn.execute(
                    "SELECT s.platform, s.workspace_hash, SUM(CASE WHEN s.session_id = '' THEN s.prompts_store "
                    "+ s.prompts_other WHEN IFNULL(t.store_rows, 0) > 0 THEN s.prompts_store "
                    "ELSE s.prompts_other END) FROM usage_rollup_sessions s LEFT JOIN usage_rollup_store t "
                    "ON t.platform=s.platform AND t.session_id=s.session_id GROUP BY 1, 2"):
                if not n:
                    continue
                out.add(PROMPTS, int(n), assistant=platform, project=ws or UNKNOWN)
            kinds = ",".join(f"'{k}'" for k in TOOL_KINDS)
            for platform, ws, kind, n in conn.execute(
                    f"SELECT a.platform, a.workspace_hash, a.kind, COUNT(*) FROM usage_activity a "
                    f"WHERE a.kind IN ({kinds}) AND {PREFERRED} GROUP BY 1, 2, 3"):
                out.add(TOOL_CALLS, int(n), assistant=platform, project=ws or UNKNOWN, kind=kind)
            # a session counts once, under the project it was seen in (the report counts it once too)
            for platform, ws, n in conn.execute(
                    "SELECT platform, ws, COUNT(*) FROM (SELECT platform, session_id, MAX(workspace_hash) AS ws "
                    "FROM usage_rollup_sessions GROUP BY 1, 2) GROUP BY 1, 2"):
                out.add(SESSIONS, int(n), assistant=platform, project=ws or UNKNOWN)
        finally:
            if conn.in_transaction:  # an interrupted statement has rolled it back already
                conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryBudgetExceeded(f"reading the usage totals took longer than {budget_s:g} s; "
                                      f"skipped this export") from None
        raise
    finally:
        conn.set_progress_handler(None, 0)
    return out


# ----------------------------------------------------------------------------- the thread

class _SdkErrors(logging.Filter):
    """On the OTLP exporter's logger: its messages emitted on the export thread
    are kept (a fallback reason for health) and not logged: the thread logs one
    line when export starts failing and one when it works again, not two lines
    per attempt for as long as a collector is down."""

    def __init__(self, thread_id: Callable[[], int | None]) -> None:
        super().__init__()
        self._thread_id = thread_id
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._thread_id():
            return True
        if record.levelno >= logging.WARNING and len(self.messages) < 20:
            try:
                self.messages.append(record.getMessage())
            except Exception:  # noqa: BLE001 - a bad record must not break the export
                pass
        return False


def describe_failure(exc: BaseException | None, status: int | None, reason: str | None,
                     timeout_s: float) -> str:
    """One short line for health: why the collector did not take the export."""
    import requests

    if status is not None and status >= 400:
        return f"the collector answered HTTP {status}{' ' + reason if reason else ''}"
    if isinstance(exc, requests.ConnectTimeout):
        return f"timeout: could not connect within {timeout_s:g} s"
    if isinstance(exc, requests.Timeout):
        return f"timeout: the collector did not answer within {timeout_s:g} s"
    if exc is not None:
        text = str(exc)
        cause = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
        if isinstance(exc, requests.ConnectionError):
            return f"cannot connect: {cause.group(0) if cause else text}"
        return f"{type(exc).__name__}: {text}"
    return ""


def _session(owner: "UsageExporter") -> Any:
    """A requests session that remembers how the last request ended (the SDK
    retries and reports only success or failure)."""
    import requests

    # the SDK adds OTEL_EXPORTER_OTLP_(METRICS_)HEADERS of the app's environment to
    # ours: another backend's credentials (a developer's own OpenTelemetry setup),
    # never sent to this collector. Only [export] headers and the protocol's go out.
    allowed = {"content-type", "content-encoding", "user-agent", *(k.lower() for k in owner._headers)}

    class Session(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            headers = kwargs.get("headers")
            if headers is not None:
                kwargs["headers"] = {k: v for k, v in headers.items() if k.lower() in allowed}
            try:
                response = super().request(*args, **kwargs)
            except Exception as exc:
                owner.last_attempt = (exc, None, None)
                raise
            owner.last_attempt = (None, response.status_code, response.reason)
            return response

    return Session()


class UsageExporter(threading.Thread):
    """The ``otlp-export`` engine thread (see the module doc). ``stop()`` only
    signals (and aborts the SDK's retry wait); the engine joins it."""

    def __init__(self, cfg: Config, health: Health) -> None:
        import importlib.util

        from tray_app.errors import ConfigError

        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
            raise ConfigError("[export] otlp_endpoint is set but the OpenTelemetry SDK is not installed: "
                              "pip install 'telemetry-tray[export]' (or clear otlp_endpoint)")
        super().__init__(name="otlp-export", daemon=True)
        self.cfg = cfg
        self.health = health
        self.settings = cfg.export
        self.url = metrics_url(self.settings.otlp_endpoint)
        # parsed now: a bad value was refused at config load; the dict never leaves this object
        self._headers = parse_headers(self.settings.headers, "export.headers")
        self._stopping = threading.Event()
        self._sdk_exporter: Any = None
        self._sdk_lock = threading.Lock()
        self._sdk_closed = False
        self._sdk_errors = _SdkErrors(lambda: self.ident)
        self._totals = Totals()
        self._never_down = NeverDown()
        self._position = 0  # the usage worker's, at the last reading
        self._key: tuple[Any, ...] | None = None
        self._read_at = 0.0
        #: (exception, HTTP status, reason) of the latest HTTP request (set by _session)
        self.last_attempt: tuple[BaseException | None, int | None, str | None] = (None, None, None)
        self._points = 0
        self._failures = 0
        self._ok: bool | None = None

    def stop(self) -> None:
        self._stopping.set()
        self.close_sdk()  # ends a retry wait in progress at once

    def close_sdk(self) -> None:
        """Shut the OTLP exporter down, once (from stop() or the provider's shutdown)."""
        with self._sdk_lock:
            exporter = self._sdk_exporter
            if exporter is None or self._sdk_closed:
                return
            self._sdk_closed = True
        try:
            exporter.shutdown()
        except Exception:  # noqa: BLE001 - stopping must not raise
            log.debug("otlp export: exporter shutdown failed", exc_info=True)

    # -- the loop

    def run(self) -> None:
        s = self.settings
        keep = self.health.snapshot()
        self._points, self._failures = keep.export_points, keep.export_failures  # across restarts
        self.health.update(export_status=keep.export_status or "starting", export_endpoint=self.url)
        provider, reader = self._build()
        sdk_errors = self._sdk_errors
        sdk_log = logging.getLogger(SDK_LOGGER)
        sdk_log.addFilter(sdk_errors)
        conn: sqlite3.Connection | None = None
        try:
            while not self._stopping.is_set():
                sdk_errors.messages.clear()
                self.last_attempt = (None, None, None)
                try:
                    if conn is None:
                        conn = self._connect()
                    if conn is not None:
                        self._refresh(conn)
                        reader.collect(timeout_millis=s.timeout_s * 1000)
                except (sqlite3.Error, QueryBudgetExceeded) as exc:
                    if conn is not None and not isinstance(exc, QueryBudgetExceeded):
                        conn.close()
                        conn = None  # reopened next time (the database may have been replaced)
                    self._failed(f"usage tables: {exc}")
                if self._stopping.wait(s.interval_s):
                    break
        finally:
            sdk_log.removeFilter(sdk_errors)
            if conn is not None:
                conn.close()
            try:
                provider.shutdown(timeout_millis=1000)
            except Exception:  # noqa: BLE001
                log.debug("otlp export: provider shutdown failed", exc_info=True)

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Read the totals again when the usage tables changed (or REREAD_AFTER_S
        passed, for a change the key cannot see): an idle laptop costs no query."""
        key = change_key(conn)
        now = time.monotonic()
        if key is not None and key == self._key and now - self._read_at < REREAD_AFTER_S:
            return
        if key is not None and self._rebuilding(conn, key):
            return  # the last totals are sent until the tables are whole again
        self._totals = self._never_down.apply(read_totals(conn, max(1.0, self.settings.timeout_s)))
        self._key, self._read_at = key, now

    def _rebuilding(self, conn: sqlite3.Connection, key: tuple[Any, ...]) -> bool:
        """`usage rebuild` empties the tables and derives them again from raw_traces:
        its position (in the change key) starts again from 0 while the rows it
        will reach are there. Totals read meanwhile are partial; they are not
        sent (nor taken for a drop)."""
        pos = next((int(seq) for worker, seq, _at in key[0] if worker == usage_schema.WORKER), 0)
        if self._position and pos < self._position:
            top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
            if top >= self._position:
                return True
        self._position = pos
        return False

    def _connect(self) -> sqlite3.Connection | None:
        db = self.cfg.paths.database
        if not db.exists():
            return None  # nothing recorded yet: nothing to export
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=5, isolation_level=None)
        conn.execute("PRAGMA query_only=1")
        return conn

    # -- the SDK (imported here only: export is opt-in)

    def _build(self) -> tuple[Any, Any]:
        import math

        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        s = self.settings
        inner = OTLPMetricExporter(endpoint=self.url, headers=self._headers, timeout=s.timeout_s,
                                   compression=Compression.Gzip, session=_session(self))
        with self._sdk_lock:
            self._sdk_exporter = inner
        if self._stopping.is_set():
            self.close_sdk()
        reader = PeriodicExportingMetricReader(_recording(inner, self), export_interval_millis=math.inf,
                                               export_timeout_millis=s.timeout_s * 1000)
        # Resource(...) itself, not Resource.create(): exactly these attributes, nothing from the environment
        resource = Resource({"service.name": "telemetry-tray", "service.version": __version__,
                             "service.instance.id": instance_id(self.cfg.paths.state_dir)})
        provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
        meter = provider.get_meter("tray_app.otlp.exporter", __version__)
        described = {
            TOKENS: ("{token}", "tokens by type (input, output, cache_creation, cache_read)"),
            COST: ("USD", "cost of the priced requests, at the app's offline prices"),
            REQUESTS: ("{request}", "model API requests"),
            PROMPTS: ("{prompt}", "prompts the user sent"),
            SESSIONS: ("{session}", "assistant sessions"),
            TOOL_CALLS: ("{call}", "tool calls by kind (tool, shell, edit, subagent)"),
        }
        for name, (unit, description) in described.items():
            meter.create_observable_counter(name, callbacks=[self._observer(name)], unit=unit,
                                            description=description)
        return provider, reader

    def _observer(self, name: str) -> Callable[[Any], Iterable[Any]]:
        from opentelemetry.metrics import Observation

        def observe(_options: Any) -> Iterable[Any]:
            return [Observation(value, dict(attrs)) for attrs, value in self._totals.points[name]]

        return observe

    # -- results (called on this thread by the recording exporter)

    def exported(self, points: int, ok: bool, reason: str = "") -> None:
        if ok:
            self._points += points
            if self._ok is not True:
                log.info("otlp export: sending usage metrics to %s (%d points)", self.url, points)
            self._ok = True
            self.health.update(export_status="ok", export_last_success_at=time.time(),
                               export_points=self._points)
        else:
            sdk = "; ".join(dict.fromkeys(self._sdk_errors.messages[-2:]))
            self._failed(reason or describe_failure(*self.last_attempt, self.settings.timeout_s) or sdk
                         or "export failed")

    def _failed(self, reason: str) -> None:
        self._failures += 1
        reason = reason[:MAX_ERROR_CHARS]
        if self._ok is not False:
            log.warning("otlp export to %s failed: %s (retrying every %g s; ingest is not affected)",
                        self.url, reason, self.settings.interval_s)
        self._ok = False
        self.health.update(export_status="error", export_last_error=reason, export_last_error_at=time.time(),
                           export_failures=self._failures)


def _recording(inner: Any, owner: UsageExporter) -> Any:
    """A MetricExporter that passes everything to ``inner`` (the OTLP/HTTP
    exporter) and tells ``owner`` how each export went and how many points it had."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class Recording(MetricExporter):
        def __init__(self) -> None:
            super().__init__()  # cumulative for every instrument: the design (module doc)

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            points = sum(len(m.data.data_points) for rm in metrics_data.resource_metrics
                         for sm in rm.scope_metrics for m in sm.metrics)
            try:
                result = inner.export(metrics_data, timeout_millis=timeout_millis)
            except Exception as exc:  # noqa: BLE001 - an export error is health, never the thread's death
                owner.exported(points, False, f"{type(exc).__name__}: {exc}")
                return MetricExportResult.FAILURE
            owner.exported(points, result == MetricExportResult.SUCCESS)
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            owner.close_sdk()

    return Recording()


__all__ = ["UsageExporter", "Totals", "read_totals", "metrics_url", "instance_id", "METRICS", "TOKENS",
           "COST", "REQUESTS", "PROMPTS", "SESSIONS", "TOOL_CALLS"]
