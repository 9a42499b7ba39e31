"""A custom home (TELEMETRY_TRAY_HOME, --config, TELEMETRY_TRAY_CONFIG) is
carried into what the app installs: the hook commands and the start-at-login
entry point at the files of the app that installed them, whatever the
environment the assistant (or the desktop at login) runs them with.

Real parts: `telemetry-tray hooks install|status` and `autostart enable` as
subprocesses, the installed hook commands run through the shell exactly as
written, the autostart Exec line run as the desktop would. HOME,
CLAUDE_CONFIG_DIR and the XDG directories are temp dirs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from test_autostart import exec_argv
from test_hook_events import CLAUDE_BASE, CURSOR_BASE, assert_clean_exit, run_hook
from tray_app.capture import installers
from tray_app.support.autostart import DESKTOP_FILE, parse_desktop_entry

SECRET = "the words of a private prompt"


@pytest.fixture()
def home_a(tmp_path: Path, app_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TELEMETRY_TRAY_HOME=<tmp>/custom home/a (a space: the commands must quote it);
    the user's HOME, XDG dirs and CLAUDE_CONFIG_DIR in tmp too."""
    a = tmp_path / "custom home" / "a"
    a.mkdir(parents=True)
    monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(a))
    user = Path(os.environ["HOME"])
    monkeypatch.setenv("XDG_STATE_HOME", str(user / ".local" / "state"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    return a


def assistant_env() -> dict[str, str]:
    """What an assistant started from the desktop passes to a hook: the user's
    environment, with nothing of ours (no TELEMETRY_TRAY_*), and no Redis up."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_TRAY_")}


def installed_commands() -> dict[str, str]:
    """The command of our entry for one event per assistant, read back from the files."""
    cursor = json.loads(installers.settings_path("cursor").read_text())
    claude = json.loads(installers.settings_path("claude").read_text())
    [c_cmd] = [e["command"] for e in cursor["hooks"]["beforeSubmitPrompt"] if installers.is_ours(e["command"])]
    [cl_cmd] = [h["command"] for g in claude["hooks"]["UserPromptSubmit"] for h in g["hooks"]
                if installers.is_ours(h["command"])]
    return {"cursor": c_cmd, "claude": cl_cmd}


def spooled(home: Path) -> list[Path]:
    d = home / "state" / "spool"
    return sorted(d.glob("*.json")) if d.is_dir() else []


def default_spool() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "telemetry-tray" / "spool"


def run_both(commands: dict[str, str], env: dict[str, str]) -> None:
    proc, _ = run_hook("cursor", json.dumps({**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt",
                                             "prompt": SECRET}), env, command=commands["cursor"])
    assert_clean_exit("cursor", proc)
    proc, _ = run_hook("claude", json.dumps({**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit",
                                             "prompt": SECRET}), env, command=commands["claude"])
    assert_clean_exit("claude", proc)


def test_hooks_spool_into_the_home_they_were_installed_from(home_a: Path) -> None:
    r = run_cli("hooks", "install", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    commands = installed_commands()
    # Redis is down (no app running, no URL): both events wait in a's spool
    run_both(commands, assistant_env())
    assert len(spooled(home_a)) == 2
    assert not default_spool().exists()
    # an assistant started with another home in its environment: the installed home still wins
    other = home_a.parent / "b"
    run_both(commands, {**assistant_env(), "TELEMETRY_TRAY_HOME": str(other)})
    assert len(spooled(home_a)) == 4 and not other.exists()
    # `hooks status` under that home: installed and current, and it sees what waits
    r = run_cli("hooks", "status", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" installed: ") == 2 and "spool   4 waiting" in r.stdout, r.stdout
    assert f"--home {installers.quote(str(home_a))}" in r.stdout
    data = json.loads(run_cli("hooks", "status", "--json", env=dict(os.environ)).stdout)
    assert data["cursor"]["state"] == data["claude"]["state"] == "installed"
    # installing again changes nothing
    r = run_cli("hooks", "install", env=dict(os.environ))
    assert r.returncode == 0 and r.stdout.count("unchanged") == 2
    # from the default home the same entries are another home's: status says so
    data = json.loads(run_cli("hooks", "status", "--json", env=assistant_env()).stdout)
    assert data["cursor"]["state"] == "partly installed" and data["spool"]["files"] == 0


@pytest.mark.parametrize("how", ["--config", "TELEMETRY_TRAY_CONFIG"])
def test_hooks_read_the_config_they_were_installed_with(how: str, home_a: Path, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "my config.toml"
    config.parent.mkdir()
    config.write_text('[capture]\nprompts = "none"\n')
    env = dict(os.environ)
    args = ["hooks", "install"]
    if how == "--config":
        args = ["--config", str(config), *args]
    else:
        env["TELEMETRY_TRAY_CONFIG"] = str(config)
    r = run_cli(*args, env=env)
    assert r.returncode == 0, r.stderr
    commands = installed_commands()
    assert all(f"--config {installers.quote(str(config))}" in c for c in commands.values())
    run_both(commands, assistant_env())
    files = spooled(home_a)
    assert len(files) == 2
    for f in files:  # the config's privacy setting applied: the prompt is not kept
        assert SECRET not in f.read_text()
    status_args = ["--config", str(config)] if how == "--config" else []
    data = json.loads(run_cli(*status_args, "hooks", "status", "--json", env=env).stdout)
    assert data["cursor"]["state"] == data["claude"]["state"] == "installed"


def test_autostart_entry_starts_the_app_with_its_home_and_config(home_a: Path, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "config.toml"
    config.parent.mkdir()
    config.write_text("")
    env = {**os.environ, "TELEMETRY_TRAY_CONFIG": str(config)}
    r = run_cli("autostart", "enable", env=env)
    assert r.returncode == 0, r.stderr
    entry = Path(os.environ["XDG_CONFIG_HOME"]) / "autostart" / DESKTOP_FILE
    assert entry.stat().st_mode & 0o777 == 0o600
    exec_value = parse_desktop_entry(entry.read_text())["Exec"]
    argv = exec_argv(exec_value)
    assert f"TELEMETRY_TRAY_HOME={home_a}" in argv
    # run it as the desktop would at login (an environment without ours), asking for its paths
    out = subprocess.run([*argv, "paths", "--json"], capture_output=True, text=True, timeout=60,
                         env=assistant_env())
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)
    assert paths["data_dir"] == str(home_a / "data") and paths["config_file"] == str(config)


def test_default_locations_add_nothing(app_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a custom home or config the commands stay as they always were
    (an existing install stays current)."""
    monkeypatch.delenv("TELEMETRY_TRAY_HOME")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert installers.location_args() == []
    assert installers.hook_command("claude", location=installers.location_args()) == \
        installers.hook_command("claude")
    from tray_app.paths import resolve_paths
    monkeypatch.setenv("TELEMETRY_TRAY_CONFIG", str(resolve_paths(environ={}).config_file))
    assert installers.location_args() == []
