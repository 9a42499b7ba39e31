"""`telemetry-tray export --format jsonl`: the stored events, decompressed, one
JSON object per line.

Each line is the event as docs/events.md describes it (``payload`` and
``metadata`` JSON objects) plus the row's ``sequence``. It is exact: the line
is the stored ``event_data`` text itself with ``"sequence":N`` spliced in
front, never a re-serialisation, so integers beyond 64 bits, float spellings
and unicode come out byte for byte as they were stored. Constant memory: rows
are read in pages by sequence (keyset pagination, no long read transaction),
up to the last sequence that existed when the export started.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, BinaryIO

from tray_app.errors import DatabaseError, UsageError
from tray_app.engine.schema import TOMBSTONE
from tray_app.lifecycle.rule import Forgotten, utc_second

PAGE_ROWS = 500
BUSY_TIMEOUT_S = 10.0
FORMATS = ("jsonl",)
PLATFORMS = ("cursor", "claude_code")


def line(sequence: int, event_data: bytes) -> bytes:
    """One output line (with its newline) from a row."""
    text = zlib.decompress(event_data).strip()
    obj = json.loads(text) if b'"sequence"' in text else None
    if isinstance(obj, dict) and "sequence" in obj:
        # the event has a top-level field of that name (kept from its entry): let the
        # row's sequence win (Python's json keeps big integers); a nested one (a tool's
        # input, say) is no reason to re-serialise the line
        obj = {"sequence": sequence, **{k: v for k, v in obj.items() if k != "sequence"}}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
    head = b'{"sequence":' + str(sequence).encode()
    return head + (b"}" if text == b"{}" else b"," + text[1:]) + b"\n"


def rows(db: Path, *, since: float | None = None, until: float | None = None,
         platform: str | None = None) -> Iterator[tuple[int, bytes]]:
    """(sequence, event_data) of the selected rows, oldest first."""
    if not db.exists():
        raise DatabaseError(f"no database at {db} yet (the app creates it when it first starts)", kind="io")
    span = Forgotten(ranges=((since, until if until is not None else float("inf")),)) \
        if since is not None or until is not None else None
    conds = ["sequence > ?", "sequence <= ?", f"event_type != '{TOMBSTONE}'"]
    params: list[Any] = []
    if platform:
        conds.append("platform = ?")
        params.append(platform)
    if span is not None:
        # text bounds widened by a day (timestamps carry any zone), then the exact check
        if since is not None:
            conds.append("timestamp >= ?")
            params.append(utc_second(since - 86400))
        if until is not None:
            conds.append("timestamp < ?")
            params.append(utc_second(until + 86400))
        conds.append("export_in_range(timestamp)")
    sql = f"SELECT sequence, event_data FROM raw_traces WHERE {' AND '.join(conds)} ORDER BY sequence LIMIT {PAGE_ROWS}"
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None)) as conn:
            if span is not None:
                conn.create_function("export_in_range", 1,
                                     lambda ts: int(isinstance(ts, str) and span.covers_iso(ts)), deterministic=True)
            last = int(conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0])
            after = 0
            while True:
                page = conn.execute(sql, (after, last, *params)).fetchall()
                for seq, data in page:
                    yield int(seq), bytes(data)
                if len(page) < PAGE_ROWS:
                    return
                after = int(page[-1][0])
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot read {db}: {exc}") from None



def write(out: BinaryIO, db: Path, **filters: object) -> int:
    """Write the lines to ``out``; returns how many."""
    n = 0
    for seq, data in rows(db, **filters):  # type: ignore[arg-type]
        out.write(line(seq, data))
        n += 1
    return n


def open_output(path: Path, force: bool) -> BinaryIO:
    """``path`` created 0600 from the start; an existing file only with ``force``."""
    path = Path(os.path.expanduser(path))
    if path.is_dir():
        raise UsageError(f"--output {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--output: the folder {path.parent} does not exist (create it first)")
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise UsageError(f"--output {path} already exists; add --force to replace it") from None
    except OSError as exc:
        raise UsageError(f"--output {path}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o600)  # a replaced file keeps no looser mode, and the umask may not loosen it
    return os.fdopen(fd, "wb")


__all__ = ["FORMATS", "PLATFORMS", "line", "open_output", "rows", "write"]
