"""EngineRuntime: the one start-up sequence of both faces, its health file,
and the supervisor that restarts the private Redis server."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, RedisProc, wait_for
from engine_util import make_event, push, row_count

from tray_app.config import load_config
from tray_app.engine.backoff import Backoff
from tray_app.engine.health import RUNNING, STOPPED
from tray_app.engine.health_file import health_file_path, read_health_file
from tray_app.engine.runtime import FACE_TRAY, EngineRuntime, RuntimeSettings
from tray_app.engine.server_watch import OK, ServerWatch
from tray_app.errors import ServerBinaryNotFound
from tray_app.redis_conn import read_endpoint_file
from tray_app.tray.menu import build_menu


def test_the_engine_package_does_not_import_the_tray() -> None:
    code = ("import argparse, sys, tray_app.engine.runtime, tray_app.engine.cli; "
            "tray_app.engine.cli.register(argparse.ArgumentParser().add_subparsers()); "
            "bad = sorted(m for m in sys.modules if m.startswith('tray_app.tray')); "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_runtime_shows_why_it_cannot_start_and_stops_promptly(
        app_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_MANAGED", "always")
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_SERVER_BINARY", str(tmp_path / "no-such-valkey-server"))
    cfg = load_config()
    rt = EngineRuntime(cfg, RuntimeSettings(face=FACE_TRAY, with_monitors=False))
    assert rt.health().state == "starting" and rt.paused is None and not rt.ready
    rt.start_background()
    snap = wait_for(lambda: rt.health() if rt.health().last_error else None, timeout=20,
                    what="the start failure to show")
    model = build_menu(snap, cfg.tray)
    assert model.status.startswith("Starting: ") and "no-such-valkey-server" in model.status
    assert model.icon_state == "starting"
    assert rt.pause() is False                     # nothing to pause yet; the tray says so
    # status can see this engine while it cannot start: the health file
    record = wait_for(lambda: (r := read_health_file(health_file_path(cfg.paths.state_dir)))
                      and r.snapshot.last_error and r, what="the health file to say why")
    assert record.is_live() and record.face == "tray" and "no-such-valkey-server" in record.snapshot.last_error
    t0 = time.monotonic()
    assert rt.stop(timeout_s=5)
    assert time.monotonic() - t0 < 3               # the retry wait is interruptible
    assert rt.engine is None and rt.health().state == STOPPED
    assert not health_file_path(cfg.paths.state_dir).exists()


def test_headless_start_failure_is_raised_and_cleaned_up(
        app_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_MANAGED", "always")
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_SERVER_BINARY", str(tmp_path / "no-such-valkey-server"))
    cfg = load_config()
    rt = EngineRuntime(cfg, RuntimeSettings(with_monitors=False))
    with pytest.raises(ServerBinaryNotFound, match="no-such-valkey-server"):
        rt.start()
    assert rt.stop(timeout_s=5)
    assert not health_file_path(cfg.paths.state_dir).exists()


def test_runtime_runs_the_real_engine_and_publishes_a_health_file(
        app_env: dict[str, str], redis_server: RedisProc) -> None:
    cfg = load_config()
    rt = EngineRuntime(cfg, RuntimeSettings(with_monitors=False))
    rt.start()
    path = health_file_path(cfg.paths.state_dir)
    try:
        wait_for(lambda: rt.health().state == RUNNING and rt.health().redis_ok, timeout=30,
                 what="the engine to run")
        assert rt.paused is False and rt.watch is None  # not our server: nothing to supervise
        push(redis_server.client(), [make_event(i) for i in range(50)])
        wait_for(lambda: row_count(cfg.paths.database) == 50, timeout=20, what="rows")
        record = wait_for(lambda: (r := read_health_file(path)) and r.snapshot.total_ingested == 50 and r,
                          timeout=10, what="the health file to show the rows")
        assert record.pid == os.getpid() and record.face == "headless" and record.is_live()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        before = record.written_at
        wait_for(lambda: (r := read_health_file(path)) and r.written_at > before, timeout=5,
                 what="the file to be rewritten")
        assert rt.pause() and rt.paused is True and rt.resume() and rt.paused is False
    finally:
        assert rt.stop(timeout_s=10)
    assert rt.health().state == STOPPED
    assert not path.exists()                      # "no engine running" from now on
    assert rt.stop(timeout_s=1)                   # idempotent


def test_killed_private_server_is_restarted_with_its_data(app_home: Path) -> None:
    """The runtime's own private server (managed), killed with SIGKILL: the
    supervisor restarts it on the same socket with the same password and data."""
    cfg = load_config()
    rt = EngineRuntime(cfg, RuntimeSettings(with_monitors=False))
    rt.start()
    try:
        wait_for(lambda: rt.health().state == RUNNING and rt.health().redis_ok, timeout=30,
                 what="the engine to run")
        assert rt.health().server_status == OK and rt.health().server_restarts == 0
        ep = read_endpoint_file(cfg)
        assert ep is not None and ep.managed
        c = ep.client()
        push(c, [make_event(i) for i in range(20)])
        wait_for(lambda: row_count(cfg.paths.database) == 20, timeout=20, what="rows before")
        c.set("survives-a-restart", "yes")  # in the AOF before the reply; SIGKILL keeps the page cache
        old_pid = rt.provider.server.pid
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: rt.health().server_restarts == 1 and rt.health().server_status == OK,
                 timeout=20, what="the supervisor to restart the server")
        assert rt.provider.server.pid != old_pid
        c = ep.client()                            # same socket, same password
        assert c.get("survives-a-restart") == b"yes"
        push(c, [make_event(100 + i) for i in range(30)])
        wait_for(lambda: row_count(cfg.paths.database) == 50, timeout=30, what="rows after the restart")
        wait_for(lambda: rt.health().redis_ok, timeout=30, what="the engine to reconnect")
    finally:
        assert rt.stop(timeout_s=10)


class _Server:
    def __init__(self) -> None:
        self.up = True
        self.pid = 100

    def ping(self) -> bool:
        return self.up


class _Provider:
    """The part of RedisProvider the supervisor uses; restarts succeed when told."""

    def __init__(self) -> None:
        self.server = _Server()
        self.restart_works = True
        self.attempts: list[float] = []
        self.clock = 0.0

    def ensure_running(self) -> bool:
        if self.server.up:
            return True
        self.attempts.append(self.clock)
        if self.restart_works:
            self.server.up, self.server.pid = True, self.server.pid + 1
        return self.server.up


def test_supervisor_restarts_at_once_then_backs_off_in_a_crash_loop() -> None:
    provider = _Provider()
    published: list[tuple[str, int]] = []
    watch = ServerWatch(provider, lambda s, n: published.append((s, n)), interval_s=1.0,
                        backoff=Backoff(1.0, 8.0), stable_after_s=30.0, clock=lambda: provider.clock)

    def run_for(seconds: float) -> None:
        end = provider.clock + seconds
        while provider.clock < end:
            provider.clock += watch.step()

    run_for(5)
    assert provider.attempts == [] and watch.restarts == 0
    provider.server.up = False                     # a single crash: repaired at the next check
    run_for(1)
    assert provider.attempts == [5.0] and watch.restarts == 1
    assert published == [(OK, 1)]
    # a crash loop: each restart waits longer than the one before
    for _ in range(5):
        provider.server.up = False
        run_for(20)
    gaps = [b - a for a, b in zip(provider.attempts, provider.attempts[1:])]
    assert watch.restarts == 6 and gaps[-1] >= 4.0 and gaps[-1] > gaps[0]
    # restarts fail: the status says so, attempts keep coming, spaced by the cap
    provider.restart_works = False
    provider.server.up = False
    n = len(provider.attempts)
    run_for(30)
    assert watch.status.startswith("down: restart failed") and 3 <= len(provider.attempts) - n <= 10
    provider.restart_works = True
    run_for(10)
    assert watch.status == OK and watch.restarts == 7
    # stable for long enough: the next crash is repaired at once again
    run_for(31)
    provider.server.up = False
    before = provider.clock
    run_for(1.5)
    assert provider.attempts[-1] - before <= 1.0 and watch.restarts == 8
