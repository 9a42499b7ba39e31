"""The hook's own time budget stays clearly below the timeout the installers
write for the assistants, so an assistant never kills a hook: a hook whose
stdin is never closed, talking to a Redis that never answers, still exits 0
within its budget and keeps the event."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from test_hook_events import CURSOR_BASE, HOOK, hook_env, spool_files
from test_hook_faults import hanging_server  # noqa: F401 - a fixture
from tray_app.capture import installers, runner

PROMPT = {**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt", "prompt": "hello"}
#: what starting the interpreter and the shell may add to the hook's own budget
STARTUP_S = 0.5


def _installed_timeouts(home: Path) -> list[float]:
    env = hook_env(home)
    found: list[float] = []
    for assistant in installers.ASSISTANTS:
        change = installers.plan(assistant, install=True, env=env)
        data = json.loads(change.new_text)
        for entries in data["hooks"].values():
            for entry in entries:
                if assistant == "cursor":
                    found.append(entry["timeout"])
                else:
                    found.extend(h["timeout"] for h in entry["hooks"])
    return found


def test_installed_timeout_exceeds_the_hooks_budget(app_home: Path) -> None:
    timeouts = _installed_timeouts(app_home)
    n_events = len(installers.CURSOR_EVENTS) + len(installers.CLAUDE_EVENTS)
    assert len(timeouts) == n_events  # every entry of ours, for both assistants, carries one
    # clearly above: the hook's whole budget plus interpreter start-up, with room to spare
    assert runner.STDIN_WATCHDOG_S < runner.BUDGET_S
    assert min(timeouts) >= 2 * (runner.BUDGET_S + STARTUP_S)


def _run_with_open_stdin(home: Path, url: str, payload: bytes) -> tuple[int, float, bytes]:
    env = hook_env(home, url)
    start = time.monotonic()
    proc = subprocess.Popen(installers.hook_command("cursor", script=HOOK), shell=True, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if payload:
            proc.stdin.write(payload)
            proc.stdin.flush()  # ... and stdin is never closed
        code = proc.wait(timeout=installers.HOOK_TIMEOUT_S)  # what the assistant would allow
        took = time.monotonic() - start
        return code, took, proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()


def test_open_stdin_and_a_silent_redis_exit_0_within_the_budget(app_home: Path,
                                                                  hanging_server: str) -> None:  # noqa: F811
    """The worst case: stdin never closed and a Redis that accepts and never
    answers, with the largest hook_timeout_ms a user may configure (5 s)."""
    (app_home / "config").mkdir()
    (app_home / "config" / "config.toml").write_text("[capture]\nhook_timeout_ms = 5000\n")
    code, took, out = _run_with_open_stdin(app_home, hanging_server, json.dumps(PROMPT).encode())
    assert code == 0 and out == b"{}\n"
    assert took < runner.BUDGET_S + STARTUP_S, f"took {took:.2f} s"
    # what arrived before the watchdog is kept: in the spool, since Redis never answered
    [spooled] = spool_files(app_home)
    assert json.loads(json.loads(spooled.read_bytes())["payload"]) == PROMPT


def test_open_stdin_with_nothing_written_exits_0_within_the_budget(app_home: Path,
                                                                   hanging_server: str) -> None:  # noqa: F811
    code, took, out = _run_with_open_stdin(app_home, hanging_server, b"")
    assert code == 0 and out == b"{}\n"
    assert took < runner.BUDGET_S + STARTUP_S, f"took {took:.2f} s"


def test_an_install_with_the_old_5s_timeout_is_stale_and_upgraded(app_home: Path) -> None:
    env = hook_env(app_home)
    path = installers.settings_path("claude", env)
    path.parent.mkdir(parents=True)
    command = installers.hook_command("claude")
    path.write_text(json.dumps({"hooks": {e: [{"matcher": "", "hooks": [
        {"type": "command", "command": command, "timeout": 5}]}] for e in installers.CLAUDE_EVENTS}}))
    st = installers.status("claude", env)
    assert st.state == "partly installed" and set(st.stale) == set(installers.CLAUDE_EVENTS)
    installers.apply(installers.plan("claude", install=True, env=env))
    assert installers.status("claude", env).state == "installed"
    assert min(_installed_timeouts(app_home)) == installers.HOOK_TIMEOUT_S
