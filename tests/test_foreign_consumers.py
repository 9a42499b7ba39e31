"""Two engines with different homes on one Redis split the events between two
databases: each one's health, and `doctor`, name the other one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import RedisProc, run_cli, wait_for
from engine_util import running_engine
from tray_app.engine import maintenance
from tray_app.redis_conn import EVENTS_STREAM, GROUP, ensure_streams


def names(foreign: tuple[str, ...]) -> set[str]:
    return {line.split(":", 1)[0] for line in foreign}


def test_two_homes_on_one_redis_see_each_other(app_env, app_home: Path, redis_server: RedisProc,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S", "0.1")
    monkeypatch.setattr(maintenance, "FOREIGN_CHECK_INTERVAL_S", 0.1)
    c = redis_server.client()
    with running_engine(redis_server.url) as a:
        wait_for(lambda: c.hexists(maintenance.INSTALLATIONS_KEY, a.name), what="engine A registered")
        wait_for(lambda: a.maintenance._next["foreign"] > 0, what="a foreign-consumer check ran")
        assert a.health().foreign_consumers == (), "alone on its Redis: nothing to warn about"
        r = run_cli("doctor", env=app_env)
        assert "OK   consumers: no other installation" in r.stdout, r.stdout

        other = tmp_path / "other-home"
        other.mkdir(mode=0o700)
        monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(other))
        with running_engine(redis_server.url) as b:
            assert b.name != a.name
            wait_for(lambda: names(a.health().foreign_consumers) == {b.name}, timeout=15,
                     what="engine A to name engine B")
            wait_for(lambda: names(b.health().foreign_consumers) == {a.name}, timeout=15,
                     what="engine B to name engine A")
            [line] = a.health().foreign_consumers
            assert "another installation" in line
            home_b = maintenance.installation_id(b.cfg.paths.database)
            assert home_b in line and home_b != maintenance.installation_id(a.cfg.paths.database)

            r = run_cli("doctor", env=app_env)  # from A's home
            [warn] = [ln for ln in r.stdout.splitlines() if ln.startswith("WARN consumers")]
            assert b.name in warn and a.name not in warn and "split" in warn
            assert r.returncode == 0, "a warning, not a failure"
    c.close()


def test_idle_and_own_consumers_are_not_foreign(redis_server: RedisProc) -> None:
    """Pure-ish policy against a real group: only recently active consumers
    other than our own count; unregistered ones are named as such; registry
    entries past their TTL are removed."""
    c = redis_server.client()
    ensure_streams(c)
    for name in ("me-1", "other-2"):
        c.xreadgroup(GROUP, name, {EVENTS_STREAM: ">"}, count=1)
    maintenance.register_installation(c, "me-1", "h-me")
    maintenance.register_installation(c, "gone-3", "h-gone", now=0.0)
    found = maintenance.foreign_consumers(c, "me-1", "h-me")
    assert len(found) == 1 and found[0].startswith("other-2: an installation that did not register")
    assert not c.hexists(maintenance.INSTALLATIONS_KEY, "gone-3")
    maintenance.register_installation(c, "other-2", "h-me")
    assert "the same data directory" in maintenance.foreign_consumers(c, "me-1", "h-me")[0]
    assert maintenance.foreign_consumers(c, "me-1", "h-me", active_ms=-1) == ()
    json.loads(c.hget(maintenance.INSTALLATIONS_KEY, "me-1"))  # a JSON value, no path in it
    assert os.sep not in c.hget(maintenance.INSTALLATIONS_KEY, "me-1").decode()
    c.close()
