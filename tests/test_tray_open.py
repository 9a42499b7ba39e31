"""Open data folder / Open logs: the opener runs without blocking the caller, is
always reaped (no defunct child), and a failure reaches the user with the path."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_for
from desktop import zombie_children

from tray_app.tray import actions
from tray_app.tray.actions import open_path

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")


def fake_opener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "xdg-open").write_text("#!/bin/sh\n" + script)
    (bin_dir / "xdg-open").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(actions.sys, "platform", "linux")


def test_no_file_manager_is_reported_with_the_path_and_reaped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    fake_opener(tmp_path, monkeypatch, "exit 3\n")
    failures: list[tuple[Path, str, str]] = []
    told = threading.Event()

    def on_failure(path: Path, reason: str) -> None:
        failures.append((path, reason, threading.current_thread().name))
        told.set()

    caplog.set_level("INFO", logger="tray_app.tray.actions")
    assert open_path(tmp_path, on_failure=on_failure) is True      # it started
    assert told.wait(10)
    assert failures == [(tmp_path, "xdg-open exited 3: no application found to open it "
                                   "(is a file manager installed?)", "tray-open-wait")]
    assert zombie_children(os.getpid()) == []
    assert f"opened {tmp_path}" not in caplog.text
    assert f"cannot open {tmp_path}: xdg-open exited 3" in caplog.text


def test_a_slow_opener_does_not_block_and_is_still_reaped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A viewer that stays in the foreground (xdg-open's generic mode): past the
    verdict time it counts as opened, and it is reaped whenever it ends."""
    done = tmp_path / "release"
    fake_opener(tmp_path, monkeypatch, f'while [ ! -e "{done}" ]; do sleep 0.05; done\nexit 0\n')
    failures: list[str] = []
    caplog.set_level("INFO", logger="tray_app.tray.actions")
    started = time.monotonic()
    assert open_path(tmp_path, on_failure=lambda p, r: failures.append(r), verdict_s=0.3)
    assert time.monotonic() - started < 0.5                           # the caller never waits
    wait_for(lambda: f"opened {tmp_path} (xdg-open still running" in caplog.text, timeout=10,
             what="the 'still running' verdict")
    done.write_text("")
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == "tray-open-wait"], timeout=10,
             what="the waiter to reap the viewer")
    assert zombie_children(os.getpid()) == [] and failures == []


def test_opener_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(actions.sys, "platform", "linux")
    failures: list[str] = []
    assert open_path(tmp_path, on_failure=lambda p, r: failures.append(f"{p}: {r}")) is False
    assert failures == [f"{tmp_path}: xdg-open is not installed"]
