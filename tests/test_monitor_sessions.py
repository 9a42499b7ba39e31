"""SessionMonitor: the sessions table from committed batches, and idle timeouts.

Rows go into a real telemetry.db through the engine's own SQLiteBatchWriter,
and the monitor is fed exactly what the consumer hands its commit listeners.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_for
from monitor_fixtures import monitor_config, stream_events
from tray_app import events
from tray_app.engine.writer import SQLiteBatchWriter
from tray_app.monitors.sessions import SessionMonitor
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.redis_conn import endpoint_from_url

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc)
TIMEOUT_S = 1800.0


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


def ev(session: str, at: datetime, event_type: str = "user_prompt", platform: str = "claude_code",
       ws: str | None = "ab12cd34ef56ab78", **payload: Any) -> dict[str, Any]:
    return {"event_id": events.new_event_id(), "platform": platform, "event_type": event_type,
            "timestamp": at.isoformat().replace("+00:00", "Z"), "session_id": session,
            "workspace_hash": ws, "payload": payload, "metadata": {"source": "claude_hook"}}


class Harness:
    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.cfg = monitor_config(tmp_path / "home", url, session_idle_timeout_s=TIMEOUT_S, poll_interval_s=0.05)
        self.writer = SQLiteBatchWriter(self.cfg.paths.database)
        self.clock = FakeClock(T0)
        self.n = 0

    def monitor(self, **kw: Any) -> SessionMonitor:
        mon = SessionMonitor(self.cfg, endpoint_from_url(self.url), clock=self.clock, monotonic=self.clock,
                             apply_interval_s=0.0, **kw)
        mon.apply_pending()  # take its position in raw_traces (catching up if there are rows)
        return mon

    def store(self, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Commit like the consumer does; returns what it hands to on_commit."""
        batch = []
        for e in evs:
            self.n += 1
            batch.append((f"1-{self.n}", e))
        stored = self.writer.write(batch)
        return [{**e, "sequence": seq} for seq, e in stored.rows]

    def rows(self) -> dict[str, dict[str, Any]]:
        conn = sqlite3.connect(self.cfg.paths.database)
        conn.row_factory = sqlite3.Row
        try:
            return {r["session_id"]: dict(r) for r in conn.execute("SELECT * FROM sessions")}
        finally:
            conn.close()


@pytest.fixture()
def h(tmp_path, redis_server) -> Harness:
    harness = Harness(tmp_path, redis_server.url)
    yield harness
    harness.writer.close()


def iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_rows_follow_committed_batches(h):
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0, "session_start"), ev("s1", T0 + timedelta(minutes=2)),
                           ev("s2", T0 + timedelta(minutes=1), platform="cursor", ws=None)]))
    mon.on_commit(h.store([ev("s1", T0 + timedelta(minutes=5), "assistant_response")]))
    assert mon.apply_pending() == 4
    rows = h.rows()
    assert rows["s1"]["platform"] == "claude_code" and rows["s2"]["platform"] == "cursor"
    assert rows["s1"]["started_at"] == iso(T0)
    assert rows["s1"]["last_activity_at"] == iso(T0 + timedelta(minutes=5))
    assert rows["s1"]["event_count"] == 3 and rows["s2"]["event_count"] == 1
    assert rows["s1"]["workspace_hash"] == "ab12cd34ef56ab78" and rows["s1"]["ended_at"] is None
    assert mon.health()["applied_sequence"] == 4


