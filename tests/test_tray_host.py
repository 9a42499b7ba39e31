"""The tray's fallback diagnostics bundle. (Hosting the engine is the
runtime's job: tests/test_runtime.py.)"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tray_app.config import load_config
from tray_app.engine.health import RUNNING, HealthSnapshot
from tray_app.tray.actions import minimal_bundle


def test_minimal_bundle_holds_health_and_masked_config(app_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://:s3cret-pw@127.0.0.1:6390/0")
    cfg = load_config()
    cfg.paths.log_dir.mkdir(parents=True)
    cfg.paths.log_file.write_text("x" * 300_000 + "last line\n")
    snap = HealthSnapshot(state=RUNNING, today_events=42)
    path = minimal_bundle(cfg, snap, "Running\nQuit")
    assert path.parent == cfg.paths.data_dir / "diagnostics" and (path.stat().st_mode & 0o777) == 0o600
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"info.json", "health.json", "config.json", "tray-menu.txt", "telemetry-tray.log"} <= names
        assert json.loads(zf.read("health.json"))["today_events"] == 42
        config = zf.read("config.json").decode()
        assert "s3cret-pw" not in config and "***" in config
        log = zf.read("telemetry-tray.log")
        assert log.endswith(b"last line\n") and len(log) <= 256 * 1024
    again = minimal_bundle(cfg, snap)
    assert again != path                         # never overwrites an earlier bundle
