"""The batch in hand, and turning its entries into rows or dead letters.

Nothing that belongs to one entry may stop ingest: every failure while
decoding, validating or serialising an entry makes that entry a dead letter
(with a reason) and the rest of the batch is stored. When the insert itself
fails for a reason that is not the database's (``DATABASE_KINDS``), the bad
entry is found by bisecting the batch and dead-lettered alone, after a probe
write shows the database is fine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tray_app.capture import norecord
from tray_app.engine.dlq import dead_letter, retries_exhausted
from tray_app.engine.writer import DATABASE_KINDS, Prepared, SQLiteBatchWriter, Stored
from tray_app.errors import DatabaseError
from tray_app.events import R_RETRIES, InvalidEntry, check_size, decode, entry_size
from tray_app.lifecycle.rule import RuleCache

log = logging.getLogger(__name__)

Fields = dict[bytes | str, bytes | str]
Entry = tuple[str, Fields]
DeadLetter = dict[bytes | str, bytes | str]

#: reasons for failures of one entry that are not contract violations
R_UNDECODABLE = "undecodable"        # decoding raised something unexpected
R_UNSERIALIZABLE = "unserializable"  # the event could not be turned into event_data
R_UNSTORABLE = "unstorable"          # the insert failed for this entry alone


class Batch:
    """Entries read but not yet committed and acknowledged."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, Fields, int]] = []  # (id, fields, delivery count)
        self.sizes: list[int] = []  # entry_size of each entry (measured once, when read)
        self.started: float | None = None
        self.bytes = 0
        #: ids whose attempts are recorded in SQLite (recovered or claimed entries)
        self.recovered: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entries: list[Entry], deliveries: dict[str, int], now: float,
            recovered: Sequence[str] = ()) -> int:
        """Add entries; returns the size in bytes of the largest one."""
        if not entries:
            return 0
        if self.started is None:
            self.started = now
        biggest = 0
        for sid, fields in entries:
            size = entry_size(fields)
            biggest = max(biggest, size)
            self.bytes += size
            self.sizes.append(size)
            self.entries.append((sid, fields, deliveries.get(sid, 1)))
        self.recovered.extend(recovered)
        return biggest

    def clear(self) -> None:
        self.entries = []
        self.sizes = []
        self.started = None
        self.bytes = 0
        self.recovered = []


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class EntryProcessor:
    """Sorts a batch into prepared rows and dead letters (pure apart from the
    writer it is given), and stores the rows with isolation of a bad entry."""

    def __init__(self, writer: SQLiteBatchWriter, consumer: str, max_retries: int,
                 max_entry_bytes: int, state_dir: Path | None = None) -> None:
        self.writer = writer
        self.consumer = consumer
        self.max_retries = max_retries
        self.max_entry_bytes = max_entry_bytes
        self.state_dir = state_dir
        self._norecord = norecord.NoRecord()
        self._norecord_stamp: tuple[int, int] | None = None
        #: events dropped because their time falls in a "don't record" window
        self.not_recorded = 0
        #: what `telemetry-tray forget` removed (lifecycle/rule.py): dropped when it comes again
        self._forgotten = RuleCache(state_dir)
        self.forgotten = 0

    def _windows(self) -> norecord.NoRecord:
        """The don't-record windows, re-read only when the file changed."""
        if self.state_dir is None:
            return self._norecord
        try:
            st = os.stat(norecord.path_in(self.state_dir))
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._norecord_stamp:
            self._norecord_stamp = stamp
            self._norecord = norecord.load(self.state_dir) if stamp else norecord.NoRecord()
        return self._norecord

    def dead(self, fields: Fields, sid: str, deliveries: int, reason: str, error: str) -> DeadLetter:
        try:
            return dead_letter(fields, reason=reason, error=error, delivery_count=deliveries,
                               consumer=self.consumer, original_id=sid,
                               keep_whole_bytes=self.max_entry_bytes)
        except Exception as exc:  # noqa: BLE001 - the dead letter itself must not fail the batch
            log.exception("building the dead letter of %s failed", sid)
            return {**fields, "dlq:reason": reason, "dlq:error": f"{error} ({_describe(exc)})"[:500],
                    "dlq:original_id": sid}

    def sort(self, entries: Sequence[tuple[str, Fields, int]], sizes: Sequence[int]
             ) -> tuple[list[Prepared], list[DeadLetter]]:
        """``sizes``: each entry's size, measured once when it was read (Batch.sizes)."""
        good: list[Prepared] = []
        dead: list[DeadLetter] = []
        windows = self._windows()
        forgotten = self._forgotten.get()
        for i, (sid, fields, deliveries) in enumerate(entries):
            if retries_exhausted(deliveries, self.max_retries):
                dead.append(self.dead(fields, sid, deliveries, R_RETRIES,
                                      f"delivered {deliveries} times (max_retries={self.max_retries})"))
                continue
            try:
                check_size(sizes[i], self.max_entry_bytes)
                event = decode(fields)
            except InvalidEntry as exc:
                if forgotten and forgotten.matches(fields):
                    self.forgotten += 1  # not even a dead letter: its session was forgotten
                    continue
                dead.append(self.dead(fields, sid, deliveries, exc.reason, exc.error))
                continue
            except Exception as exc:  # noqa: BLE001 - one entry's problem, never the engine's
                dead.append(self.dead(fields, sid, deliveries, R_UNDECODABLE, _describe(exc)))
                continue
            if windows.windows and windows.covers_iso(event["timestamp"]):
                self.not_recorded += 1  # "don't record" was on at that time: acknowledged, not stored
                continue
            if forgotten and forgotten.matches(event):
                self.forgotten += 1  # forgotten by the user: acknowledged, never stored again
                continue
            try:
                good.append(self.writer.prepare(sid, event, fields))
            except Exception as exc:  # noqa: BLE001 - e.g. orjson's recursion limit
                dead.append(self.dead(fields, sid, deliveries, R_UNSERIALIZABLE, _describe(exc)))
        return good, dead

    def store(self, good: list[Prepared], settled: Sequence[str],
              fields_of: Callable[[str], tuple[Fields, int]]) -> tuple[Stored | None, list[DeadLetter]]:
        """Insert ``good`` in one transaction. Raises DatabaseError only for a
        failure of the database; an insert that fails for any other reason is
        split until the entries at fault are found, and those become dead letters."""
        if not good:
            if settled:
                self._forget_attempts(settled)
            return None, []
        try:
            return self.writer.write_prepared(good, settled), []
        except DatabaseError as exc:
            if exc.kind in DATABASE_KINDS:
                raise
            first: BaseException = exc
        except Exception as exc:  # noqa: BLE001
            first = exc
        log.warning("insert of %d entries failed (%s); isolating the entry at fault",
                    len(good), _describe(first))
        stored, bad = self._bisect(good, first)
        if settled:
            self._forget_attempts(settled)
        dead = []
        for prepared, why in bad:
            fields, deliveries = fields_of(prepared.stream_id)
            dead.append(self.dead(fields, prepared.stream_id, deliveries, R_UNSTORABLE, _describe(why)))
        return _merge(stored), dead

    def _bisect(self, items: list[Prepared], known: BaseException | None = None
                ) -> tuple[list[Stored], list[tuple[Prepared, BaseException]]]:
        err: BaseException
        if known is not None:
            err = known
        else:
            try:
                return [self.writer.write_prepared(items)], []
            except DatabaseError as exc:
                if exc.kind in DATABASE_KINDS:
                    raise
                err = exc
            except Exception as exc:  # noqa: BLE001
                err = exc
        if len(items) == 1:
            self.writer.probe()  # the database at fault after all: raises DatabaseError
            return [], [(items[0], err)]
        mid = len(items) // 2
        s1, b1 = self._bisect(items[:mid])
        s2, b2 = self._bisect(items[mid:])
        return s1 + s2, b1 + b2

    def _forget_attempts(self, settled: Sequence[str]) -> None:
        try:
            self.writer.write_prepared([], settled)
        except DatabaseError as exc:  # only a counter: the next recovery recounts
            log.warning("could not clear attempt counts: %s", exc)


def _merge(parts: list[Stored]) -> Stored | None:
    if not parts:
        return None
    rows: list[tuple[int, dict[str, Any]]] = []
    for p in parts:
        rows.extend(p.rows)
    return Stored(rows=rows, inserted=sum(p.inserted for p in parts),
                  duplicates=sum(p.duplicates for p in parts),
                  commit_ms=sum(p.commit_ms for p in parts))
