"""Opt-in export of usage metrics to a team's OpenTelemetry Collector, end to
end: a real engine (real Redis, real monitors reading real-format
transcripts, the usage worker) exporting over OTLP/HTTP to a minimal
collector written here on opentelemetry-proto. What arrives equals
`telemetry-tray report --json`; the auth header arrives; no attribute could
carry a path or a prompt; with the collector down (a closed port, one that
accepts and never answers) ingest goes on, memory stays flat and health
says why; when it is back, export resumes."""

from __future__ import annotations

import gc
import gzip
import json
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                           ExportMetricsServiceResponse)

from conftest import free_port, run_cli, wait_for
from engine_util import make_event, push, row_count, running_engine
from test_usage_report import report
from tray_app import events
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.otlp import exporter as ex
from tray_app.redis_conn import endpoint_from_url
from usage_fixtures import recording_engine

TOKEN = "s3cret-collector-token-8841"
ALLOWED = {"assistant", "project", "model", "type", "kind"}
RESOURCE = {"service.name", "service.version", "service.instance.id"}
TOKEN_FIELD = {"input": "input_tokens", "output": "output_tokens", "cache_creation": "cache_creation_tokens",
               "cache_read": "cache_read_tokens"}


# ----------------------------------------------------------------------------- a minimal collector

