"""The Redis parts of the diagnostics bundle: INFO, XINFO of our streams, the
engine's published health snapshot, and the dead letters (counts by reason,
the oldest few with content fields as sizes).

Connects to the configured Redis without ever starting the private server:
a bundle is often made because something is down, and it should say so.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tray_app.config import Config
from tray_app.engine.health import HealthSnapshot
from tray_app.errors import TelemetryTrayError
from tray_app.engine import dlq_ops as dlq_mod
from tray_app.diagnostics.util import json_or_text, one_line, plain
from tray_app.diagnostics.redact import Redactor

INFO_SECTIONS = ("server", "memory", "persistence", "keyspace")


class RedisParts:
    def __init__(self, cfg: Config, client: Any = None) -> None:
        self.client = client
        self.where = ""
        self.error = ""
        self._owned = False
        if client is None:
            import redis

            from tray_app.redis_conn import RedisProvider, translate

            try:
                ep = RedisProvider(cfg).start(spawn=False, take_ownership=False, write_endpoint=False)
                self.where = ep.masked + (" (private server)" if ep.managed else "")
                c = ep.client(socket_timeout=3.0, connect_timeout=2.0)
                try:
                    c.ping()
                except redis.RedisError as exc:
                    c.close()
                    raise translate(exc, ep) from None
                self.client = c
                self._owned = True
            except Exception as exc:  # noqa: BLE001 - recorded in the bundle instead
                self.error = str(exc) if isinstance(exc, TelemetryTrayError) else one_line(exc)

    def close(self) -> None:
        if self._owned and self.client is not None:
            self.client.close()

    def info(self) -> dict[str, Any]:
        if self.client is None:
            return {"reachable": False, "where": self.where, "error": self.error}
        from tray_app.redis_conn import GROUP, STREAMS

        out: dict[str, Any] = {"reachable": True, "where": self.where}
        for name in INFO_SECTIONS:
            out[f"info_{name}"] = plain(self.client.info(name))
        streams: dict[str, Any] = {}
        for stream in STREAMS:
            if not self.client.exists(stream):
                streams[stream] = {"exists": False}
                continue
            info = plain(self.client.xinfo_stream(stream))
            for key in ("first-entry", "last-entry"):  # whole entries: keep only their ids
                entry = info.pop(key, None)
                if entry:
                    info[f"{key}-id"] = entry[0]
            part: dict[str, Any] = {"stream": info, "groups": plain(self.client.xinfo_groups(stream)),
                                    "consumers": {}}
            for g in part["groups"]:
                gname = g.get("name")
                part["consumers"][gname] = plain(self.client.xinfo_consumers(stream, gname))
                if gname == GROUP:
                    part["pending_summary"] = plain(self.client.xpending(stream, gname))
            streams[stream] = part
        out["streams"] = streams
        return out

    def health(self) -> dict[str, Any]:
        from tray_app.redis_conn import HEALTH_KEY

        if self.client is None:
            return {"source": None, "note": f"no health snapshot: Redis not reachable ({self.error})"}
        raw = self.client.get(HEALTH_KEY)
        if raw is None:
            return {"source": None, "note": f"no health snapshot in {HEALTH_KEY}: the engine is not running"}
        snap = HealthSnapshot.from_dict(json.loads(raw))
        age = round(time.time() - snap.updated_at, 1) if snap.updated_at else None
        return {"source": f"Redis key {HEALTH_KEY}", "age_s": age, "snapshot": snap.to_dict()}

    def dead_letters(self, red: Redactor, sample: int) -> dict[str, Any]:
        """Counts by reason and the oldest ``sample`` entries as summaries. Every
        dead letter's content is also handed to ``red`` so it never shows verbatim."""
        if self.client is None:
            return {"error": f"Redis not reachable ({self.error})"}
        counts: dict[str, int] = {}
        first: list[dict[str, Any]] = []
        total = 0
        for dl in dlq_mod.iter_entries(self.client):
            total += 1
            counts[dl.reason] = counts.get(dl.reason, 0) + 1
            if len(first) < sample:
                first.append(dl.summary(show_payload=False))
            for k, v in dl.original_fields().items():
                name = k.decode("utf-8", "replace") if isinstance(k, bytes) else k
                if name not in dlq_mod.ID_FIELDS and name != "metadata":
                    red.add_content(json_or_text(v))
        return {"length": total,
                "counts_by_reason": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                "first_entries": first,
                "note": "payload, metadata and other content fields appear only as <field>_bytes sizes"}
