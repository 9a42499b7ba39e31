"""`status` tells "no engine running" (exit 3), "engine running, Redis down"
(exit 4) and "running" (exit 0) apart; the headless engine restarts its
private Redis when it dies; a second headless engine is refused. Real
processes: `python -m tray_app run --headless`, valkey-server, `status`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, RedisProc, run_cli, wait_for
from engine_util import make_event, push, row_count, terminate
from test_hook_events import CURSOR_BASE, hook_env, run_hook, spool_files

from tray_app.config import load_config
from tray_app.engine.health import RUNNING, HealthSnapshot
from tray_app.engine.health_file import health_file_path, write_health_file
from tray_app.redis_conn import read_endpoint_file
from tray_app.redis_server import ServerBinary


def headless(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    out = open(log, "a")  # noqa: SIM115 - the child owns it
    return subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out, text=True)


def status(env: dict[str, str]) -> tuple[int, dict]:
    r = run_cli("status", "--json", env=env, timeout=30)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}


@pytest.fixture()
def engine_proc() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        terminate(p)


def test_no_engine_running(app_home: Path) -> None:
    env = dict(os.environ)
    code, data = status(env)
    assert code == 3 and data == {"running": False}
    text = run_cli("status", env=env)
    assert text.returncode == 3 and "No engine is running" in text.stdout
    # a health file left by an engine that is gone (its pid is dead) says nothing
    cfg = load_config()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    write_health_file(health_file_path(cfg.paths.state_dir), HealthSnapshot(state=RUNNING),
                      face="headless", pid=int(gone.stdout))
    code, data = status(env)
    assert code == 3 and data == {"running": False}


def _wrapper(tmp_path: Path, real: ServerBinary) -> tuple[Path, Path]:
    """A server binary that starts the real one only while a flag file exists:
    with the flag removed, the engine's restarts of its private server fail."""
    flag = tmp_path / "server-may-start"
    flag.touch()
    script = tmp_path / "valkey-wrapper"
    script.write_text(f'#!/bin/sh\n[ -e "{flag}" ] || {{ echo "refused by the test" >&2; exit 1; }}\n'
                      f'exec "{real.path}" "$@"\n')
    script.chmod(0o755)
    return script, flag


def test_killed_private_redis_status_and_restart(app_home: Path, server_binary: ServerBinary,
                                                 tmp_path: Path,
                                                 engine_proc: list[subprocess.Popen[str]]) -> None:
    script, flag = _wrapper(tmp_path, server_binary)
    env = {**os.environ, "TELEMETRY_TRAY_REDIS_SERVER_BINARY": str(script)}
    cfg = load_config()
    pidfile = cfg.paths.redis_dir / "redis.pid"
    log = tmp_path / "headless.log"
    proc = headless(env, log)
    engine_proc.append(proc)

    def server_pid() -> int:
        try:
            return int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return 0

    def stored_after_xadd(first: int, n: int) -> None:
        ep = read_endpoint_file(cfg)
        assert ep is not None and ep.managed
        before = row_count(cfg.paths.database)
        push(ep.client(), [make_event(first + i) for i in range(n)])
        wait_for(lambda: row_count(cfg.paths.database) == before + n, timeout=45,
                 what=f"{n} events XADDed after the restart to be stored")

    wait_for(lambda: status(env)[0] == 0, timeout=45, what="status: running")
    stored_after_xadd(0, 20)

    # 1. SIGKILL: restarted at once; status never says "not running"
    first = server_pid()
    os.kill(first, signal.SIGKILL)
    code, data = status(env)
    assert data.get("running") is True and code in (0, 4), (code, data)
    wait_for(lambda: server_pid() not in (0, first), timeout=20, what="a new server process")
    stored_after_xadd(100, 30)
    # a real hook reaches the restarted server directly (same socket, same password): no spool
    before = row_count(cfg.paths.database)
    sample = {**CURSOR_BASE, "hook_event_name": "stop", "status": "completed", "loop_count": 0}
    result, _ = run_hook("cursor", json.dumps(sample), hook_env(app_home))
    assert result.returncode == 0 and spool_files(app_home) == []
    wait_for(lambda: row_count(cfg.paths.database) == before + 1, timeout=30, what="the hook's event stored")
    code, data = wait_for(lambda: (r := status(env))[0] == 0 and r[1]["server_restarts"] == 1 and r,
                          timeout=20, what="status: running, 1 restart")
    assert data["server_status"] == "ok" and data["redis_ok"] is True

    # 2. SIGKILL while the server cannot start again: running, Redis down (exit 4)
    flag.unlink()
    second = server_pid()
    os.kill(second, signal.SIGKILL)
    code, data = wait_for(lambda: (r := status(env))[0] == 4 and r[1]["server_status"].startswith("down")
                          and r, timeout=30, what="status: running, Redis down")
    assert data["running"] is True and data["redis_ok"] is False and data["pid"] == proc.pid
    assert data["source"] == "health-file" and "restart failed" in data["server_status"]
    text = run_cli("status", env=env)
    assert text.returncode == 4 and "running" in text.stdout and "Redis is down" in text.stdout
    assert proc.poll() is None
    # the server may start again: the runtime brings it back within its backoff
    flag.touch()
    wait_for(lambda: server_pid() not in (0, second), timeout=45, what="the server restarted")
    stored_after_xadd(200, 40)
    code, data = wait_for(lambda: (r := status(env))[0] == 0 and r, timeout=20, what="status: running")
    assert data["server_restarts"] == 2 and data["redis_ok"] is True

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert status(env)[0] == 3
    assert "private redis: restarted" in log.read_text()


