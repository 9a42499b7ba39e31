"""Dead letters in ``telemetry:dlq``: list, count, retry, purge (the operations
on the DLQ; the pure policy, what a dead letter carries, is tray_app.engine.dlq).

A dead letter is the original stream entry's fields, unchanged (bytes stay
bytes), plus the engine's ``dlq:reason``, ``dlq:error``, ``dlq:delivery_count``,
``dlq:failed_at``, ``dlq:consumer`` and ``dlq:original_id`` (the format is in
tray_app/engine/dlq.py; dead letters of the older format, with bare
``reason`` etc., are read too).

A dead letter of an oversized entry is truncated (``dlq:truncated``): it keeps
the small fields and a prefix, size and SHA-256 of the big ones. Retry never
re-queues one as if it were whole: given by id it is refused before anything
is re-queued; ``--all`` leaves it in the DLQ and says how many it left.

Retry re-queues the original fields to ``telemetry:events`` with XADD and
deletes the dead letter with XDEL only after the XADD returned an id. A crash
between the two leaves the entry both re-queued and still dead-lettered:
at least once, never lost, and the engine's one-row-per-``event_id`` insert
absorbs the duplicate. (MULTI/EXEC would not help: Redis transactions do not
roll back, so a failed XADD inside one would still run the XDEL.)

Purge removes the dead letters that exist when it starts (XTRIM MINID just past
the newest), never one that arrives while it runs.

Payload and metadata are shown as sizes unless asked for: listings get pasted
into chats and screen shares.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from tray_app.engine import dlq as policy
from tray_app.errors import TelemetryTrayError, UsageError
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, translate

log = logging.getLogger(__name__)

#: fields the engine adds to a dead letter; a retry removes them again
#: how a dead letter's failure shows in a listing (bare names, either format)
FAILURE_NAMES = policy.FAILURE_NAMES
#: event fields that identify an event without carrying its content: shown as values
ID_FIELDS = ("event_id", "platform", "event_type", "hook_type", "timestamp", "session_id",
             "external_session_id", "workspace_hash", "schema_version")
PAGE = 200
_ID_RE = re.compile(r"^\d+-\d+$")


class DeadLetterNotFound(UsageError):
    """A dead letter id given to `dlq retry` is not in the DLQ."""


class DeadLetterTruncated(UsageError):
    """A dead letter given to `dlq retry` holds only part of its entry."""


class RedisCommandError(TelemetryTrayError):
    """Redis answered, but refused the command."""

    exit_code = 69


def _s(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class DeadLetter:
    id: str
    #: the entry's fields exactly as stored (keys and values bytes or str)
    raw: tuple[tuple[bytes | str, bytes | str], ...]

    def get(self, name: str, default: str = "") -> str:
        """A failure field by its bare name (``reason``, ``error``, ...), from
        either format; else any field by its exact name."""
        if name in FAILURE_NAMES:
            return self._failure()[name] or default
        for k, v in self.raw:
            if _s(k) == name:
                return _s(v)
        return default

    def _failure(self) -> dict[str, str]:
        return policy.failure(dict(self.raw))

    @property
    def reason(self) -> str:
        return self.get("reason", "unknown")

    @property
    def error(self) -> str:
        return self.get("error")

    @property
    def failed_at(self) -> str:
        return self.get("failed_at")

    @property
    def original_id(self) -> str:
        return self.get("original_id")

    @property
    def delivery_count(self) -> int:
        try:
            return int(self.get("delivery_count", "0"))
        except ValueError:
            return 0

    @property
    def truncated(self) -> bool:
        """Only part of the entry is here (it was oversized): not retryable."""
        return policy.truncated(dict(self.raw))

    def original_fields(self) -> dict[bytes | str, bytes | str]:
        """The entry as it was before it died: what a retry re-queues (for a
        truncated dead letter, the big fields are prefixes only)."""
        return policy.original_fields(dict(self.raw))

    def summary(self, show_payload: bool = False) -> dict[str, Any]:
        """A printable view. Fields other than ids and the failure details
        (payload, metadata, unknown extras) appear as ``<name>_bytes`` sizes
        unless ``show_payload``; an original field whose name the view already
        uses appears as ``field:<name>``. A truncated dead letter also shows
        ``truncated``, ``entry_bytes`` and the full size and SHA-256 of each
        cut field (``<name>_bytes``, ``<name>_sha256``)."""
        out: dict[str, Any] = {"id": self.id}
        for name in FAILURE_NAMES:
            out[name] = self.delivery_count if name == "delivery_count" else self.get(name)
        cut: dict[str, tuple[int, str]] = {}
        if self.truncated:
            raw = dict(self.raw)
            cut = policy.cut_fields(raw)
            out["truncated"] = True
            size = {_s(k): _s(v) for k, v in raw.items()}.get(policy.F_ENTRY_BYTES, "")
            out["entry_bytes"] = int(size) if size.isdigit() else size
        own = set(out)
        for k, v in self.original_fields().items():
            name = _s(k)
            shown = f"field:{name}" if name in own else name
            if name in cut:
                full, sha = cut[name]
                out[f"{shown}_bytes"] = full
                out[f"{shown}_sha256"] = sha
                if show_payload:
                    out[f"{shown}_prefix"] = _s(v)
            elif name in ID_FIELDS:
                out[shown] = _s(v)
            elif show_payload:
                out[shown] = _s(v)
            else:
                out[f"{shown}_bytes"] = len(v.encode("utf-8") if isinstance(v, str) else v)
        return out


def _from_entry(entry_id: bytes | str, fields: Mapping[bytes | str, bytes | str]) -> DeadLetter:
    return DeadLetter(id=_s(entry_id), raw=tuple(fields.items()))


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise translate(exc) from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise translate(exc) from None
        raise RedisCommandError(f"Redis refused {what} on {DLQ_STREAM}: {exc}") from None


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def iter_entries(client: redis.Redis, start: str = "-", end: str = "+",
                 page: int = PAGE) -> Iterator[DeadLetter]:
    """Every dead letter from ``start`` to ``end`` (inclusive), oldest first,
    fetched a page at a time."""
    cursor = start
    while True:
        batch = _call("XRANGE", client.xrange, DLQ_STREAM, min=cursor, max=end, count=page)
        if not batch:
            return
        for entry_id, fields in batch:
            yield _from_entry(entry_id, fields)
        if len(batch) < page:
            return
        cursor = "(" + _s(batch[-1][0])


def newest_id(client: redis.Redis) -> str | None:
    last = _call("XREVRANGE", client.xrevrange, DLQ_STREAM, max="+", min="-", count=1)
    return _s(last[0][0]) if last else None


def length(client: redis.Redis) -> int:
    return int(_call("XLEN", client.xlen, DLQ_STREAM))


def list_entries(client: redis.Redis, limit: int, reason: str | None = None) -> list[DeadLetter]:
    """Up to ``limit`` dead letters, oldest first; only those with ``reason`` if given."""
    if limit <= 0:
        return []
    out: list[DeadLetter] = []
    for dl in iter_entries(client, page=max(1, min(PAGE, limit)) if reason is None else PAGE):
        if reason is None or dl.reason == reason:
            out.append(dl)
            if len(out) >= limit:
                break
    return out


def counts_by_reason(client: redis.Redis) -> dict[str, int]:
    """Number of dead letters per reason, most frequent first."""
    counts: dict[str, int] = {}
    for dl in iter_entries(client):
        counts[dl.reason] = counts.get(dl.reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _requeue(client: redis.Redis, dl: DeadLetter) -> bool:
    if dl.truncated:
        log.warning("dlq: dead letter %s holds only part of its entry (oversized); left in the DLQ", dl.id)
        return False
    fields = dl.original_fields()
    if not fields:
        log.warning("dlq: dead letter %s has no original fields; left in the DLQ", dl.id)
        return False
    new_id = _call("XADD", client.xadd, EVENTS_STREAM, fields)
    if not new_id:  # pragma: no cover - XADD without NOMKSTREAM always returns an id
        return False
    _call("XDEL", client.xdel, DLQ_STREAM, dl.id)
    log.info("dlq: re-queued %s (reason %s) as %s", dl.id, dl.reason, _s(new_id))
    return True


@dataclass(frozen=True)
class RetryResult:
    requeued: int = 0
    #: dead letters left in the DLQ: truncated (oversized) or without original fields
    left: int = 0


def retry(client: redis.Redis, ids: list[str] | None) -> int:
    """Re-queue dead letters to telemetry:events: the given ids, or all (``None``)
    that exist when the call starts. Returns how many were re-queued.

    Given ids are checked first: an id that is malformed, not in the DLQ or
    truncated raises before anything is re-queued. With ``None`` a truncated
    dead letter stays in the DLQ (see :func:`retry_report`)."""
    return retry_report(client, ids).requeued


def retry_report(client: redis.Redis, ids: list[str] | None) -> RetryResult:
    """:func:`retry`, also counting the dead letters it left in the DLQ."""
    done = 0
    left = 0
    if ids is None:
        last = newest_id(client)
        if last is None:
            return RetryResult()
        todo: Iterator[DeadLetter] | list[DeadLetter] = iter_entries(client, end=last)
    else:
        bad = [i for i in ids if not _ID_RE.match(i)]
        if bad:
            raise UsageError(f"not a stream entry id: {bad[0]!r} (expected e.g. 1700000000000-0, "
                             "as shown by `telemetry-tray dlq list`)")
        found: list[DeadLetter] = []
        missing: list[str] = []
        for i in dict.fromkeys(ids):
            got = _call("XRANGE", client.xrange, DLQ_STREAM, min=i, max=i, count=1)
            if got:
                found.append(_from_entry(*got[0]))
            else:
                missing.append(i)
        if missing:
            raise DeadLetterNotFound(f"not in {DLQ_STREAM}: {', '.join(missing)}; nothing was re-queued")
        cut = [d.id for d in found if d.truncated]
        if cut:
            raise DeadLetterTruncated(
                f"{', '.join(cut)}: only part of the entry was kept (it was oversized), so it cannot be "
                "re-queued; nothing was re-queued (`dlq list --show-payload` shows what was kept)")
        todo = found
    try:
        for dl in todo:
            if _requeue(client, dl):
                done += 1
            else:
                left += 1
    except TelemetryTrayError as exc:
        raise type(exc)(f"{exc} (after re-queuing {done} dead letter{'s' if done != 1 else ''})") from None
    if left:
        log.warning("dlq: %d dead letter%s left in %s (truncated or empty: cannot be re-queued)",
                    left, "s" if left != 1 else "", DLQ_STREAM)
    return RetryResult(requeued=done, left=left)


def purge(client: redis.Redis) -> int:
    """Delete every dead letter that exists now. Returns how many were deleted."""
    last = newest_id(client)
    if last is None:
        return 0
    return int(_call("XTRIM", client.xtrim, DLQ_STREAM, minid=_next_id(last), approximate=False))


__all__ = ["DeadLetter", "DeadLetterNotFound", "DeadLetterTruncated", "RetryResult",
           "list_entries", "iter_entries", "counts_by_reason", "retry", "retry_report", "purge", "length",
           "newest_id"]
