"""Commands: `forget`, `db backup`, `export`.

``db backup`` joins the ``db`` group that support/cli.py registers (PLUGINS
lists this module after it)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.config import Config
from tray_app.errors import TelemetryTrayError, UsageError
from tray_app.lifecycle.selector import TIME_HELP

EXIT_PARTLY = 1


def register(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser(
        "forget", help="delete what was recorded of a session, a project, a time range, or everything",
        description="Delete what matches from every place the app keeps it (telemetry.db and its derived "
                    "tables, the Redis streams and dead letters, the hook spool, the monitors' state, "
                    "logs, the usage report), make the deletion real on disk (secure delete, VACUUM, "
                    "append-only-file rewrite), and keep a rule so the monitors and the engine never "
                    "import it again (Cursor's and Claude Code's own files are left alone). Works with "
                    "the app running or stopped.",
        epilog=f"TIME: {TIME_HELP}.")
    which = f.add_argument_group("what to forget (exactly one)")
    which.add_argument("--session", metavar="ID", help="one session (Cursor conversation / Claude Code session id)")
    which.add_argument("--project", metavar="PATH|HASH",
                       help="every session in the project at PATH (its workspace root), or with that "
                            "workspace hash (16 hex, as `sessions` and the usage report show it)")
    which.add_argument("--since", metavar="TIME", help="everything from TIME (to --until, or now)")
    which.add_argument("--all", action="store_true", help="everything recorded up to now (asks for confirmation)")
    f.add_argument("--until", metavar="TIME", help="with --since: the end of the range (default: now)")
    f.add_argument("--dry-run", action="store_true", help="count what would go, per place; change nothing")
    f.add_argument("--yes", action="store_true", help="with --all: do not ask")
    f.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="how long to wait for a running engine to pause meanwhile (default 10)")
    add_json_flag(f)
    f.set_defaults(func=cmd_forget)
    _register_backup(sub)
    _register_export(sub)


def _register_export(sub: argparse._SubParsersAction) -> None:
    from tray_app.lifecycle.export import FORMATS, PLATFORMS

    e = sub.add_parser(
        "export", help="the recorded events, decompressed, as JSON lines",
        description="Write the stored events, one JSON object per line (the event as docs/events.md "
                    "describes it, payload and metadata as objects, plus its sequence), oldest first, "
                    "exactly as stored (big integers and unicode untouched). Reads the database "
                    "read-only: safe while the app runs.",
        epilog=f"TIME: {TIME_HELP}.")
    e.add_argument("--format", choices=FORMATS, required=True, help="jsonl: one event per line")
    e.add_argument("--since", metavar="TIME", help="events from TIME")
    e.add_argument("--until", metavar="TIME", help="events before TIME")
    e.add_argument("--platform", choices=PLATFORMS, help="one assistant only")
    e.add_argument("--output", "-o", type=Path, metavar="FILE",
                   help="write to FILE (created 0600) instead of standard output")
    e.add_argument("--force", action="store_true", help="with --output: replace FILE if it exists")
    e.set_defaults(func=cmd_export)


def _register_backup(sub: argparse._SubParsersAction) -> None:
    db = sub.choices.get("db")
    groups = [a for a in getattr(db, "_actions", ()) if isinstance(a, argparse._SubParsersAction)]
    if not groups:  # pragma: no cover - support/cli.py registers `db` before us (PLUGINS order)
        raise RuntimeError("the `db` command group is not registered yet")
    b = groups[0].add_parser(
        "backup", help="a consistent copy of telemetry.db, safe while the app runs",
        description="Copy telemetry.db to PATH with SQLite's online backup API: a consistent snapshot "
                    "taken while the app keeps recording (it is not blocked), written as one file readable "
                    "by you only (0600) and put in place only when complete.")
    b.add_argument("path", type=Path, metavar="PATH", help="the backup file to write")
    b.add_argument("--force", action="store_true", help="replace PATH if it exists")
    b.set_defaults(func=cmd_backup)


def _describe_counts(counts: dict[str, int]) -> list[str]:
    return [f"  {place:<24} {n:>8,}" for place, n in counts.items()]


@contextmanager
def _engine_held(cfg: Config, timeout_s: float) -> Iterator[None]:
    """A running engine is paused meanwhile (it finishes its batch in hand and
    its monitors stop reading), and resumed after, unless it was paused already."""
    from tray_app.engine import cli as engine_cli
    from tray_app.engine import control
    from tray_app.engine.health_file import health_file_path, read_health_file

    live = read_health_file(health_file_path(cfg.paths.state_dir))
    if live is not None and not live.is_live():
        live = None
    paused_here = False
    if live is not None and not engine_cli.engine_paused(cfg, live.snapshot, live):
        code, _line = engine_cli.engine_command(cfg, control.PAUSE, timeout_s)
        paused_here = code == 0  # not confirmed: go on; the rule drops what the engine still holds
    try:
        yield
    finally:
        if paused_here:
            engine_cli.engine_command(cfg, control.RESUME, timeout_s)


@contextmanager
def _redis_client(cfg: Config) -> Iterator[tuple[Any, str | None]]:
    """(client, None), or (None, why) when Redis cannot be reached. The private
    server, when not running, is started for this command and stopped after."""
    import redis

    from tray_app.redis_conn import RedisProvider

    provider = RedisProvider(cfg)
    try:
        ep = provider.start(take_ownership=False, write_endpoint=False)
    except (TelemetryTrayError, OSError) as exc:  # no Redis: a problem of one place, reported as such
        yield None, str(exc)
        return
    client = ep.client(socket_timeout=30)
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            yield None, f"{ep.masked}: {exc}"
            return
        yield client, None
    finally:
        client.close()
        provider.stop()


def cmd_forget(args: argparse.Namespace) -> int:
    from tray_app.lifecycle.forget import Selector, forget

    cfg = get_config(args)
    sel = Selector.build(session=args.session, project=args.project, since=args.since, until=args.until,
                         everything=args.all)
    if sel.everything and not args.dry_run and not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("forget --all deletes everything recorded; add --yes to do it")
        answer = input("Forget everything recorded up to now? This cannot be undone. Type 'yes': ")
        if answer.strip().lower() != "yes":
            print("Nothing was forgotten.")
            return 1
    with _redis_client(cfg) as (client, why):
        hold = (lambda: _engine_held(cfg, args.timeout)) if not args.dry_run else None
        out = forget(cfg, sel, dry_run=args.dry_run, client=client, redis_error=why,
                     **({"hold": hold} if hold else {}))
    if args.json:
        print_json({"selector": sel.describe(), "dry_run": out.dry_run, "counts": out.counts,
                    "compacted": out.compacted, "problems": out.problems})
    else:
        head = "Would forget" if out.dry_run else "Forgot"
        print(f"{head} {sel.describe()}:")
        for line in _describe_counts(out.counts):
            print(line)
        for line in out.compacted:
            print(f"  on disk: {line}")
        if not out.dry_run:
            print("From now on the engine and the monitors drop anything that matches.")
    for p in out.problems:
        print(f"telemetry-tray forget: warning: {p}", file=sys.stderr)
    return EXIT_PARTLY if out.problems else 0


def cmd_backup(args: argparse.Namespace) -> int:
    from tray_app.lifecycle.backup import backup

    cfg = get_config(args)
    res = backup(cfg.paths.database, args.path, force=args.force)
    print(f"Backed up {cfg.paths.database.name} to {res.path} ({res.bytes / 1e6:.1f} MB, {res.seconds:.1f} s)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from tray_app.lifecycle import export
    from tray_app.lifecycle.forget import parse_time

    cfg = get_config(args)
    since = parse_time(args.since) if args.since else None
    until = parse_time(args.until) if args.until else None
    if since is not None and until is not None and until <= since:
        raise UsageError("--until is not after --since")
    filters: dict[str, Any] = {"since": since, "until": until, "platform": args.platform}
    if not cfg.paths.database.exists():
        from tray_app.errors import DatabaseError

        raise DatabaseError(f"no database at {cfg.paths.database} yet (the app creates it when it first starts)",
                            kind="io")
    if args.output is None:
        export.write(sys.stdout.buffer, cfg.paths.database, **filters)
        sys.stdout.buffer.flush()
        return 0
    with export.open_output(args.output, args.force) as fh:
        n = export.write(fh, cfg.paths.database, **filters)
    print(f"Exported {n:,} event{'s' if n != 1 else ''} to {args.output}", file=sys.stderr)
    return 0
