"""`telemetry-tray hooks install|uninstall|status` against settings files in a
temp HOME: merging with the user's own hooks, idempotence, refusing invalid
JSON, one backup, uninstall round trips, quoting, the real interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RedisProc, run_cli
from test_hook_events import (CLAUDE_BASE, CURSOR_BASE, assert_clean_exit, hook_env, run_hook,
                              stream_entries)
from tray_app.capture import installers

USER_CURSOR = {
    "version": 1,
    "hooks": {
        "afterFileEdit": [{"command": "./hooks/format.sh"}],
        "beforeShellExecution": [{"command": "./hooks/audit.sh"}, {"command": "./hooks/block-git.sh"}],
        "afterTabFileEdit": [{"command": "./hooks/format-tab.sh"}],
    },
}
USER_CLAUDE = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "model": "opus",
    "env": {"FOO": "bar"},
    "permissions": {"allow": ["Bash(npm run lint)"], "deny": ["Read(./.env)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/check-bash.sh"}]}],
        "PostToolUse": [{"matcher": "Write|Edit", "hooks": [{"type": "command", "command": "prettier --write",
                                                              "timeout": 30}]}],
        "PermissionRequest": [{"matcher": "", "hooks": [{"type": "command", "command": "notify-send hi"}]}],
    },
}


@pytest.fixture()
def home(tmp_path: Path, app_home: Path) -> dict[str, str]:
    """Environment for the CLI with HOME (and nothing else of the user's) in tmp."""
    env = {k: v for k, v in os.environ.items() if k not in ("CLAUDE_CONFIG_DIR",)}
    env["HOME"] = str(tmp_path / "user")
    (tmp_path / "user").mkdir()
    return env


def cursor_file(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) / ".cursor" / "hooks.json"


def claude_file(env: dict[str, str]) -> Path:
    return Path(env.get("CLAUDE_CONFIG_DIR") or Path(env["HOME"]) / ".claude") / "settings.json"


def put(path: Path, data: object, indent: int | None = 2) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=indent) + "\n"
    path.write_text(text)
    return text


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("hooks", *args, env=env)


def installed_command(assistant: str, env: dict[str, str]) -> str:
    """The command `hooks install` writes under ``env`` (its app home included)."""
    return installers.hook_command(assistant, location=installers.location_args(env))


def ours_cursor(data: dict, event: str) -> list[str]:
    return [e["command"] for e in data["hooks"].get(event, []) if installers.is_ours(e.get("command"))]


def ours_claude(data: dict, event: str) -> list[dict]:
    return [g for g in data["hooks"].get(event, [])
            if any(installers.is_ours(h.get("command")) for h in g["hooks"])]


