"""A spool file that was sent but cannot be deleted is not sent again: the
drain retries only the delete, then reports the file once and counts it with
the bad files in health; once the directory is fixed it is deleted.

The directory is made impossible to delete from: `chattr +i` as root (mode
bits do not stop root), mode 0500 otherwise."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import RedisProc, need, wait_for
from engine_util import row_count, running_engine
from test_spool import spool_event
from tray_app.engine import spool_drain as spool
from tray_app.redis_conn import EVENTS_STREAM


@contextmanager
def undeletable(directory: Path) -> Iterator[None]:
    """Nothing in ``directory`` can be deleted, renamed or created while inside."""
    if os.geteuid() == 0:
        need(shutil.which("chattr") is not None, "chattr (e2fsprogs) to make a directory immutable as root")
        r = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True, timeout=10)
        need(r.returncode == 0, f"chattr +i not supported here: {r.stderr.strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True, timeout=10)
    else:
        os.chmod(directory, 0o500)
        try:
            yield
        finally:
            os.chmod(directory, 0o700)


def added(client) -> int:
    """XADDs the stream has ever taken (trimming does not lower it)."""
    return int(client.xinfo_stream(EVENTS_STREAM)["entries-added"])


def test_sent_but_undeletable_files_are_not_sent_again(tmp_path: Path, redis_server: RedisProc,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "spool"
    for i in range(3):
        spool_event(d, i)
    client = redis_server.client()
    state = spool.DrainState()
    caplog.set_level(logging.WARNING, logger="tray_app.engine.spool_drain")
    with undeletable(d):
        first = spool.drain(d, client, state=state)
        assert (first.sent, first.remaining, first.error) == (3, 0, None)
        results = [spool.drain(d, client, state=state) for _ in range(10)]
        assert added(client) == 3, "each event sent once, not once per pass"
        assert all(r.sent == 0 for r in results)
        assert results[-1].stuck == 3 and results[-1].remaining == 0
        assert len(list(d.glob("*.json"))) == 3
        told = [r for r in caplog.records if "cannot be deleted or moved aside" in r.getMessage()]
        assert len(told) == 3, "reported once per file"
    after = spool.drain(d, client, state=state)
    assert (after.sent, after.stuck, after.remaining) == (0, 0, 0)
    assert list(d.glob("*.json")) == [] and added(client) == 3


def test_a_new_file_under_a_stuck_name_is_sent(tmp_path: Path, redis_server: RedisProc) -> None:
    """Identity is name + inode + size: a different file is a different event."""
    d = tmp_path / "spool"
    spool_event(d, 1)
    client = redis_server.client()
    state = spool.DrainState()
    with undeletable(d):
        assert spool.drain(d, client, state=state).sent == 1
    [path] = list(d.glob("*.json"))
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data + b" ")  # another inode and size under the same name
    with undeletable(d):
        assert spool.drain(d, client, state=state).sent == 1
    assert added(client) == 2


def test_engine_sends_an_undeletable_spool_file_once_and_reports_it(app_env, redis_server: RedisProc,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_SPOOL_DRAIN_INTERVAL_S", "0.1")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S", "0.1")
    from tray_app.config import load_config

    paths = load_config().paths
    paths.ensure()  # the app's own directories, 0700
    spool_dir = paths.spool_dir
    spool_dir.mkdir(mode=0o700, exist_ok=True)
    spool_event(spool_dir, 7)
    c = redis_server.client()
    with undeletable(spool_dir):
        with running_engine(redis_server.url) as eng:
            wait_for(lambda: row_count(eng.cfg.paths.database) == 1, timeout=20, what="the spooled event stored")
            wait_for(lambda: eng.health().spool_bad == 1 and eng.health().spool_files == 0
                     and eng.health().spool_oldest_age_s == 0.0, timeout=10,
                     what="health to count the undeletable file with the bad ones, not as waiting")
            state = eng.maintenance._spool_state
            wait_for(lambda: all(v.failures >= 10 for v in state.sent.values()) and state.sent, timeout=10,
                     what="ten more drain passes")
            assert added(c) == 1, "sent once in all those passes"
    assert len(list(spool_dir.glob("*.json"))) == 1
    c.close()
