"""The engine host (start in the background, show why it cannot start) and
the fallback diagnostics bundle."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from conftest import RedisProc, wait_for
from tray_app.config import load_config
from tray_app.engine.health import RUNNING, HealthSnapshot
from tray_app.tray.actions import minimal_bundle
from tray_app.tray.host import EngineHost
from tray_app.tray.menu import build_menu


def test_host_shows_why_the_engine_cannot_start_and_stops_promptly(
        app_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_MANAGED", "always")
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_SERVER_BINARY", str(tmp_path / "no-such-valkey-server"))
    cfg = load_config()
    host = EngineHost(cfg, with_monitors=False)
    assert host.health().state == "starting" and host.paused() is None
    host.start()
    snap = wait_for(lambda: host.health() if host.health().last_error else None, timeout=20,
                    what="the start failure to show")
    model = build_menu(snap, cfg.tray)
    assert model.status.startswith("Starting: ") and "no-such-valkey-server" in model.status
    assert model.icon_state == "starting"
    t0 = time.monotonic()
    assert host.stop(timeout_s=5)
    assert time.monotonic() - t0 < 3            # the retry wait is interruptible
    assert host.engine is None


def test_host_runs_the_real_engine(app_env: dict[str, str], redis_server: RedisProc) -> None:
    cfg = load_config()
    host = EngineHost(cfg, with_monitors=False)
    host.start()
    try:
        wait_for(lambda: host.health().state == RUNNING and host.health().redis_ok, timeout=30,
                 what="the engine to run")
        assert host.paused() is False
    finally:
        assert host.stop(timeout_s=10)
    assert host.health().state == "stopped"


def test_minimal_bundle_holds_health_and_masked_config(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://:s3cret-pw@127.0.0.1:6390/0")
    cfg = load_config()
    cfg.paths.log_dir.mkdir(parents=True)
    cfg.paths.log_file.write_text("x" * 300_000 + "last line\n")
    snap = HealthSnapshot(state=RUNNING, today_events=42)
    path = minimal_bundle(cfg, snap, "Running\nQuit")
    assert path.parent == cfg.paths.data_dir / "diagnostics" and (path.stat().st_mode & 0o777) == 0o600
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"info.json", "health.json", "config.json", "tray-menu.txt", "telemetry-tray.log"} <= names
        assert json.loads(zf.read("health.json"))["today_events"] == 42
        config = zf.read("config.json").decode()
        assert "s3cret-pw" not in config and "***" in config
        log = zf.read("telemetry-tray.log")
        assert log.endswith(b"last line\n") and len(log) <= 256 * 1024
    again = minimal_bundle(cfg, snap)
    assert again != path                         # never overwrites an earlier bundle