def test_second_headless_engine_is_refused(app_env: dict[str, str], redis_server: RedisProc,
                                           tmp_path: Path,
                                           engine_proc: list[subprocess.Popen[str]]) -> None:
    first = headless(app_env, tmp_path / "first.log")
    engine_proc.append(first)
    wait_for(lambda: status(app_env)[0] == 0, timeout=45, what="the first engine to run")
    second = subprocess.run([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=app_env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 75
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "already running" in lines[-1] and lines[-1].startswith("telemetry-tray: error:")
    assert first.poll() is None                    # the first one is untouched
    push(redis_server.client(), [make_event(i) for i in range(10)])
    wait_for(lambda: row_count(load_config().paths.database) == 10, timeout=20, what="rows")


def test_headless_exits_1_on_a_database_schema_too_new(app_env: dict[str, str], redis_server: RedisProc,
                                                       tmp_path: Path) -> None:
    """Truly fatal: the engine cannot go on, so the headless face exits 1 with one line."""
    import sqlite3

    db_path = load_config().paths.database
    db_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        conn.execute("INSERT INTO schema_version (version) VALUES (999)")
    conn.close()
    proc = subprocess.run([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                          env=app_env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("telemetry-tray: error:")]
    assert len(errors) == 1 and "newer than this app" in errors[0], proc.stderr[-2000:]
    assert not health_file_path(load_config().paths.state_dir).exists()


def test_a_set_aside_aof_is_told_by_status(app_home: Path, server_binary: ServerBinary, tmp_path: Path,
                                           engine_proc: list[subprocess.Popen[str]]) -> None:
    """The private server's append-only file was damaged while the app was not
    running: the engine starts anyway, and `status` says what was set aside."""
    from tray_app.redis_conn import RedisProvider, ensure_streams

    cfg = load_config()
    provider = RedisProvider(cfg)
    provider.start()
    assert provider.endpoint is not None
    c = provider.endpoint.client()
    ensure_streams(c)
    push(c, [make_event(i) for i in range(40)])
    c.close()
    provider.stop()
    [incr] = sorted((cfg.paths.data_dir / "redis" / "appendonlydir").glob("*.incr.aof"))
    data = incr.read_bytes()
    incr.write_bytes(data[:len(data) // 2] + b"\x00garbage\xff" + data[len(data) // 2:])

    env = dict(os.environ)
    proc = headless(env, tmp_path / "headless.log")
    engine_proc.append(proc)
    _, js = wait_for(lambda: (r := status(env))[0] == 0 and r[1].get("server_recovery") and r, timeout=45,
                     what="status: running, with what was set aside")
    assert "corrupt" in js["server_recovery"] and js["pid"] == proc.pid
    text = run_cli("status", env=env)
    [line] = [ln for ln in text.stdout.splitlines() if ln.startswith("recovered:")]
    assert "corrupt-" in line
    # what loaded is stored; the engine goes on
    wait_for(lambda: 0 < row_count(cfg.paths.database) <= 40, timeout=30, what="the readable events stored")