class Collector:
    """OTLP/HTTP metrics receiver on 127.0.0.1: keeps every decoded request and its headers."""

    def __init__(self, port: int = 0, token: str | None = None) -> None:
        received: list[tuple[dict[str, str], ExportMetricsServiceRequest]] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
                    self.send_response(401, "Unauthorized")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportMetricsServiceRequest()
                req.ParseFromString(body)
                with lock:
                    received.append(({k.lower(): v for k, v in self.headers.items()}, req))
                out = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/metrics" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self._lock = lock
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def requests(self) -> list[tuple[dict[str, str], ExportMetricsServiceRequest]]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Silent:
    """A port that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


def points(req: ExportMetricsServiceRequest) -> list[tuple[str, dict[str, str], float]]:
    """(metric name, attributes, value) of every point in a request."""
    out = []
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                assert m.WhichOneof("data") == "sum" and m.sum.is_monotonic, m.name
                assert m.sum.aggregation_temporality == 2  # cumulative
                for p in m.sum.data_points:
                    attrs = {a.key: a.value.string_value for a in p.attributes}
                    value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                    out.append((m.name, attrs, value))
    return out


def hook_events(lo: int, hi: int) -> list[dict[str, Any]]:
    """Hook events (every 4th a prompt), as the hooks send them: the usage worker counts them."""
    return [make_event(i, metadata={"source": "claude_code_hook"}) for i in range(lo, hi)]


def export_env(monkeypatch: pytest.MonkeyPatch, port: int, *, interval: float = 0.5, timeout: float = 2) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_EXPORT_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("TELEMETRY_TRAY_EXPORT_HEADERS", f"Authorization=Bearer%20{TOKEN},X-Team=platform")
    monkeypatch.setenv("TELEMETRY_TRAY_EXPORT_INTERVAL_S", str(interval))
    monkeypatch.setenv("TELEMETRY_TRAY_EXPORT_TIMEOUT_S", str(timeout))


@pytest.fixture()
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@pytest.fixture()
def exported(tmp_path: Path, app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
             collector: Collector) -> Iterator[tuple[Engine, dict[str, str]]]:
    """A running engine that recorded the usage fixtures and exports to ``collector``."""
    export_env(monkeypatch, collector.port)
    with recording_engine(tmp_path, app_env["TELEMETRY_TRAY_REDIS_URL"], monkeypatch) as (eng, _times):
        yield eng, dict(__import__("os").environ)


def _applied(db: Path) -> bool:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        pos = conn.execute("SELECT last_sequence FROM usage_state WHERE worker='usage'").fetchone()
        return bool(pos) and pos[0] >= top
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def latest(c: Collector) -> ExportMetricsServiceRequest:
    return c.requests()[-1][1]


def by_model(pts: list[tuple[str, dict[str, str], float]], metric: str) -> dict[str, dict[str, float]]:
    """{model: {key: summed value}} of one metric (key: the token type, or "value")."""
    out: dict[str, dict[str, float]] = {}
    for name, attrs, value in pts:
        if name == metric:
            slot = out.setdefault(attrs["model"], {})
            key = TOKEN_FIELD.get(attrs.get("type", ""), "value")
            slot[key] = slot.get(key, 0) + value
    return out


# ----------------------------------------------------------------------------- tests

def test_exported_points_equal_the_reports(exported: tuple[Engine, dict[str, str]], collector: Collector) -> None:
    eng, env = exported
    models = report(env, "models")
    daily = report(env, "daily")

    def matches() -> bool:
        if not collector.requests():
            return False
        got = by_model(points(latest(collector)), ex.REQUESTS)
        return {m: v["value"] for m, v in got.items()} == {r["model"]: r["requests"] for r in models["models"]}

    wait_for(matches, timeout=30, what="an export with every request of the report")
    pts = points(latest(collector))
    tokens = by_model(pts, ex.TOKENS)
    cost = by_model(pts, ex.COST)
    for row in models["models"]:
        assert tokens[row["model"]] == {f: row[f] for f in TOKEN_FIELD.values()}, row["model"]
        if row["cost_usd"] is None:
            assert row["model"] not in cost  # unpriced: no cost point, never a made-up 0
        else:
            assert cost[row["model"]]["value"] == pytest.approx(row["cost_usd"], abs=1e-9), row["model"]
    totals = daily["totals"]
    assert sum(v for n, _, v in pts if n == ex.TOKENS) == totals["total_tokens"]
    assert sum(v for n, _, v in pts if n == ex.REQUESTS) == totals["requests"]
    assert sum(v for n, _, v in pts if n == ex.PROMPTS) == totals["prompts"] > 0
    assert sum(v for n, _, v in pts if n == ex.SESSIONS) == totals["sessions"] > 0
    assert sum(v for n, _, v in pts if n == ex.COST) == pytest.approx(totals["cost_usd"], abs=1e-9)
    assert {a["assistant"] for n, a, _ in pts} == {"claude_code", "cursor"}

    # the auth header (and the other configured one) arrived with every request
    for headers, _ in collector.requests():
        assert headers["authorization"] == f"Bearer {TOKEN}" and headers["x-team"] == "platform"

    # nothing but the documented attributes, each of a shape that cannot hold a path or text
    hexes = re.compile(r"^[0-9a-f]{16}$|^unknown$")
    for _, req in collector.requests():
        for rm in req.resource_metrics:
            assert {a.key for a in rm.resource.attributes} == RESOURCE
        for name, attrs, _ in points(req):
            assert name in ex.METRICS
            assert set(attrs) <= ALLOWED, attrs
            assert attrs["assistant"] in events.PLATFORMS
            assert hexes.match(attrs["project"]), attrs
            assert "model" not in attrs or re.fullmatch(r"[\w.:-]+", attrs["model"]), attrs
            assert attrs.get("kind", "tool") in ("tool", "shell", "edit", "subagent")
            assert all("/" not in v and "\\" not in v and " " not in v for v in attrs.values()), attrs

    # health, and `telemetry-tray status`, say it works; the token is nowhere in them
    snap = eng.health()
    assert snap.export_status == "ok" and snap.export_points > 0 and snap.export_last_success_at > 0
    assert snap.export_endpoint == f"http://127.0.0.1:{collector.port}/v1/metrics"
    r = run_cli("status", env=env)
    assert f"export:       ok -> http://127.0.0.1:{collector.port}/v1/metrics" in r.stdout, r.stdout
    r = run_cli("status", "--json", env=env)
    assert json.loads(r.stdout)["export_status"] == "ok"
    assert TOKEN not in r.stdout and TOKEN not in json.dumps(snap.to_dict())


def _series(req: ExportMetricsServiceRequest) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, tuple(sorted(attrs.items()))): value for name, attrs, value in points(req)}


def test_exported_totals_never_go_down_and_new_usage_still_adds_up(
        exported: tuple[Engine, dict[str, str]], collector: Collector) -> None:
    """forget and `usage rebuild` take rows out of the usage tables; a counter that
    goes down is a reset to every backend. Every series stays at what was sent
    and grows by exactly what is new."""
    from tray_app.lifecycle.forget import Selector, forget

    eng, env = exported
    total_requests = report(env, "daily")["totals"]["requests"]
    wait_for(lambda: collector.requests() and sum(
        v for n, _, v in points(latest(collector)) if n == ex.REQUESTS) == total_requests,
        timeout=30, what="an export with every request")
    before = _series(latest(collector))

    # forget a Claude Code session that has requests: the report loses them, the export does not
    gone = next(s for s in report(env, "sessions") if s["assistant"] == "claude_code" and s["requests"])
    client = endpoint_from_url(env["TELEMETRY_TRAY_REDIS_URL"]).client()
    out = forget(eng.cfg, Selector.build(session=gone["session_id"]), client=client)
    assert out.counts.get("usage_requests", 0) > 0, out.counts
    after_forget = report(env, "daily")["totals"]
    assert after_forget["requests"] < total_requests
    seen = len(collector.requests())
    wait_for(lambda: len(collector.requests()) > seen + 2, timeout=20, what="exports after the forget")
    assert _series(latest(collector)) == before

    # new usage adds exactly what is new to what was sent
    sent_prompts = sum(v for (n, _), v in before.items() if n == ex.PROMPTS)
    new_prompts = report(env, "daily")["totals"]["prompts"]
    push(client, hook_events(1000, 1040))  # 10 prompts
    wait_for(lambda: report(env, "daily")["totals"]["prompts"] == new_prompts + 10, timeout=20,
             what="the new prompts counted")
    wait_for(lambda: sum(v for n, _, v in points(latest(collector)) if n == ex.PROMPTS) == sent_prompts + 10,
             timeout=20, what="the new prompts exported on top of what was sent")

    # `usage rebuild` empties the tables and derives them again: no partial totals go out
    settled_series = _series(latest(collector))
    seen = len(collector.requests())
    r = run_cli("usage", "rebuild", env=env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: len(collector.requests()) > seen + 2, timeout=20, what="exports after the rebuild")
    assert _series(latest(collector)) == settled_series

    # over the whole run, no series ever went down
    last: dict[Any, float] = {}
    for _, req in collector.requests():
        for key, value in _series(req).items():
            assert value >= last.get(key, 0), (key, last.get(key), value)
            last[key] = value
    client.close()


def test_the_diagnostics_bundle_never_holds_the_headers(exported: tuple[Engine, dict[str, str]],
                                                        tmp_path: Path) -> None:
    import zipfile

    eng, env = exported
    log_dir = eng.cfg.paths.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    eng.cfg.paths.log_file.write_text(f"a line with the header Authorization=Bearer {TOKEN}\n")
    out = tmp_path / "bundle.zip"
    r = run_cli("diagnostics", "export", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(out) as z:
        text = "".join(z.read(n).decode("utf-8", "replace") for n in z.namelist())
        config = json.loads(z.read(next(n for n in z.namelist() if n.endswith("config.json"))))
    assert TOKEN not in text
    assert config["settings"]["export"]["headers"] == "Authorization=***,X-Team=***"


def test_collector_down_then_back(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens: connection refused
    export_env(monkeypatch, port, interval=0.2, timeout=1)
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        # ingest goes on: hook events reach raw_traces (and give the export something to send)
        client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
        push(client, hook_events(0, 50))
        wait_for(lambda: row_count(eng.cfg.paths.database) == 50, timeout=20, what="50 rows stored")
        wait_for(lambda: eng.health().export_status == "error", timeout=20, what="the export error in health")
        snap = eng.health()
        assert snap.export_last_error and snap.export_last_error_at > 0, snap
        assert "refused" in snap.export_last_error.lower() or "connection" in snap.export_last_error.lower(), snap
        push(client, hook_events(50, 60))
        wait_for(lambda: row_count(eng.cfg.paths.database) == 60, timeout=20, what="60 rows stored")
        # and derived: new projects or models while measuring would be new series (bounded), not a leak
        wait_for(lambda: _applied(eng.cfg.paths.database), timeout=30, what="the usage tables caught up")
        # failures keep coming, and neither memory nor threads pile up: nothing is queued
        # (counted where the export allocates: the engine's other threads allocate
        # meanwhile too, more so on a loaded machine)
        export_code = ("/opentelemetry/", "/urllib3/", "/requests/", "/google/protobuf/", "/tray_app/otlp/")
        tracemalloc.start(8)
        try:
            def failures(n: int) -> None:
                base = eng.health().export_failures
                wait_for(lambda: eng.health().export_failures >= base + n, timeout=60, what=f"{n} more failures")

            failures(5)
            threads = threading.active_count()

            def snapshot() -> Any:
                gc.collect()  # a failed request's traceback is a cycle: count what stays, not what awaits the collector
                return tracemalloc.take_snapshot()

            # three windows of 20 failures: a leak grows in every one; what the first exports of a
            # process set up once (caches, the SDK's series) or the collector's timing lands in one
            snaps = [snapshot()]
            for _ in range(3):
                failures(20)
                snaps.append(snapshot())
            windows = []
            for before, after in zip(snaps, snaps[1:]):
                diff = [d for d in after.compare_to(before, "traceback")
                        if any(part in f.filename for f in d.traceback for part in export_code)]
                windows.append((sum(d.size_diff for d in diff), sorted(diff, key=lambda d: -d.size_diff)[:5]))
        finally:
            tracemalloc.stop()
        grown, top = min(windows[1:], key=lambda w: w[0])
        assert grown < 256 * 1024, f"memory grew by at least {grown} bytes in each window of 20 failed exports " \
            f"({[w[0] for w in windows]}): " + "; ".join(
                f"{d.size_diff} B at {' < '.join(f'{f.filename.rsplit(chr(47), 2)[-1]}:{f.lineno}' for f in d.traceback)}"
                for d in top)
        assert threading.active_count() <= threads
        r = run_cli("status", env=app_env)
        assert "export:       error -> " in r.stdout and "last error" in r.stdout, r.stdout
        # the collector comes back on that port: export resumes, health says so
        back = Collector(port)
        try:
            wait_for(lambda: back.requests() and eng.health().export_status == "ok", timeout=20,
                     what="export resumed")
            prompts = report(app_env, "daily")["totals"]["prompts"]
            assert prompts == 15  # every 4th of the 60 events is a prompt
            wait_for(lambda: sum(v for n, _, v in points(back.requests()[-1][1]) if n == ex.PROMPTS) == prompts,
                     timeout=20, what="the prompts of the report exported")
            assert eng.health().export_last_success_at > snap.export_last_error_at
        finally:
            back.close()
        client.close()


def test_a_collector_that_never_answers(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    silent = Silent()
    export_env(monkeypatch, silent.port, interval=0.2, timeout=1)
    try:
        with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
            client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
            push(client, hook_events(0, 30))
            wait_for(lambda: row_count(eng.cfg.paths.database) == 30, timeout=20, what="30 rows stored")
            wait_for(lambda: eng.health().export_status == "error", timeout=20, what="the timeout in health")
            assert "timeout" in eng.health().export_last_error.lower(), eng.health().export_last_error
            push(client, hook_events(30, 60))
            wait_for(lambda: row_count(eng.cfg.paths.database) == 60, timeout=20, what="60 rows stored")
            client.close()
            # stopping does not wait for the hung request beyond its own timeout
            started = time.monotonic()
            assert eng.stop(5)
            assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_export_is_off_by_default_and_the_sdk_not_loaded(app_env: dict[str, str]) -> None:
    """No [export]: no thread, no export fields in health, our exporter and the OTLP
    exporter never imported (redis-py itself imports the OpenTelemetry SDK when it is installed)."""
    code = ("import sys, os; from tray_app.config import load_config; from tray_app.engine.engine import Engine; "
            "from tray_app.redis_conn import endpoint_from_url; "
            "e = Engine(load_config(), endpoint_from_url(os.environ['TELEMETRY_TRAY_REDIS_URL']), with_monitors=False); "
            "print(e.exporter is None, e.health().export_status == '', "
            "any(m.startswith(('opentelemetry.exporter', 'tray_app.otlp.exporter')) for m in sys.modules))")
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=app_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "False"]


@pytest.mark.parametrize(("value", "message"), [
    ("ftp://collector:4318", "expected an http:// or https:// URL"),
    ("https://user:pw@collector:4318", "credentials in the URL are not supported"),
])
def test_a_bad_endpoint_is_one_line(app_env: dict[str, str], value: str, message: str) -> None:
    r = run_cli("status", env={**app_env, "TELEMETRY_TRAY_EXPORT_OTLP_ENDPOINT": value})
    assert r.returncode == 78 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "pw" not in r.stderr


def test_bad_headers_never_echo_the_value(app_env: dict[str, str]) -> None:
    r = run_cli("status", env={**app_env, "TELEMETRY_TRAY_EXPORT_HEADERS": f"Bearer {TOKEN}"})
    assert r.returncode == 78 and "export.headers" in r.stderr and TOKEN not in r.stderr


def test_metrics_url() -> None:
    assert ex.metrics_url("https://c.example:4318") == "https://c.example:4318/v1/metrics"
    assert ex.metrics_url("https://c.example/otlp/") == "https://c.example/otlp/v1/metrics"
    assert ex.metrics_url("http://c:4318/v1/metrics") == "http://c:4318/v1/metrics"


def _usage_db(path: Path, rows: int) -> Any:
    import sqlite3

    from tray_app.usage import schema

    conn = sqlite3.connect(path, isolation_level=None)
    schema.ensure(conn)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO usage_requests (request_key, platform, workspace_hash, model, timestamp, input_tokens, "
        "output_tokens, source_sequence, cost_pusd) VALUES (?, 'claude_code', ?, 'm-1', "
        "strftime('%Y-%m-%dT%H:%M:%fZ', '2026-03-02', ? || ' minutes'), 2, 3, ?, 1000000)",
        [(f"k{i}", f"{i % 3:016x}", i, i) for i in range(rows)])  # a minute apart: many quarter hours
    conn.execute("COMMIT")
    return conn


def test_reading_the_totals_is_cut_at_its_budget(tmp_path: Path) -> None:
    conn = _usage_db(tmp_path / "t.db", 20_000)
    totals = ex.read_totals(conn, 5.0)
    assert sum(v for a, v in totals.points[ex.REQUESTS]) == 20_000
    assert sum(v for a, v in totals.points[ex.TOKENS] if dict(a)["type"] == "output") == 60_000
    assert sum(v for a, v in totals.points[ex.COST]) == pytest.approx(20_000 * 1e-6)
    assert len(totals.points[ex.REQUESTS]) == 3  # one series per project hash
    ticks = iter([0.0] + [100.0] * 1000)  # the clock jumps past the budget as soon as the query runs
    with pytest.raises(ex.QueryBudgetExceeded, match="longer than 1 s"):
        ex.read_totals(conn, 1.0, clock=lambda: next(ticks))
    assert not conn.in_transaction  # the read transaction is over: nothing held against checkpoints
    assert sum(v for a, v in ex.read_totals(conn, 5.0).points[ex.REQUESTS]) == 20_000  # and it works again


def test_a_collector_that_refuses_the_token(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    strict = Collector(token="another-token")
    export_env(monkeypatch, strict.port, interval=0.2, timeout=1)
    try:
        with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
            client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
            push(client, hook_events(0, 8))
            client.close()
            wait_for(lambda: eng.health().export_status == "error", timeout=20, what="the refusal in health")
            snap = eng.health()
            assert snap.export_last_error == "the collector answered HTTP 401 Unauthorized", snap.export_last_error
            assert snap.export_points == 0 and not strict.requests()
            assert TOKEN not in json.dumps(snap.to_dict())
    finally:
        strict.close()


def test_a_dead_export_thread_is_restarted(app_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                           collector: Collector) -> None:
    """The export thread dies (its instance-id file cannot be written: a directory is in
    the way): the supervisor shows why and restarts it with backoff; once the cause is
    gone, export works, and ingest never stopped."""
    export_env(monkeypatch, collector.port, interval=0.2, timeout=1)
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BACKOFF_INITIAL_S", "0.2")
    cfg = load_config()
    cfg.paths.ensure()
    blocker = cfg.paths.state_dir / ex.INSTANCE_FILE
    blocker.mkdir()
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
        push(client, hook_events(0, 12))
        wait_for(lambda: any(line.startswith("otlp-export:") for line in eng.health().thread_errors),
                 timeout=20, what="the export thread's death in health")
        wait_for(lambda: row_count(eng.cfg.paths.database) == 12, timeout=20, what="12 rows stored")
        assert not collector.requests()
        blocker.rmdir()
        wait_for(lambda: eng.health().export_status == "ok" and collector.requests(), timeout=30,
                 what="export after a restart")
        assert "restarted" in next(x for x in eng.health().thread_errors if x.startswith("otlp-export:"))
        assert (cfg.paths.state_dir / ex.INSTANCE_FILE).is_file()
        client.close()


def test_the_change_key_moves_with_every_derived_write(tmp_path: Path) -> None:
    """Totals are read again only when this key moves: it must see new rows
    (the worker's position) and new prices (which move no position)."""
    from tray_app.usage import schema

    conn = _usage_db(tmp_path / "t.db", 10)
    assert ex.change_key(conn) == ex.change_key(conn)
    first = ex.change_key(conn)
    conn.execute("BEGIN")
    schema.set_position(conn, 10)
    conn.execute("COMMIT")
    second = ex.change_key(conn)
    assert second != first
    conn.execute("UPDATE usage_requests SET pricing_version='v1'")  # the worker priced them
    third = ex.change_key(conn)
    assert third != second
    conn.execute("UPDATE usage_requests SET pricing_version=NULL WHERE request_key='k1'")  # to price again
    fourth = ex.change_key(conn)
    assert fourth != third
    conn.execute("DELETE FROM usage_requests WHERE request_key='k2'")  # forget / usage_days: no position moves
    assert ex.change_key(conn) != fourth
    import sqlite3

    assert ex.change_key(sqlite3.connect(tmp_path / "empty.db")) is None


def test_doctor_says_whether_anything_leaves(app_env: dict[str, str]) -> None:
    r = run_cli("doctor", env=app_env)
    assert "OK   export: off: nothing leaves this computer" in r.stdout, r.stdout
    r = run_cli("doctor", env={**app_env, "TELEMETRY_TRAY_EXPORT_OTLP_ENDPOINT": "https://c.example:4318",
                               "TELEMETRY_TRAY_EXPORT_HEADERS": f"Authorization=Bearer%20{TOKEN}"})
    assert "OK   export: usage metrics every 60 s to https://c.example:4318/v1/metrics" in r.stdout, r.stdout
    assert TOKEN not in r.stdout + r.stderr


def test_the_environment_s_otlp_headers_never_reach_the_collector(app_env: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  collector: Collector) -> None:
    """A developer's own OpenTelemetry setup (OTEL_EXPORTER_OTLP_HEADERS with
    another backend's key) in the app's environment: the team's collector gets
    the [export] headers only."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=other-vendor-key,x-api-key=other-vendor-key")
    export_env(monkeypatch, collector.port, interval=0.2)
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
        push(client, hook_events(0, 8))
        client.close()
        wait_for(lambda: eng.health().export_status == "ok", timeout=20, what="an export")
    headers = collector.requests()[0][0]
    assert headers["authorization"] == f"Bearer {TOKEN}" and headers["x-team"] == "platform"
    assert "x-honeycomb-team" not in headers
    assert not any("other-vendor-key" in v for h, _ in collector.requests() for v in h.values())


def test_partial_totals_of_a_rebuild_are_held_and_drops_kept(tmp_path: Path, app_env: dict[str, str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Step by step, on a real database: while `usage rebuild` has derived only part
    of the tables again, the last totals are what is sent; rows that go for good
    (forget, usage_days) leave the sent totals where they were; new ones add."""
    from tray_app.engine import schema as engine_schema
    from tray_app.engine.health import Health
    from tray_app.usage import schema

    export_env(monkeypatch, free_port())
    conn = engine_schema.open_database(tmp_path / "telemetry.db")
    schema.ensure(conn)

    def raw(lo: int, hi: int) -> None:
        conn.executemany("INSERT INTO raw_traces (sequence, event_id, session_id, event_type, platform, timestamp, "
                         "ingested_at, event_data) VALUES (?, ?, 's', 'transcript_trace', 'claude_code', "
                         "'2026-03-02T10:00:00Z', 'x', x'00')", [(i, f"e{i}") for i in range(lo, hi + 1)])

    def derive(lo: int, hi: int) -> None:
        with engine_schema.immediate(conn):
            conn.executemany(
                "INSERT INTO usage_requests (request_key, platform, workspace_hash, model, timestamp, input_tokens, "
                "output_tokens, source_sequence) VALUES (?, 'claude_code', ?, 'm-1', '2026-03-02T10:00:00Z', 2, 3, ?)",
                [(f"k{i}", f"{i % 2:016x}", i) for i in range(lo, hi + 1)])
            schema.set_position(conn, hi)

    exp = ex.UsageExporter(load_config(), Health())

    def sent() -> dict[str, float]:
        exp._refresh(conn)
        return {attrs[2][1]: value for attrs, value in exp._totals.points[ex.REQUESTS]}  # by project

    raw(1, 10)
    derive(1, 10)
    assert sent() == {f"{0:016x}": 5, f"{1:016x}": 5}
    with engine_schema.immediate(conn):  # `usage rebuild` starts: the tables and the position go
        conn.execute("DELETE FROM usage_requests")
        conn.execute("DELETE FROM usage_state")
    assert sent() == {f"{0:016x}": 5, f"{1:016x}": 5}
    derive(1, 4)
    assert sent() == {f"{0:016x}": 5, f"{1:016x}": 5}
    derive(5, 10)  # whole again: the same totals, nothing counted twice
    assert sent() == {f"{0:016x}": 5, f"{1:016x}": 5}
    conn.execute("DELETE FROM usage_requests WHERE source_sequence <= 3")  # forget: gone for good
    assert sent() == {f"{0:016x}": 5, f"{1:016x}": 5}
    raw(11, 13)
    derive(11, 13)  # new requests add on top of what was sent
    assert sent() == {f"{0:016x}": 6, f"{1:016x}": 7}
    conn.execute("DELETE FROM usage_requests WHERE workspace_hash = ?", (f"{1:016x}",))
    assert sent() == {f"{0:016x}": 6, f"{1:016x}": 7}  # a series gone from the tables is sent as it was
    conn.close()
