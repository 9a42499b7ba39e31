"""`telemetry-tray db backup` while a real engine ingests: the copy opens,
passes integrity_check, is 0600 and holds at least every row committed before
it started; an existing file is refused without --force; bad targets are one line."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import RedisProc, run_cli, wait_for
from engine_util import make_event, push, row_count, running_engine

from tray_app.config import load_config
from tray_app.lifecycle.backup import backup


def _check_copy(path: Path, at_least: int) -> int:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not Path(f"{path}-wal").exists() and not Path(f"{path}-journal").exists()
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as c:
        assert c.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        n = int(c.execute("SELECT COUNT(*) FROM raw_traces").fetchone()[0])
    assert n >= at_least
    return n


def test_backup_while_the_engine_ingests(app_env: dict[str, str], redis_server: RedisProc, tmp_path: Path) -> None:
    cfg = load_config()
    client = redis_server.client()
    stop = threading.Event()
    pushed = [0]

    def keep_pushing() -> None:
        c = redis_server.client()
        while not stop.is_set():
            push(c, [make_event(i, size=800) for i in range(50)])
            pushed[0] += 50
            stop.wait(0.01)

    with running_engine(redis_server.url):
        push(client, [make_event(i, size=2000) for i in range(3000)])
        wait_for(lambda: row_count(cfg.paths.database) == 3000, timeout=60, what="the first rows")
        pusher = threading.Thread(target=keep_pushing, daemon=True)
        pusher.start()
        try:
            wait_for(lambda: row_count(cfg.paths.database) > 3200, timeout=30, what="ingest under way")
            before = row_count(cfg.paths.database)
            old = os.umask(0)  # a careless umask must not make the copy readable by others
            try:
                # tiny steps: many round trips while the engine commits, yet one snapshot
                res = backup(cfg.paths.database, tmp_path / "steps.db", step_pages=4)
            finally:
                os.umask(old)
            assert res.pages > 100
            _check_copy(tmp_path / "steps.db", before)

            before = row_count(cfg.paths.database)
            r = run_cli("db", "backup", str(tmp_path / "cli.db"), env=app_env, timeout=120)
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("Backed up telemetry.db to ")
            _check_copy(tmp_path / "cli.db", before)
        finally:
            stop.set()
            pusher.join(10)
        # the engine was never held up: everything sent meanwhile is stored
        wait_for(lambda: row_count(cfg.paths.database) == 3000 + pushed[0], timeout=60, what="every row")

    # an existing file: refused (unchanged) unless --force
    target = tmp_path / "cli.db"
    digest = target.read_bytes()
    r = run_cli("db", "backup", str(target), env=app_env, timeout=60)
    assert r.returncode == 64 and "already exists; add --force" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and target.read_bytes() == digest
    r = run_cli("db", "backup", str(target), "--force", env=app_env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _check_copy(target, row_count(cfg.paths.database)) == row_count(cfg.paths.database)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_backup_bad_targets_are_one_line(app_env: dict[str, str], redis_server: RedisProc, tmp_path: Path) -> None:
    cfg = load_config()
    with running_engine(redis_server.url):
        push(redis_server.client(), [make_event(1)])
        wait_for(lambda: row_count(cfg.paths.database) == 1, timeout=20, what="a row")
    for args, why in (([str(tmp_path / "no" / "such" / "dir" / "b.db")], "does not exist (create it first)"),
                      ([str(tmp_path)], "is a folder")):
        r = run_cli("db", "backup", *args, env=app_env, timeout=60)
        assert r.returncode == 64, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and why in r.stderr, r.stderr


@pytest.fixture()
def tiny_volume(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (root only: elsewhere the test is skipped)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_backup_to_a_full_volume_is_one_line_and_leaves_nothing(app_env: dict[str, str], redis_server: RedisProc,
                                                                tiny_volume: Path) -> None:
    cfg = load_config()
    with running_engine(redis_server.url):
        push(redis_server.client(), [make_event(i, size=3000) for i in range(1500)])
        wait_for(lambda: row_count(cfg.paths.database) == 1500, timeout=60, what="rows")
    r = run_cli("db", "backup", str(tiny_volume / "b.db"), env=app_env, timeout=60)
    assert r.returncode == 74, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0], r.stderr
    assert list(tiny_volume.iterdir()) == []  # no half-written file, no temp file
