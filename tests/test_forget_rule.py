"""The "forgotten" rule and the forget selector as pure units: what matches,
what the file holds (never a session id or path in clear), ranges merged,
times parsed."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from tray_app.errors import UsageError
from tray_app.events import workspace_hash
from tray_app.lifecycle import rule
from tray_app.lifecycle.forget import Selector, parse_time


def test_the_rule_matches_sessions_projects_and_times_and_keeps_nothing_in_clear(tmp_path: Path) -> None:
    rule.add(tmp_path, sessions=("secret-session-1",))
    rule.add(tmp_path, workspaces=(workspace_hash("/home/me/secret-project"),), dirs=("-home-me-secret-project",))
    rule.add(tmp_path, span=(1000.0, 2000.0))
    text = rule.path_in(tmp_path).read_text()
    assert "secret-session-1" not in text and "secret-project" not in text
    assert oct(rule.path_in(tmp_path).stat().st_mode & 0o777) == "0o600"
    r = rule.load(tmp_path)
    assert r.matches({"session_id": "secret-session-1", "timestamp": "2026-01-01T00:00:00Z"})
    assert r.matches({b"session_id": b"x", b"external_session_id": b"secret-session-1"})
    assert r.matches({"session_id": "x", "workspace_hash": workspace_hash("/home/me/secret-project")})
    assert r.matches({"session_id": "x", "timestamp": "1970-01-01T00:25:00Z"})           # 1500
    assert r.matches({"session_id": "x", "timestamp": "1970-01-01T01:25:00+01:00"})      # 1500, another zone
    assert not r.matches({"session_id": "x", "timestamp": "1970-01-01T00:33:20Z"})       # 2000: the end is open
    assert not r.matches({"session_id": "other", "workspace_hash": "0" * 16, "timestamp": "not a time"})
    assert r.transcript_dir("-home-me-secret-project") and not r.transcript_dir("-home-me-other")
    assert not rule.load(tmp_path / "none")  # no file: an empty rule


def test_ranges_are_merged_so_an_hourly_forget_stays_cheap(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    for h in range(48):  # "Forget the last hour" every hour for two days
        rule.add(tmp_path, span=(now + h * 3600 - 3600, now + h * 3600))
    assert json.loads(rule.path_in(tmp_path).read_text())["ranges"] == [[now - 3600, now + 47 * 3600]]
    rule.add(tmp_path, span=(None, now - 86400))
    assert len(rule.load(tmp_path).ranges) == 2


def test_the_cache_rereads_only_a_changed_file(tmp_path: Path) -> None:
    cache = rule.RuleCache(tmp_path)
    assert not cache.get()
    rule.add(tmp_path, sessions=("a",))
    assert cache.get().session("a")
    rule.add(tmp_path, sessions=("b",))
    assert cache.get().session("b") and cache.get().session("a")


def test_times_and_selectors() -> None:
    now = time.time()
    assert parse_time("90m", now) == now - 5400 and parse_time("2d", now) == now - 2 * 86400
    assert parse_time("2026-12-01T10:00:00Z") == datetime.fromisoformat("2026-12-01T10:00:00+00:00").timestamp()
    assert parse_time("2026-12-01") == datetime(2026, 12, 1).astimezone().timestamp()  # local midnight
    with pytest.raises(UsageError, match="not a time"):
        parse_time("soon")
    sel = Selector.build(project="~/work/../work/proj/")
    assert sel.project is not None and sel.project.endswith("/work/proj") and "~" not in sel.project
    assert sel.workspace == workspace_hash(sel.project)
    assert Selector.build(since="1h", now=now).end == now
    with pytest.raises(UsageError, match="exactly one"):
        Selector.build(session="a", everything=True)
    with pytest.raises(UsageError, match="is not after"):
        Selector.build(since="1h", until="2h")


def test_range_edges_are_exact_with_the_quick_text_check() -> None:
    """A ``...Z`` time is first compared as text against the range's whole
    seconds; the answer must be the same as parsing it."""
    r = rule.Forgotten(ranges=((1000.5, 2000.5),))
    for ts, inside in (("1970-01-01T00:16:40.2Z", False), ("1970-01-01T00:16:40.6Z", True),
                       ("1970-01-01T00:16:39Z", False), ("1970-01-01T00:25:00Z", True),
                       ("1970-01-01T00:33:20.4Z", True), ("1970-01-01T00:33:20.5Z", False),
                       ("1970-01-01T00:33:21Z", False), ("1970-01-01T01:25:00+01:00", True)):
        assert r.matches({"timestamp": ts}) is inside, ts
    everything = rule.Forgotten(ranges=((None, 2000.0),))
    assert everything.matches({"timestamp": "1960-01-01T00:00:00Z"})
    assert not everything.matches({"timestamp": "2026-01-01T00:00:00Z"})


def test_an_open_ended_range_works_with_the_quick_check() -> None:
    r = rule.Forgotten(ranges=((1000.0, float("inf")),))  # what `export --since` asks
    assert r.matches({"timestamp": "2026-01-01T00:00:00Z"}) and not r.matches({"timestamp": "1970-01-01T00:00:00Z"})


def test_forgetting_many_rows_costs_work_in_proportion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine is paused while forget deletes: twice the rows must cost about
    twice the work (SQLite's VM steps), not four times (each 1,000-row chunk
    scanning the whole list of sequences again)."""
    import sqlite3
    import uuid
    import zlib

    from tray_app.engine import schema
    from tray_app.lifecycle import db_sweep
    from tray_app.lifecycle.selector import Outcome

    def steps(n: int) -> int:
        db = tmp_path / f"t{n}.db"
        conn = schema.open_database(db)
        with schema.immediate(conn):
            conn.executemany("INSERT INTO raw_traces (event_id, session_id, event_type, platform, timestamp, "
                             "ingested_at, event_data) VALUES (?, 's', 'tool_use', 'cursor', "
                             "'2026-12-01T10:00:00.000Z', 'x', ?)",
                             ((uuid.uuid4().hex, zlib.compress(b"{}")) for _ in range(n)))
        conn.close()
        count = [0]
        real = db_sweep.connect

        def counted(path: Path) -> sqlite3.Connection:
            c = real(path)
            c.set_progress_handler(lambda: count.__setitem__(0, count[0] + 1) or 0, 1000)
            return c

        monkeypatch.setattr(db_sweep, "connect", counted)
        sel = Selector(session_id="s")
        out = Outcome(sel, False)
        db_sweep.sweep_database(db, sel, out)
        assert out.counts["raw_traces"] == n
        return count[0]

    small, big = steps(20_000), steps(60_000)
    assert big < 4 * small, (small, big)  # 3x the rows: 5.4x the steps when it was quadratic


def test_forgets_at_the_same_time_each_keep_what_the_other_added(tmp_path: Path) -> None:
    """The tray's "Forget the last hour" and a CLI forget at once: neither rewrite
    of the rule loses the other's sessions."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from tray_app.lifecycle import rule\n"
            "for i in range(40): rule.add(Path(sys.argv[1]), sessions=(f'{sys.argv[2]}-{i}',))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), name]) for name in ("tray", "cli")]
    assert [p.wait(60) for p in procs] == [0, 0]
    got = rule.load(tmp_path)
    assert all(got.session(f"{name}-{i}") for name in ("tray", "cli") for i in range(40))
    assert oct(rule.path_in(tmp_path).stat().st_mode & 0o777) == "0o600"
