"""`telemetry-tray forget` against real parts: a headless engine subprocess with
its monitors and usage worker, a real server with an append-only file, real
hooks (one of them spooling with Redis unreachable), a real Claude Code
transcript. A canary string marks one session (its id, prompts, tool input);
after `forget --session` no byte of it is left in any file of the app's home,
the database's free pages, the streams or the server's append-only file, the
other session is intact, and neither a monitor re-scan nor the hook brings it back."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import RedisProc, free_port, run_cli, wait_for
from engine_util import terminate
from monitor_fixtures import ClaudeProjects
from test_hook_events import hook_env, run_hook
from test_status_states import status

from tray_app import events
from tray_app.config import load_config
from tray_app.lifecycle import rule
from tray_app.redis_conn import CDC_STREAM, DLQ_STREAM, EVENTS_STREAM

KEEP_CWD = "/home/dev/keep"
CANARY_CWD = "/home/dev/other"


def _q(db: Path, sql: str, *params: object) -> list[tuple]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as c:
        return c.execute(sql, params).fetchall()


def _count(db: Path, table: str, sid: str) -> int:
    """Rows of ``sid`` in ``table``; 0 while the engine has not created that table yet."""
    try:
        return int(_q(db, f"SELECT COUNT(*) FROM {table} WHERE session_id=?", sid)[0][0])
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return 0


def _all_applied(db: Path) -> bool:
    try:
        (top, usage, sessions, unpriced), = _q(
            db, "SELECT (SELECT MAX(sequence) FROM raw_traces), "
                "(SELECT last_sequence FROM usage_state WHERE worker='usage'), "
                "(SELECT applied_sequence FROM reader_positions WHERE reader='sessions'), "
                "EXISTS (SELECT 1 FROM usage_requests WHERE pricing_version IS NULL)")
    except sqlite3.OperationalError:  # a table not created yet
        return False
    return top is not None and usage is not None and sessions is not None and min(usage, sessions) >= top \
        and not unpriced


def _rows(db: Path, sid: str) -> int:
    return _count(db, "raw_traces", sid)


def files_with(root: Path, needles: list[bytes]) -> list[str]:
    """Every regular file under ``root`` holding one of ``needles`` (sockets, links skipped)."""
    hits = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        try:
            data = p.read_bytes()
        except OSError:
            continue
        hits += [f"{p.relative_to(root)}: {n[:24]!r}" for n in needles if n in data]
    return hits


def stream_has(client, stream: str, needle: bytes) -> bool:
    return any(needle in k or needle in v for _id, f in client.xrange(stream) for k, v in f.items())


def _hook(kind: str, sid: str, cwd: str, transcript: Path, **extra: object) -> str:
    return json.dumps({"session_id": sid, "transcript_path": str(transcript), "cwd": cwd,
                       "hook_event_name": kind, "permission_mode": "default", **extra})


def _transcript(projects: ClaudeProjects, cwd: str, sid: str, words: str):
    t = projects.session(cwd, sid, start=datetime.now(timezone.utc) - timedelta(minutes=30))
    t.user(f"please look at {words}")
    t.assistant([{"type": "text", "text": f"Looking at {words} now."}])
    t.tool_use("Bash", {"command": f"grep -r {words} .", "description": "search"})
    return t


@pytest.fixture()
def engine_procs():
    procs: list = []
    yield procs
    for p in procs:
        terminate(p)


def test_forget_a_session_leaves_no_trace_and_it_never_comes_back(
        app_env: dict[str, str], app_home: Path, redis_server: RedisProc, tmp_path: Path, engine_procs: list) -> None:
    canary = f"canary{uuid.uuid4().hex}"
    bad_sid = f"sess-{canary}"
    keep_sid = str(uuid.uuid4())
    env = {**app_env, "TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S": "0.2",
           "TELEMETRY_TRAY_MONITORS_CURSOR_ENABLED": "false"}
    cfg = load_config(environ=env)
    db = cfg.paths.database
    client = redis_server.client()
    projects = ClaudeProjects(Path(app_env["CLAUDE_CONFIG_DIR"]) / "projects")
    bad_t = _transcript(projects, CANARY_CWD, bad_sid, canary)
    keep_t = _transcript(projects, KEEP_CWD, keep_sid, "the parser")

    hooks = hook_env(app_home, redis_server.url)
    for sid, cwd, t, words in ((bad_sid, CANARY_CWD, bad_t, canary), (keep_sid, KEEP_CWD, keep_t, "parser")):
        for payload in (_hook("UserPromptSubmit", sid, cwd, t.path, prompt=f"fix {words} please"),
                        _hook("PreToolUse", sid, cwd, t.path, tool_name="Bash", tool_use_id="toolu_1",
                              tool_input={"command": f"echo {words}"})):
            proc, _ = run_hook("claude", payload, hooks)
            assert proc.returncode == 0, proc.stderr

    engine_procs.append(headless_with_monitors(env, tmp_path / "engine.log"))
    wait_for(lambda: status(env)[0] == 0, timeout=30, what="the engine to run")
    # a poison entry of the canary session: dead-lettered with its fields
    client.xadd(EVENTS_STREAM, {"event_id": str(uuid.uuid4()), "platform": "nonsense", "event_type": "user_prompt",
                                "timestamp": events.utc_now_iso(), "session_id": bad_sid,
                                "payload": json.dumps({"prompt": canary})})
    wait_for(lambda: _rows(db, bad_sid) >= 5 and _rows(db, keep_sid) >= 5, timeout=60,
             what="both sessions stored (hooks and transcripts)")
    wait_for(lambda: stream_has(client, DLQ_STREAM, canary.encode()), timeout=20, what="the dead letter")
    wait_for(lambda: _count(db, "usage_requests", bad_sid) > 0 and _count(db, "sessions", bad_sid) > 0,
             timeout=30, what="derived rows and the session row")

    # every stored row applied by the usage worker and the sessions monitor: once paused,
    # nothing is left for them to write (the dry run below must find the file unchanged)
    wait_for(lambda: _all_applied(db), timeout=30, what="every row derived and counted")
    # paused: a canary event waits in the stream; Redis unreachable: one waits in the spool
    assert run_cli("pause", env=env, timeout=30).returncode == 0
    proc, _ = run_hook("claude", _hook("UserPromptSubmit", bad_sid, CANARY_CWD, bad_t.path,
                                       prompt=f"queued {canary}"), hooks)
    assert proc.returncode == 0
    down = hook_env(app_home, f"redis://127.0.0.1:{free_port()}/0")
    proc, _ = run_hook("claude", _hook("UserPromptSubmit", bad_sid, CANARY_CWD, bad_t.path,
                                       prompt=f"spooled {canary}"), down)
    assert proc.returncode == 0
    spool = cfg.paths.spool_dir
    assert any(canary.encode() in p.read_bytes() for p in spool.glob("*.json")) \
        or stream_has(client, EVENTS_STREAM, b"spooled " + canary.encode())
    assert stream_has(client, EVENTS_STREAM, b"queued " + canary.encode())

    from tray_app.usage.html import write_report
    report = write_report(load_config(environ=env))
    keep_ws, bad_ws = (f"<code>{events.workspace_hash(c)[:8]}</code>" for c in (KEEP_CWD, CANARY_CWD))
    assert keep_ws in report.read_text() and bad_ws in report.read_text()
    keep_rows = _rows(db, keep_sid)
    keep_usage = _q(db, "SELECT COUNT(*) FROM usage_requests WHERE session_id=?", keep_sid)[0][0]
    assert keep_usage > 0
    blobs = [b for (b,) in _q(db, "SELECT event_data FROM raw_traces WHERE session_id=?", bad_sid)]
    # before: the needles are there, so their absence later means something
    needles = [canary.encode()]
    home_hits = files_with(app_home, needles)
    assert any("telemetry.db" in h for h in home_hits), home_hits
    assert any("claude_transcripts.sqlite3" in h for h in home_hits), home_hits
    db_bytes = b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal") if Path(f"{db}{s}").exists())
    assert sum(b in db_bytes for b in blobs) >= len(blobs) // 2, "the compressed rows are in the file"
    aof_dir = redis_server.dir / "appendonlydir"
    assert files_with(aof_dir, needles)

    # --dry-run: counts, and not one byte changes
    def digest() -> str:
        return hashlib.sha256(db_bytes_now()).hexdigest()

    def db_bytes_now() -> bytes:
        return b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal") if Path(f"{db}{s}").exists())

    before = digest()
    dry = run_cli("forget", "--session", bad_sid, "--dry-run", "--json", env=env, timeout=120)
    assert dry.returncode == 0, dry.stderr
    counts = json.loads(dry.stdout)["counts"]
    assert counts["raw_traces"] == _rows(db, bad_sid) and counts[DLQ_STREAM] == 1
    assert counts[EVENTS_STREAM] >= 1 and counts["usage_requests"] > 0 and counts["sessions"] == 1
    assert digest() == before and _rows(db, bad_sid) == counts["raw_traces"]
    assert not rule.path_in(cfg.paths.state_dir).exists()

    done = run_cli("forget", "--session", bad_sid, env=env, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"Forgot session {bad_sid}:" in done.stdout and "raw_traces" in done.stdout

    # after: nothing of it anywhere
    assert _rows(db, keep_sid) == keep_rows and _rows(db, bad_sid) == 0
    assert _q(db, "SELECT COUNT(*) FROM usage_requests WHERE session_id=?", keep_sid)[0][0] == keep_usage
    assert _q(db, "SELECT COUNT(*) FROM sessions WHERE session_id=?", keep_sid)[0][0] == 1
    assert _q(db, "PRAGMA integrity_check") == [("ok",)]
    for stream in (EVENTS_STREAM, CDC_STREAM, DLQ_STREAM):
        assert not stream_has(client, stream, canary.encode()), stream
    assert files_with(app_home, needles) == []
    after = db_bytes_now()
    assert not [b for b in blobs if b in after], "a compressed canary row survived in the file or its WAL"
    wait_for(lambda: not files_with(aof_dir, needles), timeout=30, what="the AOF without the canary")
    assert keep_ws in report.read_text() and bad_ws not in report.read_text()  # the report was rewritten

    # it never comes back: the hook fires again, the engine restarts, the monitor
    # re-scans every transcript from scratch (its state deleted)
    terminate(engine_procs.pop())
    (cfg.paths.state_dir / "monitors" / "claude_transcripts.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{cfg.paths.state_dir}/monitors/claude_transcripts.sqlite3{suffix}").unlink(missing_ok=True)
    keep_t.user("one more line, the sync point")
    proc, _ = run_hook("claude", _hook("UserPromptSubmit", bad_sid, CANARY_CWD, bad_t.path,
                                       prompt=f"again {canary}"), hooks)
    engine_procs.append(headless_with_monitors(env, tmp_path / "engine2.log"))
    wait_for(lambda: status(env)[0] == 0, timeout=30, what="the engine to run again")
    run_cli("resume", env=env, timeout=30)
    wait_for(lambda: _rows(db, keep_sid) == keep_rows + 1, timeout=60, what="the keeper's new line")
    wait_for(lambda: client.xinfo_groups(EVENTS_STREAM)[0]["lag"] == 0
             and client.xpending(EVENTS_STREAM, "processors")["pending"] == 0, timeout=30, what="a drained stream")
    assert _rows(db, bad_sid) == 0
    assert _q(db, "SELECT COUNT(*) FROM sessions WHERE session_id=?", bad_sid)[0][0] == 0
    assert _q(db, "SELECT COUNT(*) FROM raw_traces WHERE workspace_hash=?",
              events.workspace_hash(CANARY_CWD))[0][0] == 0


def headless_with_monitors(env: dict[str, str], log: Path):
    import subprocess
    import sys

    from conftest import ROOT

    out = open(log, "a")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out, text=True)


def test_bad_selectors_are_one_line_errors(app_home: Path) -> None:
    env = dict(os.environ)
    for args, why in ((["forget"], "exactly one of"),
                      (["forget", "--session", "a", "--since", "1h"], "exactly one of"),
                      (["forget", "--since", "yesterday-ish"], "not a time"),
                      (["forget", "--until", "1h", "--session", "x"], "--until goes with --since"),
                      (["forget", "--since", "1h", "--until", "2h"], "is not after"),
                      (["forget", "--since", "99999999d"], "too long ago"),
                      (["export", "--format", "jsonl", "--since", "0001-01-01"], "out of the range")):
        r = run_cli(*args, env=env, timeout=30)
        assert r.returncode == 64, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and why in lines[0], (args, r.stderr)


def _event(i: int, ts: datetime, **kw: object) -> dict:
    from engine_util import make_event

    return make_event(i, timestamp=ts.isoformat(timespec="microseconds").replace("+00:00", "Z"), **kw)


def test_forget_a_project_and_a_time_range_with_the_app_stopped(app_env: dict[str, str],
                                                                 redis_server: RedisProc) -> None:
    from engine_util import push, row_count, running_engine

    cfg = load_config()
    now = datetime.now(timezone.utc)
    proj = "/work/secret-project"
    evs = ([_event(i, now - timedelta(minutes=10), workspace_hash=events.workspace_hash(proj)) for i in range(5)]
           + [_event(10 + i, now - timedelta(minutes=90), session=f"old-{i}") for i in range(4)]
           + [_event(20 + i, now - timedelta(days=3), session="older") for i in range(3)])
    with running_engine(redis_server.url):
        push(redis_server.client(), evs)
        wait_for(lambda: row_count(cfg.paths.database) == len(evs), timeout=20, what="every row")

    r = run_cli("forget", "--project", events.workspace_hash(proj), "--dry-run", "--json", env=app_env)
    assert r.returncode == 0 and json.loads(r.stdout)["counts"]["raw_traces"] == 5  # by the hash reports show
    r = run_cli("forget", "--project", proj + "/", "--json", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["raw_traces"] == 5
    assert row_count(cfg.paths.database) == 7

    # 2h ago to 1h ago: the four "old-*" events (an hour and a half old), not the 3-day-old ones
    r = run_cli("forget", "--since", "2h", "--until", "1h", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    left = {s for (s,) in _q(cfg.paths.database, "SELECT session_id FROM raw_traces")}
    assert left == {"older"}
    assert not stream_has(redis_server.client(), CDC_STREAM, b"old-0")

    # the rule outlives the rows: the same events sent again are not stored
    late = [_event(30, now - timedelta(minutes=80), session="late-in-range"),
            _event(31, now - timedelta(minutes=5), workspace_hash=events.workspace_hash(proj)),
            _event(32, now, session="kept")]
    with running_engine(redis_server.url) as eng:
        push(redis_server.client(), late)
        wait_for(lambda: "kept" in {s for (s,) in _q(cfg.paths.database, "SELECT session_id FROM raw_traces")},
                 timeout=20, what="the event outside the rule")
        wait_for(lambda: eng.consumer.processor.forgotten == 2, timeout=10, what="two dropped by the rule")
    assert row_count(cfg.paths.database) == 4


def test_forget_all_asks_and_dry_run_changes_nothing(app_env: dict[str, str], redis_server: RedisProc) -> None:
    from engine_util import make_event, push, row_count, running_engine

    cfg = load_config()
    with running_engine(redis_server.url):
        push(redis_server.client(), [make_event(i) for i in range(6)])
        wait_for(lambda: row_count(cfg.paths.database) == 6, timeout=20, what="rows")
    r = run_cli("forget", "--all", env=app_env, timeout=60)
    assert r.returncode == 64 and "add --yes" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("forget", "--all", "--dry-run", env=app_env, timeout=60)
    assert r.returncode == 0 and "Would forget everything" in r.stdout
    assert row_count(cfg.paths.database) == 6 and not rule.path_in(cfg.paths.state_dir).exists()
    r = run_cli("forget", "--all", "--yes", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    # only the content-free row that keeps the newest sequence taken
    assert _q(cfg.paths.database, "SELECT session_id, event_type, platform FROM raw_traces") == \
        [("", "forgotten", "")]
    assert redis_server.client().xlen(CDC_STREAM) == 0


def test_forget_while_the_engine_runs_pauses_it_and_resumes(app_env: dict[str, str], redis_server: RedisProc,
                                                             tmp_path: Path, engine_procs: list) -> None:
    from engine_util import make_event, push, row_count
    from test_status_states import headless

    cfg = load_config()
    client = redis_server.client()
    engine_procs.append(headless(app_env, tmp_path / "engine.log"))
    wait_for(lambda: status(app_env)[0] == 0, timeout=30, what="the engine to run")
    push(client, [make_event(i, session="gone" if i % 2 else "stays") for i in range(20)])
    wait_for(lambda: row_count(cfg.paths.database) == 20, timeout=20, what="rows")
    r = run_cli("forget", "--session", "gone", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _rows(cfg.paths.database, "gone") == 0 and _rows(cfg.paths.database, "stays") == 10
    code, snap = status(app_env)
    assert code == 0 and snap["paused"] is False  # it was running: it runs again
    push(client, [make_event(100, session="gone"), make_event(101, session="stays")])
    wait_for(lambda: _rows(cfg.paths.database, "stays") == 11, timeout=20, what="a new event stored")
    wait_for(lambda: client.xinfo_groups(EVENTS_STREAM)[0]["pending"] == 0, timeout=10, what="acknowledged")
    assert _rows(cfg.paths.database, "gone") == 0
    wait_for(lambda: status(app_env)[1].get("total_forgotten") == 1, timeout=10, what="the drop counted in status")


def test_the_tray_forgets_the_last_hour_off_the_ui_thread(app_env: dict[str, str], redis_server: RedisProc,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The tray's item with the tray's own runtime (in this process): the hour goes,
    older rows stay, the engine runs on, and a notification says how many went."""
    from engine_util import push, row_count
    from test_tray_threads import FakeNotifier

    from tray_app.engine.health import RUNNING
    from tray_app.engine.runtime import FACE_TRAY, EngineRuntime, RuntimeSettings
    from tray_app.redis_conn import ensure_streams
    from tray_app.tray.menu import A_FORGET_HOUR

    monkeypatch.setenv("PYSTRAY_BACKEND", "dummy")
    from tray_app.tray import app as app_mod

    ensure_streams(redis_server.client())
    cfg = load_config()
    now = datetime.now(timezone.utc)
    rt = EngineRuntime(cfg, RuntimeSettings(face=FACE_TRAY, with_monitors=False))
    notifier = FakeNotifier()
    app = app_mod.TrayApp(cfg, runtime=rt, notifier=notifier)  # type: ignore[arg-type]
    rt.start_background()
    app.actions.start()
    try:
        wait_for(lambda: rt.ready and rt.health().state == RUNNING, timeout=30, what="the engine to run")
        push(redis_server.client(), [_event(i, now - timedelta(minutes=5 + i)) for i in range(42)]
             + [_event(100 + i, now - timedelta(hours=2)) for i in range(3)])
        wait_for(lambda: row_count(cfg.paths.database) == 45, timeout=20, what="rows")
        app.actions.submit(A_FORGET_HOUR)  # what a click does: the action thread runs it
        wait_for(lambda: notifier.sent, timeout=120, what="the notification")
        assert notifier.sent == [("Forgot the last hour", "Forgot 42 events from the last hour.")]
        assert row_count(cfg.paths.database) == 3
        assert rt.paused is False
        push(redis_server.client(), [_event(200, now + timedelta(seconds=1), session="after")])
        wait_for(lambda: row_count(cfg.paths.database) == 4, timeout=20, what="recording goes on")
    finally:
        app.actions.stop()
        rt.stop(10)


