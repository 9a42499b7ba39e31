"""What every benchmark prints about the machine it ran on, and the set-up the
engine benchmarks share: a Redis server of their own, a fresh home per run,
each run in a child process."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    import redis

    return (f"{platform.platform()}; {os.cpu_count()} cpus ({cpu_model()}); Python {platform.python_version()}; "
            f"SQLite {sqlite3.sqlite_version}; redis-py {redis.__version__}")


@contextmanager
def bench_server(prefix: str) -> Iterator[tuple[Path, Any]]:
    """A work directory and a Redis server in it (the tests' own RedisProc),
    both gone afterwards; prints the machine line first."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import RedisProc
    from tray_app.redis_server import find_server_binary

    work = Path(tempfile.mkdtemp(prefix=prefix))
    srv = RedisProc(find_server_binary(), work / "redis", appendonly=False).start()
    print(f"machine: {machine()}")
    try:
        yield work, srv
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


def fresh_home(work: Path, template: Path | None = None) -> Path:
    """An empty app home under ``work`` whose telemetry.db is a copy of
    ``template``, or a new empty database."""
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    (home / "data").mkdir(parents=True)
    db = home / "data" / "telemetry.db"
    if template is not None:
        shutil.copy(template, db)
    else:
        from tray_app.engine import schema

        schema.open_database(db).close()
    return home


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` (a benchmark's own role) in a new interpreter; its result
    is the JSON on the last line it prints."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{Path(script).name} {' '.join(args[:2])} failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