def test_idle_timeout_counts_from_the_last_activity(h, redis_server):
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0), ev("s1", T0 + timedelta(minutes=50))]))
    mon.apply_pending()
    h.clock.set(T0 + timedelta(minutes=31))  # 31 min after the start, 19 after the last activity
    assert mon.check_idle() == 0
    assert h.rows()["s1"]["ended_at"] is None
    h.clock.set(T0 + timedelta(minutes=50, seconds=1799))
    assert mon.check_idle() == 0
    h.clock.set(T0 + timedelta(minutes=80, seconds=1))
    assert mon.check_idle() == 1
    row = h.rows()["s1"]
    assert row["ended_at"] == iso(T0 + timedelta(minutes=80)) and row["end_reason"] == "timeout"
    (end,) = stream_events(redis_server.client())
    assert end["event_type"] == "session_end" and end["session_id"] == "s1"
    assert end["platform"] == "claude_code" and end["metadata"]["source"] == "session_monitor"
    assert end["payload"]["reason"] == "timeout"
    assert end["payload"]["last_activity_at"] == iso(T0 + timedelta(minutes=50))
    assert end["timestamp"] == iso(T0 + timedelta(minutes=80))
    assert mon.check_idle() == 0  # ended once
    # the session_end itself comes back through the consumer: counted, not re-ended
    mon.on_commit(h.store([end]))
    mon.apply_pending()
    row = h.rows()["s1"]
    assert row["event_count"] == 3 and row["ended_at"] == iso(T0 + timedelta(minutes=80))


def test_activity_after_a_timeout_reopens_and_times_out_again(h, redis_server):
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0)]))
    mon.apply_pending()
    h.clock.set(T0 + timedelta(hours=1))
    assert mon.check_idle() == 1
    mon.on_commit(h.store([ev("s1", T0 + timedelta(hours=2))]))
    mon.apply_pending()
    assert h.rows()["s1"]["ended_at"] is None
    h.clock.set(T0 + timedelta(hours=3))
    assert mon.check_idle() == 1
    ends = [e for e in stream_events(redis_server.client()) if e["event_type"] == "session_end"]
    assert len({e["event_id"] for e in ends}) == 2


def test_redeliveries_are_not_counted_twice(h):
    mon = h.monitor()
    batch = h.store([ev("s1", T0), ev("s1", T0 + timedelta(seconds=5))])
    mon.on_commit(batch)
    mon.on_commit(batch)  # the same committed batch handed over again
    redelivered = h.store([{k: v for k, v in e.items() if k != "sequence"} for e in batch])
    assert [e["sequence"] for e in redelivered] == [e["sequence"] for e in batch]  # duplicates keep their row
    mon.on_commit(redelivered + h.store([ev("s1", T0 + timedelta(seconds=9))]))
    mon.apply_pending()
    assert h.rows()["s1"]["event_count"] == 3


def _forget_position(h: Harness, legacy: int) -> None:
    """Make telemetry.db look as it did before positions were kept in it: the
    position only in the state file, saved after the sessions commit."""
    with closing(sqlite3.connect(h.cfg.paths.database)) as conn, conn:
        conn.execute("DELETE FROM reader_positions")
    store = StateStore(state_file(h.cfg.paths.state_dir, "sessions"))
    store.put("sessions", "applied_sequence", legacy)
    store.close()


def _applied_then_stopped(h: Harness, evs: list[dict[str, Any]]) -> None:
    mon = h.monitor()
    mon.on_commit(h.store(evs))
    mon.apply_pending()
    mon.close()


def test_a_restart_adds_what_was_stored_meanwhile(h):
    _applied_then_stopped(h, [ev("s1", T0), ev("s1", T0 + timedelta(minutes=1))])
    # events stored while the monitor was not running (no on_commit)
    h.store([ev("s1", T0 + timedelta(minutes=2)), ev("s3", T0 + timedelta(minutes=3))])
    again = h.monitor()
    again.run_once()
    rows = h.rows()
    assert rows["s1"]["event_count"] == 3 and rows["s1"]["started_at"] == iso(T0)
    assert rows["s1"]["last_activity_at"] == iso(T0 + timedelta(minutes=2))
    assert rows["s3"]["event_count"] == 1 and rows["s3"]["started_at"] == iso(T0 + timedelta(minutes=3))
    assert again.health()["applied_sequence"] == 4
    assert again.health()["recounts"] == 0 and again.health()["catch_ups"] == 1
    again.close()
    third = h.monitor()  # nothing new: nothing changes
    third.run_once()
    assert h.rows() == rows and third.health()["catch_ups"] == 0


