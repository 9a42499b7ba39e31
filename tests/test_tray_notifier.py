"""Notification delivery without a notification service: the platform's
command, else the log. (Delivery through a real daemon: test_desktop_e2e.py.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import run_cli

from tray_app.single_instance import SingleInstance
from tray_app.tray.notifier import Notifier, fallback_command


def fake_command(bin_dir: Path, name: str, log: Path, exit_code: int = 0) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done >> "
                      f"'{log}'\necho --- >> '{log}'\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture()
def no_dbus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a session bus address where nothing listens: desktop-notifier cannot deliver
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")


def test_falls_back_to_notify_send_when_desktop_notifier_cannot_deliver(
        no_dbus: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "notify-send.args"
    fake_command(tmp_path / "bin", "notify-send", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    icon = tmp_path / "icon.png"
    icon.write_bytes(b"png")
    n = Notifier(app_icon=icon).start()
    try:
        with caplog.at_level("INFO", logger="tray_app.tray.notifier"):
            fut = n.notify("Redis unreachable", "1,204 events spooled", "critical", kind="redis")
            assert fut is not None and fut.result(15) == "notify-send"
    finally:
        n.stop()
    args = log.read_text().splitlines()
    assert args[:4] == ["--app-name", "Telemetry Tray", "--urgency", "critical"]
    assert args[4:6] == ["--icon", str(icon)]
    assert args[6:8] == ["Redis unreachable", "1,204 events spooled"]
    assert "notification via notify-send [redis] Redis unreachable: 1,204 events spooled" in caplog.text


def test_logs_only_when_no_command_works(no_dbus: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    fake_command(tmp_path / "bin", "notify-send", tmp_path / "args", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    n = Notifier().start()
    try:
        with caplog.at_level("INFO", logger="tray_app.tray.notifier"):
            via = n.notify("Database writes failing: disk full", "x").result(15)  # type: ignore[union-attr]
    finally:
        n.stop()
    assert via.startswith("log only (notify-send exited 1")
    assert "Database writes failing: disk full" in caplog.text
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    n = Notifier().start()
    try:
        assert n.notify("t", "m").result(15) == "log only (notify-send not installed)"  # type: ignore[union-attr]
    finally:
        n.stop()


def test_disabled_in_config_only_logs(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(enabled=False)
    with caplog.at_level("INFO", logger="tray_app.tray.notifier"):
        assert n.notify("Redis unreachable", "m", kind="redis") is None
    assert "notification (disabled in config) [redis] Redis unreachable" in caplog.text


def test_platform_commands() -> None:
    mac = fallback_command('Say "hi"', "back\\slash", platform="darwin")
    assert mac is not None and mac[:2] == ["osascript", "-e"]
    assert mac[2] == ('display notification "back\\\\slash" with title "Telemetry Tray" '
                      'subtitle "Say \\"hi\\""')
    assert fallback_command("t", "m", platform="win32") is None
    assert fallback_command("t", "m", "low", platform="linux") == [
        "notify-send", "--app-name", "Telemetry Tray", "--urgency", "low", "t", "m"]


def test_second_instance_says_already_running_and_exits_0(app_home: Path) -> None:
    from tray_app.config import load_config

    cfg = load_config()
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    with SingleInstance(cfg.paths.lock_file):  # the first instance
        res = run_cli(env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stderr
    assert "Traceback" not in res.stderr
