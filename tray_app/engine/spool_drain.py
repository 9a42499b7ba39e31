"""The offline spool, engine side: drain it into Redis, measure it for health.

Hooks write one file per event when Redis cannot be reached in time (format:
capture/spoolfile.py). The engine's maintenance thread calls:

* ``drain(spool_dir, client)`` on startup and every
  ``ingest.spool_drain_interval_s``: oldest first, XADD, and only after the
  XADD succeeded delete the file. A file that cannot be parsed moves to
  ``spool/bad/`` (counted in health, never retried forever). A pass stops at
  the first Redis error; the files stay for the next pass.
* ``stats(spool_dir)`` for the health snapshot: one directory listing, plus a
  stat per waiting file for the byte count.

A spooled entry may also have reached Redis (the hook gave up waiting for a
reply that was on its way); the engine inserts by ``event_id``, so the
second copy never makes a second row.

A file that was sent but cannot be deleted (the directory lost its write
permission, an immutable attribute, a read-only remount) is not sent again:
``DrainState`` (kept by the engine between passes) remembers it by name,
inode and size, each pass only retries the delete, and after
``STUCK_AFTER`` failed deletes it tries to move it to ``bad/`` and, failing
that, reports it once in the log and counts it as stuck (health shows it with
the bad files). A restart of the engine sends such a file at most once more.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from tray_app.capture import spoolfile
from tray_app.redis_conn import EVENTS_STREAM

log = logging.getLogger(__name__)

#: a temp file older than this belongs to a hook that died mid-write
STALE_TMP_S = 600.0
#: failed deletes of a sent file before it is moved aside (or reported stuck)
STUCK_AFTER = 3


@dataclass(frozen=True)
class DrainResult:
    #: XADDed and deleted in this pass
    sent: int = 0
    #: moved to spool/bad/ in this pass
    bad: int = 0
    #: event files still waiting after this pass
    remaining: int = 0
    #: why the pass stopped early (a Redis error), or None
    error: str | None = None
    #: files sent earlier that still cannot be deleted (not sent again)
    stuck: int = 0


@dataclass
class _Sent:
    inode: int
    size: int
    failures: int = 0
    reported: bool = False


@dataclass
class DrainState:
    """What one engine remembers between drain passes: files already sent
    whose delete failed (name -> identity and failed deletes), and files that
    could not be moved to bad/ (warned about once)."""

    sent: dict[str, _Sent] = field(default_factory=dict)
    unmovable: set[str] = field(default_factory=set)

    @property
    def stuck(self) -> int:
        """Sent files past STUCK_AFTER failed deletes."""
        return len(self.stuck_names)

    @property
    def stuck_names(self) -> frozenset[str]:
        return frozenset(n for n, v in self.sent.items() if v.failures >= STUCK_AFTER)

    def forget_missing(self, names: set[str]) -> None:
        for name in [n for n in self.sent if n not in names]:
            del self.sent[name]
        self.unmovable &= names


@dataclass(frozen=True)
class SpoolStats:
    files: int = 0
    bad: int = 0
    #: age of the oldest waiting file, 0.0 when there is none
    oldest_age_s: float = 0.0
    bytes: int = 0


def _listing(spool_dir: Path) -> tuple[list[str], list[str]]:
    """(event file names oldest first, temp file names)."""
    try:
        names = os.listdir(spool_dir)
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    files = sorted(n for n in names if spoolfile.is_event_file(n))
    temps = [n for n in names if n.startswith(spoolfile.TMP_PREFIX) and n.endswith(spoolfile.TMP_SUFFIX)]
    return files, temps


def parse(data: bytes) -> dict[str, str] | None:
    """The stream fields in a spool file, or None when it is not a flat JSON
    object of strings with an event_id (the engine validates the rest and
    dead-letters what the contract rejects, with the reason)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not value:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return None
    if not value.get("event_id"):
        return None
    return value


def move_to_bad(spool_dir: Path, name: str, quiet: bool = False) -> bool:
    bad_dir = spool_dir / spoolfile.BAD_DIR
    try:
        bad_dir.mkdir(mode=0o700, exist_ok=True)
        os.replace(spool_dir / name, bad_dir / name.lstrip(spoolfile.TMP_PREFIX))
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        if not quiet:
            log.warning("spool: cannot move %s to %s: %s", name, bad_dir, exc.strerror or exc)
        return False


def _sweep_stale_temps(spool_dir: Path, temps: list[str], now: float) -> int:
    moved = 0
    for name in temps:
        try:
            age = now - (spool_dir / name).stat().st_mtime
        except OSError:
            continue
        if age > STALE_TMP_S and move_to_bad(spool_dir, name):
            log.warning("spool: %s was never completed by its hook; moved to bad/", name)
            moved += 1
    return moved


