"""Ingest benchmark: the engine against a minimal baseline on the same data, same run.

    .venv/bin/python bench/ingest_bench.py [--events 100000] [--existing 1000000]

For each dataset (random uuid4 event ids; time-ordered UUIDv7 ids as the hooks
make them) and each starting table (empty; --existing rows already present), it
preloads the events into a private valkey-server, then runs in a fresh process:
  * engine:   tray_app's Engine (validation, compression, idempotent insert,
              CDC, XACK after commit), until every entry is acknowledged;
  * baseline: bare XREADGROUP + json + zlib + executemany + COMMIT + XACK,
              no validation, no CDC.
It prints events/s, p50/p95 batch latency, peak RSS, and engine/baseline ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STREAM, GROUP = "telemetry:events", "processors"


def make_events(n: int, ordered: bool) -> list[dict[str, str]]:
    from tray_app import events

    text = ("The quick brown fox refactors the parser and adds tests. " * 20)[:1100]
    out = []
    for i in range(n):
        ev = {
            "event_id": events.new_event_id() if ordered else str(uuid.uuid4()),
            "platform": "cursor" if i % 3 else "claude_code",
            "event_type": ("user_prompt", "tool_use", "file_edit", "shell_execution")[i % 4],
            "timestamp": events.utc_now_iso(),
            "session_id": f"session-{i % 50}",
            "hook_type": "beforeSubmitPrompt",
            "workspace_hash": f"{i % 9:016x}",
            "payload": {"prompt": text, "n": i, "files": ["src/a.py", "src/b.py"]},
            "metadata": {"source": "cursor_hook", "model": "model-x", "generation_id": str(i)},
        }
        out.append(events.encode(ev))
    return out


def preload(client, evs) -> None:  # type: ignore[no-untyped-def]
    client.delete(STREAM)
    for i in range(0, len(evs), 2000):
        pipe = client.pipeline(transaction=False)
        for f in evs[i:i + 2000]:
            pipe.xadd(STREAM, f)
        pipe.execute()
    client.xgroup_create(STREAM, GROUP, id="0")


# ------------------------------------------------------------------------ roles (child processes)

def time_commits(eng) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Record each batch's commit time (ms) and when the first batch was in hand
    (steady state is measured from there, as for the baseline)."""
    lat: list[float] = []
    first: list[float] = []
    orig = eng.consumer.writer.write_prepared

    def timed(batch, settled=()):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.perf_counter())
        r = orig(batch, settled)
        lat.append(r.commit_ms)
        return r

    eng.consumer.writer.write_prepared = timed
    return lat, first


def ingest(eng, n: int) -> tuple[float, list[float], float]:  # type: ignore[no-untyped-def]
    """Start ``eng`` and wait until it acknowledged ``n`` events. Returns the
    steady-state seconds (from the first batch in hand: start-up excluded, as in
    the baseline), each batch's commit ms and the process's CPU seconds."""
    from tray_app.engine import tuning

    lat, first = time_commits(eng)
    tuning.apply()  # as the app's faces do at start-up
    t0 = time.perf_counter()
    c0 = _cpu_s()
    eng.start()
    while eng.consumer.totals["acked"] < n:
        time.sleep(0.005)
    return time.perf_counter() - (first[0] if first else t0), lat, _cpu_s() - c0


def role_engine(url: str, home: str, n: int) -> dict:
    os.environ["TELEMETRY_TRAY_HOME"] = home
    os.environ["TELEMETRY_TRAY_REDIS_URL"] = url
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url

    eng = Engine(load_config(), endpoint_from_url(url), with_monitors=False)
    elapsed, lat, cpu = ingest(eng, n)
    eng.stop(10)
    return _result(n, elapsed, lat, cpu)


