"""`telemetry-tray export --format jsonl` of a database filled by real hooks and
a real engine: every line parses and equals what the hooks sent (big integers
and unicode exact), filters select, a file output is 0600, and memory stays
flat on a big database."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, RedisProc, run_cli, wait_for
from engine_util import make_event, push, row_count, running_engine
from test_hook_events import CURSOR_BASE, hook_env, run_hook

from tray_app.config import load_config
from tray_app.redis_conn import EVENTS_STREAM

BIG = 123456789012345678901234567890123
TEXT = "naïve café ✓ 日本語 🎉 \u2028 \"quoted\" \\ back"

def _sent(client) -> dict[str, dict]:
    """What the hooks put on the stream, parsed exactly (Python's json keeps big ints)."""
    out = {}
    for _id, fields in client.xrange(EVENTS_STREAM):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        for key in ("payload", "metadata"):
            if key in f:
                f[key] = json.loads(f[key])
        out[f["event_id"]] = f
    return out

def test_export_round_trips_what_the_hooks_sent(app_env: dict[str, str], app_home: Path,
                                                 redis_server: RedisProc, tmp_path: Path) -> None:
    cfg = load_config()
    env = hook_env(app_home, redis_server.url)
    sid = "0b6a1c1e-2b7d-4d5e-9a53-6f3f0d0b2c11"
    claude = [{"session_id": sid, "transcript_path": "/t.jsonl", "cwd": "/home/dev/ü", "hook_event_name":
               "UserPromptSubmit", "prompt": TEXT},
              {"session_id": sid, "transcript_path": "/t.jsonl", "cwd": "/home/dev/ü", "hook_event_name": "PreToolUse",
               "tool_name": "Bash", "tool_use_id": "toolu_9", "tool_input": {"command": "echo", "n": BIG,
                                                                            "f": 1.5e300, "nested": [[{"é": TEXT}]]}}]
    for payload in claude:
        proc, _ = run_hook("claude", json.dumps(payload, ensure_ascii=False), env)
        assert proc.returncode == 0
    proc, _ = run_hook("cursor", json.dumps({**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt",
                                             "prompt": TEXT, "attachments": []}, ensure_ascii=False), env)
    assert proc.returncode == 0
    sent = _sent(redis_server.client())
    assert len(sent) == 3
    with running_engine(redis_server.url):
        wait_for(lambda: row_count(cfg.paths.database) == 3, timeout=20, what="the rows")

    r = subprocess.run([sys.executable, "-m", "tray_app", "export", "--format", "jsonl"], capture_output=True,
                       env=app_env, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip(b"\n").split(b"\n")  # not str.splitlines(): U+2028 is not a line end here
    assert len(lines) == 3
    got = [json.loads(ln) for ln in lines]
    assert [g["sequence"] for g in got] == sorted(g["sequence"] for g in got)
    for g in got:
        g.pop("sequence")
        assert g == sent[g["event_id"]]
    # byte for byte: the payload and metadata text the hooks sent is in the line as it was
    raw = {f[b"event_id"].decode(): f for _id, f in redis_server.client().xrange(EVENTS_STREAM)}
    for ln in lines:
        fields = raw[json.loads(ln)["event_id"]]
        assert b'"payload":' + fields[b"payload"] in ln and b'"metadata":' + fields[b"metadata"] in ln
    assert str(BIG).encode() in r.stdout
    assert TEXT in {g["payload"].get("prompt") for g in got}

    # filters, and a private file
    out = tmp_path / "cursor.jsonl"
    r = run_cli("export", "--format", "jsonl", "--platform", "cursor", "--output", str(out), env=app_env)
    assert r.returncode == 0 and "Exported 1 event to" in r.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["platform"] == "cursor"
    r = run_cli("export", "--format", "jsonl", "--output", str(out), env=app_env)
    assert r.returncode == 64 and "already exists; add --force" in r.stderr
    r = run_cli("export", "--format", "jsonl", "--since", "1h", "--until", "30m", env=app_env)
    assert r.returncode == 0 and r.stdout == ""
    r = run_cli("export", "--format", "jsonl", "--since", "10m", env=app_env)
    assert r.stdout.count("\n") == 3

@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak memory read from /proc")
def test_export_streams_a_big_database_in_flat_memory(app_env: dict[str, str], redis_server: RedisProc) -> None:
    cfg = load_config()
    n = 20_000
    with running_engine(redis_server.url):
        push(redis_server.client(), [make_event(i, size=4000) for i in range(n)])
        wait_for(lambda: row_count(cfg.paths.database) == n, timeout=120, what="the rows")
    # ~80 MB of JSON through a pipe; the child's peak RSS must not grow with it
    # (VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec)
    code = ("import re, sys; from tray_app.cli import main; rc = main(['export', '--format', 'jsonl']); "
            "sys.stderr.write(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)); "
            "sys.exit(rc)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=app_env, cwd=ROOT)
    lines = 0
    total = 0
    assert proc.stdout is not None
    for chunk in iter(lambda: proc.stdout.readline(), b""):
        lines += 1
        total += len(chunk)
    err = proc.stderr.read() if proc.stderr else b""
    assert proc.wait(60) == 0, err
    assert lines == n and total > 60_000_000
    peak_kb = int(err.decode().strip().splitlines()[-1])
    assert peak_kb < 80_000, f"peak RSS {peak_kb} kB for a {total / 1e6:.0f} MB export"


def test_a_nested_sequence_field_leaves_the_line_exact(app_env: dict[str, str]) -> None:
    """A payload with a "sequence" key of its own (a tool's input, say) is not the
    row's sequence: the line is still the stored text, number spellings and all."""
    import zlib

    from tray_app.engine import schema

    cfg = load_config()
    text = (b'{"event_id":"e1","session_id":"s","event_type":"tool_use","platform":"claude_code",'
            b'"timestamp":"2026-12-01T10:00:00.000Z","payload":{"tool_input":{"sequence":3,"ratio":1.10,'
            b'"tiny":1E-7}},"metadata":{}}')
    conn = schema.open_database(cfg.paths.database)
    with schema.immediate(conn):
        conn.execute("INSERT INTO raw_traces (event_id, session_id, event_type, platform, timestamp, ingested_at, "
                     "event_data) VALUES ('e1', 's', 'tool_use', 'claude_code', '2026-12-01T10:00:00.000Z', "
                     "'2026-12-01T10:00:00.000Z', ?)", (zlib.compress(text),))
    conn.close()
    r = run_cli("export", "--format", "jsonl", env=app_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == '{"sequence":1,' + text[1:].decode() + "\n"