def test_install_merges_with_the_users_hooks(home: dict[str, str]) -> None:
    put(cursor_file(home), USER_CURSOR)
    put(claude_file(home), USER_CLAUDE)
    r = cli(home, "install")
    assert r.returncode == 0, r.stderr
    cur = json.loads(cursor_file(home).read_text())
    cla = json.loads(claude_file(home).read_text())
    command_c = installed_command("cursor", home)
    command_cl = installed_command("claude", home)
    # Cursor: the user's entries first and unchanged, ours once on every event we install
    assert cur["version"] == 1
    assert cur["hooks"]["afterFileEdit"] == [{"command": "./hooks/format.sh"},
                                             {"command": command_c, "timeout": installers.HOOK_TIMEOUT_S}]
    assert cur["hooks"]["beforeShellExecution"] == USER_CURSOR["hooks"]["beforeShellExecution"] + [
        {"command": command_c, "timeout": installers.HOOK_TIMEOUT_S}]
    assert cur["hooks"]["afterTabFileEdit"] == USER_CURSOR["hooks"]["afterTabFileEdit"] + [
        {"command": command_c, "timeout": installers.HOOK_TIMEOUT_S}]
    for event in installers.CURSOR_EVENTS:
        assert ours_cursor(cur, event) == [command_c], event
    # Claude: every other setting untouched, the user's groups kept, ours added
    assert {k: v for k, v in cla.items() if k != "hooks"} == {k: v for k, v in USER_CLAUDE.items() if k != "hooks"}
    assert cla["hooks"]["PreToolUse"][0] == USER_CLAUDE["hooks"]["PreToolUse"][0]
    assert cla["hooks"]["PostToolUse"][0] == USER_CLAUDE["hooks"]["PostToolUse"][0]
    assert cla["hooks"]["PermissionRequest"][0] == USER_CLAUDE["hooks"]["PermissionRequest"][0]
    tool_events = ("PreToolUse", "PostToolUse", "PostToolUseFailure", "PermissionRequest", "PermissionDenied")
    for event in installers.CLAUDE_EVENTS:
        [group] = ours_claude(cla, event)
        ours = {"hooks": [{"type": "command", "command": command_cl, "timeout": installers.HOOK_TIMEOUT_S}]}
        if event != "FileChanged":  # its matcher would also be a file for Claude Code to watch
            ours["matcher"] = "*" if event in tool_events else ""
        assert group == ours, event
    for event in ("WorktreeCreate", "WorktreeRemove"):  # a hook there replaces git's behaviour
        assert event not in cla["hooks"]
    # one backup each: the file as it was
    assert json.loads(Path(str(cursor_file(home)) + installers.BACKUP_SUFFIX).read_text()) == USER_CURSOR
    assert json.loads(Path(str(claude_file(home)) + installers.BACKUP_SUFFIX).read_text()) == USER_CLAUDE


def test_install_twice_changes_nothing(home: dict[str, str]) -> None:
    put(claude_file(home), USER_CLAUDE)
    assert cli(home, "install").returncode == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in
              (cursor_file(home), claude_file(home), Path(str(claude_file(home)) + installers.BACKUP_SUFFIX))}
    r = cli(home, "install")
    assert r.returncode == 0 and r.stdout.count("unchanged") == 2
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in before}
    assert after == before
    assert not Path(str(cursor_file(home)) + installers.BACKUP_SUFFIX).exists()  # there was no file before


def test_uninstall_round_trip_restores_the_users_entries(home: dict[str, str]) -> None:
    put(cursor_file(home), USER_CURSOR, indent=4)
    put(claude_file(home), USER_CLAUDE, indent=4)
    assert cli(home, "install").returncode == 0
    assert cli(home, "uninstall").returncode == 0
    assert json.loads(cursor_file(home).read_text()) == USER_CURSOR
    assert json.loads(claude_file(home).read_text()) == USER_CLAUDE
    assert claude_file(home).read_text() == json.dumps(USER_CLAUDE, indent=4) + "\n"  # indentation kept
    r = cli(home, "uninstall")
    assert r.returncode == 0 and r.stdout.count("unchanged") == 2


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_uninstall_of_files_we_created_leaves_nothing(home: dict[str, str]) -> None:
    """Install into a HOME with no assistant settings, uninstall: the HOME is as
    it was (no `{}` files, no backups, no folders made for them), even after an
    upgrade install in between wrote a backup."""
    user = Path(home["HOME"])
    assert tree(user) == []
    r = cli(home, "install")
    assert r.returncode == 0 and "previous version" not in r.stdout  # nothing to back up
    assert tree(user) == [".claude", ".claude/settings.json", ".cursor", ".cursor/hooks.json"]
    # an older install's command: the upgrade rewrites the file and keeps a backup of ours
    for path in (cursor_file(home), claude_file(home)):
        path.write_text(path.read_text().replace(str(installers.HOOK_SCRIPT), "/old/tray_app/capture/hook.py"))
    r = cli(home, "install")
    assert r.returncode == 0 and r.stdout.count("previous version") == 2
    r = cli(home, "uninstall")
    assert r.returncode == 0 and r.stdout.count("deleted") == 2, r.stdout
    assert tree(user) == []
    r = cli(home, "uninstall")
    assert r.returncode == 0 and tree(user) == []