def _retry_delete(spool_dir: Path, name: str, known: _Sent, state: DrainState) -> bool:
    """A file sent in an earlier pass whose delete failed: try again (never
    re-send). True when it is gone (deleted, moved aside, or vanished)."""
    path = spool_dir / name
    try:
        path.unlink()
        log.info("spool: %s deleted at last (it was sent earlier)", name)
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        known.failures += 1
        if known.failures < STUCK_AFTER:
            return False
        if move_to_bad(spool_dir, name, quiet=True):
            log.warning("spool: %s was sent but cannot be deleted (%s); moved to bad/", name,
                        exc.strerror or exc)
            return True
        if not known.reported:
            known.reported = True
            log.warning("spool: %s was sent to Redis but cannot be deleted or moved aside (%s); it will not "
                        "be sent again; fix the permissions of %s and remove it", name, exc.strerror or exc,
                        spool_dir)
        return False


def drain(spool_dir: Path, client: redis.Redis, limit: int = 500, *,
          stream: str = EVENTS_STREAM, state: DrainState | None = None) -> DrainResult:
    """Move up to ``limit`` spooled events into ``stream``, oldest first.

    With ``state`` (the engine keeps one), a file already sent whose delete
    failed is never sent again; only its delete is retried."""
    spool_dir = Path(spool_dir)
    files, temps = _listing(spool_dir)
    if state is not None:
        state.forget_missing(set(files))
    bad = _sweep_stale_temps(spool_dir, temps, time.time()) if temps else 0
    sent = 0
    error: str | None = None
    done = 0
    tries = 0
    for name in files:
        path = spool_dir / name
        known = state.sent.get(name) if state is not None else None
        try:
            st = path.stat()
        except FileNotFoundError:  # drained by someone else meanwhile
            done += 1
            continue
        except OSError:
            st = None
        if state is not None and known is not None:
            if st is not None and (st.st_ino, st.st_size) == (known.inode, known.size):
                if _retry_delete(spool_dir, name, known, state):
                    del state.sent[name]
                    done += 1
                continue
            del state.sent[name]  # another file under that name: a new event
        if tries >= limit:
            break
        tries += 1
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            done += 1
            continue
        except OSError as exc:
            if name not in (state.unmovable if state is not None else ()):
                log.warning("spool: cannot read %s: %s; moving it to bad/", name, exc.strerror or exc)
            data = b""
        fields = parse(data)
        if fields is None:
            if move_to_bad(spool_dir, name, quiet=state is not None and name in state.unmovable):
                log.warning("spool: %s is not a spooled event; moved to bad/", name)
                bad += 1
                done += 1
            elif state is not None:
                state.unmovable.add(name)
            continue
        try:
            client.xadd(stream, fields)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        sent += 1
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if state is None or st is None:
                raise
            state.sent[name] = _Sent(inode=st.st_ino, size=st.st_size, failures=1)
            log.warning("spool: sent %s but cannot delete it (%s); it will not be sent again", name,
                        exc.strerror or exc)
            continue
        done += 1
    stuck = state.stuck if state is not None else 0
    remaining = len(files) - done - (len(state.sent) if state is not None else 0)
    if sent or bad or error:
        log.info("spool: drained %d, moved %d to bad/, %d waiting%s", sent, bad, remaining,
                 f" (stopped: {error})" if error else "")
    return DrainResult(sent=sent, bad=bad, remaining=remaining, error=error, stuck=stuck)


def stats(spool_dir: Path, now_ns: int | None = None, exclude: frozenset[str] = frozenset()) -> SpoolStats:
    """Files waiting, files in bad/, the oldest file's age and the bytes waiting;
    the names in ``exclude`` (files stuck after being sent) are not waiting."""
    spool_dir = Path(spool_dir)
    now_ns = time.time_ns() if now_ns is None else now_ns
    files = 0
    size = 0
    oldest: int | None = None
    try:
        entries = list(os.scandir(spool_dir))
    except (FileNotFoundError, NotADirectoryError):
        return SpoolStats()
    for entry in entries:
        if not spoolfile.is_event_file(entry.name) or entry.name in exclude:
            continue
        files += 1
        try:
            size += entry.stat().st_size
        except OSError:
            continue
        created = spoolfile.created_ns(entry.name)
        if created is not None and (oldest is None or created < oldest):
            oldest = created
    try:
        bad = sum(1 for e in os.scandir(spool_dir / spoolfile.BAD_DIR) if e.is_file())
    except OSError:
        bad = 0
    age = max(0.0, (now_ns - oldest) / 1e9) if oldest is not None else 0.0
    return SpoolStats(files=files, bad=bad, oldest_age_s=age, bytes=size)
