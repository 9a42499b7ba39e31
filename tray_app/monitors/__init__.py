"""Monitors: background threads of the engine that read the assistants' own
stores and emit events into ``telemetry:events``.

``build_monitors(cfg, endpoint)`` returns the enabled ones. Each is a
:class:`~tray_app.monitors.base.MonitorThread` with ``name``, ``start()``,
``stop()`` (signals only), ``join(timeout)``, ``pause()``, ``resume()`` and
``health()``; the :class:`SessionMonitor` also has ``on_commit(events)``,
which the engine's consumer calls after each committed batch.
"""

from __future__ import annotations

from tray_app.config import Config
from tray_app.monitors.base import MonitorThread
from tray_app.monitors.claude_transcripts import ClaudeCodeTranscriptMonitor
from tray_app.monitors.cursor_db import CursorDatabaseMonitor
from tray_app.monitors.sessions import SessionMonitor
from tray_app.redis_conn import Endpoint

Monitor = MonitorThread


def build_monitors(cfg: Config, endpoint: Endpoint) -> list[Monitor]:
    """The monitors turned on in ``cfg.monitors`` (not started)."""
    out: list[Monitor] = []
    if cfg.monitors.cursor_enabled:
        out.append(CursorDatabaseMonitor(cfg, endpoint))
    if cfg.monitors.claude_enabled:
        out.append(ClaudeCodeTranscriptMonitor(cfg, endpoint))
    if cfg.monitors.sessions_enabled:
        out.append(SessionMonitor(cfg, endpoint))
    return out


__all__ = ["Monitor", "MonitorThread", "build_monitors", "CursorDatabaseMonitor",
           "ClaudeCodeTranscriptMonitor", "SessionMonitor"]
