"""`run --headless` and `status`."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import signal
import sys
import threading
import time

from tray_app import __version__
from tray_app.cli_common import add_json_flag, get_config, print_json

log = logging.getLogger("tray_app")


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the ingest engine (use --headless for no tray)",
                       description="Run the engine and monitors. --headless runs in the foreground "
                                   "with console logging until SIGINT/SIGTERM, then stops in order "
                                   "(stop reading, finish the batch, commit, ack, close).")
    r.add_argument("--headless", action="store_true", help="no tray icon; log to the console")
    r.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="shutdown deadline (default 10)")
    r.add_argument("--no-monitors", action="store_true", help="do not start the Cursor/Claude monitors")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show the running engine's health",
                       description="Read the health snapshot the running engine publishes every "
                                   "second. Says so plainly when no engine is running.")
    add_json_flag(s)
    s.set_defaults(func=cmd_status)


def log_startup(cfg, endpoint) -> None:  # type: ignore[no-untyped-def]
    import redis as redis_mod
    import sqlite3

    log.info("config: %s", cfg.source)
    log.info("redis: %s%s", endpoint.masked, " (private server)" if endpoint.managed else "")
    log.info("database: %s", cfg.paths.database)
    log.info("versions: telemetry-tray %s, Python %s, redis-py %s, SQLite %s, %s",
             __version__, platform.python_version(), redis_mod.__version__, sqlite3.sqlite_version,
             platform.platform())


def cmd_run(args: argparse.Namespace) -> int:
    from tray_app.engine.engine import Engine
    from tray_app.logsetup import setup_logging
    from tray_app.redis_conn import RedisProvider, ensure_streams, translate
    from tray_app.single_instance import SingleInstance
    import redis

    cfg = get_config(args)
    if not args.headless:
        from tray_app.tray.app import run_tray

        return run_tray(cfg)
    setup_logging(cfg, console=True)
    with SingleInstance(cfg.paths.lock_file):
        provider = RedisProvider(cfg)
        endpoint = provider.start()
        log_startup(cfg, endpoint)
        try:
            client = endpoint.client()
            try:
                ensure_streams(client)
            except redis.RedisError as exc:
                log.warning("redis not ready yet (%s); the engine will keep retrying", translate(exc, endpoint))
            finally:
                client.close()
            engine = Engine(cfg, endpoint, with_monitors=not args.no_monitors)
            from tray_app.engine import tuning

            tuning.apply()
            done = threading.Event()

            def on_signal(signum: int, _frame: object) -> None:
                log.info("received %s; stopping", signal.Signals(signum).name)
                done.set()

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            engine.start()
            while not done.wait(0.5):
                if engine.wait_fatal() is not None:
                    print(f"telemetry-tray: error: {engine.wait_fatal()}", file=sys.stderr)
                    engine.stop(args.stop_timeout)
                    return 1
            ok = engine.stop(args.stop_timeout)
            return 0 if ok else 1
        finally:
            provider.stop()


def cmd_status(args: argparse.Namespace) -> int:
    from tray_app.engine.health import HealthSnapshot
    from tray_app.errors import RedisUnavailable
    from tray_app.redis_conn import HEALTH_KEY, RedisProvider, read_endpoint_file, translate
    import redis

    cfg = get_config(args)
    ep = read_endpoint_file(cfg)
    if ep is None:
        try:
            ep = RedisProvider(cfg).start(spawn=False, write_endpoint=False)
        except RedisUnavailable:
            ep = None
    raw = None
    if ep is not None:
        try:
            c = ep.client(socket_timeout=3, connect_timeout=2)
            raw = c.get(HEALTH_KEY)
            c.close()
        except redis.RedisError as exc:
            if not ep.managed:
                raise translate(exc, ep) from None
    if raw is None:
        if args.json:
            print_json({"running": False})
        else:
            print("No engine is running (start the app: telemetry-tray, or telemetry-tray run --headless).")
        return 3
    snap = HealthSnapshot.from_dict(json.loads(raw))
    if args.json:
        print_json({"running": True, **snap.to_dict()})
        return 0
    age = time.time() - snap.updated_at
    print(f"state:        {snap.state} ({'; '.join(snap.reasons)})")
    print(f"ingest rate:  {snap.rate_10s:.1f}/s (10 s), {snap.rate_1m:.1f}/s (1 min)")
    print(f"since start:  {snap.total_ingested:,} stored, {snap.total_acked:,} acknowledged, "
          f"{snap.total_duplicates:,} duplicates, {snap.total_dead_letters:,} dead letters")
    print(f"database:     {snap.db_rows:,} rows; today {snap.today_events:,} events, "
          f"{snap.today_sessions:,} sessions; sqlite {snap.sqlite_status}")
    print(f"redis:        {'ok' if snap.redis_ok else snap.redis_status}; backlog {snap.backlog:,}, "
          f"pending {snap.pending:,}; dead letters {snap.dlq_length:,}"
          + (f" ({snap.dlq_dropped:,} dropped by the cap)" if snap.dlq_dropped else ""))
    print(f"spool:        {snap.spool_files:,} files" + (f", {snap.spool_bad} unreadable" if snap.spool_bad else ""))
    print(f"commit:       p50 {snap.commit_p50_ms:.1f} ms, p95 {snap.commit_p95_ms:.1f} ms, batch {snap.batch_size}")
    if snap.last_error:
        print(f"last error:   {snap.last_error}")
    print(f"updated:      {age:.1f} s ago (consumer {snap.consumer})")
    return 0
