"""The shape every monitor shares: a background thread the dramatiq way.

``stop()`` only signals; the loop waits with ``Event.wait(poll_interval_s)``
(never ``time.sleep``) and runs one ``run_once()`` pass per wake-up. The
owner (the engine) joins every thread against one shared deadline.

Shutdown order inside a monitor: stop signalled -> the pass in hand finishes
(its XADDs complete, then its offsets/watermarks are saved) -> the loop
exits -> ``close()`` releases connections. A pass interrupted by a crash
leaves its state unsaved, so the next pass re-reads and re-emits the same
deterministic event ids, which the engine's idempotent insert drops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def iso_from_unix(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class MonitorThread(threading.Thread):
    """Subclasses implement ``run_once()`` (one pass, may raise) and may
    override ``close()`` and ``extra_health()``."""

    #: how long to wait before the next pass after one that failed
    error_backoff_s: float | None = None
    #: while a history is imported, a progress line in the log this often
    progress_log_s: float = 10.0

    def __init__(self, name: str, poll_interval_s: float, *, clock: Clock = time.time,
                 monotonic: Clock = time.monotonic) -> None:
        super().__init__(name=name, daemon=True)
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.monotonic = monotonic
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._paused = threading.Event()
        self._lock = threading.Lock()
        self._h: dict[str, Any] = {
            "state": "idle", "passes": 0, "last_pass_at": None, "last_pass_ms": None,
            "items_emitted": 0, "errors": 0, "last_error": "", "last_error_at": None,
        }
        self._importing = False
        self._progress_logged = 0.0

    # -- control (called from other threads) ------------------------------------------------

    def stop(self) -> None:
        """Signal only: the pass in hand finishes, then the loop exits."""
        self._stopping.set()
        self._wake.set()

    def pause(self) -> None:
        self._paused.set()
        self._set(state="paused")

    def resume(self) -> None:
        self._paused.clear()
        self._set(state="running")
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        self._set(state="paused" if self.paused else "running")
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                wait_s = self.poll_interval_s
                if not self._paused.is_set():
                    if not self.pass_once():
                        wait_s = self.error_backoff_s or self.poll_interval_s
                    wait_s = min(wait_s, self.next_wait_s())
                self._wake.wait(max(0.0, wait_s))
        finally:
            try:
                self.close()
            except Exception:  # noqa: BLE001 - closing must not mask the exit
                log.exception("%s: close failed", self.name)
            self._set(state="stopped")

    def pass_once(self) -> bool:
        """One pass with timing and error accounting. True when it succeeded."""
        started = self.monotonic()
        try:
            emitted = self.run_once()
        except Exception as exc:  # noqa: BLE001 - a monitor never dies of one bad pass
            self.record_error(exc)
            return False
        finally:
            ms = (self.monotonic() - started) * 1000.0
            with self._lock:
                self._h["passes"] += 1
                self._h["last_pass_at"] = iso_from_unix(self.clock())
                self._h["last_pass_ms"] = round(ms, 3)
        if emitted:
            self.count_emitted(emitted)
        return True

    def next_wait_s(self) -> float:
        """Subclasses may ask to run sooner (e.g. a backlog left for the next pass)."""
        return self.poll_interval_s

    def run_once(self) -> int:  # pragma: no cover - abstract
        """One pass; returns how many events it emitted."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (called on the monitor's own thread at exit)."""

    # -- health -----------------------------------------------------------------------------

    def record_error(self, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        text = text[:500]
        with self._lock:
            self._h["errors"] += 1
            self._h["last_error"] = text
            self._h["last_error_at"] = iso_from_unix(self.clock())
        log.warning("%s: %s", self.name, text)

    def count_emitted(self, n: int) -> None:
        with self._lock:
            self._h["items_emitted"] += n

    def _set(self, **changes: Any) -> None:
        with self._lock:
            self._h.update(changes)

    def extra_health(self) -> dict[str, Any]:
        return {}

    def report_import(self, backlog: bool, done: float, total: float, what: str, unit: str = "MB",
                      scale: float = 1e6, detail: str = "") -> None:
        """While a history is imported (a first start, a restored backup): how far,
        as ``import_progress_pct`` in the monitor's health (the tray shows the
        lowest) and in the log every ``progress_log_s``; once more when done."""
        if not backlog and not self._importing:
            return
        mlog = logging.getLogger(type(self).__module__)  # under the monitor's own logger
        if backlog:
            pct = min(100.0, 100.0 * done / (total or 1))
            self._set(import_progress_pct=round(pct, 1))
            now = self.monotonic()
            if not self._importing or now - self._progress_logged >= self.progress_log_s:
                mlog.info("%s: importing %s: %.0f of %.0f %s (%.0f%%)%s", self.name, what, done / scale,
                         total / scale, unit, pct, f", {detail}" if detail else "")
                self._progress_logged = now
            self._importing = True
        else:
            self._set(import_progress_pct=None)
            mlog.info("%s: %s imported: %.0f %s%s", self.name, what, total / scale, unit,
                     f", {detail}" if detail else "")
            self._importing = False

    def health(self) -> dict[str, Any]:
        """JSON-serialisable status for the engine's health snapshot."""
        with self._lock:
            out = dict(self._h)
        out["poll_interval_s"] = self.poll_interval_s
        out.update(self.extra_health())
        return out