def test_uninstall_cleans_what_an_older_uninstall_left(home: dict[str, str]) -> None:
    """Earlier versions left `{}` and a backup of the installed file behind."""
    assert cli(home, "install", "--claude").returncode == 0
    backup = Path(str(claude_file(home)) + installers.BACKUP_SUFFIX)
    backup.write_text(claude_file(home).read_text())
    claude_file(home).write_text("{}\n")
    r = cli(home, "uninstall", "--claude")
    assert r.returncode == 0 and "deleted" in r.stdout
    assert tree(Path(home["HOME"])) == []
    # a `{}` of the user's, with no backup of ours beside it, stays
    put(claude_file(home), {})
    r = cli(home, "uninstall", "--claude")
    assert r.returncode == 0 and "unchanged" in r.stdout and claude_file(home).read_text() == "{}\n"


def test_uninstall_restores_the_users_file_byte_for_byte(home: dict[str, str]) -> None:
    odd = '{ "model":"opus",\n   "env": {"A": "1"}}'  # no trailing newline, odd spacing
    claude_file(home).parent.mkdir(parents=True)
    claude_file(home).write_text(odd)
    cursor_file(home).parent.mkdir(parents=True)
    cursor_file(home).write_text("")  # an empty file the user had
    assert cli(home, "install").returncode == 0
    assert cli(home, "uninstall").returncode == 0
    assert claude_file(home).read_text() == odd
    assert cursor_file(home).read_text() == ""


def test_uninstall_never_deletes_a_file_whose_backup_it_cannot_read(home: dict[str, str]) -> None:
    assert cli(home, "install", "--claude").returncode == 0
    backup = Path(str(claude_file(home)) + installers.BACKUP_SUFFIX)
    backup.write_text("not json: someone's notes\n")
    r = cli(home, "uninstall", "--claude")
    assert r.returncode == 0 and "deleted" not in r.stdout
    assert json.loads(claude_file(home).read_text()) == {}


def test_uninstall_keeps_a_created_file_the_user_added_to(home: dict[str, str]) -> None:
    assert cli(home, "install", "--claude").returncode == 0
    data = json.loads(claude_file(home).read_text())
    data["model"] = "opus"
    claude_file(home).write_text(json.dumps(data))
    assert cli(home, "uninstall", "--claude").returncode == 0
    assert json.loads(claude_file(home).read_text()) == {"model": "opus"}


def test_stale_entries_are_replaced_not_duplicated(home: dict[str, str]) -> None:
    old_c = "/old/venv/bin/python -I -S /old/checkout/tray_app/capture/hook.py cursor"
    old_cl = "/old/venv/bin/python -I -S /old/checkout/tray_app/capture/hook.py claude"
    put(cursor_file(home), {"version": 1, "hooks": {"stop": [{"command": "./mine.sh"}, {"command": old_c},
                                                              {"command": old_c}]}})
    put(claude_file(home), {"hooks": {"Stop": [{"matcher": "", "hooks": [{"type": "command", "command": old_cl}]},
                                               {"matcher": "", "hooks": [
                                                   {"type": "command", "command": "say done"},
                                                   {"type": "command", "command": old_cl}]}]}})
    r = cli(home, "status")
    assert "partly installed" in r.stdout and "stale" in r.stdout
    assert cli(home, "install").returncode == 0
    cur = json.loads(cursor_file(home).read_text())
    assert cur["hooks"]["stop"] == [{"command": "./mine.sh"}, {"command": installed_command("cursor", home),
                                                                  "timeout": installers.HOOK_TIMEOUT_S}]
    cla = json.loads(claude_file(home).read_text())
    assert cla["hooks"]["Stop"] == [
        {"matcher": "", "hooks": [{"type": "command", "command": installed_command("claude", home),
                                      "timeout": installers.HOOK_TIMEOUT_S}]},
        {"matcher": "", "hooks": [{"type": "command", "command": "say done"}]},
    ]
    assert "installed" in cli(home, "status").stdout


