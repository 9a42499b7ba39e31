"""First start on a laptop with history: N MB of Claude Code transcripts
imported end to end by the real app (issue 13).

    .venv/bin/python bench/first_start_bench.py [--mb 500] [--seed 13] [--keep DIR]

1. Generates ``--mb`` MB of synthetic Claude Code transcripts in the real line
   format (tests/monitor_fixtures.py's structure): many projects, sessions and
   days; replies split over one line per content block (thinking, text,
   tool_use) sharing ``message.id`` + ``requestId`` and usage, the first line of
   some replies with a partial streamed ``output_tokens``; tool results with
   file contents; several models with the 5m/1h cache-write split; subagent
   (sidechain) files; resumed sessions that copy an earlier session's lines
   with new uuids; ``<synthetic>`` messages; summaries and snapshots.
2. Baseline (same run, same files, fresh process): a bare Python script that
   reads every file and json-parses every line (``json``; also ``orjson``), the
   floor any importer pays.
3. Starts the real app headless (``python -m tray_app run --headless``) with
   HOME, CLAUDE_CONFIG_DIR, TELEMETRY_TRAY_HOME and XDG_* in a temp dir, and
   polls telemetry.db (read-only) until every transcript line is a raw row and
   the usage tables' position covers every row: monitor -> stream ->
   raw_traces -> derived tables. Prints MB/s, rows/s, the ratio to the
   baseline, and what the log said while it ran (the progress indication).

Everything is in a temp dir, removed at the end unless ``--keep DIR``
(bench/ccusage_compare.py reuses this module).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODELS = (("claude-sonnet-4-5-20250929", 0.50), ("claude-opus-4-1-20250805", 0.12),
          ("claude-opus-4-5-20251101", 0.13), ("claude-haiku-4-5-20251001", 0.25))
#: raw_traces.source of the Cursor database monitor's rows (tray_app/monitors/cursor_items.py)
CURSOR_SOURCE = "python_monitor"
START_DAY = datetime(2026, 8, 3, tzinfo=timezone.utc)
DAYS = 90
TOOLS = ("Read", "Bash", "Edit", "Write", "Grep", "Glob", "TodoWrite")

_WORDS = ("the parser refactor adds tests for edge cases and keeps the public api stable while the "
          "worker derives usage from raw rows def total(xs): return sum(xs) import json class Config "
          "self.path = path if not ok: raise ValueError(msg) for line in fh: yield line.strip() "
          "assert result == expected # TODO handle unicode: naïve café 日本語 ").split(" ")


def encode_project(cwd: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in cwd)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Truth:
    """What the generator wrote, for checking both tools."""
    files: int = 0
    lines: int = 0
    bytes: int = 0
    #: (message.id, requestId) -> [final usage, output of the first line written, model, first line's time]
    requests: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    synthetic: int = 0

    def add_request(self, key: tuple[str, str], usage: dict[str, Any], first_output: int, model: str,
                    ts: str) -> None:
        if key not in self.requests:
            self.requests[key] = [usage, first_output, model, ts]

    def totals(self, first_line: bool = False) -> dict[str, int]:
        t = {"input_tokens": 0, "output_tokens": 0, "cache_creation_tokens": 0, "cache_read_tokens": 0,
             "requests": len(self.requests)}
        for u, first_out, _m, _ts in self.requests.values():
            t["input_tokens"] += u["input_tokens"]
            t["output_tokens"] += first_out if first_line else u["output_tokens"]
            t["cache_creation_tokens"] += u["cache_creation_input_tokens"]
            t["cache_read_tokens"] += u["cache_read_input_tokens"]
        return t


class Gen:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.truth = Truth()
        self.blob = " ".join(self.rng.choice(_WORDS) for _ in range(60_000))
        self.n = 0

    # -- helpers ---------------------------------------------------------------------------------

    def uuid(self) -> str:
        h = "%032x" % self.rng.getrandbits(128)
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"

    def text(self, lo: int, hi: int) -> str:
        n = self.rng.randint(lo, hi)
        s = self.rng.randint(0, len(self.blob) - n - 1)
        return self.blob[s:s + n]

    def model(self) -> str:
        x, acc = self.rng.random(), 0.0
        for m, p in MODELS:
            acc += p
            if x < acc:
                return m
        return MODELS[0][0]

    # -- one file --------------------------------------------------------------------------------

    def session(self, cwd: str, sid: str, t: datetime, turns: int, out: list[bytes],
                agent_id: str | None = None, copied: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """Lines of one transcript (appended to ``out`` as bytes); returns the objects."""
        objs: list[dict[str, Any]] = []
        rng = self.rng
        parent: list[str | None] = [None]

        def base(kind: str) -> dict[str, Any]:
            nonlocal t
            t += timedelta(seconds=rng.randint(1, 25), milliseconds=rng.randint(0, 999))
            u = self.uuid()
            d: dict[str, Any] = {"parentUuid": parent[0], "isSidechain": agent_id is not None,
                                 "userType": "external", "cwd": cwd, "sessionId": sid, "version": "2.1.12",
                                 "gitBranch": "main", "type": kind, "uuid": u, "timestamp": iso(t)}
            if agent_id:
                d["agentId"] = agent_id
            parent[0] = u
            return d

        def emit(d: dict[str, Any]) -> None:
            objs.append(d)
            out.append(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode() + b"\n")

        if copied:  # a resumed session: the earlier lines again, new uuids, this session
            for old in copied:
                d = dict(old)
                d["uuid"] = self.uuid()
                d["sessionId"] = sid
                if "parentUuid" in d:
                    d["parentUuid"] = parent[0]
                parent[0] = d["uuid"]
                emit(d)
            if copied[-1].get("timestamp"):
                t = max(t, datetime.fromisoformat(copied[-1]["timestamp"].replace("Z", "+00:00")))
        if agent_id is None and not copied:
            emit({"type": "file-history-snapshot", "messageId": self.uuid(),
                  "snapshot": {"messageId": self.uuid(), "trackedFileBackups": {}, "timestamp": iso(t)},
                  "isSnapshotUpdate": False})
        cache_read = rng.randint(8_000, 20_000)
        model = "claude-haiku-4-5-20251001" if agent_id else self.model()
        for turn in range(turns):
            d = base("user")
            d["message"] = {"role": "user", "content": self.text(40, 600)}
            emit(d)
            if rng.random() < 0.1:
                model = self.model()
            for r in range(rng.randint(1, 6)):
                last = r == 0 and rng.random() < 0.2
                mid = "msg_01" + "%022x" % rng.getrandbits(88)
                rid = "req_011C" + "%020x" % rng.getrandbits(80)
                cw = rng.choice((0, 0, rng.randint(100, 4_000), rng.randint(4_000, 40_000)))
                cache_read = min(cache_read + rng.randint(0, 6_000), 180_000)
                usage: dict[str, Any] = {"input_tokens": rng.randint(1, 60), "cache_creation_input_tokens": cw,
                                         "cache_read_input_tokens": cache_read,
                                         "output_tokens": rng.randint(20, 3_000), "service_tier": "standard"}
                if rng.random() < 0.8:
                    one_h = cw if rng.random() < 0.3 else 0
                    usage["cache_creation"] = {"ephemeral_5m_input_tokens": cw - one_h,
                                               "ephemeral_1h_input_tokens": one_h}
                blocks: list[dict[str, Any]] = []
                if rng.random() < 0.4:
                    blocks.append({"type": "thinking", "thinking": self.text(100, 1_500), "signature": "EuYB" +
                                   "%040x" % rng.getrandbits(160)})
                if rng.random() < 0.7 or last:
                    blocks.append({"type": "text", "text": self.text(30, 1_200)})
                tool: dict[str, Any] | None = None
                if not last or not blocks:
                    name = "Task" if agent_id is None and rng.random() < 0.03 else rng.choice(TOOLS)
                    tool = {"type": "tool_use", "id": "toolu_01" + "%022x" % rng.getrandbits(88), "name": name,
                            "input": {"command": self.text(10, 80)} if name == "Bash" else
                            {"file_path": f"{cwd}/src/{self.text(3, 12).strip() or 'x'}.py",
                             **({"content": self.text(200, 3_000)} if name == "Write" else {})}}
                    blocks.append(tool)
                # streamed: the first line of a split reply may carry a partial output_tokens
                partial = len(blocks) > 1 and rng.random() < 0.3
                first_out = rng.randint(1, 12) if partial else usage["output_tokens"]
                for i, b in enumerate(blocks):
                    a = base("assistant")
                    u = dict(usage)
                    if i == 0 and partial:
                        u["output_tokens"] = first_out
                    a["message"] = {"model": model, "id": mid, "type": "message", "role": "assistant",
                                    "content": [b], "stop_reason": "tool_use" if b is tool else None,
                                    "stop_sequence": None, "usage": u}
                    a["requestId"] = rid
                    emit(a)
                    if i == 0:
                        self.truth.add_request((mid, rid), usage, first_out, model, a["timestamp"])
                if tool is not None:
                    res = base("user")
                    content = self.text(200, 12_000) if tool["name"] in ("Read", "Bash", "Grep") \
                        else "File updated successfully."
                    res["message"] = {"role": "user", "content": [{"tool_use_id": tool["id"], "type": "tool_result",
                                                                   "content": content, "is_error": False}]}
                    res["toolUseResult"] = ({"stdout": content, "stderr": "", "interrupted": False, "isImage": False}
                                            if tool["name"] == "Bash" else {"type": "text", "file": {
                                                "filePath": tool["input"].get("file_path", ""), "content": content,
                                                "numLines": content.count(" ") // 8 + 1}})
                    emit(res)
                    if tool["name"] == "Task":
                        self.subagent(cwd, sid, t)
                if last:
                    break
            if rng.random() < 0.01:  # Claude Code's own placeholder
                s = base("assistant")
                s["message"] = {"model": "<synthetic>", "id": self.uuid(), "type": "message", "role": "assistant",
                                "content": [{"type": "text", "text": "No response requested."}],
                                "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                          "cache_read_input_tokens": 0}}
                emit(s)
                self.truth.synthetic += 1
            if rng.random() < 0.05:
                s = base("system")
                s.update(subtype="compact_boundary", content="Conversation compacted", level="info",
                         compactMetadata={"trigger": "auto", "preTokens": cache_read})
                emit(s)
                cache_read = rng.randint(8_000, 20_000)
        if agent_id is None and rng.random() < 0.3:
            emit({"type": "summary", "summary": self.text(20, 80), "leafUuid": parent[0]})
        return objs

    def write(self, path: Path, out: list[bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(out)
        path.write_bytes(data)
        self.truth.files += 1
        self.truth.lines += len(out)
        self.truth.bytes += len(data)

    def subagent(self, cwd: str, sid: str, t: datetime) -> None:
        agent = "%08x" % self.rng.getrandbits(32)
        out: list[bytes] = []
        self.session(cwd, sid, t, self.rng.randint(1, 3), out, agent_id=agent)
        self.write(self.root / encode_project(cwd) / sid / "subagents" / f"agent-{agent}.jsonl", out)

    def run(self, target_bytes: int) -> Truth:
        rng = self.rng
        projects = [f"/home/dev/src/{name}" for name in
                    ("shop", "web", "api", "infra", "mobile", "ml-pipeline", "docs", "cli", "billing", "search",
                     "auth", "payments", "design-system", "data", "etl", "notebooks", "game", "site")]
        recent: list[tuple[str, str, datetime, list[dict[str, Any]]]] = []
        while self.truth.bytes < target_bytes:
            cwd = rng.choice(projects)
            t = START_DAY + timedelta(days=rng.randrange(DAYS), hours=rng.randint(6, 22), minutes=rng.randint(0, 59))
            sid = self.uuid()
            out: list[bytes] = []
            copied = None
            if recent and rng.random() < 0.08:  # resume an earlier session: its lines again, then more
                cwd, _old_sid, old_t, old_objs = rng.choice(recent)
                copied = [o for o in old_objs if o.get("type") in ("user", "assistant")]
                t = max(t, old_t + timedelta(hours=rng.randint(1, 30)))
            objs = self.session(cwd, sid, t, rng.randint(2, 14), out, copied=copied)
            self.write(self.root / encode_project(cwd) / f"{sid}.jsonl", out)
            if rng.random() < 0.3:
                recent.append((cwd, sid, t, objs))
                recent = recent[-20:]
        return self.truth


def generate(projects_dir: Path, mb: float, seed: int = 13) -> Truth:
    return Gen(projects_dir, seed).run(int(mb * 1e6))


# ---------------------------------------------------------------------------- baseline

BASELINE = r"""
import json, os, sys, time
t = time.perf_counter()
n = b = 0
for d, _, files in os.walk(sys.argv[1]):
    for f in files:
        if f.endswith(".jsonl"):
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            b += len(data)
            for line in data.splitlines():
                if line.strip():
                    LOADS(line)
                    n += 1