def test_forget_with_the_app_stopped_scrubs_the_private_servers_files(app_home: Path, server_binary: object,
                                                                       tmp_path: Path, engine_procs: list) -> None:
    """The app's own valkey-server (no redis.url): the engine stops, its server with it;
    `forget` starts the server for itself, rewrites the append-only file, stops it."""
    from test_status_states import headless

    env = dict(os.environ)
    cfg = load_config()
    canary = f"canary{uuid.uuid4().hex}"
    sid = f"stopped-{canary}"
    engine_procs.append(headless(env, tmp_path / "engine.log"))
    wait_for(lambda: status(env)[0] == 0, timeout=30, what="the engine with its private server")
    for words in ("keep me", canary):
        s = sid if words == canary else "kept-session"
        proc, _ = run_hook("claude", _hook("UserPromptSubmit", s, "/home/dev/x", tmp_path / "t.jsonl",
                                           prompt=words), hook_env(app_home))
        assert proc.returncode == 0
    wait_for(lambda: _rows(cfg.paths.database, sid) == 1 and _rows(cfg.paths.database, "kept-session") == 1,
             timeout=30, what="both stored")
    terminate(engine_procs.pop())
    aof_dir = cfg.paths.data_dir / "redis" / "appendonlydir"
    assert files_with(aof_dir, [canary.encode()]), "the append-only file holds the entry"

    r = run_cli("forget", "--session", sid, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "append-only file rewritten" in r.stdout
    assert files_with(app_home, [canary.encode()]) == []
    assert _rows(cfg.paths.database, "kept-session") == 1


def test_forget_with_redis_unreachable_does_the_rest_and_says_so(app_env: dict[str, str],
                                                                 redis_server: RedisProc) -> None:
    from engine_util import make_event, push, row_count, running_engine

    cfg = load_config()
    with running_engine(redis_server.url):
        push(redis_server.client(), [make_event(i, session="x" if i % 2 else "y") for i in range(6)])
        wait_for(lambda: row_count(cfg.paths.database) == 6, timeout=20, what="rows")
    env = {**app_env, "TELEMETRY_TRAY_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    r = run_cli("forget", "--session", "x", env=env, timeout=120)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "raw_traces" in r.stdout and _rows(cfg.paths.database, "x") == 0 and _rows(cfg.paths.database, "y") == 3
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("telemetry-tray forget: warning: Redis:"), r.stderr
    assert rule.load(cfg.paths.state_dir).session("x")  # the queued entries are dropped when they are read


def test_forgetting_the_newest_rows_does_not_hand_their_sequences_to_new_events(
        app_env: dict[str, str], redis_server: RedisProc, tmp_path: Path, engine_procs: list) -> None:
    """SQLite numbers a new row MAX(sequence)+1: with the newest session forgotten,
    new events would reuse sequences the usage worker has passed and never count.
    A content-free row keeps the top; new events count; export leaves it out."""
    from engine_util import make_event, push
    from test_status_states import headless

    def prompt(i: int, sid: str) -> dict:
        return make_event(i, session=sid, platform="claude_code", event_type="user_prompt",
                          metadata={"source": "claude_hook"})

    def prompts(sid: str) -> int:
        r = run_cli("sessions", "--json", env=app_env)
        assert r.returncode == 0, r.stderr
        return next((s["prompts"] for s in json.loads(r.stdout) if s["session_id"] == sid), 0)

    cfg = load_config()
    client = redis_server.client()
    engine_procs.append(headless(app_env, tmp_path / "engine.log"))
    wait_for(lambda: status(app_env)[0] == 0, timeout=30, what="the engine to run")
    push(client, [prompt(i, "stays") for i in range(10)])
    wait_for(lambda: prompts("stays") == 10, timeout=30, what="the first prompts counted")
    push(client, [prompt(i, "newest") for i in range(10, 20)])
    wait_for(lambda: prompts("newest") == 10, timeout=30, what="the newest session counted")
    top = _q(cfg.paths.database, "SELECT MAX(sequence) FROM raw_traces")[0][0]
    r = run_cli("forget", "--session", "newest", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _q(cfg.paths.database, "SELECT MAX(sequence), session_id, event_type FROM raw_traces") == \
        [(top, "", "forgotten")]
    push(client, [prompt(i, "stays") for i in range(20, 25)])
    wait_for(lambda: prompts("stays") == 15, timeout=30, what="the new prompts counted")
    assert min(s for (s,) in _q(cfg.paths.database, "SELECT sequence FROM raw_traces WHERE session_id='stays'"
                                                    " ORDER BY sequence DESC LIMIT 5")) > top
    out = run_cli("export", "--format", "jsonl", env=app_env)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 15 and "forgotten" not in out.stdout


def test_after_forgetting_all_of_today_the_tray_counts_no_event_today(
        app_env: dict[str, str], redis_server: RedisProc, tmp_path: Path, engine_procs: list) -> None:
    """The content-free row that keeps the newest sequence is no event: today's
    counts (the tray's "today" line, status) do not show it as one, nor its
    empty session id as a session."""
    from engine_util import make_event, push, row_count
    from test_status_states import headless

    cfg = load_config()
    engine_procs.append(headless(app_env, tmp_path / "engine.log"))
    wait_for(lambda: status(app_env)[0] == 0, timeout=30, what="the engine to run")
    push(redis_server.client(), [make_event(i, session="today") for i in range(5)])
    wait_for(lambda: row_count(cfg.paths.database) == 5, timeout=20, what="rows")
    wait_for(lambda: status(app_env)[1].get("today_events") == 5, timeout=20, what="today's count")
    r = run_cli("forget", "--session", "today", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _q(cfg.paths.database, "SELECT event_type FROM raw_traces") == [("forgotten",)]
    wait_for(lambda: (status(app_env)[1].get("today_events"), status(app_env)[1].get("today_sessions")) == (0, 0),
             timeout=20, what="today's counts without the forgotten row")
    # nor does `db stats`
    r = run_cli("db", "stats", "--json", env=app_env)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert (stats["rows"], stats["by_platform"], stats["last_days"]["rows"]) == (0, {}, 0), stats
    assert stats["newest_event"] is None and stats["last_days"]["by_event_type"] == {}


def test_forgetting_a_sessions_end_leaves_no_end_time_in_the_range(app_env: dict[str, str],
                                                                  redis_server: RedisProc) -> None:
    """A time range that holds a session's end: the session row (kept, it has
    older events) no longer says it ended then, nor why."""
    import zlib

    from tray_app.engine import schema

    cfg = load_config()
    now = datetime.now(timezone.utc)

    def iso(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    conn = schema.open_database(cfg.paths.database)
    with schema.immediate(conn):
        for i, (et, t) in enumerate((("user_prompt", now - timedelta(hours=3)),
                                     ("session_end", now - timedelta(minutes=90)))):
            conn.execute("INSERT INTO raw_traces (event_id, session_id, event_type, platform, timestamp, "
                         "ingested_at, event_data) VALUES (?, 's1', ?, 'claude_code', ?, ?, ?)",
                         (f"e{i}", et, iso(t), iso(t), zlib.compress(b'{"payload":{"reason":"logout"}}')))
        conn.execute("INSERT INTO sessions (platform, session_id, started_at, last_activity_at, ended_at, "
                     "end_reason, event_count) VALUES ('claude_code', 's1', ?, ?, ?, 'logout', 2)",
                     (iso(now - timedelta(hours=3)), iso(now - timedelta(hours=3)), iso(now - timedelta(minutes=90))))
    conn.close()
    r = run_cli("forget", "--since", "2h", "--until", "1h", env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert _q(cfg.paths.database, "SELECT event_count, ended_at, end_reason FROM sessions") == [(1, None, None)]


def test_forget_a_project_with_a_non_ascii_path_finds_its_transcript_directory(app_env: dict[str, str],
                                                                                 redis_server: RedisProc) -> None:
    """Claude Code names a project's directory with every character that is not an
    ASCII letter or digit as '-' ("/home/dev/café" -> "-home-dev-caf-"): the
    monitor's offsets of that directory's transcripts go, and the rule names it."""
    from tray_app.monitors.claude_transcripts import FILE_SCOPE, NAME
    from tray_app.monitors.state_store import StateStore, state_file

    cfg = load_config()
    proj = "/home/dev/café"
    transcript = f"/home/dev/.claude/projects/-home-dev-caf-/{uuid.uuid4()}.jsonl"
    store = StateStore(state_file(cfg.paths.state_dir, NAME))
    store.put(FILE_SCOPE, transcript, {"offset": 10})
    store.close()
    r = run_cli("forget", "--project", proj, env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert files_with(cfg.paths.state_dir, [b"-home-dev-caf-"]) == []
    assert rule.load(cfg.paths.state_dir).transcript_dir("-home-dev-caf-")


def test_forget_a_session_keeps_another_sessions_queued_event_that_mentions_it(
        app_env: dict[str, str], redis_server: RedisProc) -> None:
    """Another session's event still in Redis whose prompt quotes the forgotten
    session id is that other session's: it is kept (and stored), as the same
    event in telemetry.db would be. Only an entry that cannot be decoded is
    matched by the id in its bytes."""
    from engine_util import make_event, push, running_engine

    cfg = load_config()
    gone = str(uuid.uuid4())
    client = redis_server.client()
    push(client, [make_event(0, session=gone),
                  make_event(1, session="other", payload={"prompt": f"why did session {gone} fail?"})])
    client.xadd(EVENTS_STREAM, {"session_id": "x", "payload": f"{{broken {gone}"})  # undecodable, names it
    r = run_cli("forget", "--session", gone, env=app_env, timeout=120)
    assert r.returncode == 0, r.stderr
    left = [f.get(b"session_id") for _id, f in client.xrange(EVENTS_STREAM)]
    assert left == [b"other"]
    with running_engine(redis_server.url):
        wait_for(lambda: _rows(cfg.paths.database, "other") == 1, timeout=20, what="the other session's event")


def test_a_damaged_database_is_one_warning_and_the_rest_is_done(app_env: dict[str, str],
                                                                redis_server: RedisProc) -> None:
    """telemetry.db that is not a database: forget still writes the rule and sweeps
    Redis, says in one line what it could not do, exit 1, no traceback."""
    from engine_util import make_event, push

    cfg = load_config()
    cfg.paths.database.parent.mkdir(parents=True, exist_ok=True)
    cfg.paths.database.write_bytes(os.urandom(8192))
    push(redis_server.client(), [make_event(0, session="gone")])
    r = run_cli("forget", "--session", "gone", env=app_env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "file is not a database" in r.stderr
    assert [ln for ln in r.stderr.splitlines() if "telemetry.db" in ln][0].startswith("telemetry-tray forget: warning:")
    assert rule.load(cfg.paths.state_dir).session("gone")
    assert redis_server.client().xlen(EVENTS_STREAM) == 0


def test_a_damaged_monitor_state_file_is_one_warning(app_env: dict[str, str], redis_server: RedisProc) -> None:
    cfg = load_config()
    state = cfg.paths.state_dir / "monitors" / "claude_transcripts.sqlite3"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(os.urandom(8192))
    r = run_cli("forget", "--session", "gone", env=app_env, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "monitors' state" in r.stderr and "not a database" in r.stderr
    assert rule.load(cfg.paths.state_dir).session("gone")
