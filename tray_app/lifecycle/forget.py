"""`telemetry-tray forget`: delete what matches a selector from every place the
app keeps it, and make sure it never comes back.

The order matters (the engine may be live):

1. the rule (rule.py) is persisted first: from then on the engine, the
   monitors and the session table drop anything that matches, whatever is
   in flight;
2. the hook spool, then the streams (``telemetry:events`` with XACK of
   pending entries, ``telemetry:dlq``), so nothing matching is drained or
   re-queued behind our back;
3. telemetry.db in short transactions (a batch committed meanwhile is caught
   by the second sweep), ``cdc:events`` by the sequences deleted, the
   monitors' state, files in the data and log directories;
4. the deletion is made real on disk: ``secure_delete`` on the deleting
   connection, WAL checkpoint(TRUNCATE), VACUUM (or incremental vacuum), and
   an append-only-file rewrite of Redis without the RDB preamble (a stream's
   RDB form keeps deleted entries' bytes; the command form does not).

A dry run counts the same places and changes nothing. What is forgotten is
a Selector (selector.py); each kind of place has its module: db_sweep.py
(SQLite), redis_sweep.py (streams, append-only file), file_sweep.py (spool,
monitor state, logs, report).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

from tray_app import aof
from tray_app.config import Config
from tray_app.lifecycle.db_sweep import compact_sqlite, sweep_database
from tray_app.lifecycle.file_sweep import refresh_report, sweep_logs, sweep_monitor_state, sweep_spool
from tray_app.lifecycle.redis_sweep import await_history_gone, rewrite_aof, sweep_stream
from tray_app.lifecycle.selector import TIME_HELP, Outcome, Selector, parse_time
from tray_app.redis_conn import CDC_STREAM, DLQ_STREAM, EVENTS_STREAM, GROUP, wants_managed

log = logging.getLogger(__name__)


@contextmanager
def _no_hold() -> Iterator[None]:
    yield


def forget(cfg: Config, sel: Selector, *, dry_run: bool = False, client: redis.Redis | None = None,
           redis_error: str | None = None, hold: Callable[[], Any] = _no_hold) -> Outcome:
    """Forget what ``sel`` selects everywhere (see the module doc). ``client``:
    Redis (None when it cannot be reached: ``redis_error`` says why). ``hold``:
    a context manager that keeps the engine still meanwhile (pauses it)."""
    out = Outcome(sel, dry_run)
    r = sel.as_rule()
    paths = cfg.paths
    if not dry_run:
        sel.persist(paths.state_dir)  # first: whatever is in flight is dropped from now on
    with hold():
        out.add("spool files", sweep_spool(paths.spool_dir, sel, r, dry_run))
        stream_ids: list[str] = []
        if client is not None:
            match = lambda f: sel.matches_fields(f, r)  # noqa: E731
            stream_ids = sweep_stream(client, EVENTS_STREAM, match, dry_run, group=GROUP)
            out.add(EVENTS_STREAM, len(stream_ids))
            out.add(DLQ_STREAM, len(sweep_stream(client, DLQ_STREAM, match, dry_run)))
        else:
            why = (redis_error or "unreachable").rstrip(".")
            out.problems.append(f"Redis: {why}; queued events, dead letters and the change feed were not "
                                "checked (the rule drops them when they are read)")
        seqs: set[int] = set()
        db_ok = True
        for _sweep in range(1 if dry_run else 2):  # the second catches a batch committed meanwhile
            try:
                seqs |= sweep_database(paths.database, sel, out, stream_ids)
            except sqlite3.Error as exc:  # damaged, locked for long: that place's problem, the rest goes on
                db_ok = False
                out.problems.append(f"{paths.database}: {exc}; its rows were not forgotten "
                                    "(run forget again once it opens)")
                break
            if client is not None:
                def cdc_match(f: dict[Any, Any]) -> bool:
                    seq = f.get(b"sequence", f.get("sequence"))
                    try:
                        if seq is not None and int(seq) in seqs:
                            return True
                    except ValueError:
                        pass
                    return sel.matches_fields(f, r)
                out.add(CDC_STREAM, len(sweep_stream(client, CDC_STREAM, cdc_match, dry_run)))
        try:
            out.add("monitor state", sweep_monitor_state(paths.state_dir, sel, dry_run, out))
        except sqlite3.Error as exc:  # a damaged state file: reported, the rest goes on
            out.problems.append(f"the monitors' state ({paths.state_dir / 'monitors'}): {exc}; "
                                "it was not checked")
        out.add("log lines", sweep_logs(paths.log_dir, sel, dry_run))
        if db_ok:
            out.add("usage report", refresh_report(cfg, dry_run))
        if not dry_run:
            try:
                if db_ok:
                    compact_sqlite(paths.database, out)
            except sqlite3.Error as exc:
                out.problems.append(f"{paths.database}: not compacted ({exc}); deleted rows may stay in its free "
                                    "pages and WAL until forget runs again")
            if client is not None:
                try:
                    out.compacted.append(rewrite_aof(client))
                    if wants_managed(cfg):
                        await_history_gone(paths.data_dir / "redis" / aof.AOF_DIRNAME)
                except redis.RedisError as exc:
                    out.problems.append(f"Redis: the append-only file was not rewritten ({exc}); "
                                        "it may still hold the deleted entries until its next rewrite")
    # the log names the kind of selector only: a session id or path would be a new copy of it
    log.info("forget (%s)%s: %s", sel.kind, " (dry run)" if dry_run else "",
             ", ".join(f"{k} {v}" for k, v in out.counts.items()))
    return out


__all__ = ["Outcome", "Selector", "TIME_HELP", "forget", "parse_time"]