def test_a_restart_after_retention_keeps_a_long_sessions_count_and_start(h):
    """Retention deletes a long session's oldest raw rows; the session row keeps
    what it counted, and a restart adds the new rows to it (a recount from what
    is left would shrink it)."""
    _applied_then_stopped(h, [ev("long", T0 - timedelta(days=100)), ev("long", T0 - timedelta(days=99)),
                              ev("long", T0)])
    with closing(sqlite3.connect(h.cfg.paths.database)) as conn, conn:  # what retention does
        assert conn.execute("DELETE FROM raw_traces WHERE julianday(timestamp) < julianday(?)",
                            (iso(T0 - timedelta(days=90)),)).rowcount == 2
    h.store([ev("long", T0 + timedelta(minutes=5))])   # stored while the monitor was not running
    again = h.monitor()
    again.run_once()
    row = h.rows()["long"]
    assert row["event_count"] == 4 and row["started_at"] == iso(T0 - timedelta(days=100))
    assert row["last_activity_at"] == iso(T0 + timedelta(minutes=5))


def test_a_database_from_before_positions_is_recounted_once_exactly(h):
    _applied_then_stopped(h, [ev("s1", T0), ev("s1", T0 + timedelta(minutes=1))])
    h.store([ev("s1", T0 + timedelta(minutes=2)), ev("s3", T0 + timedelta(minutes=3))])
    # the old way could crash after the sessions commit, before the position was saved
    _forget_position(h, 1)
    again = h.monitor()
    again.run_once()
    rows = h.rows()
    assert rows["s1"]["event_count"] == 3  # recounted, not incremented
    assert rows["s1"]["last_activity_at"] == iso(T0 + timedelta(minutes=2))
    assert rows["s3"]["event_count"] == 1 and rows["s3"]["started_at"] == iso(T0 + timedelta(minutes=3))
    assert again.health()["applied_sequence"] == 4 and again.health()["recounts"] == 1
    again.close()
    third = h.monitor()  # from then on the position is in telemetry.db
    third.run_once()
    assert h.rows() == rows and third.health()["recounts"] == 0


def test_hook_session_end_records_its_reason_and_late_events_do_not_undo_it(h):
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0), ev("s1", T0 + timedelta(minutes=3), "session_end",
                                              reason="prompt_input_exit")]))
    mon.apply_pending()
    row = h.rows()["s1"]
    assert row["ended_at"] == iso(T0 + timedelta(minutes=3)) and row["end_reason"] == "prompt_input_exit"
    mon.on_commit(h.store([ev("s1", T0 + timedelta(minutes=1))]))  # older event, delivered late
    mon.apply_pending()
    assert h.rows()["s1"]["ended_at"] == iso(T0 + timedelta(minutes=3))
    mon.on_commit(h.store([ev("s1", T0 + timedelta(minutes=9), "session_start")]))  # resumed
    mon.apply_pending()
    row = h.rows()["s1"]
    assert row["ended_at"] is None and row["event_count"] == 4
    h.clock.set(T0 + timedelta(hours=2))
    assert mon.check_idle() == 1


def test_errors_and_cursor_state_items_are_not_activity(h):
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0), ev("s1", T0 + timedelta(hours=5), "error"),
                           ev("cursor-state:workspace:abc", T0, "database_trace", platform="cursor")]))
    mon.apply_pending()
    rows = h.rows()
    assert set(rows) == {"s1"}
    assert rows["s1"]["last_activity_at"] == iso(T0) and rows["s1"]["event_count"] == 2


def test_claude_metric_points_after_the_end_do_not_reopen_the_session(h, tmp_path):
    """Claude Code's last metric export comes up to a minute after SessionEnd."""
    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0), ev("s1", T0 + timedelta(minutes=3), "session_end", reason="logout"),
                           ev("s1", T0 + timedelta(minutes=4), "otel_metric", metric="claude_code.cost.usage")]))
    mon.apply_pending()
    row = h.rows()["s1"]
    assert row["ended_at"] == iso(T0 + timedelta(minutes=3)) and row["end_reason"] == "logout"
    assert row["last_activity_at"] == iso(T0) and row["event_count"] == 3
    mon.close()
    _forget_position(h, 0)  # the recount agrees
    again = h.monitor()
    again.run_once()
    assert h.rows()["s1"] == row and again.health()["recounts"] == 1


