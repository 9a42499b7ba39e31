"""The tray menu's text for every health state (pure: snapshot -> model)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tray_app.capture import norecord
from tray_app.config import TraySettings, load_config
from tray_app.engine.health import (
    DEGRADED,
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
    HealthSnapshot,
)
from tray_app.engine.runtime import EngineRuntime
from tray_app.tray.alerts import AlertPolicy
from tray_app.tray.menu import (
    A_AUTOSTART,
    A_NO_RECORD,
    A_NO_RECORD_1H,
    A_NO_RECORD_30M,
    A_NO_RECORD_TOMORROW,
    A_PAUSE,
    A_QUIT,
    A_RECORD_AGAIN,
    A_RESUME,
    A_RETRY_DLQ,
    A_STATUS,
    I_DEGRADED,
    I_ERROR,
    I_NOT_RECORDING,
    I_PAUSED,
    I_RUNNING,
    I_STARTING,
    NO_RECORD_CHOICES,
    MenuModel,
    build_menu,
    format_rate,
    icon_state,
    status_line,
)
from tray_app.tray.refresh import Refresher

TRAY = TraySettings(dlq_warn_threshold=10, spool_warn_threshold=100)


def snap(**kw: object) -> HealthSnapshot:
    base: dict[str, object] = dict(state=RUNNING, redis_ok=True, redis_status="ok", sqlite_ok=True,
                                   sqlite_status="ok", rate_1m=12.43, rate_10s=20.0,
                                   today_events=3210, today_sessions=4, backlog=7, pending=2)
    base.update(kw)
    return HealthSnapshot(**base)  # type: ignore[arg-type]


def test_running_menu_reads_as_the_issue_describes() -> None:
    model = build_menu(snap(), TRAY, autostart=False)
    assert model.text() == "\n".join([
        "Running",
        "Ingest: 12.4 events/s",
        "Today: 3,210 events, 4 sessions",
        "Usage today: 0 tokens · 0 prompts",
        "Backlog: 7, pending: 2",
        "Dead letters: 0",
        "---",
        "Pause",
        "Don't record",
        "    For 30 minutes",
        "    For 1 hour",
        "    Until tomorrow",
        "    Until I resume",
        "Forget the last hour",
        "Usage report...",
        "Export diagnostics bundle...",
        "Open data folder",
        "Open logs",
        "[ ] Start at login",
        "---",
        "Quit",
    ])
    assert model.icon_state == I_RUNNING
    assert model.tooltip == "Telemetry Tray: Running, 20.0 events/s"
    status = model.entries[0]
    assert status.action == A_STATUS and status.default and status.enabled
    # information lines are not clickable
    assert [e.enabled for e in model.entries[1:6]] == [False] * 5
    assert model.find(A_QUIT) is not None


@pytest.mark.parametrize("kw, status, icon", [
    (dict(state=STARTING, redis_ok=False, redis_status="unknown"), "Starting...", I_STARTING),
    (dict(state=STARTING, redis_ok=False, last_error="no valkey-server found"),
     "Starting: no valkey-server found", I_STARTING),
    (dict(state=PAUSED), "Paused", I_PAUSED),
    (dict(state=DEGRADED, redis_ok=False, redis_status="Connection refused", spool_files=1204),
     "Redis unreachable: 1,204 events spooled", I_DEGRADED),
    (dict(state=DEGRADED, redis_ok=False, redis_status="Connection refused"), "Redis unreachable", I_DEGRADED),
    (dict(state=DEGRADED, redis_ok=False, server_status="down: restart failed (2x); next attempt in 4 s",
          spool_files=3), "Redis restarting: 3 events spooled", I_DEGRADED),
    (dict(state=DEGRADED, redis_ok=False, server_status="ok", server_restarts=1), "Redis unreachable", I_DEGRADED),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="disk_full"), "Database: disk full", I_ERROR),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="locked"), "Database: locked by another program", I_ERROR),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="read_only"), "Database: read-only", I_ERROR),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="corrupt"), "Database: file is corrupt", I_ERROR),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="io"), "Database: I/O error", I_ERROR),
    (dict(state=DEGRADED, sqlite_ok=False, sqlite_status="something_new"), "Database: something new", I_ERROR),
    (dict(state=DEGRADED, reasons=("consumer crashed: boom",)), "consumer crashed: boom", I_DEGRADED),
    (dict(state=STOPPED), "Stopped", I_ERROR),
    (dict(state=STOPPED, last_error="fatal: x"), "Stopped: fatal: x", I_ERROR),
    (dict(dlq_length=12), "Running, 12 dead letters", I_DEGRADED),
    (dict(dlq_length=9), "Running", I_RUNNING),
    (dict(spool_files=150), "Running, 150 events spooled", I_DEGRADED),
])
def test_status_line_and_icon_for_every_state(kw: dict, status: str, icon: str) -> None:
    s = snap(**kw)
    model = build_menu(s, TRAY)
    assert model.entries[0].text == status == model.status == status_line(s, TRAY)
    assert model.icon_state == icon == icon_state(s, TRAY)


def test_database_failure_outranks_redis_failure() -> None:
    s = snap(state=DEGRADED, redis_ok=False, sqlite_ok=False, sqlite_status="disk_full", spool_files=3)
    assert status_line(s, TRAY) == "Database: disk full"
    assert icon_state(s, TRAY) == I_ERROR


def test_paused_engine_with_redis_down_still_offers_resume() -> None:
    # the engine reports "degraded" while paused when Redis is down; its pause flag decides the item
    s = snap(state=DEGRADED, redis_ok=False, spool_files=5)
    model = build_menu(s, TRAY, paused=True)
    assert model.status == "Paused; Redis unreachable: 5 events spooled"
    assert model.find(A_RESUME) is not None and model.find(A_PAUSE) is None
    assert model.icon_state == I_DEGRADED  # the problem outranks "paused"


def test_pause_resume_item_follows_state() -> None:
    assert build_menu(snap(), TRAY).find(A_PAUSE).enabled  # type: ignore[union-attr]
    paused = build_menu(snap(state=PAUSED), TRAY)
    assert paused.find(A_RESUME) is not None and paused.find(A_PAUSE) is None
    assert paused.tooltip == "Telemetry Tray: Paused"
    for state in (STARTING, STOPPED):
        assert not build_menu(snap(state=state), TRAY).find(A_PAUSE).enabled  # type: ignore[union-attr]
    busy = build_menu(snap(), TRAY, busy="Pausing...")
    assert "Pausing..." in busy.text() and busy.find(A_PAUSE) is None


def test_dead_letters_offer_a_retry_submenu() -> None:
    model = build_menu(snap(dlq_length=3), TRAY)
    dead = next(e for e in model.entries if e.text.startswith("Dead letters"))
    assert dead.text == "Dead letters: 3" and dead.enabled
    assert [s.text for s in dead.submenu] == ["Retry 3 dead letters"]
    assert model.find(A_RETRY_DLQ).enabled  # type: ignore[union-attr]
    assert "    Retry 3 dead letters" in model.text()
    # retrying needs Redis
    down = build_menu(snap(dlq_length=1, redis_ok=False, state=DEGRADED), TRAY)
    assert down.find(A_RETRY_DLQ).text == "Retry 1 dead letter"  # type: ignore[union-attr]
    assert not down.find(A_RETRY_DLQ).enabled  # type: ignore[union-attr]


def test_start_at_login_item() -> None:
    assert build_menu(snap(), TRAY, autostart=None).find(A_AUTOSTART) is None
    on = build_menu(snap(), TRAY, autostart=True)
    assert on.find(A_AUTOSTART).checked is True  # type: ignore[union-attr]
    assert "[x] Start at login" in on.text()


def test_counts_are_grouped_and_pluralised() -> None:
    model = build_menu(snap(today_events=1, today_sessions=1, backlog=12345, pending=1000,
                            dlq_length=0, rate_1m=1234.5), TRAY)
    assert model.details == ("Ingest: 1,234 events/s", "Today: 1 event, 1 session",
                             "Backlog: 12,345, pending: 1,000", "Dead letters: 0")
    assert format_rate(0) == "0.0" and format_rate(99.94) == "99.9" and format_rate(100) == "100"


def test_models_compare_by_what_is_shown() -> None:
    a = build_menu(snap(), TRAY)
    assert a == build_menu(snap(), TRAY)
    # invisible fields (totals, latency) do not make a new menu
    assert a == build_menu(snap(total_acked=99, commit_p95_ms=3.0, updated_at=5.0), TRAY)
    assert a != build_menu(snap(rate_1m=12.5), TRAY)
    d = a.to_dict()
    assert d["status"] == "Running" and d["items"][0] == {"text": "Running", "action": "status",
                                                          "enabled": True, "default": True}


# ----------------------------------------------------------------------------- "don't record"

T0 = 1_800_000_000.0


def test_dont_record_offers_the_four_durations() -> None:
    model = build_menu(snap(), TRAY)
    parent = next(e for e in model.entries if e.text == "Don't record")
    assert [(e.text, e.action) for e in parent.submenu] == [
        ("For 30 minutes", A_NO_RECORD_30M), ("For 1 hour", A_NO_RECORD_1H),
        ("Until tomorrow", A_NO_RECORD_TOMORROW), ("Until I resume", A_NO_RECORD)]
    assert [spec for _, _, spec in NO_RECORD_CHOICES] == ["30m", "1h", "tomorrow", ""]
    assert model.find(A_RECORD_AGAIN) is None


@pytest.mark.parametrize("window, now, status", [
    ((T0, T0 + 1800), T0 + 300, "Not recording: 25 min left"),
    ((T0, T0 + 1800), T0 + 310, "Not recording: 25 min left"),   # 24 min 50 s: rounded up
    ((T0, T0 + 1800), T0 + 1799, "Not recording: 1 min left"),
    ((T0, T0 + 7200), T0 + 1200, "Not recording: 1 h 40 min left"),
    ((T0, T0 + 7200), T0, "Not recording: 2 h left"),
    ((T0, None), T0 + 10 ** 6, "Not recording until you resume"),
])
def test_the_menu_shows_the_time_left(window: tuple[float, float | None], now: float, status: str) -> None:
    model = build_menu(snap(), TRAY, not_recording=window, now=now)
    assert model.status == status == model.entries[0].text
    assert model.icon_state == I_NOT_RECORDING
    assert model.tooltip == f"Telemetry Tray: {status}"
    assert model.find(A_RECORD_AGAIN) is not None and "Don't record" not in model.text()
    assert model.find(A_PAUSE) is not None  # ingest can still be paused


def test_not_recording_with_a_pause_or_a_problem_says_both() -> None:
    window = (T0, T0 + 3600)
    paused = build_menu(snap(state=PAUSED), TRAY, not_recording=window, now=T0 + 60)
    assert paused.status == "Not recording: 59 min left; Paused"
    assert paused.find(A_RESUME) is not None and paused.icon_state == I_NOT_RECORDING
    down = build_menu(snap(state=DEGRADED, redis_ok=False), TRAY, not_recording=window, now=T0 + 60)
    assert down.status == "Not recording: 59 min left; Redis unreachable"
    assert down.icon_state == I_NOT_RECORDING       # nothing is captured: that is what to show
    broken = build_menu(snap(sqlite_ok=False, sqlite_status="disk_full"), TRAY, not_recording=window,
                        now=T0 + 60)
    assert broken.status == "Not recording: 59 min left; Database: disk full"
    assert broken.icon_state == I_ERROR             # an error still outranks it


def test_the_window_ends_by_itself_in_the_menu(app_home: Path) -> None:
    """The refresher with an injected clock, the runtime reading the real state file."""
    cfg = load_config()
    runtime = EngineRuntime(cfg)  # not started: "don't record" is a file
    norecord.start(cfg.paths.state_dir, 1800, now=T0)
    clock = [T0 + 60.0]
    shown: list[MenuModel] = []
    told: list[str] = []
    r = Refresher(health=lambda: snap(), paused=lambda: False, tray=TRAY, show=shown.append,
                  alert=lambda n: told.append(n.title), policy=AlertPolicy(300, 10, 100), interval_s=0.0,
                  not_recording=runtime.not_recording, clock=lambda: clock[0])
    r.tick()
    assert shown[-1].status == "Not recording: 29 min left" and shown[-1].icon_state == I_NOT_RECORDING
    clock[0] = T0 + 1799.5
    r.tick()
    assert shown[-1].status == "Not recording: 1 min left"
    clock[0] = T0 + 1800.0
    r.tick()
    assert shown[-1].status == "Running" and shown[-1].icon_state == I_RUNNING
    assert "Don't record" in shown[-1].text() and shown[-1].find(A_RECORD_AGAIN) is None
    assert told == ["Recording again"]
    # "Record again" ends it at once, whatever was left
    norecord.start(cfg.paths.state_dir, None, now=clock[0])
    r.tick()
    assert shown[-1].status == "Not recording until you resume"
    norecord.stop(cfg.paths.state_dir, now=clock[0] + 5)
    clock[0] += 6
    r.tick()
    assert shown[-1].status == "Running"
    assert told == ["Recording again"]  # ended by the user: no notice


def test_forget_the_last_hour_is_offered_recording_or_not() -> None:
    from tray_app.tray.menu import A_FORGET_HOUR

    for model in (build_menu(snap(), TRAY), build_menu(snap(state=PAUSED), TRAY),
                  build_menu(snap(), TRAY, not_recording=(0.0, None), now=10.0)):
        item = model.find(A_FORGET_HOUR)
        assert item is not None and item.text == "Forget the last hour" and item.enabled


def test_database_size_line_and_storage_warning() -> None:
    # no cap: no line, nothing to warn about
    assert "Database:" not in build_menu(snap(db_used_bytes=5_000_000_000), TRAY).text()
    capped = snap(db_used_bytes=1_800_000_000, db_cap_bytes=2_000_000_000)
    model = build_menu(capped, TRAY)
    assert model.text().splitlines()[4] == "Database: 1.8 GB of 2.0 GB"
    assert model.entries[4].enabled is False and model.icon_state == I_RUNNING and model.status == "Running"
    warn = "Database at 95% of its 2.0 GB cap: the oldest raw events are being removed"
    near = build_menu(snap(db_used_bytes=1_900_000_000, db_cap_bytes=2_000_000_000, storage_state="near_cap",
                           storage_warning=warn), TRAY)
    assert near.icon_state == I_DEGRADED and near.status == warn
    disk = snap(storage_state="disk_low", storage_warning="Disk nearly full: 812.0 MB free (3%) where the database is")
    assert icon_state(disk, TRAY) == I_DEGRADED and status_line(disk, TRAY).startswith("Disk nearly full")
    # a failing database outranks it
    assert icon_state(replace(disk, sqlite_ok=False, sqlite_status="disk_full"), TRAY) == I_ERROR
