"""Retention benchmark: what deleting old rows costs ingest, in the same run.

    .venv/bin/python bench/retention_bench.py [--existing 1000000] [--events 100000] [--rounds 3]

A telemetry.db of --existing rows, every one older than raw_days (90) and
already applied by the usage worker (so all of them may go), is built once by
a bulk insert. Then, alternately and each time on a fresh copy, the real
Engine (no monitors; the usage worker on) ingests --events preloaded events:

  * without retention (raw_days = 0);
  * with retention deleting the old rows while the events arrive (raw_days = 90).

It prints events/s of each run, the median of each side, their ratio, how
many old rows retention removed during the ingest window, its longest
transaction (the write lock held), and how fast it removes once the engine
is idle. Events are a burst (the stream is full from the start): ingest
is busy all the time, the case where retention yields most (BUSY_DUTY).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
import uuid
import zlib
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchutil  # noqa: E402
import ingest_bench  # noqa: E402  (the same events, preload and commit timing)

OLD_DAY = "2025-01-01"
#: after the ingest window (and 10 s more, while it still counts as busy), retention's
#: pace on an idle engine is measured over this long
IDLE_S = 10.0


def make_old_db(path: Path, rows: int) -> None:
    """``rows`` synthetic compressed rows from early 2025 (random uuid4 ids, as the
    unique index sees at its worst), applied by the usage worker."""
    from tray_app.engine import schema
    from tray_app.usage import schema as usage_schema

    conn = schema.open_database(path)
    text = ("The quick brown fox refactors the parser and adds tests. " * 20)[:1100]
    blob = zlib.compress(json.dumps({"payload": {"prompt": text}}).encode(), 1)
    conn.execute("PRAGMA cache_size=-262144")
    for start in range(0, rows, 100_000):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO raw_traces (event_id, session_id, event_type, platform, hook_type, timestamp, "
            "workspace_hash, source, ingested_at, event_data) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ((str(uuid.uuid4()), f"old-{i % 500}", "tool_use", "cursor", "x",
              f"{OLD_DAY}T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1_000_000:06d}Z",
              f"{i % 9:016x}", "cursor_hook", "x", blob) for i in range(start, min(rows, start + 100_000))))
        conn.execute("COMMIT")
    usage_schema.ensure(conn)
    with schema.immediate(conn):
        usage_schema.set_position(conn, rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def role(url: str, home: str, n: int, retain: bool) -> dict:
    os.environ["TELEMETRY_TRAY_HOME"] = home
    os.environ["TELEMETRY_TRAY_REDIS_URL"] = url
    os.environ["TELEMETRY_TRAY_RETENTION_RAW_DAYS"] = "90" if retain else "0"
    os.environ["TELEMETRY_TRAY_RETENTION_CHECK_INTERVAL_S"] = "0.1"
    from tray_app.config import load_config
    from tray_app.engine import retention
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url

    cfg = load_config()
    eng = Engine(cfg, endpoint_from_url(url), with_monitors=False)
    elapsed, lat, cpu = ingest_bench.ingest(eng, n)  # CPU of the whole process: ingest, usage worker, retention

    def removed() -> int:
        with closing(sqlite3.connect(f"file:{cfg.paths.database}?mode=ro", uri=True)) as c:
            return int(retention.read_stats(c).get(retention.AGE, {}).get("rows", 0))

    during = removed()
    max_txn = eng.maintenance._retention.peak_txn_ms
    idle_rate = 0.0
    if retain:  # then the engine idles: retention at its quiet pace, once the 10-s rate is 0
        time.sleep(10.5)
        before, t1 = removed(), time.perf_counter()
        time.sleep(IDLE_S)
        idle_rate = (removed() - before) / (time.perf_counter() - t1)
    eng.stop(10)
    out = ingest_bench._result(n, elapsed, lat, cpu)
    out.update(removed_during=during, retention_max_txn_ms=round(max_txn, 1),
               idle_rows_per_s=round(idle_rate))
    return out


def run_role(url: str, home: Path, n: int, retain: bool) -> dict:
    return benchutil.run_child(__file__, "--role", "on" if retain else "off", "--url", url, "--home", str(home),
                               "--events", str(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--existing", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--role", choices=("on", "off"))
    ap.add_argument("--url")
    ap.add_argument("--home")
    args = ap.parse_args()
    if args.role:
        print(json.dumps(role(args.url, args.home, args.events, args.role == "on")))
        return

    with benchutil.bench_server("retention-bench-") as (work, srv):
        template = work / "old.db"
        t = time.perf_counter()
        make_old_db(template, args.existing)
        print(f"built {args.existing:,} old rows in {time.perf_counter() - t:.0f} s "
              f"({template.stat().st_size / 1e6:.0f} MB)", flush=True)
        evs = ingest_bench.make_events(args.events, ordered=True)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for r in range(args.rounds):
            for retain in (False, True):
                home = benchutil.fresh_home(work, template)
                ingest_bench.preload(srv.client(), evs)
                res = run_role(srv.url, home, args.events, retain)
                runs[retain].append(res)
                print(f"round {r + 1} retention {'on ' if retain else 'off'} | {res['events_per_s']:>7,} events/s "
                      f"p50 {res['batch_p50_ms']:>6} ms p95 {res['batch_p95_ms']:>6} ms "
                      f"cpu {res['cpu_us_per_event']:>5} us/ev | old rows removed "
                      f"meanwhile {res['removed_during']:>7,}, longest retention transaction "
                      f"{res['retention_max_txn_ms']} ms; idle afterwards {res['idle_rows_per_s']:,} rows/s",
                      flush=True)
        off = statistics.median(r["events_per_s"] for r in runs[False])
        on = statistics.median(r["events_per_s"] for r in runs[True])
        removed = statistics.median(r["removed_during"] for r in runs[True])
        idle = statistics.median(r["idle_rows_per_s"] for r in runs[True])
        print(f"median: without retention {off:,.0f} events/s, with retention {on:,.0f} events/s "
              f"(ratio {on / off:.2f}, cost {100 * (1 - on / off):.1f}%); {removed:,.0f} old rows removed "
              f"during each ingest window, {idle:,.0f} rows/s once ingest is idle")
        print(json.dumps({"off": runs[False], "on": runs[True], "ratio": round(on / off, 3)}))


if __name__ == "__main__":
    main()