@pytest.mark.parametrize("text", ['{"hooks": {', "not json at all", "[1, 2]", '{"hooks": []}',
                                  '{"hooks": {"stop": {"command": "x"}}}'],
                         ids=["truncated", "text", "array", "hooks-list", "event-object"])
def test_refuses_to_touch_what_it_cannot_read(text: str, home: dict[str, str]) -> None:
    path = cursor_file(home)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    before = path.stat().st_mtime_ns
    put(claude_file(home), USER_CLAUDE)
    claude_before = claude_file(home).read_bytes()
    r = cli(home, "install")
    assert r.returncode == 78
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and "left unchanged" in lines[0]
    assert path.read_text() == text and path.stat().st_mtime_ns == before
    assert claude_file(home).read_bytes() == claude_before  # nothing written when any file is refused
    assert not list(path.parent.glob("*.bak"))


def test_dry_run_prints_a_diff_and_writes_nothing(home: dict[str, str]) -> None:
    put(claude_file(home), USER_CLAUDE)
    before = claude_file(home).read_bytes()
    r = cli(home, "install", "--dry-run")
    assert r.returncode == 0
    assert f"--- {claude_file(home)}" in r.stdout and "--- /dev/null" in r.stdout
    assert f'+            "command": "{installed_command("claude", home)}"' in r.stdout.replace("\\", "")
    assert claude_file(home).read_bytes() == before and not cursor_file(home).exists()
    assert cli(home, "install").returncode == 0
    r = cli(home, "uninstall", "--cursor", "--dry-run")
    assert r.returncode == 0 and r.stdout.startswith(f"--- {cursor_file(home)}")
    assert ours_cursor(json.loads(cursor_file(home).read_text()), "stop")


def test_claude_config_dir_is_honoured(home: dict[str, str], tmp_path: Path) -> None:
    home["CLAUDE_CONFIG_DIR"] = str(tmp_path / "claude-cfg")
    assert cli(home, "install", "--claude").returncode == 0
    assert (tmp_path / "claude-cfg" / "settings.json").exists()
    assert not (Path(home["HOME"]) / ".claude").exists()
    assert not cursor_file(home).exists()


