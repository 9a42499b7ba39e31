"""Helpers for engine tests: synthetic events, pushing, reading rows back."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
import zlib
from pathlib import Path
from typing import Any

import redis

from tray_app import events
from tray_app.redis_conn import EVENTS_STREAM


def make_event(i: int, *, session: str | None = None, size: int = 200, **extra: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": events.new_event_id(),
        "platform": "cursor" if i % 2 else "claude_code",
        "event_type": ("user_prompt", "tool_use", "file_edit", "shell_execution")[i % 4],
        "timestamp": events.utc_now_iso(),
        "session_id": session or f"session-{i % 5}",
        "external_session_id": f"ext-{i % 3}",
        "hook_type": "beforeSubmitPrompt",
        "workspace_hash": f"{i % 7:016x}",
        "payload": {"n": i, "text": "synthetic " * (size // 10)},
        "metadata": {"source": "test_producer", "model": "m-1"},
        "schema_version": "1",
    }
    ev.update(extra)
    return ev


def push(client: redis.Redis, evs: list[dict[str, Any]], chunk: int = 1000) -> list[str]:
    ids: list[str] = []
    for i in range(0, len(evs), chunk):
        pipe = client.pipeline(transaction=False)
        for ev in evs[i:i + chunk]:
            pipe.xadd(EVENTS_STREAM, events.encode(ev))
        ids.extend(x.decode() for x in pipe.execute())
    return ids


def db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    return conn


def row_count(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with closing(db(path)) as c:
            return int(c.execute("SELECT COUNT(*) FROM raw_traces").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def stored_events(path: Path) -> dict[str, dict[str, Any]]:
    """The events in raw_traces (not forget's content-free row that keeps the top sequence)."""
    with closing(db(path)) as c:
        return {eid: json.loads(zlib.decompress(blob))
                for eid, blob in c.execute("SELECT event_id, event_data FROM raw_traces "
                                           "WHERE event_type != 'forgotten'")}


def pending_count(client: redis.Redis) -> int:
    return int(client.xpending(EVENTS_STREAM, "processors")["pending"])


class FakeClock:
    """A monotonic clock the test moves by hand (thread-safe)."""

    def __init__(self, start: float = 0.0) -> None:
        import threading

        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds


@contextmanager
def running_engine(redis_url: str, **kw: Any) -> Iterator[Any]:
    """An Engine (no monitors) on the current TELEMETRY_TRAY_* environment,
    started, and stopped however the test ends."""
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url, ensure_streams

    ep = endpoint_from_url(redis_url)
    client = ep.client()
    ensure_streams(client)
    client.close()
    eng = Engine(load_config(), ep, with_monitors=False, **kw)
    eng.start()
    try:
        yield eng
    finally:
        eng.stop(5)


def terminate(proc: Any, timeout: float = 20) -> None:
    """SIGTERM a test's app process and wait for it (SIGKILL past ``timeout``)."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

