"""The hook reads the same files and variables as the app, without the app's
imports: paths agree with tray_app.paths, the config is parsed only when it
changes, privacy fails closed, and the endpoint is found in the documented
order."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import RedisProc
from test_hook_events import CLAUDE_BASE, assert_clean_exit, hook_env, run_hook, stream_entries
from tray_app import events
from tray_app.capture import hookconfig
from tray_app.paths import resolve_paths


def _same(a: str | Path, b: str | Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@pytest.mark.parametrize("case", ["home", "home-tilde", "xdg", "xdg-relative-ignored", "plain",
                                  "config-env", "config-env-relative"])
def test_paths_agree_with_the_app(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("TELEMETRY_TRAY_", "XDG_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.chdir(tmp_path)
    if case == "home":
        monkeypatch.setenv("TELEMETRY_TRAY_HOME", str(tmp_path / "tt"))
    elif case == "home-tilde":
        monkeypatch.setenv("TELEMETRY_TRAY_HOME", "~/tt-home")
    elif case == "xdg":
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
        monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    elif case == "xdg-relative-ignored":
        monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")
        monkeypatch.setenv("XDG_STATE_HOME", "relative/st")
    elif case == "config-env":
        monkeypatch.setenv("TELEMETRY_TRAY_CONFIG", str(tmp_path / "elsewhere.toml"))
    elif case == "config-env-relative":
        monkeypatch.setenv("TELEMETRY_TRAY_CONFIG", "rel/conf.toml")
    app = resolve_paths()
    config_file, state_dir = hookconfig.resolve(dict(os.environ))
    assert _same(config_file, app.config_file), (config_file, app.config_file)
    assert _same(state_dir, app.state_dir), (state_dir, app.state_dir)
    assert _same(hookconfig.join(state_dir, hookconfig.ENDPOINT_NAME), app.endpoint_file)
    assert _same(hookconfig.load(dict(os.environ))["spool_dir"], app.spool_dir)


def write_config(home: Path, text: str) -> Path:
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_settings_from_config_and_the_cache(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"TELEMETRY_TRAY_HOME": str(app_home)}
    assert hookconfig.load(env)["prompts"] == "full"  # no file: defaults, nothing cached
    assert not (app_home / "state" / hookconfig.CACHE_NAME).exists()
    path = write_config(app_home, '[redis]\nurl = "redis://h:1/0"\n[capture]\nprompts = "hash"\n'
                                  'shell_output = "none"\nhook_timeout_ms = 75\n')
    s = hookconfig.load(env)
    assert (s["prompts"], s["shell_output"], s["responses"], s["hook_timeout_ms"], s["redis_url"]) == \
        ("hash", "none", "full", 75, "redis://h:1/0")
    cache = json.loads((app_home / "state" / hookconfig.CACHE_NAME).read_text())
    assert cache["key"][0] == str(path) and cache["settings"]["prompts"] == "hash"

    # a valid cache is used as it is: prove it by making tomllib unusable
    import tomllib
    monkeypatch.setattr(tomllib, "loads", lambda *_a, **_k: (_ for _ in ()).throw(AssertionError("parsed")))
    assert hookconfig.load(env)["prompts"] == "hash"
    monkeypatch.undo()

    # a changed file is parsed again (size and mtime are the key)
    path.write_text('[capture]\nprompts = "none"\n')
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert hookconfig.load(env)["prompts"] == "none"

    # a corrupt cache is ignored and rewritten
    (app_home / "state" / hookconfig.CACHE_NAME).write_text("{garbage")
    assert hookconfig.load(env)["prompts"] == "none"
    assert json.loads((app_home / "state" / hookconfig.CACHE_NAME).read_text())["settings"] == {"prompts": "none"}


@pytest.mark.parametrize("text", ['[capture\nprompts = "full"', '[capture]\nprompts = "everything"\n'],
                         ids=["bad-toml", "bad-mode"])
def test_privacy_fails_closed(text: str, app_home: Path) -> None:
    write_config(app_home, text)
    s = hookconfig.load({"TELEMETRY_TRAY_HOME": str(app_home)})
    assert s["prompts"] == "none"
    if text.startswith("[capture\n"):
        assert all(s[k] == "none" for k in hookconfig.CAPTURE_KEYS) and "config_error" in s


def test_missing_explicit_config_fails_closed(app_home: Path) -> None:
    s = hookconfig.load({"TELEMETRY_TRAY_HOME": str(app_home),
                         "TELEMETRY_TRAY_CONFIG": str(app_home / "nope.toml")})
    assert all(s[k] == "none" for k in hookconfig.CAPTURE_KEYS)


def test_env_overrides_the_file(app_home: Path) -> None:
    write_config(app_home, '[capture]\nprompts = "hash"\nmax_input_bytes = 4096\n')
    env = {"TELEMETRY_TRAY_HOME": str(app_home), "TELEMETRY_TRAY_CAPTURE_PROMPTS": "full",
           "TELEMETRY_TRAY_CAPTURE_RESPONSES": "bogus", "TELEMETRY_TRAY_CAPTURE_HOOK_TIMEOUT_MS": "abc",
           "TELEMETRY_TRAY_CAPTURE_MAX_INPUT_BYTES": "999999999999", "TELEMETRY_TRAY_REDIS_URL": "redis://e:2/0"}
    s = hookconfig.load(env)
    assert s["prompts"] == "full"
    assert s["responses"] == "none"  # not a mode: the most private one
    assert s["hook_timeout_ms"] == 40 and s["max_input_bytes"] == 1024 * 1024  # invalid: defaults
    assert hookconfig.endpoint(s) == ("redis://e:2/0", None)


def test_endpoint_order(app_home: Path) -> None:
    env = {"TELEMETRY_TRAY_HOME": str(app_home)}
    assert hookconfig.endpoint(hookconfig.load(env)) == (None, None)
    write_config(app_home, '[redis]\nurl = "redis://cfg:1/0"\n')
    assert hookconfig.endpoint(hookconfig.load(env)) == ("redis://cfg:1/0", None)
    (app_home / "state" / "redis-endpoint.json").write_text(
        json.dumps({"url": "unix:///run/r.sock", "password": "pw", "managed": True, "pid": 1}))
    assert hookconfig.endpoint(hookconfig.load(env)) == ("unix:///run/r.sock", "pw")
    env["TELEMETRY_TRAY_REDIS_URL"] = "redis://env:2/0"
    assert hookconfig.endpoint(hookconfig.load(env)) == ("redis://env:2/0", None)


def test_config_privacy_reaches_the_hook_and_follows_edits(app_home: Path, redis_server: RedisProc) -> None:
    """Through the real hook: the config file's mode applies, and an edit to
    the file takes effect on the next call (the cache follows the file)."""
    path = write_config(app_home, '[capture]\nprompts = "none"\n')
    env = hook_env(app_home, redis_server.url)
    sample = {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "do not keep me"}
    assert_clean_exit("claude", run_hook("claude", json.dumps(sample), env)[0])
    path.write_text('[capture]\nprompts = "full"\n')  # same size: the mtime tells the change
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # even on coarse clocks
    assert_clean_exit("claude", run_hook("claude", json.dumps(sample), env)[0])
    first, second = [events.decode(e)["payload"] for e in stream_entries(redis_server.client())]
    assert "prompt" not in first and second["prompt"] == "do not keep me"


def test_installed_home_and_config_win_over_the_environment(tmp_path: Path) -> None:
    """`hook.py claude --home DIR --config FILE` (what the installers write for a
    custom home): those paths, whatever TELEMETRY_TRAY_* the assistant passes."""
    hook = "/opt/x/tray_app/capture/hook.py"
    env = {"HOME": str(tmp_path / "user"), "TELEMETRY_TRAY_HOME": str(tmp_path / "other"),
           "TELEMETRY_TRAY_CONFIG": str(tmp_path / "other.toml")}
    a = str(tmp_path / "a")
    assert hookconfig.resolve(env, [hook, "claude", "--home", a]) == (
        hookconfig.join(a, "config", "config.toml"), hookconfig.join(a, "state"))
    conf = str(tmp_path / "c.toml")
    settings = hookconfig.load(env, [hook, "cursor", "--home", a, "--config", conf])
    assert settings["config_file"] == conf and settings["spool_dir"] == hookconfig.join(a, "state", "spool")
    assert settings["config_error"]  # an explicit config file that is missing fails closed
    assert settings["prompts"] == "none"
    # no location arguments, or another program's command line: the environment as before
    assert hookconfig.resolve(env, [hook, "claude"]) == hookconfig.resolve(env)
    assert hookconfig.location_from_argv(["/usr/bin/pytest", "x", "--home", a]) is None