def test_symlinked_settings_are_written_through(home: dict[str, str], tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "claude-settings.json"
    put(real, USER_CLAUDE)
    real.chmod(0o640)
    claude_file(home).parent.mkdir(parents=True)
    claude_file(home).symlink_to(real)
    assert cli(home, "install", "--claude").returncode == 0
    assert claude_file(home).is_symlink()
    assert ours_claude(json.loads(real.read_text()), "Stop")
    assert real.stat().st_mode & 0o777 == 0o640  # the file's mode is kept


def test_status(home: dict[str, str]) -> None:
    r = cli(home, "status")
    assert r.returncode == 0 and r.stdout.count("not installed") == 2
    assert cli(home, "install", "--cursor").returncode == 0
    r = cli(home, "status", "--json")
    data = json.loads(r.stdout)
    assert data["cursor"]["state"] == "installed" and data["claude"]["state"] == "not installed"
    assert data["cursor"]["installed"] == list(installers.CURSOR_EVENTS) and data["cursor"]["missing"] == []
    assert data["spool"]["files"] == 0


def test_every_subcommand_has_help(home: dict[str, str]) -> None:
    for sub in ("install", "uninstall", "status"):
        r = cli(home, sub, "--help")
        assert r.returncode == 0 and "usage: telemetry-tray hooks " + sub in r.stdout
    r = cli(home, "--help")
    assert all(s in r.stdout for s in ("install", "uninstall", "status"))


# ----------------------------------------------------------------------------- the command itself

def test_command_uses_the_real_interpreter() -> None:
    cmd = installers.hook_command("cursor")
    python = installers.interpreter()
    assert cmd.startswith(str(python) + " -I -S ") and cmd.endswith(" cursor")
    assert python.is_absolute() and os.path.realpath(python) == str(python)
    assert python.read_bytes()[:2] != b"#!"  # a binary, not a version-manager shim
    assert str(installers.HOOK_SCRIPT) in cmd and installers.HOOK_SCRIPT.is_absolute()


def test_a_shim_interpreter_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim = tmp_path / "shims" / "python"
    shim.parent.mkdir()
    shim.write_text('#!/usr/bin/env bash\nexec pyenv exec python "$@"\n')
    monkeypatch.setattr(sys, "_base_executable", str(shim), raising=False)
    with pytest.raises(installers.ConfigError, match="shim"):
        installers.interpreter()


@pytest.mark.parametrize("dirname", ["with space", "Application Support", "it's $weird"])
def test_paths_with_spaces_are_quoted_and_run(dirname: str, tmp_path: Path, app_home: Path,
                                              redis_server: RedisProc) -> None:
    """The installed command, run by a shell as the assistants do, works from
    a directory whose name needs quoting."""
    d = tmp_path / dirname
    d.mkdir()
    python = d / "python3"
    python.symlink_to(installers.interpreter())
    src = installers.HOOK_SCRIPT.parent
    pkg = d / "tray_app" / "capture"
    pkg.mkdir(parents=True)
    for f in src.glob("*.py"):
        (pkg / f.name).write_bytes(f.read_bytes())
    cmd = installers.hook_command("cursor", python=python, script=pkg / "hook.py")
    assert "'" in cmd or '"' in cmd
    sample = {**CURSOR_BASE, "hook_event_name": "stop", "status": "completed", "loop_count": 0}
    proc, _ = run_hook("cursor", json.dumps(sample), hook_env(app_home, redis_server.url), command=cmd)
    assert_clean_exit("cursor", proc)
    assert [e["hook_type"] for e in stream_entries(redis_server.client())] == ["stop"]


def test_installed_commands_deliver_events(home: dict[str, str], app_home: Path, redis_server: RedisProc) -> None:
    """Read the commands back from the files the installer wrote and run them."""
    assert cli(home, "install").returncode == 0
    cur = json.loads(cursor_file(home).read_text())
    cla = json.loads(claude_file(home).read_text())
    env = hook_env(app_home, redis_server.url)
    [c_cmd] = ours_cursor(cur, "beforeSubmitPrompt")
    [group] = ours_claude(cla, "UserPromptSubmit")
    proc, _ = run_hook("cursor", json.dumps({**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt",
                                             "prompt": "p"}), env, command=c_cmd)
    assert_clean_exit("cursor", proc)
    proc, _ = run_hook("claude", json.dumps({**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit",
                                             "prompt": "p"}), env, command=group["hooks"][0]["command"])
    assert_clean_exit("claude", proc)
    assert [e["platform"] for e in stream_entries(redis_server.client())] == ["cursor", "claude_code"]


def test_packaged_app_uses_a_system_python_for_hooks(monkeypatch, tmp_path) -> None:
    """In the PyInstaller app sys.executable is the app: hooks need a real Python."""
    import os
    import sys

    from tray_app.capture import installers
    from tray_app.errors import ConfigError

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    (bindir / "python3").symlink_to(real)
    monkeypatch.setenv("PATH", str(bindir))
    assert installers.interpreter() == installers.Path(real)
    cmd = installers.hook_command("claude")
    assert cmd.startswith(installers.quote(real)) and "-I -S" in cmd
    # a shim on PATH is skipped; nothing usable is a one-line error saying what to install
    (bindir / "python3").unlink()
    (bindir / "python3").write_text("#!/bin/sh\nexec python3 \"$@\"\n")
    (bindir / "python3").chmod(0o755)
    try:
        installers.interpreter()
    except ConfigError as exc:
        assert "Python >= 3.11" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("a shim must not be used")
