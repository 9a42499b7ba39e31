"""Does the usage worker slow ingest? The ingest benchmark's engine run
(bench/ingest_bench.py, same events, same fresh-process method) with and
without the usage worker, and with the worker busy catching up a history.

    .venv/bin/python bench/usage_bench.py [--events 100000] [--history 100000] [--rounds 3]

Variants, alternated round by round on the same machine and server:
  * no worker:      Engine(with_usage=False), as before issue 13;
  * worker:         the worker follows the feed while the burst is ingested
                    (it derives every event as it is committed);
  * no worker + history: the same starting table as the next, without the worker;
  * worker + history: the table already holds ``--history`` Claude Code
                    transcript rows (assistant lines with usage, never derived),
                    so the worker is catching up from raw_traces throughout.
Prints events/s per variant (median of the rounds) and the ratio to "no worker"
on the same starting table.
Then times `usage rebuild`'s work (process_chunk over the history) alone, and
the report queries on the result.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchutil  # noqa: E402
import ingest_bench  # noqa: E402  (same events and helpers as the ingest benchmark)


def role_engine(url: str, home: str, n: int, with_usage: bool) -> dict:
    os.environ["TELEMETRY_TRAY_HOME"] = home
    os.environ["TELEMETRY_TRAY_REDIS_URL"] = url
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url

    eng = Engine(load_config(), endpoint_from_url(url), with_monitors=False, with_usage=with_usage)
    elapsed, lat, cpu = ingest_bench.ingest(eng, n)
    worker = eng.usage.health() if eng.usage is not None else {}
    eng.stop(10)
    out = ingest_bench._result(n, elapsed, lat, cpu)
    out["worker_rows_applied"] = worker.get("rows_applied", 0)
    return out


def make_history(path: Path, rows: int) -> None:
    """Claude Code assistant lines as the transcript monitor stores them."""
    from tray_app.engine import schema

    conn = schema.open_database(path)
    conn.execute("BEGIN")
    for i in range(rows):
        ts = f"2026-02-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}.000Z"
        ev = {"payload": {"type": "assistant", "message": {"model": "claude-sonnet-4-5-20250929",
                                                           "content": [{"type": "text", "text": "ok " * 80}]}},
              "metadata": {"source": "transcript_monitor", "message_id": f"msg_{i // 3}", "request_id": f"req_{i // 3}",
                           "model": "claude-sonnet-4-5-20250929",
                           "usage": {"input_tokens": 10, "output_tokens": 50 + i % 3,
                                     "cache_creation_input_tokens": 300, "cache_read_input_tokens": 20_000}}}
        conn.execute("INSERT INTO raw_traces (event_id, session_id, event_type, platform, hook_type, timestamp, "
                     "ingested_at, event_data, workspace_hash, source) VALUES (?,?,?,?,?,?,?,?,?,?)",
                     (f"hist-{i}", f"hist-session-{i % 300}", "transcript_trace", "claude_code", "assistant", ts,
                      ts, zlib.compress(json.dumps(ev).encode(), 1), f"{i % 9:016x}", "transcript_monitor"))
        if i % 50_000 == 49_999:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.close()


def run_role(url: str, home: Path, n: int, with_usage: bool) -> dict:
    return benchutil.run_child(__file__, "--role", "engine", "--url", url, "--home", str(home), "--events", str(n),
                               *(["--with-usage"] if with_usage else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--history", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--role")
    ap.add_argument("--url")
    ap.add_argument("--home")
    ap.add_argument("--with-usage", action="store_true")
    args = ap.parse_args()
    if args.role:
        print(json.dumps(role_engine(args.url, args.home, args.events, args.with_usage)))
        return

    with benchutil.bench_server("usage-bench-") as (work, srv):
        history = work / "history.db"
        make_history(history, args.history)
        evs = ingest_bench.make_events(args.events, ordered=True)
        hist = f"{args.history:,} history rows"
        variants = {"no worker": (False, None), "worker": (True, None),
                    f"no worker + {hist}": (False, history), f"worker + {hist}": (True, history)}
        got: dict[str, list[dict]] = {k: [] for k in variants}
        for rnd in range(args.rounds):
            for name, (with_usage, template) in variants.items():
                home = benchutil.fresh_home(work, template)
                ingest_bench.preload(srv.client(), evs)
                r = run_role(srv.url, home, args.events, with_usage)
                got[name].append(r)
                print(f"round {rnd + 1} {name:>28}: {r['events_per_s']:>7,} events/s, p95 batch "
                      f"{r['batch_p95_ms']} ms, worker applied {r['worker_rows_applied']:,} rows", flush=True)
        summary = {}
        for name, rs in got.items():
            # each variant against "no worker" on the same starting table
            base = statistics.median(r["events_per_s"] for r in got["no worker" + name[len("worker"):]]) \
                if name.startswith("worker") else statistics.median(r["events_per_s"] for r in rs)
            med = statistics.median(r["events_per_s"] for r in rs)
            summary[name] = {"events_per_s": med, "ratio": round(med / base, 3),
                             "batch_p95_ms": statistics.median(r["batch_p95_ms"] for r in rs)}
            print(f"{name:>36}: median {med:>9,.0f} events/s  ratio {med / base:.3f}")
        conn = sqlite3.connect(str(history), isolation_level=None)
        from tray_app.usage import schema as usage_schema
        from tray_app.usage.worker import CHUNK_ROWS, process_chunk
        usage_schema.ensure(conn)
        t = time.perf_counter()
        pos, done = 0, 0
        while True:
            n, pos = process_chunk(conn, pos, CHUNK_ROWS * 4)
            if not n:
                break
            done += n
        dt = time.perf_counter() - t
        print(f"derive alone: {done:,} history rows in {dt:.2f} s ({done / dt:,.0f} rows/s)")
        from tray_app.usage import query
        for name in ("daily", "monthly", "models", "sessions"):
            t = time.perf_counter()
            getattr(query, name)(conn, tz="UTC")
            print(f"query.{name} over {done:,} rows: {(time.perf_counter() - t) * 1000:.0f} ms")
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
