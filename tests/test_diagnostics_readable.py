"""The bundle removes secrets and captured content, and keeps what support
needs: privacy modes, installed hook and event names, counts, versions, even
when those words also appear in the captured payloads it learned to hide."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from test_diagnostics import CANARIES, PROMPT, _event, insert_rows, part, planted, read_zip, user_home  # noqa: F401
from tray_app.capture import installers
from tray_app.config import load_config
from tray_app.diagnostics.bundle import export_bundle


def test_privacy_modes_and_installed_hook_names_stay_readable(planted, user_home: Path, tmp_path: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, srv = planted
    monkeypatch.setenv("TELEMETRY_TRAY_CAPTURE_RESPONSES", "hash")
    monkeypatch.setenv("TELEMETRY_TRAY_CAPTURE_SHELL_OUTPUT", "none")
    cfg = load_config()
    env = dict(os.environ)
    for assistant in installers.ASSISTANTS:
        installers.apply(installers.plan(assistant, True, env))
    # recent payloads carry the same words as the installed hooks' event names
    now = datetime.now(timezone.utc)
    insert_rows(cfg.paths.database, [
        _event(20 + i, ts=now, payload={"hook_event_name": name, "prompt": PROMPT})
        for i, name in enumerate(("UserPromptSubmit", "beforeSubmitPrompt", "PreToolUse", "afterFileEdit"))])

    files = read_zip(export_bundle(cfg, out_dir=tmp_path / "out"))
    everything = "\n".join(files.values()).lower()
    assert not [c for c in CANARIES if c.lower() in everything]

    capture = json.loads(part(files, "config.json"))["settings"]["capture"]
    assert capture["prompts"] == "full" and capture["responses"] == "hash" and capture["shell_output"] == "none"
    hooks = json.loads(part(files, "hooks.json"))
    assert {"UserPromptSubmit", "PreToolUse", "Stop"} <= set(hooks["claude"]["installed"])
    assert {"beforeSubmitPrompt", "afterFileEdit"} <= set(hooks["cursor"]["installed"])
    assert "<redacted" not in json.dumps(hooks)
