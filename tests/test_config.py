"""Config: every error path gives a one-line message naming file, key, expected and found."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import run_cli
from tray_app.config import load_config, mask_url, template
from tray_app.errors import ConfigError
from tray_app.paths import resolve_paths


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    cfg = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={"TELEMETRY_TRAY_HOME": str(tmp_path), **(env or {})})
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = load_config(environ={"TELEMETRY_TRAY_HOME": str(tmp_path)})
    assert cfg.source == "defaults"
    assert cfg.redis.url == "" and cfg.redis.managed == "auto"
    assert cfg.ingest.batch_size_min <= cfg.ingest.batch_size_max


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingest]\nbatch_sise_max = 10\n")
    assert str(tmp_path / "c.toml") in msg
    assert "batch_sise_max" in msg and "unknown key" in msg and "batch_size_max" in msg


def test_unknown_section(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingets]\nx = 1\n")
    assert "[ingets]" in msg and "unknown section" in msg


def test_wrong_type_says_expected_and_found(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[ingest]\nbatch_size_max = "lots"\n')
    assert "ingest.batch_size_max" in msg
    assert "expected an integer from 1 to 100000" in msg
    assert "found 'lots' (str)" in msg


def test_bool_is_not_an_int(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingest]\nmax_retries = true\n")
    assert "ingest.max_retries" in msg and "found True (bool)" in msg


def test_out_of_range(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingest]\nmax_retries = 0\n")
    assert "ingest.max_retries" in msg and "from 1 to 1000" in msg and "found 0 (int)" in msg


def test_bad_choice(tmp_path: Path) -> None:
    msg = error_of(tmp_path, '[capture]\nprompts = "some"\n')
    assert 'one of "full", "hash", "none"' in msg and "'some'" in msg


@pytest.mark.parametrize("url, fragment", [
    ("http://localhost:6379", "scheme http://"),
    ("localhost:6379", "redis://, rediss:// or unix://"),
    ("redis://:secretpw@localhost:notaport/0", "port"),
    ("unix://", "socket path"),
])
def test_bad_url(tmp_path: Path, url: str, fragment: str) -> None:
    msg = error_of(tmp_path, f'[redis]\nurl = "{url}"\n')
    assert "redis.url" in msg and fragment in msg
    assert ":secretpw@" not in msg


def test_good_urls(tmp_path: Path) -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://:pw@example.test:6380/1", "unix:///run/redis.sock"):
        cfg = load_config(write(tmp_path / "c.toml", f'[redis]\nurl = "{url}"\n'),
                          environ={"TELEMETRY_TRAY_HOME": str(tmp_path)})
        assert cfg.redis.url == url


def test_invalid_toml(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingest\nx=")
    assert "not valid TOML" in msg


def test_unreadable_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={"TELEMETRY_TRAY_HOME": str(tmp_path)})
    with pytest.raises(ConfigError, match="found a directory"):
        load_config(tmp_path, environ={"TELEMETRY_TRAY_HOME": str(tmp_path)})


def test_min_greater_than_max(tmp_path: Path) -> None:
    msg = error_of(tmp_path, "[ingest]\nbatch_size_min = 500\nbatch_size_max = 100\n")
    assert "batch_size_min" in msg and "at most batch_size_max" in msg


def test_env_overrides_win_over_file(tmp_path: Path) -> None:
    cfg_file = write(tmp_path / "c.toml", '[redis]\nurl = "redis://file.test:1/0"\n[ingest]\nmax_retries = 3\n')
    env = {"TELEMETRY_TRAY_HOME": str(tmp_path), "TELEMETRY_TRAY_REDIS_URL": "redis://env.test:2/0",
           "TELEMETRY_TRAY_INGEST_MAX_RETRIES": "9", "TELEMETRY_TRAY_MONITORS_CURSOR_ENABLED": "false"}
    cfg = load_config(cfg_file, environ=env)
    assert cfg.redis.url == "redis://env.test:2/0"
    assert cfg.ingest.max_retries == 9
    assert cfg.monitors.cursor_enabled is False


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"TELEMETRY_TRAY_HOME": str(tmp_path), "TELEMETRY_TRAY_INGEST_MAX_RETRIES": "many"})
    assert str(info.value).startswith("TELEMETRY_TRAY_INGEST_MAX_RETRIES: ingest.max_retries")
    with pytest.raises(ConfigError, match="TELEMETRY_TRAY_REDIS_URL: redis.url"):
        load_config(environ={"TELEMETRY_TRAY_HOME": str(tmp_path), "TELEMETRY_TRAY_REDIS_URL": "http://x"})


def test_config_env_var_picks_file(tmp_path: Path) -> None:
    other = write(tmp_path / "other.toml", "[ingest]\nmax_retries = 7\n")
    cfg = load_config(environ={"TELEMETRY_TRAY_HOME": str(tmp_path), "TELEMETRY_TRAY_CONFIG": str(other)})
    assert cfg.source == str(other) and cfg.ingest.max_retries == 7


def test_home_isolates_every_path(tmp_path: Path) -> None:
    paths = resolve_paths(environ={"TELEMETRY_TRAY_HOME": str(tmp_path)})
    for name, value in paths.as_dict().items():
        assert value.startswith(str(tmp_path)), name


def test_mask_url() -> None:
    assert mask_url("redis://:hunter2@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis://user:hunter2@h/0") == "redis://user:***@h/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"


def test_template_is_valid_and_commented(tmp_path: Path) -> None:
    text = template()
    assert "[redis]" in text and "# url = " in text
    f = write(tmp_path / "t.toml", text)
    assert load_config(f, environ={"TELEMETRY_TRAY_HOME": str(tmp_path)}).source == str(f)


# -- through the CLI, as a user runs it ------------------------------------------------------

def test_cli_config_show_masks_secrets(app_home: Path) -> None:
    env = {**os.environ, "TELEMETRY_TRAY_REDIS_URL": "redis://:s3cr3t-pw@127.0.0.1:6399/0"}
    out = run_cli("config", "show", env=env)
    assert out.returncode == 0, out.stderr
    assert "s3cr3t-pw" not in out.stdout
    assert 'url = "redis://:***@127.0.0.1:6399/0"' in out.stdout


def test_cli_config_init_never_overwrites(app_home: Path) -> None:
    first = run_cli("config", "init")
    assert first.returncode == 0, first.stderr
    cfg = app_home / "config" / "config.toml"
    assert cfg.exists() and (cfg.stat().st_mode & 0o777) == 0o600
    cfg.write_text("[ingest]\nmax_retries = 4\n")
    second = run_cli("config", "init")
    assert second.returncode == 1 and "already exists" in second.stderr
    assert cfg.read_text() == "[ingest]\nmax_retries = 4\n"


def test_cli_bad_config_is_one_line_and_nonzero(app_home: Path) -> None:
    cfg = app_home / "bad.toml"
    cfg.write_text("[ingest]\nmax_retries = -1\n")
    out = run_cli("--config", str(cfg), "config", "show")
    assert out.returncode == 78
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "ingest.max_retries" in lines[0] and str(cfg) in lines[0]
    assert out.stdout == ""
