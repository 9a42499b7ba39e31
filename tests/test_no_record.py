""""Don't record" end to end, with real parts: the hook as the assistants run
it (a subprocess through the shell), `telemetry-tray pause --no-record` /
`resume` as a user types them, a headless engine with its monitors reading
Claude Code transcripts, and the rows in telemetry.db.

What is produced inside the window never reaches raw_traces (not from the
hooks, the monitors or another producer, not even when the monitors read
every transcript again from the start); what is produced before and after it
does."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT, RedisProc, run_cli, wait_for
from engine_util import make_event, push, stored_events
from monitor_fixtures import ClaudeProjects
from test_hook_events import CLAUDE_BASE, CURSOR_BASE, assert_clean_exit, hook_env, run_hook, spool_files
from test_status_states import engine_proc, status  # noqa: F401 - engine_proc is a fixture

from tray_app.capture import norecord
from tray_app.config import load_config
from tray_app.redis_conn import EVENTS_STREAM

MARK = re.compile(r"MARK-[a-z]+-[a-z]+")


def prompts(tag: str) -> list[tuple[str, dict[str, object]]]:
    return [("cursor", {**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt", "prompt": f"MARK-{tag}-cursor"}),
            ("claude", {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": f"MARK-{tag}-claude"})]


def run_hooks(tag: str, env: dict[str, str]) -> None:
    for assistant, sample in prompts(tag):
        proc, _ = run_hook(assistant, json.dumps(sample), env)
        assert_clean_exit(assistant, proc)  # exit 0, `{}` for Cursor, nothing for Claude Code


def stored_marks(database: Path) -> set[str]:
    if not database.exists():
        return set()
    return {m for ev in stored_events(database).values() for m in MARK.findall(json.dumps(ev))}


def test_hooks_store_nothing_during_a_window(app_home: Path, redis_server: RedisProc) -> None:
    client = redis_server.client()
    env = hook_env(app_home, redis_server.url)
    r = run_cli("pause", "--no-record", "--for", "30m", env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Not recording until ") and "(30 min left)" in r.stdout
    state_file = app_home / "state" / norecord.FILE_NAME
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600

    run_hooks("during", env)
    assert client.exists(EVENTS_STREAM) == 0 and spool_files(app_home) == []
    # Redis unreachable: still nothing, not even a spool file for later
    run_hooks("during", hook_env(app_home, "redis://127.0.0.1:1"))
    assert spool_files(app_home) == []

    r = run_cli("resume", "--no-record", env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "Recording again (the don't-record window ended).", r
    run_hooks("after", env)
    entries = [fields for _, fields in client.xrange(EVENTS_STREAM)]
    assert len(entries) == 2
    assert {m for f in entries for m in MARK.findall(f[b"payload"].decode())} == {"MARK-after-cursor",
                                                                                "MARK-after-claude"}


def test_a_window_that_ended_by_itself_records_again(app_home: Path, redis_server: RedisProc) -> None:
    client = redis_server.client()
    env = hook_env(app_home, redis_server.url)
    now = datetime.now(timezone.utc).timestamp()
    norecord.start(app_home / "state", 60, now=now - 61)  # a 1-minute window, over a second ago
    run_hooks("after", env)
    assert client.xlen(EVENTS_STREAM) == 2


def test_nothing_from_the_window_reaches_raw_traces(app_env: dict[str, str], app_home: Path,
                                                    redis_server: RedisProc, tmp_path: Path,
                                                    engine_proc: list) -> None:  # noqa: F811
    cfg = load_config()
    client = redis_server.client()
    env = {**app_env, "TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S": "0.2"}
    hooks = hook_env(app_home, redis_server.url)
    projects = ClaudeProjects(Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects")
    log = tmp_path / "headless.log"

    def start_engine() -> None:
        out = open(log, "a")  # noqa: SIM115 - the child owns it
        engine_proc.append(subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless"],
                                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=out))
        wait_for(lambda: status(env)[0] == 0, timeout=30, what="the engine to run")

    def transcript(tag: str, ago: timedelta = timedelta(0)) -> None:
        """A prompt and its answer, timed as Claude Code times them: when written."""
        t = projects.session("/home/dev/shop", f"session-{tag}")
        t.t = datetime.now(timezone.utc) - ago - timedelta(seconds=3)  # each line adds 3 s
        t.user(f"MARK-{tag}-transcript")
        t.t = datetime.now(timezone.utc) - ago - timedelta(seconds=3)
        t.assistant([{"type": "text", "text": f"MARK-{tag}-answer"}])

    start_engine()
    before = {"MARK-before-cursor", "MARK-before-claude", "MARK-before-transcript", "MARK-before-answer"}
    run_hooks("before", hooks)
    transcript("before", ago=timedelta(minutes=5))
    wait_for(lambda: before <= stored_marks(cfg.paths.database), timeout=30, what="the events from before")

    r = run_cli("pause", "--no-record", "--for", "30m", env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("Not recording until "), (r.stdout, r.stderr)
    length = client.xlen(EVENTS_STREAM)
    run_hooks("during", hooks)
    assert client.xlen(EVENTS_STREAM) == length and spool_files(app_home) == []
    transcript("during")
    push(client, [make_event(1, payload={"text": "MARK-during-producer"})])  # another producer
    # the monitor read the two lines and the engine dropped them with the producer's event
    wait_for(lambda: (s := status(env)[1]) and s["total_not_recorded"] >= 3 and s["backlog"] + s["pending"] == 0,
             timeout=30, what="the events of the window dropped")
    text = run_cli("status", env=env, timeout=30).stdout
    assert "recording:    off until " in text and "(30 min left)" in text

    r = run_cli("resume", env=env, timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines()[0] == "Recording again (the don't-record window ended)."
    assert status(env)[1]["not_recording"] is None
    after = {"MARK-after-cursor", "MARK-after-claude", "MARK-after-transcript", "MARK-after-answer"}
    run_hooks("after", hooks)
    transcript("after")
    wait_for(lambda: after <= stored_marks(cfg.paths.database), timeout=30, what="the events from after")
    assert stored_marks(cfg.paths.database) == before | after

    # Later: a restart whose monitors read every transcript again from the start
    # (their state gone) imports nothing of the window either.
    engine_proc[-1].send_signal(signal.SIGTERM)
    assert engine_proc[-1].wait(30) == 0
    shutil.rmtree(cfg.paths.state_dir / "monitors")
    start_engine()
    wait_for(lambda: (s := status(env)[1]) and s["total_not_recorded"] >= 2 and s["backlog"] + s["pending"] == 0,
             timeout=30, what="the window's transcript lines read again and dropped" + str(status(env)) + log.read_text()[-3000:])
    assert stored_marks(cfg.paths.database) == before | after


@pytest.mark.parametrize("text, seconds", [
    ("30m", 1800), ("1h", 3600), ("90m", 5400), ("2h", 7200), ("1h30m", 5400), ("45min", 2700),
    (" 2 hours ", 7200), ("1H", 3600),
])
def test_durations(text: str, seconds: float) -> None:
    assert norecord.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "5x", "0m", "-1h", "1d", "200h", "m", "tomorrow please"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError) as err:
        norecord.parse_duration(text)
    assert "\n" not in str(err.value)


def test_tomorrow_is_the_next_local_midnight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        # 2026-03-07 22:30 local (EST), the night before the clocks go forward
        now = datetime(2026, 3, 8, 3, 30, tzinfo=timezone.utc).timestamp()
        assert norecord.parse_duration("tomorrow", now=now) == 90 * 60
        # 2026-03-08 12:00 local (EDT): the next midnight is 12 h away, not 13
        noon = datetime(2026, 3, 8, 16, 0, tzinfo=timezone.utc).timestamp()
        assert norecord.next_local_midnight(noon) - noon == 12 * 3600
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_time_left_reads_well() -> None:
    assert norecord.describe_left(None) == "until you resume"
    assert norecord.describe_left(1) == "1 min left"
    assert norecord.describe_left(60) == "1 min left"
    assert norecord.describe_left(61) == "2 min left"
    assert norecord.describe_left(3600) == "1 h left"
    assert norecord.describe_left(3601) == "1 h 1 min left"
