"""What telemetry.db takes and what its disk has left: the facts behind the
tray's storage warning (``storage_state``), ``db stats`` and retention's size
cap (engine/retention.py). Read-only; the tray only shows what health carries.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from tray_app.config import RetentionSettings
from tray_app.support.dbstats import human_bytes


def disk_space(path: Path) -> tuple[int, int]:
    """(free bytes for us, total bytes) of the file system holding ``path``."""
    st = os.statvfs(path if path.exists() else path.parent)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


@dataclass(frozen=True)
class Pages:
    page_size: int
    page_count: int
    freelist: int
    auto_vacuum: int   # 0 none, 1 full, 2 incremental

    @property
    def used_bytes(self) -> int:
        return (self.page_count - self.freelist) * self.page_size

    @property
    def file_bytes(self) -> int:
        return self.page_count * self.page_size


def pages(conn: sqlite3.Connection) -> Pages:
    one = lambda p: int(conn.execute(f"PRAGMA {p}").fetchone()[0])  # noqa: E731
    return Pages(one("page_size"), one("page_count"), one("freelist_count"), one("auto_vacuum"))


OK = "ok"
NEAR_CAP = "near_cap"
DISK_LOW = "disk_low"


def storage_state(s: RetentionSettings, used: int, free: int, total: int) -> tuple[str, str]:
    """(state, one line) for the tray: the disk nearly full first, then the
    database near (or past) its cap; (OK, "") otherwise."""
    low_mb = free < s.disk_warn_free_mb * 1024 * 1024
    low_pct = total > 0 and free * 100 < s.disk_warn_free_pct * total
    if low_mb or low_pct:
        return DISK_LOW, (f"Disk nearly full: {human_bytes(free)} free "
                          f"({100 * free / total if total else 0:.0f}%) where the database is")
    cap = s.max_db_mb * 1_000_000
    if cap and used * 100 >= cap * s.cap_warn_pct:
        return NEAR_CAP, (f"Database at {100 * used / cap:.0f}% of its {human_bytes(cap)} cap: "
                          "the oldest raw events are being removed")
    return OK, ""


__all__ = ["Pages", "pages", "disk_space", "storage_state", "OK", "NEAR_CAP", "DISK_LOW"]
