"""`run --headless`, `status`, `pause` and `resume`.

The tray face is chosen by the top-level CLI (tray_app/cli.py); this module
never imports the tray.

`status` exit codes: 0 running; 3 no engine running; 4 an engine is running
but Redis does not answer (events are spooled; the private server is being
restarted). A second `run --headless` for the same home exits 75.

`pause` / `resume` reach the running engine (tray or headless) through
request files (engine/control.py), Redis up or down, and wait until its
health shows the new state. `pause --no-record [--for D]` and
`resume --no-record` only change the "don't record" file
(capture/norecord.py), so they need no engine. Exit codes: 0 done; 1 the
engine did not confirm in time, or a state file could not be written; 3 no
engine running (nothing paused or resumed); 64 a usage error (e.g. a bad --for).
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

from tray_app.capture import norecord
from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.config import Config
from tray_app.engine import control
from tray_app.engine.health import DEGRADED, PAUSED, HealthSnapshot
from tray_app.engine.health_file import HealthRecord, health_file_path, read_health_file

log = logging.getLogger("tray_app")

EXIT_NOT_RUNNING = 3
EXIT_REDIS_DOWN = 4
EXIT_NOT_CONFIRMED = 1
EXIT_USAGE = 64
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

    p = sub.add_parser("pause", help="pause ingest, or stop recording (--no-record)",
                       description="Without options: pause the running engine's ingest (the tray's "
                                   "Pause): events keep queueing in Redis and are stored after "
                                   "`telemetry-tray resume`. With --no-record: store nothing at all "
                                   "(hooks drop their events, monitors skip what is written meanwhile, "
                                   "and none of it is imported later) for --for DURATION, or until "
                                   "`telemetry-tray resume`; this survives a restart and needs no "
                                   f"running engine. Exit 0: done; {EXIT_NOT_RUNNING}: no engine "
                                   f"running; {EXIT_NOT_CONFIRMED}: the engine did not confirm in time; "
                                   f"{EXIT_USAGE}: bad options.")
    p.add_argument("--no-record", action="store_true",
                   help="don't record anything (instead of queueing it) until the time is up or you resume")
    p.add_argument("--for", dest="duration", metavar="DURATION", type=_duration,
                   help=f"with --no-record: how long ({norecord.DURATION_HELP}); default: until resumed")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the engine to confirm (default 10)")
    p.set_defaults(func=cmd_pause)

    r = sub.add_parser("resume", help="resume ingest and record again",
                       description="End a pause of ingest (the queued events are stored) and a "
                                   "don't-record window, whichever are on. --ingest or --no-record "
                                   f"chooses one. Exit 0: done; {EXIT_NOT_RUNNING}: no engine running "
                                   "to resume (a don't-record window is still ended); "
                                   f"{EXIT_NOT_CONFIRMED}: the engine did not confirm in time.")
    which = r.add_mutually_exclusive_group()
    which.add_argument("--ingest", action="store_true",
                       help="only resume ingest (a don't-record window stays on)")
    which.add_argument("--no-record", action="store_true",
                       help="only end the don't-record window (needs no running engine)")
    r.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the engine to confirm (default 10)")
    r.set_defaults(func=cmd_resume)


def _duration(text: str) -> str:
    try:
        norecord.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


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


def storage_text(snap: HealthSnapshot) -> str:
    """`status`'s storage line: the database's size against its cap, the free disk,
    what retention removed, and the tray's storage warning."""
    from tray_app.support.dbstats import human_bytes

    cap = f" of its {human_bytes(snap.db_cap_bytes)} cap" if snap.db_cap_bytes else ""
    removed = sum(int(v.get("rows", 0)) for v in snap.retention.get("removed", {}).values())
    text = (f"{human_bytes(snap.db_used_bytes)} used{cap} (file {human_bytes(snap.db_file_bytes)}), "
            f"{human_bytes(snap.disk_free_bytes)} free on its disk; retention removed {removed:,} rows")
    note = snap.retention.get("note")
    return text + (f" ({note})" if note else "") + (f"; {snap.storage_warning}" if snap.storage_warning else "")


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
    paused = engine_paused(cfg, snap, live)
    window = norecord.load(cfg.paths.state_dir).active()
    if args.json:
        extra: dict[str, Any] = {"pid": live.pid, "face": live.face,
                                 "server_recovery": live.server_recovery} if live else {}
        print_json({"running": True, **snap.to_dict(), "redis_ok": redis_ok, **extra,
                    "paused": paused, "not_recording": _window_json(window),
                    "source": "redis" if raw is not None else "health-file"})
    else:
        _print_status(snap, redis_ok, reached, live, paused, window)
    return 0 if redis_ok else EXIT_REDIS_DOWN


