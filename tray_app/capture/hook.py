"""The hook program Cursor and Claude Code run on every hook event:

    <python> -I -S <path>/tray_app/capture/hook.py cursor|claude

Standard library only. This file is compiled on every run (a script's
bytecode is never cached), so it stays tiny; the work is in runner.py and
the modules beside it, which load from cached bytecode. Exit code 0 always;
Cursor gets ``{}`` on stdout, Claude Code nothing. See docs/hooks.md.
"""
import sys

_here = __file__.replace("\\", "/").rpartition("/")[0] or "."
sys.path.insert(0, _here)
try:
    import runner
except BaseException:  # broken install: keep the promise to the assistant anyway
    if "cursor" in sys.argv[1:2]:
        sys.stdout.write("{}\n")
        sys.stdout.flush()
else:
    runner.main(sys.argv)
try:
    from posix import _exit  # skip interpreter teardown: nothing is left to flush
except ImportError:
    _exit = sys.exit  # type: ignore[assignment]
_exit(0)
