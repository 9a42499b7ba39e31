"""Keeping the private Redis server alive: a supervisor thread of the runtime.

About once a second it calls ``provider.ensure_running()``: a PING, and when
the private server does not answer, a restart with the same data directory
(the append-only file is kept), socket or port and password. After a restart
attempt the next one waits for a capped, jittered backoff (meanwhile the
server is only pinged); a server that stays up for ``stable_after_s`` resets
it, so a crash loop slows down while a single crash is repaired at once. A
changed server pid tells a restart from a plain answer. Every change is
published through ``publish(status, restarts)``: ``"ok"`` or why the server
is down.

No signals, no UI; ``stop()`` only signals, the runtime joins the thread
against its shared stop deadline.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from tray_app.engine.backoff import Backoff

log = logging.getLogger(__name__)

OK = "ok"


def ensure_running(provider: Any) -> bool:
    """``provider.ensure_running()`` (RedisProvider: a PING, a restart of a dead
    private server); whatever happens, a bool."""
    try:
        return bool(provider.ensure_running())
    except Exception as exc:  # noqa: BLE001 - its contract says it never raises; keep it so
        log.warning("private redis: restart failed: %s", exc)
        return False


def server_pid(provider: Any) -> int | None:
    server = getattr(provider, "server", None)
    pid = getattr(server, "pid", None)
    return pid if isinstance(pid, int) else None


def server_answers(provider: Any) -> bool:
    server = getattr(provider, "server", None)
    if server is None:
        return True
    try:
        return bool(server.ping())
    except Exception:  # noqa: BLE001 - a broken socket is "does not answer"
        return False


class ServerWatch(threading.Thread):
    def __init__(self, provider: Any, publish: Callable[[str, int], None], *,
                 interval_s: float = 1.0, backoff: Backoff | None = None,
                 stable_after_s: float = 30.0, on_restart: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="redis-supervisor", daemon=True)
        self.provider = provider
        self.publish = publish
        self.interval_s = interval_s
        self.backoff = backoff or Backoff(1.0, 15.0)
        self.stable_after_s = stable_after_s
        self.on_restart = on_restart
        self.clock = clock
        self.status = OK
        self.restarts = 0
        self.failures = 0                     # failed attempts in the current outage
        self._not_before = 0.0                # no restart attempt before this (monotonic)
        self._restarted_at: float | None = None
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        wait = self.interval_s
        while not self._stopping.wait(wait):
            try:
                wait = self.step()
            except Exception:
                log.exception("private redis supervisor: check failed")
                wait = self.interval_s

    def _set(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.publish(status, self.restarts)

    def step(self) -> float:
        """One check (and restart when due). Returns the seconds until the next."""
        now = self.clock()
        if now < self._not_before:
            # within the backoff after a restart attempt: look, do not restart
            if server_answers(self.provider):
                self._answering(now)
            elif not self.failures:
                # a crash loop: the last restart worked, the next waits for the backoff
                # (after a failed attempt the status already says when the next one is)
                self._set(f"down: crashed again; next restart attempt in {math.ceil(self._not_before - now)} s")
            return min(self.interval_s, self._not_before - now)
        if self._stopping.is_set():
            return self.interval_s
        pid_before = server_pid(self.provider)
        ok = ensure_running(self.provider)   # a ping; a restart when it does not answer
        now = self.clock()
        pid_after = server_pid(self.provider)
        if ok and pid_after == pid_before and not self.failures:
            self._answering(now)
            return self.interval_s
        self._not_before = now + self.backoff.next_delay()
        if not ok:
            self.failures += 1
            left = self._not_before - now
            log.error("private redis: restart attempt %d failed; next in %.1f s", self.failures, left)
            self._set(f"down: restart failed ({self.failures}x); next attempt in {math.ceil(left)} s")
            return min(self.interval_s, left)
        self.restarts += 1
        self._restarted_at = now
        log.warning("private redis: restarted (pid %s -> %s; %d restart%s since start)",
                    pid_before, pid_after, self.restarts, "" if self.restarts == 1 else "s")
        self.failures = 0
        if self.on_restart is not None:
            try:
                self.on_restart()
            except Exception as exc:  # noqa: BLE001 - the engine recreates what it needs itself
                log.warning("private redis: after the restart: %s", exc)
        self.status = ""  # publish the new restart count even if the status was "ok" before
        self._set(OK)
        return self.interval_s

    def _answering(self, now: float) -> None:
        if self.status != OK:
            log.info("private redis: answering again")
        if self.failures:
            self.restarts += 1  # it came back (through our attempts or by itself): count it once
            self._restarted_at = now
            self.failures = 0
            self.status = ""
        self._set(OK)
        if self._restarted_at is not None and now - self._restarted_at >= self.stable_after_s:
            self.backoff.reset()
            self._restarted_at = None


__all__ = ["OK", "ServerWatch", "ensure_running"]
