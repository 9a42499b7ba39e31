"""`run --headless` and `status`.

The tray face is chosen by the top-level CLI (tray_app/cli.py); this module
never imports the tray.

`status` exit codes: 0 running; 3 no engine running; 4 an engine is running
but Redis does not answer (events are spooled; the private server is being
restarted). A second `run --headless` for the same home exits 75.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from typing import Any

from tray_app.cli_common import add_json_flag, get_config, print_json
from tray_app.config import Config
from tray_app.engine.health import HealthSnapshot
from tray_app.engine.health_file import HealthRecord, health_file_path, read_health_file

log = logging.getLogger("tray_app")

EXIT_NOT_RUNNING = 3
EXIT_REDIS_DOWN = 4
EXIT_ALREADY_RUNNING = 75  # EX_TEMPFAIL: another engine holds the lock


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="run the ingest engine (use --headless for no tray)",
                       description="Run the engine and monitors. Without --headless this starts the "
                                   "tray app. --headless runs in the foreground with console logging "
                                   "until SIGINT/SIGTERM, then stops in order (stop reading, finish the "
                                   "batch, commit, ack, close). A second headless engine for the same "
                                   f"user is refused (exit {EXIT_ALREADY_RUNNING}).")
    r.add_argument("--headless", action="store_true", help="no tray icon; log to the console")
    r.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="shutdown deadline (default 10)")
    r.add_argument("--no-monitors", action="store_true", help="do not start the Cursor/Claude monitors")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show the running engine's health",
                       description="Read the health snapshot the running engine publishes every "
                                   "second (through Redis, else from its health file). Exit 0: "
                                   f"running; {EXIT_NOT_RUNNING}: no engine running; "
                                   f"{EXIT_REDIS_DOWN}: an engine is running but Redis does not answer.")
    add_json_flag(s)
    s.set_defaults(func=cmd_status)


# ----------------------------------------------------------------------------- run --headless

def cmd_run(args: argparse.Namespace) -> int:
    from tray_app.errors import AlreadyRunning
    from tray_app.logsetup import setup_logging
    from tray_app.single_instance import SingleInstance

    cfg = get_config(args)
    setup_logging(cfg, console=True)
    instance = SingleInstance(cfg.paths.lock_file)
    try:
        instance.__enter__()
    except AlreadyRunning as exc:
        print(f"telemetry-tray: error: {exc}; not starting a second engine", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    try:
        return _run_headless(cfg, args)
    finally:
        instance.__exit__(None, None, None)


def _run_headless(cfg: Config, args: argparse.Namespace) -> int:
    from tray_app.engine.runtime import FACE_HEADLESS, EngineRuntime, RuntimeSettings

    runtime = EngineRuntime(cfg, RuntimeSettings(face=FACE_HEADLESS, with_monitors=not args.no_monitors))
    done = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        runtime.start()
        while not done.wait(0.5):
            fatal = runtime.fatal()
            if fatal is not None:
                print(f"telemetry-tray: error: {fatal}", file=sys.stderr)
                runtime.stop(args.stop_timeout)
                return 1
        return 0 if runtime.stop(args.stop_timeout) else 1
    finally:
        runtime.stop(args.stop_timeout)  # after a failed start: the server and the health file


# ----------------------------------------------------------------------------- status

def _read_redis_health(cfg: Config) -> tuple[bytes | None, bool, Exception | None]:
    """(the snapshot the engine published in Redis, whether Redis answered, the
    error for a Redis of the user's that does not answer)."""
    import redis

    from tray_app.errors import RedisUnavailable
    from tray_app.redis_conn import (
        HEALTH_KEY,
        RedisProvider,
        read_endpoint_file,
        translate,
    )

    ep = read_endpoint_file(cfg)
    if ep is None:
        try:
            ep = RedisProvider(cfg).start(spawn=False, write_endpoint=False)
        except RedisUnavailable:
            return None, False, None
    try:
        c = ep.client(socket_timeout=3, connect_timeout=2)
        try:
            raw = c.get(HEALTH_KEY)
            return (raw if isinstance(raw, bytes) else None), True, None
        finally:
            c.close()
    except redis.RedisError as exc:
        return None, False, (None if ep.managed else translate(exc, ep))


def cmd_status(args: argparse.Namespace) -> int:
    cfg = get_config(args)
    raw, reached, error = _read_redis_health(cfg)
    record = read_health_file(health_file_path(cfg.paths.state_dir))
    live = record if record is not None and record.is_live() else None
    if raw is not None:
        snap = HealthSnapshot.from_dict(json.loads(raw))
        if live is not None and live.snapshot.updated_at > snap.updated_at:
            snap = live.snapshot  # fresher, and has the supervisor's latest view
    elif live is not None:
        snap = live.snapshot
    else:
        if error is not None:
            raise error  # the user's Redis is down and no engine says otherwise
        if args.json:
            print_json({"running": False})
        else:
            print("No engine is running (start the app: telemetry-tray, or telemetry-tray run --headless).")
        return EXIT_NOT_RUNNING
    redis_ok = reached and snap.redis_ok
    if args.json:
        extra: dict[str, Any] = {"pid": live.pid, "face": live.face,
                                 "server_recovery": live.server_recovery} if live else {}
        print_json({"running": True, **snap.to_dict(), "redis_ok": redis_ok, **extra,
                    "source": "redis" if raw is not None else "health-file"})
    else:
        _print_status(snap, redis_ok, reached, live)
    return 0 if redis_ok else EXIT_REDIS_DOWN


def _print_status(snap: HealthSnapshot, redis_ok: bool, reached: bool, live: HealthRecord | None) -> None:
    age = time.time() - snap.updated_at
    who = f" (pid {live.pid}, {live.face})" if live else ""
    if redis_ok:
        print(f"engine:       running{who}")
    else:
        why = snap.redis_status if not snap.redis_ok and snap.redis_status not in ("", "ok", "unknown") \
            else "does not answer"
        print(f"engine:       running{who}, but Redis is down: {why}; hook events are spooled to disk "
              "and stored once it is back")
    print(f"state:        {snap.state} ({'; '.join(snap.reasons)})")
    print(f"ingest rate:  {snap.rate_10s:.1f}/s (10 s), {snap.rate_1m:.1f}/s (1 min)")
    print(f"since start:  {snap.total_ingested:,} stored, {snap.total_acked:,} acknowledged, "
          f"{snap.total_duplicates:,} duplicates, {snap.total_dead_letters:,} dead letters")
    print(f"database:     {snap.db_rows:,} rows; today {snap.today_events:,} events, "
          f"{snap.today_sessions:,} sessions; sqlite {snap.sqlite_status}")
    print(f"redis:        {'ok' if redis_ok else (snap.redis_status if reached else 'not answering')}; "
          f"backlog {snap.backlog:,}, pending {snap.pending:,}; dead letters {snap.dlq_length:,}"
          + (f" ({snap.dlq_dropped:,} dropped by the cap)" if snap.dlq_dropped else ""))
    if snap.server_status:
        restarts = f", restarted {snap.server_restarts}x since start" if snap.server_restarts else ""
        print(f"server:       private Redis {snap.server_status}{restarts}")
    if live is not None and live.server_recovery:
        print(f"recovered:    {live.server_recovery}")
    print(f"spool:        {snap.spool_files:,} files" + (f", {snap.spool_bad} unreadable" if snap.spool_bad else ""))
    print(f"commit:       p50 {snap.commit_p50_ms:.1f} ms, p95 {snap.commit_p95_ms:.1f} ms, batch {snap.batch_size}")
    for line in snap.thread_errors:
        print(f"thread:       {line}")
    if snap.foreign_consumers:
        print(f"warning:      other installations consume the same stream: {', '.join(snap.foreign_consumers)}")
    if snap.last_error:
        print(f"last error:   {snap.last_error}")
    print(f"updated:      {age:.1f} s ago (consumer {snap.consumer})")