def test_queue_overflow_falls_back_to_an_exact_recount(h):
    mon = h.monitor(max_queue_events=3)
    mon.on_commit(h.store([ev("s1", T0), ev("s1", T0 + timedelta(seconds=1))]))
    mon.on_commit(h.store([ev("s1", T0 + timedelta(seconds=2)), ev("s2", T0)]))  # overflow
    mon.on_commit(h.store([ev("s2", T0 + timedelta(seconds=3))]))
    mon.run_once()
    rows = h.rows()
    assert rows["s1"]["event_count"] == 3 and rows["s2"]["event_count"] == 2
    assert rows["s2"]["last_activity_at"] == iso(T0 + timedelta(seconds=3))


def test_the_thread_applies_commits_and_times_sessions_out(h, redis_server):
    clock = FakeClock(datetime.now(timezone.utc))
    mon = SessionMonitor(h.cfg, endpoint_from_url(h.url), clock=clock, apply_interval_s=0.01)
    mon.start()
    try:
        mon.on_commit(h.store([ev("live", datetime.now(timezone.utc))]))
        wait_for(lambda: h.rows().get("live"), what="sessions row")
        clock.now += TIMEOUT_S + 60
        mon.wake()
        wait_for(lambda: h.rows()["live"]["end_reason"] == "timeout", what="idle end")
        assert [e["event_type"] for e in stream_events(redis_server.client())] == ["session_end"]
    finally:
        mon.stop()
        mon.join(5)
    assert not mon.is_alive() and mon.health()["state"] == "stopped"


def test_a_recount_reads_one_sessions_rows_through_the_session_index(tmp_path: Path) -> None:
    """Not every row of the platform per session (minutes on a large history)."""
    from tray_app.engine import schema
    from tray_app.monitors.sessions import RECOUNT_WHERE

    conn = schema.open_database(tmp_path / "telemetry.db")
    try:
        plan = " ".join(str(r[-1]) for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT timestamp {RECOUNT_WHERE} ORDER BY julianday(timestamp) LIMIT 1",
            ("s-1", "claude_code")).fetchall())
    finally:
        conn.close()
    assert "idx_raw_traces_session_time" in plan and "platform_time" not in plan, plan


def test_forgetting_an_hour_of_a_pruned_long_session_takes_only_that_hour(h):
    """`forget --since/--until` on a session whose oldest rows retention pruned:
    the session loses the events of that hour, not the pruned ones too; its
    last activity moves back to the latest event left."""
    from tray_app.lifecycle.db_sweep import sweep_database
    from tray_app.lifecycle.selector import Outcome, Selector

    mon = h.monitor()
    mon.on_commit(h.store([ev("long", T0 - timedelta(days=100)), ev("long", T0 - timedelta(days=99)),
                           ev("long", T0 - timedelta(hours=3)), ev("long", T0 - timedelta(minutes=30)),
                           ev("long", T0 - timedelta(minutes=10), "error"), ev("other", T0 - timedelta(minutes=20))]))
    mon.apply_pending()
    with closing(sqlite3.connect(h.cfg.paths.database)) as conn, conn:  # what retention does
        conn.execute("DELETE FROM raw_traces WHERE julianday(timestamp) < julianday(?)",
                     (iso(T0 - timedelta(days=90)),))
    sel = Selector.build(since=iso(T0 - timedelta(hours=1)), until=iso(T0), now=T0.timestamp())
    dry = Outcome(sel, True)
    sweep_database(h.cfg.paths.database, sel, dry)
    assert dry.counts["raw_traces"] == 3 and dry.counts["sessions"] == 1   # "other" goes whole
    assert h.rows()["long"]["event_count"] == 5   # a dry run changes nothing
    sweep_database(h.cfg.paths.database, sel, Outcome(sel, False))
    rows = h.rows()
    assert set(rows) == {"long"}
    assert rows["long"]["event_count"] == 3 and rows["long"]["started_at"] == iso(T0 - timedelta(days=100))
    assert rows["long"]["last_activity_at"] == iso(T0 - timedelta(hours=3))
    # and what comes next is added to what is left
    mon.on_commit(h.store([ev("long", T0 + timedelta(minutes=5))]))
    mon.apply_pending()
    assert h.rows()["long"]["event_count"] == 4


