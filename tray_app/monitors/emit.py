"""Putting monitor events on ``telemetry:events``: pipelined XADD, no trimming
(the engine trims only what its group acknowledged).

``Emitter.emit`` returns only when every entry was accepted; otherwise it
raises :class:`RedisUnavailable` and the caller keeps its offset/watermark
where it was. Entries that did get in before a failure are sent again on
the next pass with the same deterministic ``event_id``, which the engine
stores once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import redis

from tray_app import events, jsonutil
from tray_app.errors import RedisUnavailable
from tray_app.lifecycle.rule import RuleCache
from tray_app.redis_conn import EVENTS_STREAM, GROUP, Endpoint, LazyClient

#: entries per pipeline round trip
PIPELINE_ENTRIES = 500
#: room left under ingest.max_entry_bytes for the fields besides the payload
ENTRY_HEADROOM_BYTES = 16 * 1024
#: a monitor with a backlog (a first read of a big database or transcript
#: history) only goes on at once while the engine is this close behind
MAX_STREAM_LAG = 20_000


class Emitter:
    def __init__(self, endpoint: Endpoint, *, socket_timeout_s: float = 5.0,
                 connect_timeout_s: float = 2.0, state_dir: Path | None = None) -> None:
        self.endpoint = endpoint
        #: what `telemetry-tray forget` removed never goes back into Redis
        self.forgotten = RuleCache(state_dir)
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._redis = LazyClient(endpoint, socket_timeout=socket_timeout_s, connect_timeout=connect_timeout_s)

    def _connection(self) -> redis.Redis:
        return self._redis.get()

    def emit(self, evs: Iterable[Mapping[str, Any]]) -> int:
        """XADD every event (validated first: a monitor bug must not make poison),
        except forgotten ones (lifecycle/rule.py), which are passed over as if sent."""
        entries: list[dict[str, str]] = []
        forgotten = self.forgotten.get()
        for ev in evs:
            if forgotten and forgotten.matches(ev):
                continue
            reason = events.validate(ev)
            if reason is not None:
                raise ValueError(f"monitor built an invalid event ({reason[0]}: {reason[1]})")
            entries.append(events.encode(ev))
        if not entries:
            return 0
        client = self._connection()
        try:
            for i in range(0, len(entries), PIPELINE_ENTRIES):
                pipe = client.pipeline(transaction=False)
                for fields in entries[i:i + PIPELINE_ENTRIES]:
                    pipe.xadd(EVENTS_STREAM, fields)  # type: ignore[arg-type]
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self.close()
            raise RedisUnavailable(f"cannot add monitor events at {self.endpoint.masked}: {exc}") from None
        return len(entries)

    def stream_lag(self) -> int | None:
        """Entries the engine's group has not read yet (XLEN when there is no
        group); None when Redis cannot say."""
        try:
            client = self._connection()
            if not client.exists(EVENTS_STREAM):
                return 0
            for g in client.xinfo_groups(EVENTS_STREAM):
                name = g.get("name")
                if name in (GROUP, GROUP.encode()):
                    lag = g.get("lag")
                    return int(lag) if lag is not None else None
            return int(client.xlen(EVENTS_STREAM))
        except (redis.RedisError, OSError, ValueError, TypeError):
            return None

    def may_hurry(self) -> bool:
        """True when a backlog may be sent on without waiting a poll interval."""
        lag = self.stream_lag()
        return lag is not None and lag < MAX_STREAM_LAG

    def close(self) -> None:
        self._redis.drop()


def fit_payload(payload: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """``payload`` if its JSON fits in ``max_bytes``; otherwise a copy whose
    longest strings are cut (marked) until it fits, or, failing that, a stub
    that says what was dropped. An oversized entry would be a poison message."""
    raw = jsonutil.dumps(payload)
    if len(raw) <= max_bytes:
        return payload
    original = len(raw)
    limit = max(256, max_bytes // 8)
    for _ in range(6):
        payload = _cut_strings(payload, limit)
        if len(jsonutil.dumps(payload)) <= max_bytes:
            payload = dict(payload)
            payload["_truncated"] = {"original_bytes": original, "max_string_chars": limit}
            return payload
        limit = max(64, limit // 4)
    return {"_truncated": {"original_bytes": original, "dropped": True},
            "keys": sorted(payload)[:100]}


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        if len(value) > limit:
            return value[:limit] + f"…[truncated {len(value) - limit} chars]"
        return value
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        if len(value) > 200:
            return [_cut_strings(v, limit) for v in value[:200]] + [f"…[{len(value) - 200} more items]"]
        return [_cut_strings(v, limit) for v in value]
    return value


def payload_budget(max_entry_bytes: int) -> int:
    return max(4096, max_entry_bytes - ENTRY_HEADROOM_BYTES)
