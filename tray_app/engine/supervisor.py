"""Supervisor: no state where the process lives and nothing ingests.

Every engine thread that can die (consumer, maintenance, each monitor; the
consumer itself replaces its CDC publisher and reports it here) is watched.
A thread that ended while the engine was not stopping is noticed within
``interval_s``: the reason goes to the log and to health (``thread_errors``,
and the engine state while the consumer is down), and a new thread is built
by the slot's factory and started after a capped, jittered backoff. A thread
that has run for ``healthy_after_s`` since its last start gets a fresh backoff.

Threads are guarded when they are put in a slot: the exception that ends one
is kept on the thread as ``crashed`` (the consumer keeps its own as well).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tray_app.engine.backoff import Backoff
from tray_app.engine.health import DEGRADED, Health

log = logging.getLogger(__name__)

Factory = Callable[[Any], Any]               # old thread -> new (not started) thread
Replaced = Callable[[str, Any, Any], None]   # (name, old, new) -> update references


def guard(thread: threading.Thread) -> threading.Thread:
    """Keep the exception that ends ``thread`` as ``thread.crashed``."""
    inner = thread.run

    def run() -> None:
        try:
            inner()
        except BaseException as exc:  # noqa: BLE001 - recorded for the supervisor
            setattr(thread, "crashed", exc)
            log.exception("%s thread died", thread.name)

    setattr(thread, "run", run)
    return thread


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return "exited unexpectedly"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Slot:
    name: str
    factory: Factory
    thread: Any
    backoff: Backoff
    started_at: float = 0.0
    restart_at: float | None = None   # set while the thread is dead
    restarts: int = 0
    last_error: str = ""


@dataclass
class _Reports:
    lines: dict[str, str] = field(default_factory=dict)
    restarts: int = 0


class Supervisor(threading.Thread):
    def __init__(self, health: Health, on_replace: Replaced, *, interval_s: float = 0.5,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 healthy_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.health = health
        self.on_replace = on_replace
        self.interval_s = interval_s
        self.healthy_after_s = healthy_after_s
        self.clock = clock
        self._backoff = (backoff_initial_s, backoff_max_s)
        self.slots: dict[str, Slot] = {}
        self._reports = _Reports()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def watch(self, name: str, thread: Any, factory: Factory) -> None:
        """Watch ``thread`` (guarded now; started by its owner)."""
        guard(thread)
        with self._lock:
            self.slots[name] = Slot(name, factory, thread, Backoff(*self._backoff), started_at=self.clock())

    def report(self, name: str, error: str, *, restarted: bool = True) -> None:
        """A thread that its owner already replaced (the consumer's publisher),
        or, with ``restarted=False``, a part that could not start at all."""
        if restarted:
            log.error("%s thread died (%s); replaced", name, error)
        with self._lock:
            self._reports.restarts += int(restarted)
            self._reports.lines[name] = f"{name}: {error}" + (" (restarted)" if restarted else "")
        self._publish()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the supervisor itself must not die
                log.exception("supervisor check failed")

    def check(self) -> None:
        """One look at every slot: notice deaths, restart when the backoff is over."""
        now = self.clock()
        changed = False
        with self._lock:
            slots = list(self.slots.values())
        for slot in slots:
            if self._stopping.is_set():
                return
            if slot.thread.is_alive():
                if slot.restarts and now - slot.started_at >= self.healthy_after_s:
                    slot.backoff.reset()
                continue
            if getattr(slot.thread, "fatal", None) is not None:
                continue  # cannot run at all (e.g. a database schema too new): the face reports it
            if slot.restart_at is None:
                slot.last_error = describe(getattr(slot.thread, "crashed", None))
                delay = slot.backoff.next_delay()
                slot.restart_at = now + delay
                log.error("%s thread died (%s); restarting in %.1f s", slot.name, slot.last_error, delay)
                changed = True
            if now >= slot.restart_at:
                self._restart(slot, now)
                changed = True
        if changed:
            self._publish()

    def _restart(self, slot: Slot, now: float) -> None:
        old = slot.thread
        try:
            new = slot.factory(old)
        except Exception as exc:  # noqa: BLE001 - try again after the next backoff
            slot.last_error = f"cannot restart: {describe(exc)}"
            slot.restart_at = now + slot.backoff.next_delay()
            log.exception("%s: could not build a new thread", slot.name)
            return
        guard(new)
        self.on_replace(slot.name, old, new)
        slot.thread = new
        slot.restarts += 1
        slot.started_at = now
        slot.restart_at = None
        new.start()
        log.info("%s thread restarted (%d restarts)", slot.name, slot.restarts)

    def _publish(self) -> None:
        with self._lock:
            lines = dict(self._reports.lines)
            restarts = self._reports.restarts
            for slot in self.slots.values():
                if slot.last_error:
                    state = "restarting" if slot.restart_at is not None else \
                        f"restarted {slot.restarts} time{'s' if slot.restarts != 1 else ''}"
                    lines[slot.name] = f"{slot.name}: {slot.last_error} ({state})"
                restarts += slot.restarts
            down = [s.name for s in self.slots.values() if s.restart_at is not None]
        changes: dict[str, Any] = {"thread_errors": tuple(lines[k] for k in sorted(lines)),
                                   "thread_restarts": restarts}
        if "consumer" in down:
            # nothing else sets the state while the consumer is down
            changes.update(state=DEGRADED, reasons=(f"Ingest stopped: {lines['consumer']}",))
        self.health.update(**changes)


__all__ = ["Supervisor", "Slot", "guard", "describe"]