def engine_paused(cfg: Config, snap: HealthSnapshot, live: HealthRecord | None) -> bool:
    """Whether ingest is paused: the engine's own flag from its control file
    (a paused engine with Redis down reports "degraded"), else the snapshot's state."""
    state = control.read_state(cfg.paths.state_dir)
    if live is not None and state is not None and state.pid == live.pid and state.paused is not None:
        return state.paused
    return snap.state == PAUSED


def _window_json(window: tuple[float, float | None] | None) -> dict[str, Any] | None:
    if window is None:
        return None
    start, end = window
    return {"since": start, "until": end,
            "left_s": None if end is None else round(max(0.0, end - time.time()), 1)}


def _clock_time(ts: float) -> str:
    """A local time the user can read: "14:05", or "Tue 14:05" when not today."""
    when = time.localtime(ts)
    today = time.localtime()
    fmt = "%H:%M" if when[:3] == today[:3] else "%a %H:%M"
    return time.strftime(fmt, when)


def describe_window(window: tuple[float, float | None]) -> str:
    """ "Not recording until 14:05 (25 min left)" / "Not recording until you resume"."""
    start, end = window
    if end is None:
        return "Not recording until you resume"
    return f"Not recording until {_clock_time(end)} ({norecord.describe_left(end - time.time())})"


def describe_export(snap: HealthSnapshot, now: float | None = None) -> str:
    """The team export's line: where to, last success, last error."""
    now = time.time() if now is None else now

    def ago(t: float) -> str:
        return f"{max(0.0, now - t):.0f} s ago"

    parts = [f"{snap.export_status} -> {snap.export_endpoint}"]
    if snap.export_last_success_at:
        parts.append(f"last success {ago(snap.export_last_success_at)}, {snap.export_points:,} points sent")
    else:
        parts.append("nothing sent yet")
    if snap.export_status == "error" and snap.export_last_error:
        parts.append(f"last error {ago(snap.export_last_error_at)}: {snap.export_last_error}")
    return "; ".join(parts)


def _print_status(snap: HealthSnapshot, redis_ok: bool, reached: bool, live: HealthRecord | None,
                  paused: bool = False, window: tuple[float, float | None] | None = None) -> None:
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
    if paused and snap.state != PAUSED:
        print("paused:       yes: events wait in Redis until `telemetry-tray resume`")
    if window is not None:
        print(f"recording:    off {describe_window(window).removeprefix('Not recording ')}; "
              f"{snap.total_not_recorded:,} events dropped since start; `telemetry-tray resume` records again")
    print(f"ingest rate:  {snap.rate_10s:.1f}/s (10 s), {snap.rate_1m:.1f}/s (1 min)")
    print(f"since start:  {snap.total_ingested:,} stored, {snap.total_acked:,} acknowledged, "
          f"{snap.total_duplicates:,} duplicates, {snap.total_dead_letters:,} dead letters")
    print(f"database:     {snap.db_rows:,} rows; today {snap.today_events:,} events, "
          f"{snap.today_sessions:,} sessions; sqlite {snap.sqlite_status}")
    if snap.db_file_bytes:
        print("storage:      " + storage_text(snap))
    cost = "" if snap.usage_today_cost_usd is None else f", ${snap.usage_today_cost_usd:,.2f}"
    print(f"usage today:  {snap.usage_today_tokens:,} tokens{cost}, {snap.usage_today_prompts:,} prompts "
          f"(telemetry-tray report daily)")
    print(f"redis:        {'ok' if redis_ok else (snap.redis_status if reached else 'not answering')}; "
          f"backlog {snap.backlog:,}, pending {snap.pending:,}; dead letters {snap.dlq_length:,}"
          + (f" ({snap.dlq_dropped:,} dropped by the cap)" if snap.dlq_dropped else ""))
    if snap.server_status:
        restarts = f", restarted {snap.server_restarts}x since start" if snap.server_restarts else ""
        print(f"server:       private Redis {snap.server_status}{restarts}")
    if live is not None and live.server_recovery:
        print(f"recovered:    {live.server_recovery}")
    if snap.otlp_receiver:
        print(f"otlp:         receiver {snap.otlp_receiver}; {snap.otlp_requests_accepted:,} requests "
              f"accepted, {snap.otlp_requests_rejected:,} refused, {snap.otlp_events_received:,} events"
              + (f"; last refused: {snap.otlp_last_rejection}" if snap.otlp_last_rejection else ""))
    print(f"spool:        {snap.spool_files:,} files" + (f", {snap.spool_bad} unreadable" if snap.spool_bad else ""))
    print(f"commit:       p50 {snap.commit_p50_ms:.1f} ms, p95 {snap.commit_p95_ms:.1f} ms, batch {snap.batch_size}")
    if snap.export_status:
        print(f"export:       {describe_export(snap)}")
    for line in snap.thread_errors:
        print(f"thread:       {line}")
    if snap.foreign_consumers:
        print(f"warning:      other installations consume the same stream: {', '.join(snap.foreign_consumers)}")
    if snap.last_error:
        print(f"last error:   {snap.last_error}")
    print(f"updated:      {age:.1f} s ago (consumer {snap.consumer})")


