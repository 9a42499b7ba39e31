"""Forgetting in Redis: matching entries of a stream deleted (and
acknowledged), and an append-only-file rewrite so the server's files no
longer hold them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from tray_app import aof
from tray_app.redis_conn import text

#: stream entries per XRANGE page / XDEL
PAGE = 500
AOF_REWRITE_TIMEOUT_S = 120.0


def _entries(client: redis.Redis, stream: str) -> Iterator[tuple[str, dict[Any, Any]]]:
    cursor = "-"
    while True:
        batch: list[Any] = client.xrange(stream, min=cursor, max="+", count=PAGE) or []
        for eid, fields in batch:
            yield text(eid), fields or {}
        if len(batch) < PAGE:
            return
        cursor = "(" + text(batch[-1][0])


def sweep_stream(client: redis.Redis, stream: str, match: Callable[[dict[Any, Any]], bool],
                 dry_run: bool, group: str | None = None) -> list[str]:
    """XDEL (and XACK for ``group``) every matching entry. Returns their ids."""
    if not client.exists(stream):
        return []
    ids = [eid for eid, fields in _entries(client, stream) if match(fields)]
    if not dry_run:
        for i in range(0, len(ids), PAGE):
            chunk = ids[i:i + PAGE]
            pipe = client.pipeline(transaction=True)
            if group is not None:
                pipe.xack(stream, group, *chunk)
            pipe.xdel(stream, *chunk)
            pipe.execute()
    return ids


def rewrite_aof(client: redis.Redis, timeout_s: float = AOF_REWRITE_TIMEOUT_S) -> str:
    """BGREWRITEAOF and wait for it, with the RDB preamble off for this rewrite
    (an RDB stream keeps its deleted entries' bytes; XADD commands do not).
    Returns what happened, in a few words."""
    info = client.info("persistence")
    if not int(info.get("aof_enabled", 0)):
        return "no append-only file"
    preamble: str | None = None
    try:
        preamble = text(client.config_get("aof-use-rdb-preamble").get("aof-use-rdb-preamble") or "yes")
        client.config_set("aof-use-rdb-preamble", "no")
    except redis.ResponseError:
        preamble = None  # CONFIG is disabled on this server: rewrite as it is configured
    try:
        deadline = time.monotonic() + timeout_s
        before = int(info.get("aof_rewrites", -1))
        while True:
            try:
                client.bgrewriteaof()
                break
            except redis.ResponseError as exc:  # a rewrite already runs: ours comes after it
                if "in progress" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        while time.monotonic() < deadline:
            now = client.info("persistence")
            running = int(now.get("aof_rewrite_in_progress", 0)) or int(now.get("aof_rewrite_scheduled", 0))
            done = before < 0 or int(now.get("aof_rewrites", 0)) > before
            if not running and done:
                status = text(now.get("aof_last_bgrewrite_status", "ok"))
                return "append-only file rewritten" if status == "ok" else f"append-only file rewrite: {status}"
            time.sleep(0.05)
        return "append-only file rewrite still running"
    finally:
        if preamble is not None:
            client.config_set("aof-use-rdb-preamble", preamble)


def await_history_gone(aof_dir: Path, timeout_s: float = 10.0) -> bool:
    """The private server removes the pre-rewrite files (manifest type ``h``) in
    a background thread once the rewrite is done: wait for it (we may stop the
    server next). True when none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if all(e.kind != "h" for e in aof.read_manifest(aof_dir)):
                return True
        except (OSError, ValueError):
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