print(json.dumps({"lines": n, "bytes": b, "seconds": time.perf_counter() - t}))
"""


def baseline(projects_dir: Path, parser: str = "json") -> dict[str, Any]:
    code = BASELINE.replace("LOADS", "json.loads" if parser == "json" else "orjson.loads")
    if parser == "orjson":
        code = "import orjson\n" + code
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(projects_dir)], capture_output=True, text=True,
                         check=True, timeout=3600)
    r = json.loads(out.stdout)
    r["wall_s"] = round(time.perf_counter() - t, 3)
    r["seconds"] = round(r["seconds"], 3)
    return r


# ---------------------------------------------------------------------------- the app

def isolated_env(work: Path) -> dict[str, str]:
    """Every place the app or ccusage could look is inside ``work``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEMETRY_TRAY_", "CLAUDE_", "XDG_", "REDIS_"))}
    home = work / "home"
    for d in ("home", "xdg/config", "xdg/data", "xdg/state", "xdg/cache", "xdg/run", "app", "claude"):
        (work / d).mkdir(parents=True, exist_ok=True)
    os.chmod(work / "xdg/run", 0o700)
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(work / "claude"), TELEMETRY_TRAY_HOME=str(work / "app"),
               XDG_CONFIG_HOME=str(work / "xdg/config"), XDG_DATA_HOME=str(work / "xdg/data"),
               XDG_STATE_HOME=str(work / "xdg/state"), XDG_CACHE_HOME=str(work / "xdg/cache"),
               XDG_RUNTIME_DIR=str(work / "xdg/run"), TZ="UTC", PYTHONPATH=str(ROOT),
               TELEMETRY_TRAY_MONITORS_CURSOR_USER_DIR=str(work / "cursor" / "User"),
               # the generated history is months old: retention (90 days) would remove raw rows as
               # they arrive, and "every line a row" would never be true (usage is kept either way)
               TELEMETRY_TRAY_RETENTION_RAW_DAYS="0")
    return env