# ----------------------------------------------------------------------------- pause / resume

NO_ENGINE = "no engine is running (start the app: telemetry-tray, or telemetry-tray run --headless)"


def _live_record(cfg: Config) -> HealthRecord | None:
    record = read_health_file(health_file_path(cfg.paths.state_dir))
    return record if record is not None and record.is_live() else None


def _shows(snap: HealthSnapshot, paused: bool, flag: bool | None) -> bool:
    """Whether the health snapshot shows the engine paused (or not)."""
    if paused:
        return snap.state == PAUSED or (snap.state == DEGRADED and flag is True)
    return snap.state != PAUSED


def _wait(predicate: Any, deadline: float, interval_s: float = 0.05) -> bool:
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def engine_command(cfg: Config, command: str, timeout_s: float) -> tuple[int, str]:
    """Ask the running engine to pause or resume and wait until its health
    shows it. (exit code, one line for the user)."""
    state_dir = cfg.paths.state_dir
    live = _live_record(cfg)
    if live is None:
        return EXIT_NOT_RUNNING, f"No engine is running; nothing to {command} " \
                                 "(start the app: telemetry-tray, or telemetry-tray run --headless)."
    want_paused = command == control.PAUSE
    who = f"engine pid {live.pid}, {live.face}"
    rid = control.submit(state_dir, command)
    deadline = time.monotonic() + timeout_s
    gone = False

    def handled() -> bool:
        nonlocal gone
        state = control.read_state(state_dir)
        if state is not None and state.pid == live.pid and rid in state.handled:
            return True
        gone = _live_record(cfg) is None
        return gone

    if not _wait(handled, deadline) or gone:
        if control.withdraw(state_dir, rid) or gone:
            if gone:
                return EXIT_NOT_RUNNING, f"The engine stopped before it could {command}; {NO_ENGINE}."
            return EXIT_NOT_CONFIRMED, (f"The engine ({who}) did not take the {command} within "
                                        f"{timeout_s:g} s (is it still starting? see telemetry-tray status).")
    record: list[HealthRecord] = [live]

    def shown() -> bool:
        now = _live_record(cfg)
        if now is None:
            return False
        record[0] = now
        state = control.read_state(state_dir)
        return _shows(now.snapshot, want_paused, state.paused if state is not None else None)

    _wait(shown, max(deadline, time.monotonic() + 2.0))  # the engine took it; its health follows
    snap = record[0].snapshot
    if want_paused:
        return 0, (f"Paused ({who}): events wait in Redis (backlog {snap.backlog:,}) and are stored "
                   "after `telemetry-tray resume`.")
    return 0, f"Resumed ({who}): storing events again (backlog {snap.backlog:,})."


def _file_error(exc: OSError) -> int:
    """A state file we could not write (read-only or full disk): one line."""
    where = f" {exc.filename}" if exc.filename else ""
    print(f"telemetry-tray: error: cannot write{where}: {exc.strerror or exc}", file=sys.stderr)
    return 1


def cmd_pause(args: argparse.Namespace) -> int:
    try:
        return _pause(args)
    except OSError as exc:
        return _file_error(exc)


def cmd_resume(args: argparse.Namespace) -> int:
    try:
        return _resume(args)
    except OSError as exc:
        return _file_error(exc)


def _pause(args: argparse.Namespace) -> int:
    cfg = get_config(args)
    if args.duration is not None and not args.no_record:
        print("telemetry-tray pause: error: --for goes with --no-record (a pause of ingest lasts until "
              "`telemetry-tray resume`) (see telemetry-tray pause --help)", file=sys.stderr)
        return EXIT_USAGE
    if args.no_record:
        try:
            window = norecord.start(cfg.paths.state_dir, None if args.duration is None
                                    else norecord.parse_duration(args.duration))
        except ValueError as exc:
            print(f"telemetry-tray pause: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{describe_window(window)}: hooks and monitors store nothing meanwhile; "
              "`telemetry-tray resume` records again.")
        return 0
    code, line = engine_command(cfg, control.PAUSE, args.timeout)
    print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _resume(args: argparse.Namespace) -> int:
    cfg = get_config(args)
    code = 0
    if not args.ingest:
        ended = norecord.stop(cfg.paths.state_dir)
        if ended:
            print("Recording again (the don't-record window ended).")
        elif args.no_record:
            print("Recording already (no don't-record window was on).")
    if not args.no_record:
        code, line = engine_command(cfg, control.RESUME, args.timeout)
        print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code
