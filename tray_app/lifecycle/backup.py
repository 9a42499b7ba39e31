"""`telemetry-tray db backup PATH`: a consistent copy of telemetry.db while the
app runs, with SQLite's online backup API.

Consistency without blocking the engine: the source connection holds one read
transaction for the whole copy (in WAL mode a reader never blocks the writer),
so every step copies pages of the same snapshot and the backup never has to
restart because the engine committed meanwhile; the steps are small, so no
single call holds the source's locks for long. The copy is written to a
temporary file created 0600 (never readable by others, not even for a moment)
next to the target, switched to a single-file journal mode, synced, and only
then put in place: a failed backup leaves no half-written file under PATH.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tray_app.engine.schema import COMPANION_SUFFIXES, DB_FILE_MODE
from tray_app.errors import DatabaseError, UsageError

#: pages per backup step (4 MiB with the default page size)
STEP_PAGES = 1024
BUSY_TIMEOUT_S = 10.0


class BackupExists(UsageError):
    """The target exists and --force was not given."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    pages: int
    seconds: float


def _check_target(dest: Path, force: bool) -> None:
    if dest.is_dir():
        raise UsageError(f"{dest} is a folder; give the backup's file name (e.g. {dest / 'telemetry-backup.db'})")
    if not dest.parent.is_dir():
        raise UsageError(f"the folder {dest.parent} does not exist (create it first)")
    if (dest.exists() or dest.is_symlink()) and not force:
        raise BackupExists(f"{dest} already exists; add --force to replace it")


def _private_temp(dest: Path) -> Path:
    """An empty file next to ``dest``, created 0600 (O_EXCL, no symlink followed)."""
    for i in range(100):
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{i}.tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), DB_FILE_MODE)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, DB_FILE_MODE)  # the umask may only have taken bits away: be exact
        finally:
            os.close(fd)
        return tmp
    raise UsageError(f"cannot create a temporary file next to {dest}")


def _space_error(exc: BaseException, dest: Path) -> DatabaseError | None:
    text = str(exc).lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in text or "no space" in text:
        return DatabaseError(f"no space left on the device of {dest.parent} for the backup "
                             "(nothing was written there)", kind="disk_full")
    return None


def backup(db: Path, dest: Path, *, force: bool = False, step_pages: int = STEP_PAGES) -> BackupResult:
    """Copy ``db`` to ``dest`` consistently (see the module doc)."""
    dest = Path(os.path.abspath(os.path.expanduser(dest)))
    if not db.exists():
        raise DatabaseError(f"no database at {db} yet (the app creates it when it first starts)", kind="io")
    _check_target(dest, force)
    started = time.monotonic()
    tmp = _private_temp(dest)
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S,
                                     isolation_level=None)) as src, \
                closing(sqlite3.connect(str(tmp), isolation_level=None)) as dst:
            src.execute("BEGIN")
            src.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # the snapshot starts here
            src.backup(dst, pages=step_pages)
            src.execute("COMMIT")
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            pages = int(dst.execute("PRAGMA page_count").fetchone()[0])
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, dest)
        else:
            try:
                os.link(tmp, dest)  # fails if someone created dest meanwhile: never overwrite
            except FileExistsError:
                raise BackupExists(f"{dest} already exists; add --force to replace it") from None
            except OSError:
                os.rename(tmp, dest)  # a filesystem without hard links
            else:
                os.unlink(tmp)
    except sqlite3.Error as exc:
        raise _space_error(exc, dest) or DatabaseError(f"backup of {db} failed: {exc}") from None
    except OSError as exc:
        raise _space_error(exc, dest) or DatabaseError(
            f"cannot write the backup {dest}: {exc.strerror or exc}", kind="io") from None
    finally:
        # the copy is in WAL mode until the switch to one file: a failed switch leaves -wal/-shm
        for leftover in (tmp, *(Path(f"{tmp}{suffix}") for suffix in COMPANION_SUFFIXES)):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
    return BackupResult(dest, dest.stat().st_size, pages, time.monotonic() - started)


__all__ = ["BackupExists", "BackupResult", "backup"]
