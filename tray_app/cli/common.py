"""Helpers shared by every command module (tray_app/*/cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import orjson

from tray_app.config import Config, load_config


def get_config(args: argparse.Namespace) -> Config:
    """The effective config for this invocation (--config, env, file, defaults)."""
    cached = getattr(args, "_config", None)
    if cached is None:
        cached = load_config(getattr(args, "config", None))
        args._config = cached
    return cached


def print_json(data: Any) -> None:
    """Indented JSON on stdout in one write: orjson (the stdlib for what orjson
    cannot encode, e.g. integers beyond 64 bits)."""
    try:
        raw = orjson.dumps(data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        raw = (json.dumps(data, indent=2, default=str) + "\n").encode()
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a text-only stream (tests)
        sys.stdout.write(raw.decode())
        return
    sys.stdout.flush()
    out.write(raw)  # UTF-8 whatever the locale: JSON's own encoding
    out.flush()


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