def role_baseline(url: str, home: str, n: int) -> dict:
    import redis

    db_path = Path(home) / "data" / "telemetry.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    c = redis.Redis.from_url(url)
    lat: list[float] = []
    done = 0
    t0 = time.perf_counter()
    c0 = _cpu_s()
    while done < n:
        reply = c.xreadgroup(GROUP, "baseline", {STREAM: ">"}, count=500, block=100)
        if not reply:
            continue
        entries = reply[0][1]
        b0 = time.perf_counter()
        if not done:
            t0 = b0  # steady state: from the first batch in hand
        rows = []
        for sid, f in entries:
            d = {k.decode(): v.decode() for k, v in f.items()}
            rows.append((d["event_id"], d["session_id"], d.get("external_session_id"), d["event_type"],
                         d["platform"], d.get("hook_type"), d["timestamp"], d.get("workspace_hash"), None,
                         sid.decode(), "now", zlib.compress(json.dumps(d).encode())))
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO raw_traces (event_id, session_id, external_session_id, "
                         "event_type, platform, hook_type, timestamp, workspace_hash, source, stream_id, "
                         "ingested_at, event_data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        conn.execute("COMMIT")
        lat.append((time.perf_counter() - b0) * 1000)
        c.xack(STREAM, GROUP, *[sid for sid, _ in entries])
        done += len(entries)
    return _result(n, time.perf_counter() - t0, lat, _cpu_s() - c0)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _result(n: int, elapsed: float, lat: list[float], cpu_s: float = 0.0) -> dict:
    s = sorted(lat) or [0.0]
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed),
            "cpu_us_per_event": round(cpu_s / n * 1e6, 1),
            "batch_p50_ms": round(s[len(s) // 2], 2), "batch_p95_ms": round(s[int(len(s) * 0.95)], 2),
            "batches": len(lat), "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """VmHWM of this process (ru_maxrss would include the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


# ------------------------------------------------------------------------ orchestration

def make_existing_db(path: Path, rows: int) -> None:
    from tray_app.engine import schema
    from tray_app import events

    conn = schema.open_database(path)
    blob = zlib.compress(b'{"payload":{"prompt":"' + b"x" * 1200 + b'"}}', 1)
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute("INSERT INTO raw_traces (event_id, session_id, event_type, platform, timestamp, "
                     "ingested_at, event_data, workspace_hash, source) VALUES (?,?,?,?,?,?,?,?,?)",
                     (events.new_event_id() if i % 2 else str(uuid.uuid4()), f"old-{i % 500}", "tool_use",
                      "cursor", "2026-01-01T00:00:00Z", "x", blob, f"{i % 9:016x}", "cursor_hook"))
        if i % 100_000 == 99_999:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.close()


def run_role(role: str, url: str, home: Path, n: int) -> dict:
    from benchutil import run_child

    return run_child(__file__, "--role", role, "--url", url, "--home", str(home), "--events", str(n))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--existing", type=int, default=1_000_000, help="rows already in the table (0 to skip)")
    ap.add_argument("--role", choices=("engine", "baseline"))
    ap.add_argument("--url")
    ap.add_argument("--home")
    args = ap.parse_args()
    if args.role:
        fn = role_engine if args.role == "engine" else role_baseline
        print(json.dumps(fn(args.url, args.home, args.events)))
        return


    sys.path.insert(0, str(ROOT / "tests"))
    from benchutil import machine
    from conftest import RedisProc  # the same real server the tests use
    from tray_app.redis_server import find_server_binary
    from tray_app.engine import schema

    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    srv = RedisProc(find_server_binary(), work / "redis", appendonly=False).start()
    print(f"machine: {machine()}")
    print(f"server: {srv.binary.path} {srv.binary.version_text}")
    results = []
    try:
        template_existing = None
        if args.existing:
            template_existing = work / "existing.db"
            t = time.perf_counter()
            make_existing_db(template_existing, args.existing)
            print(f"built a {args.existing:,}-row table in {time.perf_counter() - t:.0f}s "
                  f"({template_existing.stat().st_size / 1e6:.0f} MB)")
        datasets = {"uuid4 ids": make_events(args.events, ordered=False),
                    "time-ordered ids": make_events(args.events, ordered=True)}
        size = sum(len(k) + len(v) for k, v in datasets["uuid4 ids"][0].items())
        print(f"events: {args.events:,} of ~{size} bytes each")
        starts = [("empty table", None)] + ([(f"{args.existing:,} rows", template_existing)]
                                           if template_existing else [])
        for start_name, template in starts:
            for ds_name, evs in datasets.items():
                row = {"table": start_name, "ids": ds_name}
                for role in ("baseline", "engine"):
                    home = work / f"home-{role}"
                    shutil.rmtree(home, ignore_errors=True)
                    (home / "data").mkdir(parents=True)
                    db = home / "data" / "telemetry.db"
                    if template:
                        shutil.copy(template, db)
                    else:
                        schema.open_database(db).close()
                    preload(srv.client(), evs)
                    row[role] = run_role(role, srv.url, home, args.events)
                row["ratio"] = round(row["engine"]["events_per_s"] / row["baseline"]["events_per_s"], 2)
                results.append(row)
                e, b = row["engine"], row["baseline"]
                print(f"{start_name:>16} | {ds_name:>16} | engine {e['events_per_s']:>7,}/s "
                      f"p50 {e['batch_p50_ms']:>6} ms p95 {e['batch_p95_ms']:>6} ms rss {e['peak_rss_mb']:>5} MB "
                      f"cpu {e['cpu_us_per_event']:>5} us/ev | "
                      f"baseline {b['events_per_s']:>7,}/s p50 {b['batch_p50_ms']:>6} ms "
                      f"cpu {b['cpu_us_per_event']:>5} us/ev "
                      f"rss {b['peak_rss_mb']:>5} MB | ratio {row['ratio']}", flush=True)
        print(json.dumps(results))
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
