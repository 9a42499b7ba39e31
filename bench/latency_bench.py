"""Latency benchmark: how long from XADD until the event is a committed row, at
low load (one event at a time, as the hooks produce them while you work).

    .venv/bin/python bench/latency_bench.py [--events 200] [--rate 20]

The engine (validation, compression, CDC, ack after commit) against a baseline
in the same run on the same server: a bare loop that blocks on XREADGROUP and
commits each read at once (json + zlib + INSERT + COMMIT + XACK). Both are
timed from the producer's XADD to the moment the commit returned, with the
same clock in one process. Prints p50/p95/max for each and the p50 ratio
(engine / baseline: lower is better, 1.0 = as fast as the bare loop).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

STREAM, GROUP = "telemetry:events", "processors"


def produce(client, n: int, rate: float, sent: dict[str, float], stop: threading.Event) -> None:  # type: ignore[no-untyped-def]
    from tray_app import events
    from engine_util import make_event

    for i in range(n):
        if stop.is_set():
            return
        ev = make_event(i, size=1200)
        sent[ev["event_id"]] = time.perf_counter()
        client.xadd(STREAM, events.encode(ev))
        time.sleep(1 / rate)


def run_engine(url: str, home: Path, n: int, rate: float) -> list[float]:
    os.environ["TELEMETRY_TRAY_HOME"] = str(home)
    os.environ["TELEMETRY_TRAY_REDIS_URL"] = url
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url, ensure_streams

    ep = endpoint_from_url(url)
    client = ep.client()
    ensure_streams(client)
    committed: dict[str, float] = {}
    eng = Engine(load_config(), ep, with_monitors=False)

    def on_commit(evs):  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        for ev in evs:
            committed.setdefault(ev["event_id"], now)

    eng.consumer.listeners.append(on_commit)
    eng.start()
    try:
        return _measure(client, n, rate, committed)
    finally:
        eng.stop(10)
        client.close()


def run_baseline(url: str, home: Path, n: int, rate: float) -> list[float]:
    import redis

    c = redis.Redis.from_url(url)
    c.delete(STREAM)
    c.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    conn = sqlite3.connect(home / "baseline.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (event_id TEXT PRIMARY KEY, stream_id TEXT, data BLOB)")
    committed: dict[str, float] = {}
    stop = threading.Event()

    def loop() -> None:
        r = redis.Redis.from_url(url)
        while not stop.is_set():
            reply = r.xreadgroup(GROUP, "baseline", {STREAM: ">"}, count=500, block=100)
            if not reply:
                continue
            entries = reply[0][1]
            rows = []
            for sid, f in entries:
                d = {k.decode(): v.decode() for k, v in f.items()}
                rows.append((d["event_id"], sid.decode(), zlib.compress(json.dumps(d).encode())))
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO t VALUES (?,?,?)", rows)
            conn.execute("COMMIT")
            now = time.perf_counter()
            for row in rows:
                committed.setdefault(row[0], now)
            r.xack(STREAM, GROUP, *[sid for sid, _ in entries])

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        return _measure(c, n, rate, committed)
    finally:
        stop.set()
        t.join(5)


def _measure(client, n: int, rate: float, committed: dict[str, float]) -> list[float]:  # type: ignore[no-untyped-def]
    sent: dict[str, float] = {}
    stop = threading.Event()
    produce(client, 5, rate, {}, stop)  # warm-up, not counted
    time.sleep(0.5)
    produce(client, n, rate, sent, stop)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(k in committed for k in sent):
        time.sleep(0.01)
    return [(committed[k] - t0) * 1000 for k, t0 in sent.items() if k in committed]


def summary(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"n": len(s), "p50_ms": round(statistics.median(s), 1), "p95_ms": round(s[int(len(s) * 0.95)], 1),
            "max_ms": round(s[-1], 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0, help="events per second")
    args = ap.parse_args()
    from benchutil import machine
    from conftest import RedisProc
    from tray_app.redis_server import find_server_binary

    work = Path(tempfile.mkdtemp(prefix="latency-bench-"))
    srv = RedisProc(find_server_binary(), work / "redis", appendonly=False).start()
    print(f"machine: {machine()}")
    print(f"load: {args.events} single events at {args.rate:g}/s, ~1.4 KB each")
    try:
        (work / "b").mkdir()
        base = summary(run_baseline(srv.url, work / "b", args.events, args.rate))
        srv.client().flushall()
        eng = summary(run_engine(srv.url, work / "e", args.events, args.rate))
        ratio = round(eng["p50_ms"] / base["p50_ms"], 2) if base["p50_ms"] else None
        for name, r in (("engine", eng), ("baseline", base)):
            print(f"{name:>9}: XADD -> committed row p50 {r['p50_ms']:>6} ms  p95 {r['p95_ms']:>6} ms  "
                  f"max {r['max_ms']:>6} ms  ({r['n']} events)")
        print(f"p50 ratio engine/baseline: {ratio}")
        print(json.dumps({"engine": eng, "baseline": base, "p50_ratio": ratio}))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
