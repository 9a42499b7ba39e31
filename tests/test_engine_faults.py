"""Crashes, outages and a failing disk: nothing lost, nothing duplicated, no good
event dead-lettered. Bounded in count and time; loopback and temp dirs only."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from conftest import ROOT, RedisProc, need, run_cli, wait_for
from engine_util import make_event, pending_count, push, row_count, running_engine
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, endpoint_from_url, ensure_streams


def start_headless(env: dict[str, str], log: Path | None = None) -> subprocess.Popen[str]:
    """The engine as its own process; its console log goes to a file (a pipe nobody
    reads would fill up and block it)."""
    out = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out, text=True)


def group_unacked(c: redis.Redis) -> int:
    """Entries of the stream not yet acknowledged by the group (unread + pending)."""
    g = c.xinfo_groups(EVENTS_STREAM)[0]
    return int(g["lag"] or 0) + int(g["pending"])


@pytest.mark.slow
def test_sigkill_during_50k_load(app_env: dict[str, str], redis_server: RedisProc) -> None:
    c = redis_server.client()
    ensure_streams(c)
    db_path = load_config().paths.database
    evs = [make_event(i, size=100) for i in range(50_000)]
    producer = threading.Thread(target=push, args=(redis_server.client(), evs, 500))
    producer.start()
    proc = start_headless(app_env)
    kills = 0
    try:
        for threshold in (5_000, 15_000, 30_000):
            wait_for(lambda: row_count(db_path) >= threshold, timeout=60, what=f"{threshold} rows")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
            proc = start_headless(app_env)
        producer.join(60)
        wait_for(lambda: row_count(db_path) == 50_000, timeout=120, what="50,000 rows")
        wait_for(lambda: pending_count(c) == 0 and group_unacked(c) == 0, timeout=30, what="nothing pending")
    finally:
        proc.terminate()
        proc.wait(20)
    assert kills == 3
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT event_id) FROM raw_traces").fetchone()[0] == 50_000
    assert c.xlen(DLQ_STREAM) == 0


def test_dead_consumers_pending_entries_are_claimed(app_env, redis_server: RedisProc, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_CLAIM_IDLE_MS", "300")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_CLAIM_INTERVAL_S", "0.2")
    c = redis_server.client()
    ensure_streams(c)
    push(c, [make_event(i) for i in range(200)])
    # another machine's engine reads them and dies before acknowledging
    got = c.xreadgroup("processors", "laptop-b-dead", {EVENTS_STREAM: ">"}, count=200)
    assert len(got[0][1]) == 200 and pending_count(c) == 200
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: row_count(cfg.paths.database) == 200, timeout=20, what="claimed rows")
        wait_for(lambda: pending_count(c) == 0, what="claimed entries acknowledged")


def test_entry_delivered_too_often_is_dead_lettered(app_env, redis_server: RedisProc, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_CLAIM_IDLE_MS", "100")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_CLAIM_INTERVAL_S", "0.1")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_MAX_RETRIES", "5")
    c = redis_server.client()
    ensure_streams(c)
    ids = push(c, [make_event(1), make_event(2)])
    c.xreadgroup("processors", "crashy", {EVENTS_STREAM: ">"}, count=2)
    # the first entry has already been delivered 9 times (it kept crashing someone)
    c.xclaim(EVENTS_STREAM, "processors", "crashy", 0, [ids[0]], retrycount=9)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: c.xlen(DLQ_STREAM) == 1, timeout=20, what="dead letter")
        wait_for(lambda: row_count(cfg.paths.database) == 1, what="the other entry stored")
        wait_for(lambda: pending_count(c) == 0, what="both acknowledged")
    (_, dead), = c.xrange(DLQ_STREAM)
    assert dead[b"dlq:reason"] == b"retries_exhausted" and dead[b"dlq:original_id"].decode() == ids[0]
    assert int(dead[b"dlq:delivery_count"]) > 5


def test_redis_restart_mid_load(app_env, redis_server: RedisProc) -> None:
    c = redis_server.client()
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        first = [make_event(i) for i in range(3000)]
        second = [make_event(i) for i in range(3000)]
        push(c, first)
        wait_for(lambda: row_count(cfg.paths.database) >= 500, what="ingest under way")
        redis_server.stop()  # SHUTDOWN: the append-only file is flushed
        wait_for(lambda: eng.health().redis_ok is False, timeout=15, what="engine notices the outage")
        assert eng.health().state == "degraded"
        redis_server.start()  # same port, same data dir
        c = redis_server.client()
        push(c, second)
        wait_for(lambda: row_count(cfg.paths.database) == 6000, timeout=60, what="every event stored")
        wait_for(lambda: pending_count(c) == 0, what="nothing pending")
        wait_for(lambda: eng.health().redis_ok and eng.health().state == "running", what="recovered")
    assert c.xlen(DLQ_STREAM) == 0


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_locked_database_no_acks_no_dead_letters(app_env, redis_server: RedisProc) -> None:
    c = redis_server.client()
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        push(c, [make_event(i) for i in range(100)])
        wait_for(lambda: row_count(cfg.paths.database) == 100, what="first rows")
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(cfg.paths.database)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert locker.stdout.readline().strip() == "locked"
        try:
            push(c, [make_event(i) for i in range(400)])
            wait_for(lambda: eng.health().sqlite_status == "locked", timeout=10, what="health says locked")
            assert "Database: database locked by another process" in eng.health().reasons
            deadline = time.monotonic() + 3  # hold the lock for several seconds, watching
            while time.monotonic() < deadline:
                assert group_unacked(c) == 400, "nothing may be acknowledged while the database is locked"
                assert c.xlen(DLQ_STREAM) == 0
                time.sleep(0.1)
        finally:
            locker.stdin.close()
            locker.wait(10)
        wait_for(lambda: row_count(cfg.paths.database) == 500, timeout=30, what="all rows after the lock")
        wait_for(lambda: group_unacked(c) == 0, what="all acknowledged")
        wait_for(lambda: eng.health().sqlite_ok, what="health recovered")
        assert c.xlen(DLQ_STREAM) == 0


@pytest.fixture()
def small_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4 MB tmpfs under tmp_path holding the data dir (root only)."""
    need(os.geteuid() == 0 and shutil.which("mount") is not None, "needs root to mount a small tmpfs")
    mnt = tmp_path / "smallfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    need(r.returncode == 0, f"cannot mount tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _engine_on(mnt: Path, redis_server: RedisProc, monkeypatch) -> Engine:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(mnt))
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BACKOFF_MAX_S", "0.5")
    cfg = load_config()
    ensure_streams(redis_server.client())
    eng = Engine(cfg, endpoint_from_url(redis_server.url), with_monitors=False)
    eng.start()
    return eng


