"""Retention and the size cap on real telemetry.db files: old raw rows go, new
ones stay, the file shrinks on disk, the usage report does not change (also
after `usage rebuild`), the counts reach health and `db stats`, and ingest
goes on while retention deletes."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
import zipfile
import zlib
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path


from conftest import run_cli, wait_for
from engine_util import make_event, push, row_count, running_engine
from tray_app.config import RetentionSettings, load_config
from tray_app.engine import retention, schema, storage
from tray_app.redis_conn import EVENTS_STREAM, endpoint_from_url
from tray_app.usage import schema as usage_schema

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
INSERT = ("INSERT INTO raw_traces (event_id, session_id, event_type, platform, hook_type, timestamp, "
          "workspace_hash, source, ingested_at, event_data) VALUES (?,?,?,?,?,?,?,?,?,?)")


def ts(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill(conn: sqlite3.Connection, times: list[datetime], size: int = 1000) -> None:
    """Synthetic compressed rows, one per time, in the order given."""
    # an event the usage worker can read, its text incompressible: real bytes on disk
    blob = zlib.compress(json.dumps({"payload": {"text": os.urandom(size // 2).hex()}}).encode())
    conn.execute("BEGIN")
    conn.executemany(INSERT, ((uuid.uuid4().hex, f"s{i % 7}", "tool_use", "cursor", "x", ts(t), "ws",
                               "cursor_hook", ts(t), blob) for i, t in enumerate(times)))
    conn.execute("COMMIT")


def derived_upto(conn: sqlite3.Connection, seq: int | None = None) -> None:
    """The usage tables exist and their worker has applied rows up to ``seq`` (default: all)."""
    usage_schema.ensure(conn)
    if seq is None:
        seq = conn.execute("SELECT MAX(sequence) FROM raw_traces").fetchone()[0]
    with schema.immediate(conn):
        usage_schema.set_position(conn, seq)


def run_all(r: retention.Retention, rounds: int = 10_000) -> dict[str, int]:
    removed: dict[str, int] = {}
    for _ in range(rounds):
        res = r.run(5.0)
        for k, v in res.removed.items():
            removed[k] = removed.get(k, 0) + v
        if not res.more:
            return removed
    raise AssertionError("retention did not finish")


def ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)


def times_of(path: Path) -> list[str]:
    with closing(ro(path)) as c:
        return [t for (t,) in c.execute("SELECT timestamp FROM raw_traces ORDER BY sequence")]


def test_new_database_is_incremental_vacuum(tmp_path: Path) -> None:
    conn = schema.open_database(tmp_path / "telemetry.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()
    # opened again, it stays so (nothing is re-set on an existing file)
    conn = schema.open_database(tmp_path / "telemetry.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    conn.close()


def test_age_rule_removes_old_rows_and_keeps_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    old = [NOW - timedelta(days=200, minutes=i) for i in range(300)]
    new = [NOW - timedelta(days=10, minutes=i) for i in range(50)]
    # a monitor importing history: old event times under new sequences, not yet derived
    late_import = [NOW - timedelta(days=150, minutes=i) for i in range(20)]
    fill(conn, old + new)
    derived_upto(conn)
    fill(conn, late_import + [NOW - timedelta(days=300)])  # the newest row is old too
    r = retention.Retention(RetentionSettings(raw_days=90), db, now=lambda: NOW)
    removed = run_all(r)
    left = times_of(db)
    assert removed == {"age": 300}
    assert sorted(left[:50]) == sorted(ts(t) for t in new)
    # not applied by the usage worker yet: kept (and the newest row always is)
    assert left[50:] == [ts(t) for t in late_import + [NOW - timedelta(days=300)]]
    # the worker moves on: they go, except the newest row (sequences count from MAX + 1)
    derived_upto(conn)
    conn.close()
    r2 = retention.Retention(RetentionSettings(raw_days=90), db, now=lambda: NOW)
    assert run_all(r2) == {"age": 20}
    assert len(times_of(db)) == 51
    with closing(ro(db)) as c:
        st = retention.status(c)
    assert st["removed"]["age"]["rows"] == 320 and st["removed"]["age"]["bytes"] > 0
    assert st["passes"] == 2 and st["last_run_at"] and st["auto_vacuum"] == "incremental"


def test_raw_rows_wait_for_the_usage_tables(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    fill(conn, [NOW - timedelta(days=200, minutes=i) for i in range(30)])
    conn.close()
    r = retention.Retention(RetentionSettings(raw_days=90), db, now=lambda: NOW)
    res = r.run(5.0)
    assert not sum(res.removed.values()) and "usage tables" in res.note
    assert len(times_of(db)) == 30


def used_and_file(db: Path) -> tuple[int, int, int]:
    with closing(ro(db)) as c:
        p = storage.pages(c)
    return p.used_bytes, db.stat().st_size, p.page_count


def test_size_cap_brings_the_file_under_the_cap_and_it_shrinks_on_disk(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    times = [NOW - timedelta(days=30) + timedelta(seconds=30 * i) for i in range(12_000)]  # all within raw_days
    fill(conn, times, size=1500)
    derived_upto(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    used0, size0, pages0 = used_and_file(db)
    assert size0 > 12_000_000
    settings = RetentionSettings(raw_days=90, max_db_mb=6, cap_low_water_pct=80)
    removed = run_all(retention.Retention(settings, db, now=lambda: NOW))
    used1, size1, pages1 = used_and_file(db)
    assert used1 <= 6_000_000 * 0.8 and size1 <= 6_000_000
    assert size1 < size0 / 2 and pages1 < pages0 / 2
    left = times_of(db)
    # the oldest went first: what is left is the newest part, contiguous
    assert left == [ts(t) for t in times[-len(left):]]
    assert removed["size_cap"] == 12_000 - len(left)
    with closing(ro(db)) as c:
        st = retention.status(c)
    assert st["removed"]["size_cap"]["rows"] == removed["size_cap"]
    assert st["returned_bytes"] >= size0 - size1 - 1_000_000
    # under the cap: another pass removes nothing (hysteresis: it waits to pass the cap again)
    assert run_all(retention.Retention(settings, db, now=lambda: NOW)) == {}


def test_usage_age_removes_old_derived_rows_only_when_asked(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    derived_upto(conn, 0)
    with schema.immediate(conn):
        for i, days in enumerate((400, 300, 5)):
            conn.execute("INSERT INTO usage_activity (sequence, platform, timestamp, kind, origin) "
                         "VALUES (?, 'cursor', ?, 'prompt', 'hook')", (i + 1, ts(NOW - timedelta(days=days))))
    conn.close()
    assert run_all(retention.Retention(RetentionSettings(raw_days=90), db, now=lambda: NOW)) == {}
    s = RetentionSettings(raw_days=0, usage_days=365)
    assert run_all(retention.Retention(s, db, now=lambda: NOW)) == {"usage_age": 1}
    with closing(ro(db)) as c:
        assert c.execute("SELECT COUNT(*) FROM usage_activity").fetchone()[0] == 2


def make_old_database(path: Path) -> sqlite3.Connection:
    """A telemetry.db as the app made it before incremental vacuum (auto_vacuum off)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    schema.migrate(conn, str(path))
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    return conn


