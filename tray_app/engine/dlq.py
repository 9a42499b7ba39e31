"""Dead-letter policy: which entries go to telemetry:dlq, and what a dead
letter carries. Pure functions; the consumer and the publisher do the I/O.

A dead letter is the original entry's fields, byte for byte, plus the DLQ's
own fields, all named ``dlq:...`` (a prefix no producer uses):

``dlq:reason``, ``dlq:error``, ``dlq:delivery_count``, ``dlq:failed_at``,
``dlq:consumer``, ``dlq:original_id``
    why and when it failed (always present).
``dlq:truncated``, ``dlq:entry_bytes``
    only on a dead letter cut to size: how many original fields were cut, and
    the original entry's size (names and values).
``dlq:bytes:<name>``, ``dlq:sha256:<name>``
    for each cut field: its full length and the hex SHA-256 of its full value;
    the field itself keeps a prefix of at most the cut size.

An original field whose own name starts with ``dlq:`` is stored as
``dlq:field:<name>``, so nothing the DLQ adds can ever replace an original
field, and :func:`original_fields` gives every one back exactly.

Dead letters written before this format carried ``reason``, ``error``, ...
without the prefix (in place of originals of that name); :func:`failure` and
:func:`original_fields` still read them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timezone

from tray_app.events import R_OVERSIZED, R_RETRIES, entry_size

Key = bytes | str
Fields = Mapping[Key, Key]

PREFIX = "dlq:"
#: an original field named ``dlq:...`` is kept under this prefix
ESCAPE = "dlq:field:"
#: the six names every dead letter carries (bare names: FAILURE_NAMES)
FAILURE_NAMES = ("reason", "error", "delivery_count", "failed_at", "consumer", "original_id")
#: fields the engine adds to every dead letter (removed again on retry)
DLQ_FIELDS = tuple(PREFIX + n for n in FAILURE_NAMES)
#: the same fields in dead letters written before the ``dlq:`` prefix
LEGACY_FIELDS = FAILURE_NAMES
F_TRUNCATED = "dlq:truncated"
F_ENTRY_BYTES = "dlq:entry_bytes"
BYTES_PREFIX = "dlq:bytes:"
SHA_PREFIX = "dlq:sha256:"

#: a truncated dead letter keeps at most about this many bytes of the original
#: entry: small fields whole, a prefix of the big ones (plus names, sizes, digests)
MAX_DEAD_LETTER_BYTES = 64 * 1024
#: entries up to this size are kept whole (so a retry can re-queue them) unless
#: they died for being oversized; bigger ones are always truncated. The same as
#: the default ``ingest.max_entry_bytes``: nothing the engine accepts is cut.
KEEP_WHOLE_BYTES = 2 * 1024 * 1024
#: fields up to this size (name and value each) count as metadata, kept whole while they fit
SMALL_FIELD_BYTES = 4096
#: at most this many big fields keep a prefix; beyond it they are left out (counted)
MAX_CUT_FIELDS = 16
ERROR_CHARS = 500


def _b(value: Key) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def _s(value: Key) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _prefixed(prefix: str, name: Key) -> Key:
    return prefix.encode() + name if isinstance(name, bytes) else prefix + name


class DeadLetterFields(dict[Key, Key]):
    """A dead letter as written. ``d["reason"]`` (and the other bare failure
    names) still answers when no original field has that name, for code that
    logged the reason that way before the ``dlq:`` prefix; use :func:`failure`."""

    def __missing__(self, key: Key) -> Key:
        if isinstance(key, str) and key in FAILURE_NAMES:
            return self[PREFIX + key]
        raise KeyError(key)


def retries_exhausted(delivery_count: int, max_retries: int) -> bool:
    """An entry delivered more than ``max_retries`` times is given up on."""
    return delivery_count > max_retries


def _fit(items: list[tuple[Key, Key]], max_bytes: int
         ) -> tuple[list[tuple[Key, Key]], dict[str, str], list[tuple[Key, Key]]]:
    """(fields to keep, in their order, with big values cut to a prefix;
    the DLQ's truncation fields; the (name, sha/size) fields of each cut one)."""
    kept_whole: set[int] = set()
    used = 0
    for i in sorted(range(len(items)), key=lambda j: len(items[j][0]) + len(items[j][1])):
        k, v = items[i]
        if len(k) <= SMALL_FIELD_BYTES and len(v) <= SMALL_FIELD_BYTES and used + len(k) + len(v) <= max_bytes:
            kept_whole.add(i)
            used += len(k) + len(v)
    big = [i for i in range(len(items)) if i not in kept_whole]
    cut = [i for i in big if len(items[i][0]) <= SMALL_FIELD_BYTES][:MAX_CUT_FIELDS]
    share = max(0, max_bytes - used - sum(len(items[i][0]) for i in cut)) // max(1, len(cut))
    out: list[tuple[Key, Key]] = []
    extra: list[tuple[Key, Key]] = []
    for i, (k, v) in enumerate(items):
        if i in kept_whole:
            out.append((k, v))
        elif i in cut:
            raw = _b(v)
            out.append((k, raw[:share]))
            extra.append((_prefixed(BYTES_PREFIX, k), str(len(raw))))
            extra.append((_prefixed(SHA_PREFIX, k), hashlib.sha256(raw).hexdigest()))
    return out, {F_TRUNCATED: str(len(big))}, extra


def dead_letter(fields: Fields, *, reason: str, error: str, delivery_count: int, consumer: str,
                original_id: str, now: datetime | None = None,
                max_bytes: int = MAX_DEAD_LETTER_BYTES,
                keep_whole_bytes: int = KEEP_WHOLE_BYTES) -> DeadLetterFields:
    """The original fields unchanged (bytes stay bytes, so invalid UTF-8 is kept
    exactly; ``dlq:...`` names escaped), plus why and when it failed, under
    ``dlq:...`` names.

    An oversized entry (``reason`` oversized, or bigger than
    ``keep_whole_bytes``) that is bigger than ``max_bytes`` (all names and
    values) keeps its small fields whole and a prefix of its big ones, with each
    cut field's size and SHA-256, and is marked ``dlq:truncated``: a retry
    cannot re-queue it. Any other entry is kept whole, so it can be retried."""
    items = [(_prefixed(ESCAPE, k) if _b(k).startswith(PREFIX.encode()) else k, v) for k, v in fields.items()]
    out = DeadLetterFields()
    extra: list[tuple[Key, Key]] = []
    meta: dict[str, str] = {}
    size = entry_size(fields)
    if size > max_bytes and (reason == R_OVERSIZED or size > keep_whole_bytes):
        items, meta, extra = _fit(items, max_bytes)
        meta[F_ENTRY_BYTES] = str(size)
    out.update(items)
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out.update({
        "dlq:reason": reason,
        "dlq:error": error[:ERROR_CHARS],
        "dlq:delivery_count": str(delivery_count),
        "dlq:failed_at": when,
        "dlq:consumer": consumer,
        "dlq:original_id": original_id,
    })
    out.update(meta)
    out.update(extra)
    return out


def is_legacy(dead: Fields) -> bool:
    """A dead letter written before the ``dlq:`` prefix (bare ``reason`` etc.)."""
    return not any(_b(k) == b"dlq:reason" for k in dead)


def original_fields(dead: Fields) -> dict[Key, Key]:
    """A dead letter's original entry (for retry), byte for byte. For a
    truncated one (:func:`truncated`) the big fields are prefixes only."""
    if is_legacy(dead):
        drop = {n.encode() for n in LEGACY_FIELDS}
        return {k: v for k, v in dead.items() if _b(k) not in drop}
    out: dict[Key, Key] = {}
    for k, v in dead.items():
        raw = _b(k)
        if raw.startswith(ESCAPE.encode()):
            out[k[len(ESCAPE):]] = v
        elif not raw.startswith(PREFIX.encode()):
            out[k] = v
    return out


def failure(dead: Fields) -> dict[str, str]:
    """Why a dead letter died: the six FAILURE_NAMES (bare) -> text ("" when
    absent), from either format."""
    names = LEGACY_FIELDS if is_legacy(dead) else DLQ_FIELDS
    by_name = {_b(k): v for k, v in dead.items()}
    return {bare: _s(by_name.get(full.encode(), "")) for bare, full in zip(FAILURE_NAMES, names)}


def reason_of(dead: Fields) -> str:
    return failure(dead)["reason"] or "unknown"


def truncated(dead: Fields) -> bool:
    """True when the dead letter holds only part of its entry (oversized)."""
    for k, v in dead.items():
        if _b(k) == F_TRUNCATED.encode():
            return _s(v) not in ("", "0")
    return False


def cut_fields(dead: Fields) -> dict[str, tuple[int, str]]:
    """For a truncated dead letter: original field name -> (full size, sha256)."""
    sizes: dict[str, int] = {}
    shas: dict[str, str] = {}

    def name(raw: bytes) -> str:  # the stored name of the cut field: unescape it
        return _s(raw[len(ESCAPE):] if raw.startswith(ESCAPE.encode()) else raw)

    for k, v in dead.items():
        raw = _b(k)
        if raw.startswith(BYTES_PREFIX.encode()):
            try:
                sizes[name(raw[len(BYTES_PREFIX):])] = int(_s(v))
            except ValueError:
                continue
        elif raw.startswith(SHA_PREFIX.encode()):
            shas[name(raw[len(SHA_PREFIX):])] = _s(v)
    return {n: (size, shas.get(n, "")) for n, size in sizes.items()}


def over_byte_cap(used_bytes: int, length: int, max_bytes: int, low_water: float = 0.9) -> int:
    """How many of the oldest dead letters to drop when the DLQ takes
    ``used_bytes`` for ``length`` entries and may take ``max_bytes``: enough, at
    the average entry size, to come down to ``low_water`` of the cap (so a full
    DLQ is not trimmed one entry per tick). 0 while within the cap."""
    if used_bytes <= max_bytes or length <= 0:
        return 0
    average = used_bytes / length
    excess = used_bytes - max_bytes * low_water
    return min(length, max(1, -int(-excess // average)))


__all__ = ["DLQ_FIELDS", "FAILURE_NAMES", "KEEP_WHOLE_BYTES", "LEGACY_FIELDS", "MAX_DEAD_LETTER_BYTES", "R_RETRIES",
           "DeadLetterFields", "over_byte_cap", "cut_fields", "dead_letter", "failure", "is_legacy",
           "original_fields", "reason_of", "retries_exhausted", "truncated"]