def test_disk_full_then_recovers(small_fs: Path, app_env, redis_server: RedisProc, monkeypatch) -> None:
    eng = _engine_on(small_fs, redis_server, monkeypatch)
    db_path = eng.cfg.paths.database
    c = redis_server.client()
    try:
        push(c, [make_event(i) for i in range(50)])
        wait_for(lambda: row_count(db_path) == 50, what="first rows")
        filler = small_fs / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        push(c, [make_event(i, size=3000) for i in range(500)])
        wait_for(lambda: eng.health().sqlite_status == "disk_full", timeout=20, what="health says disk full")
        assert "Database: disk full" in eng.health().reasons
        assert c.xlen(DLQ_STREAM) == 0
        filler.unlink()
        wait_for(lambda: row_count(db_path) == 550, timeout=30, what="ingest resumes after space is freed")
        wait_for(lambda: eng.health().sqlite_ok, what="health recovered")
        assert c.xlen(DLQ_STREAM) == 0
    finally:
        eng.stop(5)


def test_read_only_database_then_recovers(small_fs: Path, app_env, redis_server: RedisProc, monkeypatch) -> None:
    """The database's volume is read-only when the engine starts (a volume cannot be
    remounted read-only under open files): health says so; remounting it
    read-write lets ingest resume by itself."""
    eng = _engine_on(small_fs, redis_server, monkeypatch)
    db_path = eng.cfg.paths.database
    c = redis_server.client()
    push(c, [make_event(i) for i in range(50)])
    wait_for(lambda: row_count(db_path) == 50, what="first rows")
    eng.stop(5)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        eng = _engine_on(small_fs, redis_server, monkeypatch)
        push(c, [make_event(i) for i in range(100)])
        wait_for(lambda: eng.health().sqlite_status == "read_only", timeout=20, what="health says read-only")
        assert not eng.health().sqlite_ok and eng.health().state == "degraded"
        assert "Database: database is read-only" in eng.health().reasons
        assert c.xlen(DLQ_STREAM) == 0 and group_unacked(c) == 100
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    try:
        wait_for(lambda: row_count(db_path) == 150, timeout=30,
                 what=f"ingest resumes when writable ({eng.health().reasons}, {eng.health().last_error})")
        wait_for(lambda: eng.health().sqlite_ok, what="health recovered")
    finally:
        eng.stop(5)


def test_headless_run_status_and_orderly_sigterm(app_env: dict[str, str], redis_server: RedisProc) -> None:
    c = redis_server.client()
    none = run_cli("status", env=app_env)
    assert none.returncode == 3 and "No engine is running" in none.stdout
    log = Path(app_env["TELEMETRY_TRAY_HOME"]) / "headless.log"
    proc = start_headless(app_env, log)
    try:
        db_path = load_config().paths.database
        push(c, [make_event(i) for i in range(1000)])
        wait_for(lambda: row_count(db_path) == 1000, timeout=30, what="rows")
        status = wait_for(lambda: (r := run_cli("status", env=app_env)).returncode == 0
                          and "1,000 stored" in r.stdout and r, timeout=15, what="status shows the rows")
        assert "state:        running" in status.stdout
        js = run_cli("status", "--json", env=app_env)
        import json
        data = json.loads(js.stdout)
        assert data["running"] is True and data["total_ingested"] == 1000 and data["redis_ok"] is True
        # a second headless instance is refused (exit 75, one line; tests/test_status_states.py)
        second = run_cli("run", "--headless", "--no-monitors", env=app_env, timeout=30)
        assert second.returncode == 75 and "already running" in second.stderr
        push(c, [make_event(i) for i in range(500)])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        err = log.read_text()
        assert "received SIGTERM; stopping" in err and "engine: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
    # whatever was read before the signal was committed and acknowledged
    assert pending_count(c) == 0
    after = run_cli("status", env=app_env)
    assert after.returncode == 3
