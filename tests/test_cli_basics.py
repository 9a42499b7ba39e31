"""--version, --help on every command, paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from tray_app import __version__
from tray_app.cli import build_parser


def test_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"telemetry-tray {__version__}"


def test_help_and_version_load_no_client_library() -> None:
    """`--help` builds every command's parser; registering one imports neither
    redis-py nor the OpenTelemetry SDK (each import is tens of ms at every start)."""
    import subprocess
    import sys

    code = ("import sys, contextlib, io\n"
            "from tray_app.cli import main\n"
            "for arg in ('--version', '--help'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main([arg])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'redis', 'opentelemetry', 'pystray', 'PIL'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def _commands(parser, prefix=()):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):
            for name, sub in choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_subcommand_has_help() -> None:
    parser = build_parser()
    commands = list(_commands(parser))
    assert {("paths",), ("config", "show"), ("init",), ("doctor",), ("run",), ("status",)} <= {c for c, _ in commands}
    for cmd, sub in commands:
        assert (sub.description or sub.format_usage()), cmd
        out = run_cli(*cmd, "--help") if len(commands) < 5 else None
        if out is not None:
            assert out.returncode == 0
    # spot-check through a real process
    for cmd in (("--help",), ("paths", "--help"), ("config", "show", "--help"), ("doctor", "--help")):
        out = run_cli(*cmd)
        assert out.returncode == 0 and "usage: telemetry-tray" in out.stdout


def test_help_texts_are_not_empty() -> None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(getattr(action, "choices", None), dict):
            for ch in action._choices_actions:
                assert ch.help, f"subcommand {ch.dest} has no help"


def test_paths_json(app_home: Path) -> None:
    out = run_cli("paths", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("config_file", "data_dir", "database", "state_dir", "spool_dir", "log_dir", "runtime_dir"):
        assert data[key].startswith(str(app_home)), key
    assert data["database"].endswith("telemetry.db")
    text = run_cli("paths")
    assert data["spool_dir"] in text.stdout


def test_usage_errors_are_one_line() -> None:
    for args in (("paths", "--bogus"), ("nosuchcommand",), ("config", "show", "--jsn")):
        out = run_cli(*args)
        assert out.returncode == 64, args
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "--help" in lines[0], out.stderr


def test_wheel_ships_assets_and_hook(tmp_path: Path) -> None:
    """An installed app (not a checkout) has its icons and the hook script."""
    import subprocess
    import sys
    import zipfile

    from conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"tray_app/assets/shape-disc.png", "tray_app/assets/glyph-pause.png",
            "tray_app/capture/hook.py", "tray_app/py.typed"} <= names


@pytest.mark.parametrize("args", [("paths", "--json"), ("--help",), ("config", "show")])
def test_output_piped_to_a_reader_that_left_is_not_a_traceback(app_home, args) -> None:
    """`telemetry-tray status --json | head -1`: the reader closes the pipe early.
    Here it is closed before the command writes at all: no traceback, one exit."""
    import subprocess
    import sys

    from conftest import ROOT

    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "tray_app", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, cwd=str(ROOT))
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=30)
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert code in (0, 141), (code, err)


def test_the_fast_command_table_matches_what_the_plugins_register() -> None:
    """A command in COMMANDS builds only its plugin's parser: the table must name
    the plugin that really registers it (a command missing from the table is
    only slower, never wrong)."""
    import argparse
    import importlib

    from tray_app.cli import COMMANDS, PLUGINS

    owner: dict[str, str] = {}
    sub = argparse.ArgumentParser().add_subparsers()
    for name in PLUGINS:  # in order: a plugin may add to an earlier one's group (db backup)
        importlib.import_module(name).register(sub)
        owner.update((c, name) for c in sub.choices if c not in owner)
    for command, plugin in COMMANDS.items():
        assert owner.get(command) == plugin, command
    # and the reduced parser parses the command as the whole one does
    for line in (["report", "daily", "--json", "--timezone", "UTC"], ["--config", "x.toml", "status", "--json"],
                 ["usage", "status"]):
        full, fast = build_parser().parse_args(line), build_parser(line).parse_args(line)
        assert {k: v for k, v in vars(full).items() if k != "func"} == \
            {k: v for k, v in vars(fast).items() if k != "func"}
        assert full.func is fast.func
