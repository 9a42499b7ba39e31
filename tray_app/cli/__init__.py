"""`telemetry-tray`: the command-line face.

With no subcommand (or `run` without --headless) it starts the tray app: the
choice between the two faces of the engine is made here, so the engine's own
commands never import the tray. Each feature area registers its own
subcommands from its ``cli.py`` (see PLUGINS; the app-wide ones are in
``cli/core.py``, the helpers they share in ``cli/common.py``); every error
reaches the user as one line on stderr with a non-zero exit code (see errors.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from tray_app import __version__
from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.errors import AlreadyRunning, TelemetryTrayError

log = logging.getLogger(__name__)

#: modules that add subcommands through ``register(subparsers)``
PLUGINS = (
    "tray_app.cli.core",
    "tray_app.engine.cli",
    "tray_app.capture.cli",
    "tray_app.support.cli",
    "tray_app.usage.cli",
    "tray_app.lifecycle.cli",  # after support.cli: adds `db backup` to its `db` group
)

#: command -> the plugin that registers it: a command's run imports only its own
#: plugin (a report's start-up is most of its time). Only an optimisation: a
#: command missing here still works, by registering every plugin;
#: tests/test_cli_basics.py checks the table against what the plugins register.
COMMANDS = {
    "run": "tray_app.engine.cli", "status": "tray_app.engine.cli", "pause": "tray_app.engine.cli",
    "resume": "tray_app.engine.cli",
    "report": "tray_app.usage.cli", "sessions": "tray_app.usage.cli", "session": "tray_app.usage.cli",
    "usage": "tray_app.usage.cli",
}


def _plugin_for(argv: Sequence[str]) -> str | None:
    """The plugin of the command in ``argv`` when the table knows it."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif arg.startswith("--config="):
            continue
        elif arg.startswith("-"):
            return None  # --help, --version: the whole parser
        else:
            return COMMANDS.get(arg)
    return None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the error and where to get help), exit 64."""

    def error(self, message: str) -> NoReturn:
        self.exit(64, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; or, given the command line of a command in COMMANDS, a
    parser with that command's plugin only."""
    parser = _Parser(
        prog="telemetry-tray",
        description="Local telemetry for AI coding assistants (Cursor, Claude Code). "
                    "With no command, starts the tray app.",
        epilog="Run `telemetry-tray COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"telemetry-tray {__version__}")
    parser.add_argument("--config", metavar="FILE",
                        help="config file to use (default: config.toml in the config dir; "
                             "or TELEMETRY_TRAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    only = _plugin_for(argv) if argv is not None else None
    for name in (only,) if only else PLUGINS:
        importlib.import_module(name).register(sub)
    return parser


def wants_tray(args: argparse.Namespace) -> bool:
    """No command, or `run` without --headless: the tray face."""
    return args.command is None or (args.command == "run" and not getattr(args, "headless", False))


def _run_tray(args: argparse.Namespace) -> int:
    from tray_app.tray.app import run_tray  # imported late: pulls in pystray

    return run_tray(get_config(args), with_monitors=not getattr(args, "no_monitors", False))


def main(argv: Sequence[str] | None = None) -> int:
    line = list(argv) if argv is not None else sys.argv[1:]
    parser = build_parser(line)
    args = parser.parse_args(line)
    func = getattr(args, "func", None)
    try:
        if wants_tray(args):
            return _run_tray(args)
        if func is None:
            # a command group given without its subcommand
            parser.parse_args([*line, "--help"])
            return 2
        return int(func(args) or 0)
    except AlreadyRunning as exc:
        print(f"telemetry-tray: {exc}", file=sys.stderr)
        return 0
    except TelemetryTrayError as exc:
        print(f"telemetry-tray: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `telemetry-tray status --json | head`: the reader left; no traceback at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it


__all__ = ["add_json_flag", "build_parser", "get_config", "main", "print_json"]
