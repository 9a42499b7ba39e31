"""What every benchmark prints about the machine it ran on."""

from __future__ import annotations

import os
import platform
import sqlite3
from pathlib import Path


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
