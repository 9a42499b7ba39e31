""""Don't record" windows: the state file and the engine's own guard (events
whose time falls in a window are acknowledged and never stored)."""

from __future__ import annotations

import os
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

from conftest import RedisProc, wait_for
from engine_util import make_event, pending_count, push, row_count, running_engine, stored_events
from tray_app.capture import norecord
from tray_app.redis_conn import DLQ_STREAM, ensure_streams


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_windows_start_end_by_themselves_and_survive_a_reload(tmp_path: Path) -> None:
    state = tmp_path / "state"
    t0 = 1_000_000.0
    assert norecord.recording_now(state, t0)
    assert norecord.start(state, 1800, now=t0) == (t0, t0 + 1800)
    assert stat.S_IMODE(os.stat(norecord.path_in(state)).st_mode) == 0o600
    again = norecord.load(state)  # a new process (the hook, a restarted app) reads the same
    assert again.active(t0 + 10) == (t0, t0 + 1800) and again.left_s(t0 + 600) == 1200
    assert not norecord.recording_now(state, t0 + 1799)
    assert norecord.recording_now(state, t0 + 1800)  # ended by itself
    assert norecord.start(state, None, now=t0 + 5000) == (t0 + 5000, None)  # until resumed
    assert not norecord.recording_now(state, t0 + 10 ** 6)
    assert norecord.stop(state, now=t0 + 6000) and norecord.recording_now(state, t0 + 6001)
    assert not norecord.stop(state, now=t0 + 7000)
    windows = norecord.load(state)
    assert windows.covers(t0 + 100) and windows.covers(t0 + 5500)
    assert not windows.covers(t0 + 2000) and not windows.covers(t0 + 6000)


def test_a_new_window_replaces_the_one_in_force(tmp_path: Path) -> None:
    t0 = 2_000_000.0
    norecord.start(tmp_path, 3600, now=t0)
    norecord.start(tmp_path, 60, now=t0 + 100)
    state = norecord.load(tmp_path)
    assert state.windows == ((t0, t0 + 100), (t0 + 100, t0 + 160))
    assert state.active(t0 + 200) is None


def test_garbage_state_file_means_recording(tmp_path: Path) -> None:
    norecord.path_in(tmp_path).write_text("{not json")
    assert norecord.recording_now(tmp_path) and norecord.load(tmp_path).windows == ()


def test_the_engine_never_stores_events_timed_inside_a_window(app_env, redis_server: RedisProc) -> None:
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        now = time.time()
        norecord.start(cfg.paths.state_dir, 60, now=now - 30)  # in force since 30 s ago
        inside = [make_event(i, timestamp=iso(now - 20 + i)) for i in range(5)]
        before = [make_event(10 + i, timestamp=iso(now - 120 + i)) for i in range(3)]
        push(c, inside + before)
        wait_for(lambda: pending_count(c) == 0 and row_count(cfg.paths.database) == 3, timeout=10,
                 what="only the events from before the window stored")
        norecord.stop(cfg.paths.state_dir)
        after = [make_event(20 + i) for i in range(4)]
        push(c, after)
        wait_for(lambda: row_count(cfg.paths.database) == 7, timeout=10, what="recording again")
        wait_for(lambda: eng.health().total_not_recorded == 5, what="dropped events counted")
    stored = stored_events(cfg.paths.database)
    assert set(stored) == {e["event_id"] for e in before + after}
    assert c.xlen(DLQ_STREAM) == 0
