"""Dead-letter policy: which entries go to telemetry:dlq, and what a dead
letter carries. Pure functions; the consumer does the I/O."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone

from tray_app.events import R_RETRIES

#: fields the engine adds to a dead letter (removed again on retry)
DLQ_FIELDS = ("reason", "error", "delivery_count", "failed_at", "consumer", "original_id")


def retries_exhausted(delivery_count: int, max_retries: int) -> bool:
    """An entry delivered more than ``max_retries`` times is given up on."""
    return delivery_count > max_retries


def dead_letter(fields: Mapping[bytes | str, bytes | str], *, reason: str, error: str,
                delivery_count: int, consumer: str, original_id: str,
                now: datetime | None = None) -> dict[bytes | str, bytes | str]:
    """The original fields unchanged (bytes stay bytes, so invalid UTF-8 is kept
    exactly), plus why and when it failed."""
    out: dict[bytes | str, bytes | str] = dict(fields)
    for key in DLQ_FIELDS:
        out.pop(key, None)
        out.pop(key.encode(), None)
    when = (now or datetime.now(timezone.utc)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out.update({
        "reason": reason,
        "error": error[:500],
        "delivery_count": str(delivery_count),
        "failed_at": when,
        "consumer": consumer,
        "original_id": original_id,
    })
    return out


def original_fields(dead: Mapping[bytes | str, bytes | str]) -> dict[bytes | str, bytes | str]:
    """A dead letter's original entry (for retry)."""
    drop = set(DLQ_FIELDS) | {k.encode() for k in DLQ_FIELDS}
    return {k: v for k, v in dead.items() if k not in drop}


__all__ = ["DLQ_FIELDS", "R_RETRIES", "retries_exhausted", "dead_letter", "original_fields"]
