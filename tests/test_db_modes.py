"""The database's file modes: every file is created 0600 whatever the umask,
and a database made read-only (``chmod 0444``) and then restored recovers by
itself, although SQLite created ``-wal``/``-shm`` with the read-only mode.

The engine runs in a subprocess as a user that file modes apply to. Locally
that is you. As root (CI) mode bits do not stop writes, so the subprocess is
root without the capabilities that bypass them (``setpriv`` drops
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER from the bounding set):
for permission checks that is an ordinary user who owns the files, the case
the user hits.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import ROOT, RedisProc, need, wait_for
from engine_util import make_event, pending_count, push, row_count
from tray_app.engine import schema
from tray_app.redis_conn import EVENTS_STREAM, GROUP, HEALTH_KEY, ensure_streams

DROP_CAPS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner",
             "--inh-caps=-dac_override,-dac_read_search,-fowner"]

#: the engine alone (no monitors), with umask 0: the modes must not depend on it
RUNNER = """
import os, sys
os.umask(0)
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.redis_conn import endpoint_from_url
eng = Engine(load_config(), endpoint_from_url(os.environ["TELEMETRY_TRAY_REDIS_URL"]), with_monitors=False)
eng.start()
print("started", flush=True)
sys.stdin.read()
eng.stop(5)
"""


def unprivileged_prefix() -> list[str]:
    """The command prefix that makes file modes apply to the engine subprocess."""
    if not hasattr(os, "geteuid"):
        need(False, "POSIX file modes")
    if os.geteuid() != 0:
        return []
    need(shutil.which("setpriv") is not None, "setpriv (util-linux) to drop root's DAC capabilities")
    probe = subprocess.run([*DROP_CAPS, "true"], capture_output=True, text=True, timeout=10)
    need(probe.returncode == 0, f"setpriv cannot drop capabilities here: {probe.stderr.strip()}")
    return DROP_CAPS


@contextmanager
def engine_process(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*unprivileged_prefix(), sys.executable, "-c", RUNNER], cwd=str(ROOT), env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started", proc.stderr
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def unacknowledged(c: redis.Redis) -> int:
    """Entries of the group not yet acknowledged: pending (read, held) plus lag
    (not read yet: the engine reads nothing more while its batch cannot commit)."""
    [group] = [g for g in c.xinfo_groups(EVENTS_STREAM) if g["name"] == GROUP.encode()]
    return int(group["pending"]) + int(group["lag"] or 0)


def health(c: redis.Redis) -> dict[str, object]:
    raw = c.get(HEALTH_KEY)
    return json.loads(raw) if raw else {}


@pytest.fixture()
def engine_env(app_env: dict[str, str]) -> dict[str, str]:
    env = dict(app_env)
    env.update(TELEMETRY_TRAY_INGEST_BACKOFF_INITIAL_S="0.05", TELEMETRY_TRAY_INGEST_BACKOFF_MAX_S="0.5",
               TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S="0.2",
               TELEMETRY_TRAY_INGEST_FLUSH_INTERVAL_MS="10")
    return env


def test_read_only_database_recovers_once_the_mode_is_restored(engine_env, app_home: Path,
                                                               redis_server: RedisProc) -> None:
    c = redis_server.client()
    ensure_streams(c)
    from tray_app.config import load_config

    db = load_config().paths.database
    with engine_process(engine_env):
        push(c, [make_event(i) for i in range(5)])
        wait_for(lambda: row_count(db) == 5, timeout=20, what="the first 5 rows")
        # created by the app: user-only, even with umask 0
        assert {s: mode(f"{db}{s}") for s in ("", "-wal", "-shm")} == {"": 0o600, "-wal": 0o600, "-shm": 0o600}

    os.chmod(db, 0o444)
    with engine_process(engine_env) as proc:
        push(c, [make_event(i) for i in range(5, 10)])
        wait_for(lambda: health(c).get("sqlite_status") == "read_only", timeout=20,
                 what="health to report the read-only database")
        assert row_count(db) == 5 and unacknowledged(c) == 5, "nothing stored, nothing acknowledged"
        # the trap: SQLite made the companions with the database's mode of the moment
        assert mode(f"{db}-shm") == 0o444
        # `db stats` says what keeps the engine from writing
        stats = subprocess.run([*unprivileged_prefix(), sys.executable, "-m", "tray_app", "db", "stats", "--json",
                                "--no-check"], cwd=str(ROOT), env=engine_env, capture_output=True, text=True,
                               timeout=60)
        assert stats.returncode == 0, stats.stderr
        data = json.loads(stats.stdout)
        assert data["files"]["telemetry.db"] == {"mode": "0444", "yours": True, "writable": False}
        assert "telemetry.db is read-only (0444)" in data["write_problem"]

        os.chmod(db, 0o644)  # the user restores the mode (not the companions')
        wait_for(lambda: row_count(db) == 10, timeout=20, what="the held events stored after the restore")
        wait_for(lambda: pending_count(c) == 0 and health(c).get("sqlite_status") == "ok", timeout=10,
                 what="acknowledged and healthy again")
        assert {s: mode(f"{db}{s}") for s in ("", "-wal", "-shm")} == {"": 0o600, "-wal": 0o600, "-shm": 0o600}
        assert proc.poll() is None
    c.close()


def test_repair_modes_leaves_a_read_only_database_and_foreign_files_alone(tmp_path: Path) -> None:
    """Pure file-mode policy: nothing changes while the database is read-only on
    purpose; once writable, our companions become 0600; symlinks are not followed."""
    db = tmp_path / "telemetry.db"
    schema.open_database(db).close()
    assert mode(db) == 0o600
    for s in ("-wal", "-shm"):
        Path(f"{db}{s}").write_bytes(b"")
        os.chmod(f"{db}{s}", 0o444)
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    os.chmod(target, 0o644)
    os.symlink(target, f"{db}-journal")
    os.chmod(db, 0o444)
    if os.geteuid() != 0:  # root can write anything: "read-only" means nothing to it
        assert schema.repair_modes(db) == []
        assert mode(f"{db}-shm") == 0o444
    os.chmod(db, 0o644)
    changed = schema.repair_modes(db)
    assert sorted(changed) == ["telemetry.db-shm: 444 -> 600", "telemetry.db-wal: 444 -> 600",
                               "telemetry.db: 644 -> 600"]
    assert mode(target) == 0o644, "a symlinked companion is not followed"
    assert schema.repair_modes(db) == []


def _open_at(path: str, start: float, results: Any) -> None:
    import time as _time

    from tray_app.engine import schema

    while _time.time() < start:  # every process starts its first open at the same moment
        pass
    try:
        schema.open_database(Path(path), timeout_s=5).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_first_opens_of_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    """At a first start the engine's writer and the monitors create telemetry.db at
    the same moment; SQLite's switch to WAL does not wait on the busy handler, so
    without a retry one of them failed with "database is locked" (about one round
    in thirty of four processes)."""
    import multiprocessing
    import time as _time

    ctx = multiprocessing.get_context("fork")
    failures = []
    for i in range(30):
        path = str(tmp_path / f"r{i}" / "telemetry.db")
        results = ctx.Queue()
        start = _time.time() + 0.1
        procs = [ctx.Process(target=_open_at, args=(path, start, results)) for _ in range(4)]
        for p in procs:
            p.start()
        got = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        failures += [g for g in got if g != "ok"]
    assert failures == []
