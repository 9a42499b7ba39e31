"""`telemetry-tray hooks install --claude --otel`: Claude Code's own
OpenTelemetry export pointed at our local receiver, through the env block of
its settings.json (real CLI subprocesses, a temp HOME): the variables and
their privacy switches, dry run, round trips byte for byte, conflicts with
the user's own values (nothing written), idempotence, file modes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from test_installers import USER_CLAUDE, claude_file, cli, cursor_file, ours_claude, put
from tray_app.capture import claude_otel, installers

#: the receiver port the install must use: [otlp] receiver_port when the build has that section
PORT = 4999
BASE = {
    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
    "OTEL_METRICS_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{PORT}",
}


@pytest.fixture()
def home(tmp_path: Path, app_home: Path) -> dict[str, str]:
    """Environment for the CLI with HOME (and nothing else of the user's) in tmp."""
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    env["HOME"] = str(tmp_path / "user")
    (tmp_path / "user").mkdir()
    return env


def env_of(h: dict[str, str]) -> dict[str, str]:
    return json.loads(claude_file(h).read_text()).get("env", {})


def with_port(h: dict[str, str], **extra: str) -> dict[str, str]:
    return {**h, "TELEMETRY_TRAY_OTLP_RECEIVER_PORT": str(PORT), **extra}


def test_install_adds_the_variables_next_to_the_users_own(home: dict[str, str]) -> None:
    h = with_port(home)
    put(claude_file(h), USER_CLAUDE)
    r = cli(h, "install", "--claude", "--otel")
    assert r.returncode == 0, r.stderr
    assert f"OpenTelemetry export to http://127.0.0.1:{PORT}" in r.stdout
    env = env_of(h)
    # the user's variable first and unchanged, then ours, then the record of what we added
    want = {**BASE, "OTEL_LOG_USER_PROMPTS": "1", "OTEL_LOG_TOOL_DETAILS": "1"}
    assert list(env)[0] == "FOO" and env["FOO"] == "bar"
    assert {k: v for k, v in env.items() if k not in ("FOO", claude_otel.MARK)} == want
    assert env[claude_otel.MARK].split(",") == list(want)
    data = json.loads(claude_file(h).read_text())
    assert ours_claude(data, "Stop")  # the hooks too
    assert not cursor_file(h).exists()  # --claude only
    st = cli(h, "status", "--json")
    assert json.loads(st.stdout)["claude"]["otel"] == "on"


def test_privacy_settings_decide_what_claude_code_sends(home: dict[str, str]) -> None:
    h = with_port(home, TELEMETRY_TRAY_CAPTURE_PROMPTS="none", TELEMETRY_TRAY_CAPTURE_FILE_CONTENTS="hash")
    r = cli(h, "install", "--claude", "--otel")
    assert r.returncode == 0, r.stderr
    assert "prompt text: no, tool details: no" in r.stdout
    env = env_of(h)
    assert "OTEL_LOG_USER_PROMPTS" not in env and "OTEL_LOG_TOOL_DETAILS" not in env
    assert {k: v for k, v in env.items() if k != claude_otel.MARK} == BASE
    # prompts back to "full": a re-install adds the switch; back to "none": it goes again
    h2 = with_port(home, TELEMETRY_TRAY_CAPTURE_FILE_CONTENTS="hash")
    assert cli(h2, "install", "--claude", "--otel").returncode == 0
    assert env_of(h2)["OTEL_LOG_USER_PROMPTS"] == "1"
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    assert "OTEL_LOG_USER_PROMPTS" not in env_of(h)


def test_dry_run_shows_the_diff_and_writes_nothing(home: dict[str, str]) -> None:
    h = with_port(home)
    text = put(claude_file(h), USER_CLAUDE)
    before = claude_file(h).stat().st_mtime_ns
    r = cli(h, "install", "--claude", "--otel", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f'+    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:{PORT}",' in r.stdout
    assert '+    "CLAUDE_CODE_ENABLE_TELEMETRY": "1",' in r.stdout
    assert "dry run: nothing written" in r.stderr
    assert claude_file(h).read_text() == text and claude_file(h).stat().st_mtime_ns == before
    assert not Path(str(claude_file(h)) + installers.BACKUP_SUFFIX).exists()


def test_round_trips_restore_the_exact_original(home: dict[str, str]) -> None:
    h = with_port(home)
    odd = '{ "model":"opus",\n   "env": {"A": "1"}}'  # odd spacing, no trailing newline
    claude_file(h).parent.mkdir(parents=True)
    claude_file(h).write_text(odd)
    os.chmod(claude_file(h), 0o640)
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    assert stat.S_IMODE(claude_file(h).stat().st_mode) == 0o640  # mode kept
    assert cli(h, "uninstall", "--claude").returncode == 0
    assert claude_file(h).read_text() == odd
    # hooks first, then --otel on top: uninstall --otel takes only the variables back,
    # uninstall the rest, and the file is the user's again
    assert cli(h, "install", "--claude").returncode == 0
    hooks_only = claude_file(h).read_text()
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    r = cli(h, "uninstall", "--claude", "--otel")
    assert r.returncode == 0, r.stderr
    assert claude_file(h).read_text() == hooks_only
    assert cli(h, "uninstall", "--claude").returncode == 0
    assert json.loads(claude_file(h).read_text()) == json.loads(odd)
    assert stat.S_IMODE(claude_file(h).stat().st_mode) == 0o640
    # no file before: install creates it, uninstall deletes it
    claude_file(h).unlink()
    Path(str(claude_file(h)) + installers.BACKUP_SUFFIX).unlink(missing_ok=True)
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    assert cli(h, "uninstall", "--claude").returncode == 0
    assert not claude_file(h).exists()


def test_reinstall_changes_nothing(home: dict[str, str]) -> None:
    h = with_port(home)
    put(claude_file(h), USER_CLAUDE)
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    before = (claude_file(h).read_bytes(), claude_file(h).stat().st_mtime_ns)
    r = cli(h, "install", "--claude", "--otel")
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert (claude_file(h).read_bytes(), claude_file(h).stat().st_mtime_ns) == before
    # a plain install keeps the variables (only uninstall takes them back)
    r = cli(h, "install", "--claude")
    assert r.returncode == 0 and "unchanged" in r.stdout


def test_a_users_different_value_is_a_conflict_and_nothing_is_written(home: dict[str, str]) -> None:
    h = with_port(home)
    user = {**USER_CLAUDE, "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://corp.example:4318",
                                   "OTEL_METRICS_EXPORTER": "prometheus"}}
    text = put(claude_file(h), user)
    r = cli(h, "install", "--otel")  # both assistants: not even Cursor's file is written
    assert r.returncode == 78, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='https://corp.example:4318'" in lines[0]
    assert "OTEL_METRICS_EXPORTER='prometheus'" in lines[0] and "nothing written" in lines[0]
    assert claude_file(h).read_text() == text
    assert not cursor_file(h).exists()
    assert not Path(str(claude_file(h)) + installers.BACKUP_SUFFIX).exists()
    # a signal-specific endpoint of the user's would send the metrics elsewhere: a conflict too
    put(claude_file(h), {"env": {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x:4318/v1/metrics"}})
    r = cli(h, "install", "--claude", "--otel")
    assert r.returncode == 78 and "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT" in r.stderr


def test_prompt_logging_the_privacy_settings_forbid_is_a_conflict(home: dict[str, str]) -> None:
    h = with_port(home, TELEMETRY_TRAY_CAPTURE_PROMPTS="none")
    text = put(claude_file(h), {"env": {"OTEL_LOG_USER_PROMPTS": "1"}})
    r = cli(h, "install", "--claude", "--otel")
    assert r.returncode == 78
    assert "OTEL_LOG_USER_PROMPTS" in r.stderr and "prompts is not" in r.stderr
    assert claude_file(h).read_text() == text


def test_the_users_equal_values_stay_the_users(home: dict[str, str]) -> None:
    h = with_port(home)
    put(claude_file(h), {"env": {"CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_LOGS_EXPORTER": "otlp"}})
    assert cli(h, "install", "--claude", "--otel").returncode == 0
    env = env_of(h)
    added = env[claude_otel.MARK].split(",")
    assert "CLAUDE_CODE_ENABLE_TELEMETRY" not in added and "OTEL_LOGS_EXPORTER" not in added
    assert cli(h, "uninstall", "--claude").returncode == 0
    assert env_of(h) == {"CLAUDE_CODE_ENABLE_TELEMETRY": "1", "OTEL_LOGS_EXPORTER": "otlp"}


def test_otel_is_for_claude_only(home: dict[str, str]) -> None:
    r = cli(home, "install", "--cursor", "--otel")
    assert r.returncode == 64 and "--otel" in r.stderr
    assert not cursor_file(home).exists()


def test_otel_is_refused_while_the_receiver_is_off(home: dict[str, str]) -> None:
    r = cli(with_port(home, TELEMETRY_TRAY_OTLP_RECEIVER_ENABLED="false"), "install", "--claude", "--otel")
    assert r.returncode == 64 and "receiver is off" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not claude_file(home).exists()
