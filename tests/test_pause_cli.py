"""`telemetry-tray pause` / `resume` against a real running engine: a headless
engine subprocess, and the tray's own runtime in this process (a CLI pause
shows as Paused in the tray menu, a tray pause shows in `status`). Events
queue while paused and are stored after resume; with no engine the commands
say so in one line and exit 3; bad options exit 64."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import RedisProc, run_cli, wait_for
from engine_util import make_event, push, row_count
from test_status_states import engine_proc, headless, status  # noqa: F401 - engine_proc is a fixture

from tray_app.config import TraySettings, load_config
from tray_app.engine import control
from tray_app.engine.health import PAUSED, RUNNING
from tray_app.engine.runtime import FACE_TRAY, EngineRuntime, RuntimeSettings
from tray_app.redis_conn import EVENTS_STREAM, ensure_streams
from tray_app.tray.menu import A_PAUSE, A_RESUME, build_menu


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_no_engine_running_exits_3_with_one_line(app_home: Path) -> None:
    env = dict(os.environ)
    for args in (["pause"], ["resume"], ["resume", "--ingest"]):
        r = run_cli(*args, env=env, timeout=30)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert r.stdout == ""
        assert one_line(r.stderr).startswith("No engine is running; nothing to")
    # nothing was left behind for a future engine to act on
    assert not list(control.control_dir(app_home / "state").glob("*.json"))


@pytest.mark.parametrize("args, why", [
    (["pause", "--no-record", "--for", "5x"], "not a duration: '5x'"),
    (["pause", "--no-record", "--for", "30"], "not a duration: '30'"),
    (["pause", "--no-record", "--for", "0m"], "at least a minute"),
    (["pause", "--no-record", "--for", "200h"], "longer than 7 days"),
    (["pause", "--for", "1h"], "--for goes with --no-record"),
    (["resume", "--ingest", "--no-record"], "not allowed with argument"),
])
def test_bad_options_are_one_line_and_exit_64(app_home: Path, args: list[str], why: str) -> None:
    r = run_cli(*args, env=dict(os.environ), timeout=30)
    assert r.returncode == 64, (r.stdout, r.stderr)
    assert r.stdout == ""
    line = one_line(r.stderr)
    assert line.startswith("telemetry-tray ") and why in line, line
    assert not (app_home / "state" / "no-record.json").exists()


def test_pause_and_resume_a_headless_engine(app_env: dict[str, str], redis_server: RedisProc, tmp_path: Path,
                                            engine_proc: list) -> None:  # noqa: F811
    cfg = load_config()
    client = redis_server.client()
    engine_proc.append(headless(app_env, tmp_path / "headless.log"))
    wait_for(lambda: status(app_env)[0] == 0, timeout=30, what="the engine to run")
    push(client, [make_event(i) for i in range(10)])
    wait_for(lambda: row_count(cfg.paths.database) == 10, timeout=20, what="rows before the pause")

    r = run_cli("pause", env=app_env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout).startswith(f"Paused (engine pid {engine_proc[0].pid}, headless): events wait")
    code, data = status(app_env)
    assert code == 0 and data["paused"] is True and data["state"] == PAUSED
    again = run_cli("pause", env=app_env, timeout=30)
    assert again.returncode == 0 and one_line(again.stdout).startswith("Paused")  # idempotent

    push(client, [make_event(100 + i) for i in range(25)])
    # queued, not stored: the engine reports the backlog while the row count stays
    wait_for(lambda: (s := status(app_env)[1]) and s["backlog"] + s["pending"] == 25, timeout=20,
             what="25 events waiting in Redis")
    assert row_count(cfg.paths.database) == 10 and client.xlen(EVENTS_STREAM) == 35

    r = run_cli("resume", env=app_env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert one_line(r.stdout).startswith(f"Resumed (engine pid {engine_proc[0].pid}, headless): storing")
    wait_for(lambda: row_count(cfg.paths.database) == 35, timeout=20, what="the queued events stored")
    code, data = status(app_env)
    assert code == 0 and data["paused"] is False and data["state"] == RUNNING
    text = run_cli("status", env=app_env, timeout=30)
    assert "state:        running" in text.stdout and "paused:" not in text.stdout
    # every request was answered and removed
    assert not list(control.control_dir(cfg.paths.state_dir).glob("*.json"))


def test_the_cli_and_the_tray_agree(app_env: dict[str, str], redis_server: RedisProc) -> None:
    """The tray's runtime (in this process): a pause from the terminal is the
    tray menu's Paused/Resume; the tray's own Pause is `status`'s paused."""
    ensure_streams(redis_server.client())
    cfg = load_config()
    tray = TraySettings()
    rt = EngineRuntime(cfg, RuntimeSettings(face=FACE_TRAY, with_monitors=False))
    rt.start_background()
    try:
        wait_for(lambda: rt.ready and rt.health().state == RUNNING, timeout=30, what="the engine to run")
        r = run_cli("pause", env=app_env, timeout=30)
        assert r.returncode == 0 and "(engine pid %d, tray)" % os.getpid() in r.stdout, (r.stdout, r.stderr)
        menu = build_menu(rt.health(), tray, paused=rt.paused)
        assert menu.status == "Paused" and menu.find(A_RESUME) is not None and menu.find(A_PAUSE) is None

        rt.resume()  # the tray's Resume
        wait_for(lambda: status(app_env)[1].get("paused") is False, timeout=10, what="status: not paused")
        rt.pause()   # the tray's Pause
        code, data = wait_for(lambda: (s := status(app_env)) and s[1].get("state") == PAUSED and s,
                              timeout=10, what="status: paused")
        assert code == 0 and data["paused"] is True and data["face"] == FACE_TRAY
        r = run_cli("resume", env=app_env, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith("Resumed"), (r.stdout, r.stderr)
        assert rt.paused is False
        assert build_menu(rt.health(), tray, paused=rt.paused).status == "Running"
        state = json.loads(control.state_path(cfg.paths.state_dir).read_text())
        assert state["pid"] == os.getpid() and state["paused"] is False
        assert stat.S_IMODE(control.state_path(cfg.paths.state_dir).stat().st_mode) == 0o600
        assert stat.S_IMODE(control.control_dir(cfg.paths.state_dir).stat().st_mode) == 0o700
    finally:
        assert rt.stop(timeout_s=10)
    assert not control.state_path(cfg.paths.state_dir).exists()
    r = run_cli("pause", env=app_env, timeout=30)
    assert r.returncode == 3


def test_requests_wait_for_a_starting_engine_and_stale_ones_are_dropped(tmp_path: Path) -> None:
    """The runtime's side alone (it passes these same callables): a request
    made while the engine is still starting is applied once it runs; one older
    than REQUEST_TTL_S (its CLI gave up) and an unreadable one are dropped."""
    ready, paused, now = [False], [False], [1_800_000_000.0]

    def pause() -> bool:
        if ready[0]:
            paused[0] = True
        return ready[0]

    def resume() -> bool:
        if ready[0]:
            paused[0] = False
        return ready[0]

    w = control.ControlWatcher(tmp_path, pause=pause, resume=resume,
                               paused=lambda: paused[0] if ready[0] else None, clock=lambda: now[0])
    rid = control.submit(tmp_path, control.PAUSE, now=now[0])
    w.step()
    state = control.read_state(tmp_path)
    assert state is not None and state.paused is None and state.handled == ()
    assert [p.name for p in control.control_dir(tmp_path).iterdir()] == [f"{rid}.json"]
    ready[0] = True
    now[0] += 5
    w.step()
    state = control.read_state(tmp_path)
    assert state is not None and state.paused is True and state.handled == (rid,)
    assert list(control.control_dir(tmp_path).iterdir()) == []

    control.submit(tmp_path, control.RESUME, now=now[0] - control.REQUEST_TTL_S - 1)
    (control.control_dir(tmp_path) / "0-garbage.json").write_text("{not json")
    w.step()
    state = control.read_state(tmp_path)
    assert state is not None and state.paused is True and state.handled == (rid,)
    assert list(control.control_dir(tmp_path).iterdir()) == []
    with pytest.raises(ValueError):
        control.submit(tmp_path, "quit")


def test_pause_and_resume_work_while_redis_is_down(app_env: dict[str, str], redis_server: RedisProc,
                                                   tmp_path: Path, engine_proc: list) -> None:  # noqa: F811
    """Commands go through files, not Redis: with the user's Redis stopped the
    engine still takes them, and `status` (exit 4: Redis down) says paused."""
    engine_proc.append(headless(app_env, tmp_path / "headless.log"))
    wait_for(lambda: status(app_env)[0] == 0, timeout=30, what="the engine to run")
    redis_server.stop()
    wait_for(lambda: status(app_env)[0] == 4, timeout=30, what="status: Redis down")
    r = run_cli("pause", env=app_env, timeout=30)
    assert r.returncode == 0 and one_line(r.stdout).startswith("Paused ("), (r.stdout, r.stderr)
    code, data = status(app_env)
    assert code == 4 and data["paused"] is True and data["source"] == "health-file"
    r = run_cli("resume", env=app_env, timeout=30)
    assert r.returncode == 0 and one_line(r.stdout).startswith("Resumed ("), (r.stdout, r.stderr)
    assert status(app_env)[1]["paused"] is False
