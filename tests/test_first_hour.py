"""A newcomer's first hour: the README's commands as written, in a new shell,
and commands that leave the running app's files alone. Real processes:
bash, `python -m tray_app run --headless`, valkey-server, `telemetry-tray init`.
Every HOME here is a temp directory; the real one is never touched."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, need, run_cli, wait_for
from tray_app import __version__
from tray_app.config import load_config

README = ROOT / "README.md"


# ----------------------------------------------------------------------------- the running app's endpoint file

@pytest.fixture()
def headless_engine(app_home: Path, server_binary, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:  # type: ignore[no-untyped-def]
    """`telemetry-tray run --headless` with its private Redis, under the temp home."""
    log = open(tmp_path / "headless.log", "a")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=dict(os.environ), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_init_leaves_the_running_apps_endpoint_file_alone(app_home: Path,
                                                          headless_engine: subprocess.Popen[str]) -> None:
    cfg = load_config()
    endpoint = cfg.paths.endpoint_file
    wait_for(lambda: run_cli("status", env=dict(os.environ), timeout=30).returncode == 0, timeout=45,
             what="the headless engine running")
    before = endpoint.read_bytes()
    assert f'"pid": {headless_engine.pid}'.encode() in before
    stat_before = endpoint.stat()
    r = run_cli("init", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert "private server" in r.stdout
    assert endpoint.read_bytes() == before
    assert endpoint.stat().st_mtime_ns == stat_before.st_mtime_ns
    # the app still answers through what it published
    assert run_cli("status", env=dict(os.environ), timeout=30).returncode == 0
    assert headless_engine.poll() is None


def test_init_without_the_app_publishes_nothing(app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    """`init` alone starts the private server for itself and stops it: it leaves
    no endpoint file pointing at a server that is gone."""
    cfg = load_config()
    r = run_cli("init", env=dict(os.environ))
    assert r.returncode == 0, r.stderr
    assert not cfg.paths.endpoint_file.exists()