def test_old_database_reuses_freed_pages_and_is_switched_when_quiet(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    conn = make_old_database(db)
    fill(conn, [NOW - timedelta(days=200, seconds=i) for i in range(4000)], size=1500)
    derived_upto(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size0 = db.stat().st_size
    settings = RetentionSettings(raw_days=90)
    r = retention.Retention(settings, db, now=lambda: NOW)
    assert run_all(r) == {"age": 3999}
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    # the file keeps its size (no incremental vacuum; a page or two for retention_stats),
    # but new rows reuse the freed pages: the file does not grow
    size1 = db.stat().st_size
    assert size0 <= size1 <= size0 + 4 * 4096
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] * 4096 > size0 * 0.8
    fill(conn, [NOW - timedelta(minutes=i) for i in range(2000)], size=1500)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.stat().st_size == size1
    # not while ingest is busy; not when the copy would leave the disk under its reserve
    assert r.convert_old(quiet=False) == ""
    greedy = retention.Retention(replace(settings, disk_warn_free_mb=100_000_000), db, now=lambda: NOW)
    msg = greedy.convert_old(quiet=True)
    assert "auto_vacuum stays off" in msg and conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    off = retention.Retention(replace(settings, convert_old_db=False), db, now=lambda: NOW)
    assert off.convert_old(quiet=True) == ""
    # quiet, room enough: one VACUUM switches it, and the file shrinks to what is used
    msg = r.convert_old(quiet=True)
    assert "switched to incremental vacuum" in msg, msg
    conn.close()
    with closing(ro(db)) as c:
        assert c.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert db.stat().st_size < size0 * 0.7
    assert len(times_of(db)) == 2001
    # from now on retention gives pages back to the file system
    with closing(schema.open_database(db)) as c:
        derived_upto(c)
    later = retention.Retention(settings, db, now=lambda: NOW + timedelta(days=100))
    size2 = db.stat().st_size
    assert run_all(later) == {"age": 2000}
    assert db.stat().st_size < size2 / 3


def test_storage_state_thresholds() -> None:
    s = RetentionSettings(max_db_mb=2000, cap_warn_pct=90, disk_warn_free_mb=1024, disk_warn_free_pct=5)
    gib = 1024 ** 3
    assert storage.storage_state(s, 1_700_000_000, 50 * gib, 100 * gib) == (storage.OK, "")
    state, text = storage.storage_state(s, 1_850_000_000, 50 * gib, 100 * gib)
    assert state == storage.NEAR_CAP and text.startswith("Database at 92% of its 2.0 GB cap")
    state, text = storage.storage_state(s, 10, gib // 2, 100 * gib)  # under 1 GiB free
    assert state == storage.DISK_LOW and "536.9 MB free" in text
    state, _ = storage.storage_state(s, 10, 4 * gib, 100 * gib)  # 4% free
    assert state == storage.DISK_LOW
    assert storage.storage_state(replace(s, max_db_mb=0), 10**12, 50 * gib, 100 * gib)[0] == storage.OK


def test_config_rejects_out_of_range_retention(app_home: Path) -> None:
    r = run_cli("config", "show", env={**os.environ, "TELEMETRY_TRAY_RETENTION_RAW_DAYS": "-1"})
    assert r.returncode != 0 and "retention.raw_days" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("config", "show", env={**os.environ, "TELEMETRY_TRAY_RETENTION_CAP_LOW_WATER_PCT": "95"})
    assert r.returncode != 0 and "cap_low_water_pct: expected below cap_warn_pct (90), found 95" in r.stderr
    cfg = load_config(environ={**os.environ, "TELEMETRY_TRAY_RETENTION_MAX_DB_MB": "2048"})
    assert cfg.retention.max_db_mb == 2048 and cfg.retention.raw_days == 0  # tests: off (conftest)
    assert load_config(environ={}).retention.raw_days == 90  # the default


# -- the engine ----------------------------------------------------------------------------------

def test_ingest_goes_on_while_retention_deletes(app_env, monkeypatch) -> None:
    db = load_config().paths.database
    conn = schema.open_database(db)
    fill(conn, [NOW - timedelta(days=400, seconds=i) for i in range(40_000)], size=600)
    derived_upto(conn)
    conn.close()
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_RAW_DAYS", "90")  # off by default in tests (conftest)
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_BATCH_ROWS", "50")
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_CHECK_INTERVAL_S", "0.2")
    client = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"]).client()
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        wait_for(lambda: row_count(db) < 39_000, timeout=30, what="retention under way")
        evs = [make_event(i) for i in range(600)]
        for k in range(0, 600, 100):
            push(client, evs[k:k + 100])
        wait_for(lambda: _stored(db, evs), timeout=30, what="new events stored")
        still_old = row_count(db) - 600
        assert still_old > 0, "retention finished before the events came: the test proves nothing"
        # all old rows go (the newest row is a new event now)
        wait_for(lambda: row_count(db) == 600, timeout=120, what="old rows removed")
        snap = eng.health()
        assert snap.sqlite_ok and snap.total_dead_letters == 0 and snap.total_ingested == 600
        wait_for(lambda: eng.health().retention.get("removed", {}).get("age", {}).get("rows") == 40_000,
                 timeout=15, what="counts in health")
        # every transaction stayed short (the pacer keeps them near batch_ms)
        assert 0 < eng.health().retention["max_txn_ms"] < 200, eng.health().retention  # measured, and short
    client.close()


def _stored(db: Path, evs: list[dict]) -> bool:
    with closing(ro(db)) as c:
        ids = {e for (e,) in c.execute("SELECT event_id FROM raw_traces WHERE sequence > 40000")}
    return all(e["event_id"] in ids for e in evs)


# -- the usage report across retention ---------------------------------------------------------------

def report(env: dict, *args: str) -> dict:
    r = run_cli("report", *args, "--timezone", "UTC", "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _idle_ends_stored(db: Path, redis_url: str) -> bool:
    """Every old session ended by the idle check, and every end it sent stored
    (it sends the end before recording it; the stream then has nothing unread
    and nothing unacknowledged, and acknowledgement follows the commit)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        still_open = conn.execute("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL "
                                  "AND last_activity_at < '2026-11'").fetchone()[0]
    if still_open:
        return False
    client = endpoint_from_url(redis_url).client()
    try:
        return all(g["pending"] == 0 and g["lag"] == 0 for g in client.xinfo_groups(EVENTS_STREAM))
    finally:
        client.close()


def test_report_is_unchanged_by_retention_and_by_a_rebuild_after_it(tmp_path: Path, app_env, monkeypatch) -> None:
    """Real transcripts and a Cursor database (March 2026: older than raw_days) read by
    the real monitors and engine; then an engine with raw_days=90 removes their raw rows."""
    from usage_fixtures import recording_engine

    with recording_engine(tmp_path, app_env["TELEMETRY_TRAY_REDIS_URL"], monkeypatch,
                          TELEMETRY_TRAY_RETENTION_RAW_DAYS="0") as (eng, _times):
        ep = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"])
        push(ep.client(), [make_event(i) for i in range(8)])  # today's events: they stay
        wait_for(lambda: row_count(eng.cfg.paths.database) >= 8 + 22, timeout=20, what="new events")
        # March's sessions ended by the idle check, and those ends stored: else the next
        # engine would add them (as March rows, which retention then counts as removed)
        wait_for(lambda: _idle_ends_stored(eng.cfg.paths.database, app_env["TELEMETRY_TRAY_REDIS_URL"]),
                 timeout=30, what="the idle ends stored")
    env = {**app_env, "TELEMETRY_TRAY_RETENTION_RAW_DAYS": "0"}
    before = {kind: report(env, kind) for kind in ("daily", "sessions", "models")}
    assert [d["date"] for d in before["daily"]["days"]][:3] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    db = load_config().paths.database
    rows_before = row_count(db)

    # retention on: the engine removes every raw row of March (not the newest, not today's)
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_RAW_DAYS", "90")
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_CHECK_INTERVAL_S", "0.2")
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CURSOR_ENABLED", "false")
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CLAUDE_ENABLED", "false")
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng2:
        wait_for(lambda: times_of(db) and min(times_of(db)) >= "2026-09", timeout=30,
                 what="March's raw rows removed")
        removed = wait_for(lambda: eng2.health().retention.get("removed", {}).get("age", {}).get("rows"),
                           timeout=15, what="the count in health")
    assert removed == rows_before - row_count(db) > 20
    env = {**app_env, "TELEMETRY_TRAY_RETENTION_RAW_DAYS": "90"}
    assert {kind: report(env, kind) for kind in before} == before

    # `usage rebuild` rebuilds what raw_traces still holds and keeps the rest
    r = run_cli("usage", "rebuild", env=env)
    assert r.returncode == 0, r.stderr
    assert {kind: report(env, kind) for kind in before} == before

    # db stats shows what retention removed
    r = run_cli("db", "stats", "--json", env=env)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["retention"]["removed"]["age"]["rows"] == removed
    assert stats["retention"]["auto_vacuum"] == "incremental"
    text = run_cli("db", "stats", env=env).stdout
    assert f"{removed:,} rows by age" in text
    # and so does the diagnostics bundle
    r = run_cli("diagnostics", "export", "--out", str(tmp_path / "diag.zip"), env=env)
    assert r.returncode == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "diag.zip") as z:
        name = next(n for n in z.namelist() if n.endswith("database.json"))
        assert json.loads(z.read(name))["retention"]["removed"]["age"]["rows"] == removed


def test_health_carries_sizes_and_the_storage_warning(app_env, monkeypatch) -> None:
    """The engine measures; the tray only shows (its policy and menu: test_tray_*)."""
    db = load_config().paths.database
    conn = schema.open_database(db)
    fill(conn, [NOW - timedelta(minutes=i) for i in range(6000)], size=1500)  # ~7 MB, all recent
    derived_upto(conn)
    conn.close()
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_MAX_DB_MB", "10")  # under the cap: nothing removed
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_CAP_WARN_PCT", "50")
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_CAP_LOW_WATER_PCT", "40")
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        snap = wait_for(lambda: (s := eng.health()).db_file_bytes and s, timeout=15, what="sizes in health")
        assert snap.db_cap_bytes == 10_000_000 and 5_000_000 < snap.db_used_bytes <= snap.db_file_bytes
        assert snap.disk_free_bytes > 0
        assert snap.storage_state == "near_cap" and snap.storage_warning.startswith("Database at ")
        assert snap.retention["auto_vacuum"] == "incremental" and snap.retention["removed"] == {}
        # `status` prints it (from the health the engine publishes)
        wait_for(lambda: "storage:" in run_cli("status").stdout, timeout=15, what="a storage line in status")
        line = next(x for x in run_cli("status").stdout.splitlines() if x.startswith("storage:"))
        assert "of its 10.0 MB cap" in line and "retention removed 0 rows; Database at " in line, line
    # a disk with less free space than asked for: "disk_low" (it outranks the cap)
    monkeypatch.setenv("TELEMETRY_TRAY_RETENTION_DISK_WARN_FREE_MB", "100000000")
    with running_engine(app_env["TELEMETRY_TRAY_REDIS_URL"]) as eng:
        snap = wait_for(lambda: (s := eng.health()).db_file_bytes and s, timeout=15, what="sizes in health")
        assert snap.storage_state == "disk_low" and snap.storage_warning.startswith("Disk nearly full")


def test_usage_worker_catch_up_starts_at_the_lowest_row_left(app_home: Path) -> None:
    """Fresh usage tables (position 0) over a raw_traces whose lowest rows retention
    removed: the worker reads what is there, and its backlog is what is left."""
    from tray_app.usage.worker import UsageWorker

    cfg = load_config()
    conn = schema.open_database(cfg.paths.database)
    fill(conn, [NOW - timedelta(minutes=i) for i in range(1000)])
    with schema.immediate(conn):
        conn.execute("DELETE FROM raw_traces WHERE sequence <= 900")
    usage_schema.ensure(conn)
    w = UsageWorker(cfg, endpoint_from_url("redis://127.0.0.1:1/0"))
    assert w.catch_up(conn) == 100
    h = w.health()
    assert (h["position"], h["backlog"], h["rows_applied"]) == (1000, 0, 100)
    assert usage_schema.position(conn) == 1000
    assert conn.execute("SELECT COUNT(*), MIN(sequence) FROM usage_activity").fetchone() == (100, 901)
    conn.close()


def test_a_database_of_another_schema_is_never_written(tmp_path: Path) -> None:
    """Newer than this app (or not made by the engine yet): retention leaves it byte for byte."""
    db = tmp_path / "telemetry.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        conn.execute("INSERT INTO schema_version VALUES (99, 'future')")
        conn.commit()
    before = db.read_bytes()
    r = retention.Retention(RetentionSettings(raw_days=1, max_db_mb=1), db, now=lambda: NOW)
    res = r.run(1.0)
    assert "schema" in res.note and not res.more and not r.due()
    assert r.convert_old(quiet=True) == ""
    assert db.read_bytes() == before and not Path(f"{db}-wal").exists()


def test_usage_age_removes_old_reported_costs_too(tmp_path: Path) -> None:
    """usage_days bounds every derived per-request table: Claude Code's own
    reported costs (tokens, cost, session) go with our computed ones."""
    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    derived_upto(conn, 0)
    with schema.immediate(conn):
        for i, days in enumerate((400, 5)):
            conn.execute("INSERT INTO usage_reported_costs (sequence, platform, session_id, timestamp, cost_pusd) "
                         "VALUES (?, 'claude_code', 's', ?, 1000)", (i + 1, ts(NOW - timedelta(days=days))))
    conn.close()
    s = RetentionSettings(raw_days=0, usage_days=365)
    assert run_all(retention.Retention(s, db, now=lambda: NOW)) == {"usage_age": 1}
    with closing(ro(db)) as c:
        assert c.execute("SELECT COUNT(*) FROM usage_reported_costs").fetchone()[0] == 1


def test_a_usage_rebuild_between_two_batches_stops_the_removal(tmp_path: Path) -> None:
    """`usage rebuild` clears the derived rows of the raw rows still there and the
    worker's position: from then on those raw rows are the only source of their
    usage, and retention's next batch (same slice) must not remove them."""
    from tray_app.usage.worker import clear_derivable

    db = tmp_path / "telemetry.db"
    conn = schema.open_database(db)
    fill(conn, [NOW - timedelta(days=200, minutes=i) for i in range(100)], size=100)
    derived_upto(conn)
    conn.close()
    calls = []

    def rebuild_meanwhile(_s: float) -> bool:
        if not calls:
            with closing(sqlite3.connect(db, isolation_level=None)) as other, schema.immediate(other):
                clear_derivable(other)
        calls.append(1)
        return False

    s = RetentionSettings(raw_days=90, batch_rows=10)
    r = retention.Retention(s, db, wait=rebuild_meanwhile, now=lambda: NOW)
    removed = run_all(r)
    assert removed == {"age": 10}  # the batch before the rebuild, and none after it
    with closing(ro(db)) as c:
        assert c.execute("SELECT COUNT(*) FROM raw_traces").fetchone()[0] == 90