def test_forget_meeting_events_in_flight_leaves_the_exact_count(h):
    """`forget` writes its rule first, then sweeps. Events of the forgotten hour
    the monitor applies in between (their rows still stored) count, and the
    sweep takes them off; those it applies after the sweep (rows gone) never
    count: either way the session ends with exactly what is left."""
    from tray_app.lifecycle.db_sweep import sweep_database
    from tray_app.lifecycle.selector import Outcome, Selector

    mon = h.monitor()
    mon.on_commit(h.store([ev("s1", T0 - timedelta(hours=3)), ev("s1", T0 - timedelta(hours=2))]))
    mon.apply_pending()
    sel = Selector.build(since=iso(T0 - timedelta(hours=1)), until=iso(T0), now=T0.timestamp())
    in_flight = h.store([ev("s1", T0 - timedelta(minutes=50)), ev("s1", T0 - timedelta(minutes=40))])
    late = h.store([ev("s1", T0 - timedelta(minutes=30))])
    sel.persist(h.cfg.paths.state_dir)           # forget: the rule first
    mon.on_commit(in_flight)                      # applied before the sweep: rows still there
    mon.apply_pending()
    assert h.rows()["s1"]["event_count"] == 4
    sweep_database(h.cfg.paths.database, sel, Outcome(sel, False))
    mon.on_commit(late)                           # applied after the sweep: its row is gone
    mon.apply_pending()
    row = h.rows()["s1"]
    assert row["event_count"] == 2 and row["last_activity_at"] == iso(T0 - timedelta(hours=2))


@pytest.mark.parametrize("how", ["project", "all", "range"])
def test_a_session_retention_pruned_whole_is_forgotten_with_its_project_or_its_time(h, how):
    """No raw row of it is left to match: the sessions row itself tells its project and span."""
    from tray_app.lifecycle.db_sweep import sweep_database
    from tray_app.lifecycle.selector import Outcome, Selector
    from tray_app.usage import schema as usage_schema

    old_ws, new_ws = "ab12cd34ef56ab78", "0000111122223333"
    mon = h.monitor()
    mon.on_commit(h.store([ev("old", T0 - timedelta(days=100), ws=old_ws), ev("old", T0 - timedelta(days=99), ws=old_ws),
                           ev("new", T0 - timedelta(hours=1), ws=new_ws)]))
    mon.apply_pending()
    with closing(sqlite3.connect(h.cfg.paths.database)) as conn, conn:  # what retention does
        conn.execute("DELETE FROM raw_traces WHERE session_id='old'")
    with closing(sqlite3.connect(h.cfg.paths.database, isolation_level=None)) as conn:
        usage_schema.ensure(conn)  # and the Cursor conversation's usage row it keeps
        conn.executemany("INSERT INTO usage_cursor_composers (session_id, model, reported_cents) VALUES (?, 'm', 3)",
                         [("old",), ("new",)])
    sel = {"project": Selector.build(project=old_ws, now=T0.timestamp()),
           "all": Selector.build(everything=True, now=T0.timestamp()),
           "range": Selector.build(since=iso(T0 - timedelta(days=101)), until=iso(T0 - timedelta(days=98)),
                                   now=T0.timestamp())}[how]
    dry = Outcome(sel, True)
    sweep_database(h.cfg.paths.database, sel, dry)
    assert dry.counts["sessions"] == dry.counts["usage_cursor_composers"] == (2 if how == "all" else 1)
    sweep_database(h.cfg.paths.database, sel, Outcome(sel, False))
    assert set(h.rows()) == (set() if how == "all" else {"new"})
    with closing(sqlite3.connect(h.cfg.paths.database)) as conn:
        left = {r[0] for r in conn.execute("SELECT session_id FROM usage_cursor_composers")}
    assert left == (set() if how == "all" else {"new"})
