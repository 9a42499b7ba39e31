"""Hook wall time beside a bare interpreter start, Redis up and Redis down.

    .venv/bin/python bench/hook_bench.py [--runs 100] [--json]

Starts its own Redis-compatible server (like the app's managed one: unix
socket, password, endpoint file in a temp TELEMETRY_TRAY_HOME), then runs,
interleaved round-robin so drift hits every variant alike:

  bare      python -I -S -c pass                      (same stdin piped in)
  up        the hook, endpoint file -> unix socket + AUTH  (the app's default)
  up-tcp    the hook, TELEMETRY_TRAY_REDIS_URL=redis://127.0.0.1:port
  down      the hook, endpoint file -> a socket nobody listens on (spools)
  up-tool   as up, Cursor's generic preToolUse input (fires on every tool call)
  up-tab    as up, Cursor's afterTabFileEdit input (fires on every Tab completion)
  claude-3p the Claude hook given Cursor's input (third-party hooks): recognised, not sent

Each run is measured from spawn to exit by the parent, as an assistant would
wait for it. Prints median / p95 / min per variant, the extra milliseconds
over bare, and the ratio of medians against the targets (up <= 1.5x,
down <= 2x).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchutil import cpu_model  # noqa: E402
from tray_app.capture import installers  # noqa: E402
from tray_app.redis_server import find_server_binary  # noqa: E402

SAMPLE = {
    "conversation_id": "668320d2-2fd8-4888-b33c-2a466fec86e7",
    "generation_id": "490b90b7-a2ce-4c2c-bb76-cb77b125df2f",
    "model": "claude-4.5-sonnet", "cursor_version": "2.0.77",
    "workspace_roots": ["/home/dev/projects/shop"], "user_email": None,
    "hook_event_name": "beforeSubmitPrompt",
    "prompt": "Fix the bug in main.ts where the loop skips the last element. " * 8,
    "attachments": [{"type": "file", "filePath": "/home/dev/projects/shop/main.ts"}],
}
#: Cursor's high-frequency hooks, installed since the full catalogue: the
#: generic tool hook (every tool call) and Tab's (every inline completion)
TOOL_SAMPLE = {
    **{k: SAMPLE[k] for k in ("conversation_id", "generation_id", "model", "cursor_version", "workspace_roots",
                              "user_email")},
    "hook_event_name": "preToolUse", "tool_name": "Shell",
    "tool_input": {"command": "npm test", "working_directory": "/home/dev/projects/shop"},
    "tool_use_id": "abc123", "cwd": "/home/dev/projects/shop", "agent_message": "Running the tests",
}
TAB_SAMPLE = {
    **{k: SAMPLE[k] for k in ("conversation_id", "generation_id", "model", "cursor_version", "workspace_roots",
                              "user_email")},
    "hook_event_name": "afterTabFileEdit", "file_path": "/home/dev/projects/shop/src/main.ts",
    "edits": [{"old_string": "const total = items.length - 1", "new_string": "const total = items.length",
               "range": {"start_line_number": 42, "start_column": 9, "end_line_number": 42, "end_column": 39},
               "old_line": "    const total = items.length - 1;", "new_line": "    const total = items.length;"}],
}
TARGETS = {"up": 1.5, "up-tcp": 1.5, "down": 2.0, "up-tool": 1.5, "up-tab": 1.5, "claude-3p": 1.5}


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def start_server(workdir: Path, password: str) -> tuple[subprocess.Popen[bytes], Path, int]:
    """A server like the app's managed one (unix socket, password), plus TCP."""
    import socket

    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = workdir / "redis.sock"
    proc = subprocess.Popen(
        [find_server_binary().path, "--port", str(port), "--bind", "127.0.0.1", "--unixsocket", str(sock),
         "--unixsocketperm", "700", "--requirepass", password, "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            redis.Redis(unix_socket_path=str(sock), password=password).ping()
            return proc, sock, port
        except redis.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise SystemExit("the benchmark's Redis server did not start") from None
            time.sleep(0.02)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100, help="runs per variant (at least 50)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    runs = max(50, args.runs)
    python = str(installers.interpreter())
    hook = str(installers.HOOK_SCRIPT)
    work = Path(tempfile.mkdtemp(prefix="hookbench-", dir="/tmp"))
    password = "bench-password"
    server, sock, port = start_server(work, password)
    try:
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_TRAY_")}
        homes = {}
        for name, url in (("up", f"unix://{sock}"), ("down", f"unix://{work}/nobody-listens.sock")):
            home = work / name
            (home / "state").mkdir(parents=True)
            (home / "state" / "redis-endpoint.json").write_text(json.dumps(
                {"url": url, "password": password, "managed": True, "pid": os.getpid()}))
            homes[name] = home
        (work / "tcp" / "state").mkdir(parents=True)
        variants = {
            "bare": ([python, "-I", "-S", "-c", "pass"], dict(base_env, TELEMETRY_TRAY_HOME=str(homes["up"]))),
            "up": ([python, "-I", "-S", hook, "cursor"], dict(base_env, TELEMETRY_TRAY_HOME=str(homes["up"]))),
            "up-tcp": ([python, "-I", "-S", hook, "cursor"],
                       dict(base_env, TELEMETRY_TRAY_HOME=str(work / "tcp"),
                            TELEMETRY_TRAY_REDIS_URL=f"redis://:{password}@127.0.0.1:{port}/0")),
            "down": ([python, "-I", "-S", hook, "cursor"],
                     dict(base_env, TELEMETRY_TRAY_HOME=str(homes["down"]))),
            "up-tool": ([python, "-I", "-S", hook, "cursor"], dict(base_env, TELEMETRY_TRAY_HOME=str(homes["up"]))),
            "up-tab": ([python, "-I", "-S", hook, "cursor"], dict(base_env, TELEMETRY_TRAY_HOME=str(homes["up"]))),
            # Cursor running our Claude hook with its own input: recognised, nothing sent
            "claude-3p": ([python, "-I", "-S", hook, "claude"], dict(base_env, TELEMETRY_TRAY_HOME=str(homes["up"]))),
        }
        stdins = {name: json.dumps(SAMPLE).encode() for name in variants}
        stdins["up-tool"] = stdins["claude-3p"] = json.dumps(TOOL_SAMPLE).encode()
        stdins["up-tab"] = json.dumps(TAB_SAMPLE).encode()
        times: dict[str, list[float]] = {k: [] for k in variants}
        for i in range(runs + 5):
            for name, (cmd, env) in variants.items():
                want = b"" if name in ("bare", "claude-3p") else b"{}\n"
                t = time.perf_counter()
                proc = subprocess.run(cmd, input=stdins[name], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE)
                took = (time.perf_counter() - t) * 1000
                if proc.returncode != 0 or proc.stdout != want:
                    raise SystemExit(f"{name}: unexpected result {proc.returncode} {proc.stdout!r} {proc.stderr!r}")
                if i >= 5:  # the first rounds warm caches (bytecode, page cache)
                    times[name].append(took)
        import redis

        sent = redis.Redis(unix_socket_path=str(sock), password=password).xlen("telemetry:events")
        spooled = len(list((homes["down"] / "state" / "spool").glob("*.json")))
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    bare = statistics.median(times["bare"])
    result = {
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
                    "interpreter": python, "system": platform.platform()},
        "runs": runs,
        "checks": {"entries_sent": sent, "files_spooled": spooled},
        "variants": {},
    }
    for name, xs in times.items():
        med = statistics.median(xs)
        result["variants"][name] = {
            "median_ms": round(med, 2), "p95_ms": round(percentile(xs, 0.95), 2), "min_ms": round(min(xs), 2),
            "extra_ms": round(med - bare, 2), "ratio": round(med / bare, 2),
            "target": TARGETS.get(name), "ok": (med / bare) <= TARGETS[name] if name in TARGETS else None,
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["machine"]
        print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']} ({m['system']})")
        print(f"runs per variant: {runs}; entries sent: {sent}; files spooled: {spooled}")
        print(f"{'variant':<8} {'median':>8} {'p95':>8} {'min':>8} {'extra':>8} {'ratio':>6}  target")
        for name, v in result["variants"].items():
            target = f"<= {v['target']}x {'ok' if v['ok'] else 'MISSED'}" if v["target"] else ""
            print(f"{name:<8} {v['median_ms']:>6.2f}ms {v['p95_ms']:>6.2f}ms {v['min_ms']:>6.2f}ms "
                  f"{v['extra_ms']:>+6.2f}ms {v['ratio']:>5.2f}x  {target}")
    return 0 if all(v["ok"] in (True, None) for v in result["variants"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
