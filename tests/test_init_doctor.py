"""`init` is idempotent; `doctor` reports problems with a non-zero exit."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import RedisProc, run_cli


def test_init_is_idempotent(app_env: dict[str, str], redis_server: RedisProc) -> None:
    first = run_cli("init", env=app_env)
    assert first.returncode == 0, first.stderr
    assert "created  stream telemetry:events" in first.stdout
    assert "created  group processors on telemetry:events" in first.stdout
    second = run_cli("init", env=app_env)
    assert second.returncode == 0
    assert "created" not in second.stdout
    for thing in ("stream telemetry:events", "group processors", "stream telemetry:dlq", "stream cdc:events"):
        assert thing in second.stdout
    c = redis_server.client()
    assert {g["name"] for g in c.xinfo_groups("telemetry:events")} == {b"processors"}
    assert c.exists("telemetry:dlq", "cdc:events") == 2


def test_doctor_ok_against_running_redis(app_env: dict[str, str]) -> None:
    out = run_cli("doctor", env=app_env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK   config" in out.stdout and "OK   redis" in out.stdout
    assert "database" in out.stdout and "tray" in out.stdout and "notifications" in out.stdout


def test_doctor_without_a_desktop_says_the_tray_cannot_show(app_env: dict[str, str]) -> None:
    env = {k: v for k, v in app_env.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    out = run_cli("doctor", env=env)
    assert out.returncode == 0, out.stdout + out.stderr   # recording works; only the icon cannot show
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith(("OK   tray", "WARN tray")))
    assert line.startswith("WARN tray: no desktop session here") and "run --headless" in line, line


def test_doctor_fails_on_stopped_redis(app_env: dict[str, str], redis_server: RedisProc) -> None:
    redis_server.stop()
    out = run_cli("doctor", env=app_env)
    assert out.returncode == 1
    line = [ln for ln in out.stdout.splitlines() if "redis" in ln.split(":")[0]][0]
    assert line.startswith("FAIL redis") and "->" in line


def test_doctor_fails_on_bad_config(app_home: Path) -> None:
    env = {**os.environ, "TELEMETRY_TRAY_INGEST_BLOCK_MS": "soon"}
    out = run_cli("doctor", env=env)
    assert out.returncode == 1 and out.stdout.startswith("FAIL config")


def test_init_reports_unreachable_redis_in_one_line(app_home: Path) -> None:
    env = {**os.environ, "TELEMETRY_TRAY_REDIS_URL": "redis://:pw@127.0.0.1:1/0"}
    out = run_cli("init", env=env)
    assert out.returncode == 69
    assert len(out.stderr.strip().splitlines()) == 1
    assert "unreachable" in out.stderr and ":pw@" not in out.stderr