def build_cursor(work: Path, mb: float) -> dict[str, Any]:
    """A large Cursor database, closed (Cursor not running): ``mb`` MB of ~2 kB
    bubbles with ``tokenCount`` in 200-bubble conversations (monitor_bench's)."""
    from monitor_bench import build_db

    bubbles = int(mb * 1e6 / 2000)
    path = work / "cursor" / "User" / "globalStorage" / "state.vscdb"
    t = time.perf_counter()
    build_db(path, bubbles, 2000).close()
    return {"bubbles": bubbles, "assistant_bubbles": bubbles // 2, "mb": round(path.stat().st_size / 1e6, 1),
            "build_s": round(time.perf_counter() - t, 1)}


def _poll(db: Path) -> tuple[int, int, int] | None:
    """(transcript and Cursor monitor raw rows, max sequence, usage position) or None before the tables exist."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        rows = conn.execute("SELECT COUNT(*) FROM raw_traces WHERE source IN ('transcript_monitor', ?)",
                            (CURSOR_SOURCE,)).fetchone()[0]
        top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        try:
            pos = conn.execute("SELECT COALESCE(MAX(last_sequence), 0) FROM usage_state WHERE worker='usage'"
                               ).fetchone()[0]
        except sqlite3.Error:
            pos = 0
        return int(rows), int(top), int(pos)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def import_with_app(work: Path, truth: Truth, cursor_items: int = 0, timeout_s: float = 3600) -> dict[str, Any]:
    """Until every transcript line and Cursor bubble is a raw row and the usage
    tables cover every row."""
    env = isolated_env(work)
    db = work / "app" / "data" / "telemetry.db"
    log_file = work / "app" / "logs" / "telemetry-tray.log"
    console = open(work / "console.log", "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless"], cwd=str(ROOT), env=env,
                            stdout=console, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int, int, int]] = []
    t_rows = t_usage = None
    try:
        while time.perf_counter() - t0 < timeout_s:
            if proc.poll() is not None:
                raise SystemExit(f"the app exited ({proc.returncode}): "
                                 f"{(work / 'console.log').read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
            p = _poll(db) if db.exists() else None
            if p is None:
                continue
            now = time.perf_counter() - t0
            samples.append((round(now, 2), *p))
            rows, top, pos = p
            if t_rows is None and rows >= truth.lines + cursor_items:
                t_rows = now
            if t_rows is not None and pos >= top:
                t_usage = now
                break
        else:
            raise SystemExit(f"not done in {timeout_s} s: {samples[-1:]}")
        cpu = _children_cpu(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        console.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    requests = conn.execute("SELECT COUNT(*) FROM usage_requests WHERE platform='claude_code'").fetchone()[0]
    cursor_requests = conn.execute("SELECT COUNT(*) FROM usage_requests WHERE platform='cursor'").fetchone()[0]
    errors = conn.execute("SELECT COUNT(*) FROM raw_traces WHERE event_type='error'").fetchone()[0]
    conn.close()
    log_lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    progress = [ln for ln in log_lines if any(k in ln for k in ("usage:", "claude_transcripts", "backlog",
                                                                "catching", "caught up", "progress", "cursor_db"))]
    return {"seconds_until_raw_rows": round(t_rows or 0, 2), "seconds_until_usage_tables": round(t_usage or 0, 2),
            "samples": samples, "requests_in_tables": requests, "cursor_requests_in_tables": cursor_requests,
            "error_rows": errors,
            "db_mb": round(sum(p.stat().st_size for p in db.parent.glob("telemetry.db*")) / 1e6, 1),
            "app_cpu_s": cpu, "log_lines": len(log_lines), "progress_log": progress[:40]}


def _children_cpu(pid: int) -> float | None:
    """User + system CPU seconds of the app process so far (from /proc)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=500, help="MB of transcripts to generate (default 500)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--cursor-mb", type=float, default=200,
                    help="MB of Cursor database (state.vscdb) to generate too (default 200; 0 = none)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (data, database) for ccusage_compare")
    args = ap.parse_args()
    from benchutil import machine

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="first-start-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(work, args.mb, args.seed, cursor_mb=args.cursor_mb)
        result.pop("_truth")
        result["machine"] = machine()
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, mb: float, seed: int, verbose: bool = True, cursor_mb: float = 0) -> dict[str, Any]:
    say = (lambda *a: print(*a, flush=True)) if verbose else (lambda *a: None)
    projects = work / "claude" / "projects"
    t = time.perf_counter()
    truth = generate(projects, mb, seed)
    say(f"generated {truth.bytes / 1e6:.1f} MB: {truth.files:,} files, {truth.lines:,} lines, "
        f"{len(truth.requests):,} requests, {truth.synthetic} synthetic, in {time.perf_counter() - t:.1f} s")
    base = baseline(projects, "json")
    say(f"baseline (read + json.loads every line, fresh process): {base['seconds']:.2f} s "
        f"({truth.bytes / 1e6 / base['seconds']:.0f} MB/s)")
    try:
        base_or = baseline(projects, "orjson")
        say(f"baseline (read + orjson.loads): {base_or['seconds']:.2f} s")
    except subprocess.CalledProcessError:
        base_or = None
    cursor = build_cursor(work, cursor_mb) if cursor_mb else {"bubbles": 0, "assistant_bubbles": 0, "mb": 0.0}
    if cursor_mb:
        say(f"generated a Cursor database: {cursor['mb']} MB, {cursor['bubbles']:,} bubbles "
            f"({cursor['assistant_bubbles']:,} with tokenCount), in {cursor['build_s']} s")
    imp = import_with_app(work, truth, cursor["bubbles"])
    total = imp["seconds_until_usage_tables"]
    mb_total = truth.bytes / 1e6 + cursor["mb"]
    say(f"app: every line a raw row after {imp['seconds_until_raw_rows']:.1f} s; usage tables cover every row "
        f"after {total:.1f} s ({mb_total / total:.1f} MB/s, {truth.lines / total:,.0f} lines/s); "
        f"{imp['requests_in_tables']:,} Claude requests in the tables (generated {len(truth.requests):,}), "
        f"{imp['cursor_requests_in_tables']:,} Cursor ({cursor['assistant_bubbles']:,}); "
        f"app CPU {imp['app_cpu_s']} s; database {imp['db_mb']} MB")
    say("log while it ran (progress lines):")
    for ln in imp["progress_log"]:
        say("   " + ln)
    if not imp["progress_log"]:
        say("   (none)")
    return {"bench": "first_start", "mb": round(mb_total, 1), "transcript_mb": round(truth.bytes / 1e6, 1),
            "cursor": cursor, "files": truth.files, "lines": truth.lines,
            "requests_generated": len(truth.requests), "requests_in_tables": imp["requests_in_tables"],
            "cursor_requests_in_tables": imp["cursor_requests_in_tables"],
            "seconds_total": total, "seconds_until_raw_rows": imp["seconds_until_raw_rows"],
            "mb_per_s": round(mb_total / total, 2), "lines_per_s": round(truth.lines / total),
            "baseline_json_s": base["seconds"], "baseline_orjson_s": base_or["seconds"] if base_or else None,
            "ratio_to_json_baseline": round(total / base["seconds"], 1),  # transcripts only
            "ratio_to_orjson_baseline": round(total / base_or["seconds"], 1) if base_or else None,
            "app_cpu_s": imp["app_cpu_s"], "db_mb": imp["db_mb"], "error_rows": imp["error_rows"],
            "progress_log_lines": len(imp["progress_log"]), "samples": imp["samples"][::max(1, len(imp["samples"]) // 20)],
            "_truth": truth}


if __name__ == "__main__":
    main()
