"""CursorDatabaseMonitor pass cost on a big state.vscdb.

    .venv/bin/python bench/monitor_bench.py [--bubbles 100000] [--bubble-bytes 2000]
                                            [--small 10000] [--runs 200] [--json] [--keep DIR]

Builds a Cursor-shaped global state.vscdb in WAL mode (ItemTable +
cursorDiskKV with composerData:* and bubbleId:* rows of realistic JSON; by
default 100,000 bubbles of ~2 kB, about 200 MB), keeps a writer connection
open the way a running Cursor does, lets the monitor catch up once (the
initial backfill, timed, events discarded), then measures with a real
Redis-compatible server receiving the events:

  unchanged     a pass when nothing changed (target < 5 ms)
  +N bubbles    a pass right after the writer added N bubbles (N = 10, 100, 1000):
                time should grow with N, not with the database
  small db      the same +10 pass on a --small database, for comparison
  transcripts   ClaudeCodeTranscriptMonitor over --transcripts files of 100 lines:
                an unchanged pass (a walk and a stat per file) and one after 10
                lines were appended to one file

Prints median / p95 / max per case and the machine (nproc, CPU model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchutil import cpu_model  # noqa: E402
from tray_app.config import load_config  # noqa: E402
from tray_app.monitors.claude_transcripts import ClaudeCodeTranscriptMonitor  # noqa: E402
from tray_app.monitors.cursor_db import CursorDatabaseMonitor  # noqa: E402
from tray_app.monitors.emit import Emitter  # noqa: E402
from tray_app.redis_conn import endpoint_from_url  # noqa: E402
from tray_app.redis_server import find_server_binary  # noqa: E402


class NullEmitter:
    """For the initial backfill: what we time there is reading, not Redis."""

    def __init__(self) -> None:
        self.n = 0

    def emit(self, evs: Any) -> int:
        n = len(list(evs))
        self.n += n
        return n

    def may_hurry(self) -> bool:
        return True

    def close(self) -> None:
        pass


def bubble(cid: str, i: int, size: int) -> str:
    kind = 1 if i % 2 == 0 else 2
    body = {"_v": 3, "type": kind, "bubbleId": f"b-{i:08d}", "requestId": f"r-{i // 2:08d}",
            "createdAt": "2026-03-02T09:30:00.000Z", "isAgentic": True, "unifiedMode": 2,
            "tokenCount": {"inputTokens": 1800 if kind == 2 else 0, "outputTokens": 200 if kind == 2 else 0},
            "codeBlocks": [], "images": [], "gitDiffs": []}
    filler = max(0, size - len(json.dumps(body)) - 20)
    body["text"] = ("Refactor the cart total so discounts apply per line. " * (filler // 53 + 1))[:filler]
    return json.dumps(body, separators=(",", ":"))


def build_db(path: Path, bubbles: int, size: int) -> "sqlite3.Connection":  # noqa: F821
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE ItemTable (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    conn.execute("CREATE TABLE cursorDiskKV (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    conn.execute("INSERT INTO ItemTable VALUES ('cursorAuth/accessToken', 'eyJhbGciOi.eyJzdWIi.sig')")
    per_composer = 200
    conn.execute("BEGIN")
    for start in range(0, bubbles, 5000):
        rows = []
        for i in range(start, min(bubbles, start + 5000)):
            cid = f"c-{i // per_composer:06d}"
            rows.append((f"bubbleId:{cid}:b-{i:08d}", bubble(cid, i, size)))
            if i % per_composer == per_composer - 1:
                rows.append((f"composerData:{cid}", json.dumps({"_v": 10, "composerId": cid,
                                                                 "createdAt": 1772443800000,
                                                                 "fullConversationHeadersOnly": []})))
            if i % 50 == 0:  # other key families the monitor skips
                rows.append((f"checkpointId:{cid}:{i}", json.dumps({"files": []})))
        conn.executemany("INSERT INTO cursorDiskKV VALUES (?, ?)", rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return conn


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = find_server_binary()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary.path, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.02)


def stats(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"median_ms": round(statistics.median(s), 3), "p95_ms": round(s[min(len(s) - 1, int(len(s) * 0.95))], 3),
            "max_ms": round(s[-1], 3), "runs": len(s)}


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000.0


def bench_db(home: Path, user_dir: Path, bubbles: int, size: int, runs: int, url: str,
             adds: list[int], quiet: bool) -> dict[str, Any]:
    db_path = user_dir / "globalStorage" / "state.vscdb"
    t = time.perf_counter()
    writer = build_db(db_path, bubbles, size)
    build_s = time.perf_counter() - t
    db_mb = db_path.stat().st_size / 1e6
    cfg = load_config(environ={"TELEMETRY_TRAY_HOME": str(home), "TELEMETRY_TRAY_REDIS_URL": url})
    cfg = replace(cfg, monitors=replace(cfg.monitors, cursor_user_dir=str(user_dir)))
    null = NullEmitter()
    mon = CursorDatabaseMonitor(cfg, endpoint_from_url(url), emitter=null,  # type: ignore[arg-type]
                                max_items_per_pass=10**9)
    backfill_ms = timed(mon.run_once)
    if not quiet:
        print(f"  {bubbles} bubbles, {db_mb:.0f} MB (built in {build_s:.1f} s); "
              f"backfill {null.n} items in {backfill_ms / 1000:.2f} s", file=sys.stderr)
    mon.emitter = Emitter(endpoint_from_url(url))
    mon.run_once()  # connection warm-up
    out: dict[str, Any] = {"bubbles": bubbles, "db_mb": round(db_mb, 1), "backfill_items": null.n,
                           "backfill_s": round(backfill_ms / 1000, 2)}
    out["unchanged"] = stats([timed(mon.run_once) for _ in range(runs)])
    serial = bubbles
    for n in adds:
        samples = []
        for _ in range(max(3, min(20, runs // (n // 10 or 1)))):
            rows = [(f"bubbleId:c-new:b-{serial + j:08d}", bubble("c-new", serial + j, size)) for j in range(n)]
            serial += n
            writer.execute("BEGIN")
            writer.executemany("INSERT INTO cursorDiskKV VALUES (?, ?)", rows)
            writer.execute("COMMIT")
            emitted = [0]
            samples.append(timed(lambda: emitted.__setitem__(0, mon.run_once())))
            assert emitted[0] == n, (emitted[0], n)
        out[f"+{n}"] = stats(samples)
    mon.close()
    writer.close()
    return out


def transcript_line(sid: str, i: int) -> bytes:
    obj = {"parentUuid": None, "isSidechain": False, "userType": "external", "cwd": "/home/dev/shop",
           "sessionId": sid, "version": "2.1.12", "type": "assistant" if i % 2 else "user",
           "uuid": f"{sid[:8]}-{i:06d}", "timestamp": "2026-03-02T09:30:00.000Z",
           "message": {"role": "user", "content": "Refactor the cart total so discounts apply per line. " * 8}}
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def bench_transcripts(home: Path, root: Path, files: int, runs: int, url: str) -> dict[str, Any]:
    paths = []
    for f in range(files):
        sid = f"{f:08d}-0000-4000-8000-000000000000"
        p = root / f"-home-dev-proj{f % 20}" / f"{sid}.jsonl"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"".join(transcript_line(sid, i) for i in range(100)))
        paths.append((p, sid))
    cfg = load_config(environ={"TELEMETRY_TRAY_HOME": str(home), "TELEMETRY_TRAY_REDIS_URL": url})
    null = NullEmitter()
    mon = ClaudeCodeTranscriptMonitor(cfg, endpoint_from_url(url), roots=[root],
                                      emitter=null, max_lines_per_pass=10**9)  # type: ignore[arg-type]
    backfill_ms = timed(mon.run_once)
    mon.emitter = Emitter(endpoint_from_url(url))
    out: dict[str, Any] = {"files": files, "backfill_lines": null.n, "backfill_s": round(backfill_ms / 1000, 2)}
    out["unchanged"] = stats([timed(mon.run_once) for _ in range(max(5, runs // 10))])
    samples = []
    for k in range(10):
        p, sid = paths[k]
        with open(p, "ab") as fh:
            fh.write(b"".join(transcript_line(sid, 1000 + k * 10 + i) for i in range(10)))
        samples.append(timed(mon.run_once))
    out["+10"] = stats(samples)
    mon.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bubbles", type=int, default=100_000)
    ap.add_argument("--bubble-bytes", type=int, default=2000)
    ap.add_argument("--small", type=int, default=10_000, help="bubbles in the comparison database (0: skip)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--transcripts", type=int, default=1000, help="transcript files (0: skip)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", help="build under this directory and keep it")
    args = ap.parse_args()
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    proc, url = start_server(base)
    results: dict[str, Any] = {"machine": {"nproc": os.cpu_count(), "cpu": cpu_model(),
                                           "python": platform.python_version(),
                                           "sqlite": __import__("sqlite3").sqlite_version}}
    try:
        results["large"] = bench_db(base / "home-large", base / "large" / "User", args.bubbles, args.bubble_bytes,
                                    args.runs, url, [10, 100, 1000], args.json)
        if args.small:
            results["small"] = bench_db(base / "home-small", base / "small" / "User", args.small,
                                        args.bubble_bytes, args.runs, url, [10], args.json)
        if args.transcripts:
            results["transcripts"] = bench_transcripts(base / "home-tr", base / "claude" / "projects",
                                                       args.transcripts, args.runs, url)
    finally:
        proc.terminate()
        proc.wait(10)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    m = results["machine"]
    print(f"machine: {m['nproc']} x {m['cpu']}, Python {m['python']}, SQLite {m['sqlite']}")
    for name, r in (("large", results["large"]), ("small", results.get("small"))):
        if not r:
            continue
        print(f"{name}: {r['bubbles']} bubbles, {r['db_mb']} MB; backfill {r['backfill_items']} items "
              f"in {r['backfill_s']} s")
        for case in ("unchanged", "+10", "+100", "+1000"):
            if case in r:
                s = r[case]
                print(f"  {case:>9}: median {s['median_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms, "
                      f"max {s['max_ms']:.3f} ms ({s['runs']} runs)")
    tr = results.get("transcripts")
    if tr:
        print(f"transcripts: {tr['files']} files; backfill {tr['backfill_lines']} lines in {tr['backfill_s']} s")
        for case in ("unchanged", "+10"):
            s = tr[case]
            print(f"  {case:>9}: median {s['median_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms, "
                  f"max {s['max_ms']:.3f} ms ({s['runs']} runs)")
    ok = results["large"]["unchanged"]["median_ms"] < 5.0
    print(f"unchanged pass < 5 ms: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
