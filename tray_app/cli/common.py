"""Helpers shared by every command module (tray_app/*/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tray_app.config import Config, load_config


def get_config(args: argparse.Namespace) -> Config:
    """The effective config for this invocation (--config, env, file, defaults)."""
    cached = getattr(args, "_config", None)
    if cached is None:
        cached = load_config(getattr(args, "config", None))
        args._config = cached
    return cached


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
