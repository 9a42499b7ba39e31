"""Logging: rotating private file, startup lines with the password masked,
uncaught exceptions (any thread) in the log."""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from pathlib import Path

from conftest import RedisProc, wait_for
from test_engine_faults import start_headless
from tray_app.config import load_config
from tray_app.logsetup import setup_logging


def test_headless_startup_lines_mask_the_password(app_home: Path, server_binary, tmp_path: Path) -> None:
    srv = RedisProc(server_binary, tmp_path / "pw-redis", password="canary-pw-4711").start()
    try:
        env = {**os.environ, "TELEMETRY_TRAY_REDIS_URL": srv.url}
        console = app_home / "console.log"
        proc = start_headless(env, console)
        log_file = load_config().paths.log_file
        try:
            wait_for(lambda: log_file.exists() and "engine: starting consumer" in log_file.read_text(),
                     timeout=30, what="engine start logged")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        text = log_file.read_text()
        for needle in ("config: defaults", "redis: redis://:***@127.0.0.1:", f"database: {load_config().paths.database}",
                       "versions: telemetry-tray"):
            assert needle in text, needle
        assert "canary-pw-4711" not in text and "canary-pw-4711" not in console.read_text()
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    finally:
        srv.stop()


def test_uncaught_thread_exception_goes_to_the_log(app_home: Path) -> None:
    cfg = load_config()
    setup_logging(cfg)
    try:
        def boom() -> None:
            raise RuntimeError("kaboom-in-a-thread")

        t = threading.Thread(target=boom, name="worker-x")
        t.start()
        t.join()
        for h in logging.getLogger().handlers:
            h.flush()
        text = cfg.paths.log_file.read_text()
        assert "uncaught exception in thread worker-x" in text and "kaboom-in-a-thread" in text
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_telemetry_tray", False):
                logging.getLogger().removeHandler(h)
                h.close()
        threading.excepthook = threading.__excepthook__


def test_log_file_is_size_bounded(app_home: Path, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_LOGGING_MAX_BYTES", "20000")
    monkeypatch.setenv("TELEMETRY_TRAY_LOGGING_BACKUP_COUNT", "2")
    cfg = load_config()
    setup_logging(cfg)
    try:
        log = logging.getLogger("tray_app.test")
        for i in range(2000):
            log.warning("line %d %s", i, "x" * 50)
        files = sorted(cfg.paths.log_dir.glob("telemetry-tray.log*"))
        assert len(files) == 3  # the file and two backups, no more
        assert all(f.stat().st_size <= 20000 for f in files)
    finally:
        for h in list(logging.getLogger().handlers):
            if getattr(h, "_telemetry_tray", False):
                logging.getLogger().removeHandler(h)
                h.close()
