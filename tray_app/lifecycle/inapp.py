"""Forgetting from inside the app (the tray's "Forget the last hour"): the
same `forget` as the command line, with the running engine's own Redis
connection and its own pause as the hold. Runs on the tray's action thread,
never the UI thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tray_app.config import Config
from tray_app.engine.health import DEGRADED, PAUSED, STOPPED
from tray_app.lifecycle.forget import Outcome, Selector, forget

log = logging.getLogger(__name__)

#: how long the engine gets to finish its batch in hand and show "paused"
PAUSE_WAIT_S = 10.0


@contextmanager
def runtime_hold(runtime: Any, wait_s: float = PAUSE_WAIT_S) -> Iterator[None]:
    """The engine paused meanwhile (batch in hand committed, monitors still),
    then resumed, unless it was paused already."""
    paused_here = runtime.paused is False and runtime.pause()
    if paused_here:
        deadline = time.monotonic() + wait_s
        while runtime.health().state not in (PAUSED, DEGRADED, STOPPED) and time.monotonic() < deadline:
            time.sleep(0.05)
    try:
        yield
    finally:
        if paused_here:
            runtime.resume()


def forget_recent(cfg: Config, runtime: Any, seconds: float, now: float | None = None) -> Outcome:
    """Forget everything of the last ``seconds`` (see forget.forget)."""
    now = time.time() if now is None else now
    sel = Selector(start=now - seconds, end=now)
    provider = getattr(runtime, "provider", None)
    endpoint = getattr(provider, "endpoint", None)
    client: Any = None
    why: str | None = "the engine has not connected to Redis yet"
    if endpoint is not None:
        client, why = endpoint.client(socket_timeout=30), None
    try:
        return forget(cfg, sel, client=client, redis_error=why, hold=lambda: runtime_hold(runtime))
    finally:
        if client is not None:
            client.close()


def summary(out: Outcome, what: str = "the last hour") -> str:
    """The notification's text: ``Forgot 42 events from the last hour.``"""
    n = out.total_events
    text = f"Forgot {n:,} event{'s' if n != 1 else ''} from {what}."
    if out.problems:
        text += " " + " ".join(out.problems)
    return text


__all__ = ["forget_recent", "runtime_hold", "summary"]
