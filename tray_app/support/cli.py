"""Commands: `diagnostics export`, `autostart`, `dlq list|retry|purge`, `db stats`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.errors import DatabaseError, TelemetryTrayError, UsageError


class SupportIOError(TelemetryTrayError):
    """A file this command writes could not be written."""

    exit_code = 74  # EX_IOERR


def register(sub: argparse._SubParsersAction) -> None:
    _register_diagnostics(sub)
    _register_autostart(sub)
    _register_dlq(sub)
    _register_db(sub)


def _group(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> Any:
    p = sub.add_parser(name, help=help, description=description)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def _register_diagnostics(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "diagnostics", "export a diagnostics bundle to send to someone",
               "Diagnostics for support.")
    e = g.add_parser(
        "export", help="write telemetry-tray-diagnostics-<UTC time>.zip (read it before sharing)",
        description="Write a zip of plain-text files: versions, masked config, health, Redis and "
                    "stream info, dead-letter counts, database statistics, monitors, hooks, spool "
                    "and the last log lines. Never event content, passwords or tokens; home paths "
                    "written as ~. The zip is readable by you only (0600).")
    e.add_argument("--out", metavar="PATH", type=Path,
                   help="folder to write into, or a file name ending in .zip "
                        "(default: your Downloads folder if it exists, else your home folder)")
    e.set_defaults(func=cmd_diagnostics_export)


def _register_autostart(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "autostart", "start the tray app when you log in (enable, disable, status)",
               "Start the tray app at login: an XDG autostart entry on Linux, a LaunchAgent on "
               "macOS, a Run registry value on Windows.")
    for name, help_text, func in (
            ("enable", "start the app at login", cmd_autostart_enable),
            ("disable", "do not start the app at login", cmd_autostart_disable),
            ("status", "say whether the app starts at login (exit 0 either way)", cmd_autostart_status)):
        p = g.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if name == "status":
            add_json_flag(p)
        p.set_defaults(func=func)


def _register_dlq(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "dlq", "inspect, retry or purge dead letters (telemetry:dlq)",
               "Dead letters are events the engine could not store: invalid entries, or entries "
               "that failed too many times. Each keeps its reason.")
    ls = g.add_parser("list", help="list dead letters, oldest first (payloads shown as sizes)",
                      description="List dead letters, oldest first. Payload and metadata are shown "
                                  "as sizes unless --show-payload is given (listings get pasted "
                                  "into chats and screen shares).")
    ls.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                    help="show at most N (default 20)")
    ls.add_argument("--reason", metavar="R", help="only dead letters with this reason "
                                                  "(e.g. invalid_json, retries_exhausted)")
    ls.add_argument("--show-payload", action="store_true",
                    help="show payload, metadata and other content fields in full")
    add_json_flag(ls)
    ls.set_defaults(func=cmd_dlq_list)

    rt = g.add_parser("retry", help="re-queue dead letters to telemetry:events",
                      description="Re-queue dead letters to telemetry:events with their original "
                                  "fields. Each is removed from the DLQ only after its re-queue "
                                  "succeeded. Given ids are all checked first: one that is not in "
                                  "the DLQ means nothing is re-queued.")
    which = rt.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead letter present now")
    which.add_argument("ids", nargs="*", default=[], metavar="ID", help="dead letter ids (from `dlq list`)")
    rt.set_defaults(func=cmd_dlq_retry)

    pg = g.add_parser("purge", help="delete every dead letter (needs --yes)",
                      description="Delete every dead letter present now. This cannot be undone; "
                                  "consider `diagnostics export` first.")
    pg.add_argument("--yes", action="store_true", help="really delete them")
    pg.set_defaults(func=cmd_dlq_purge)


def _register_db(sub: argparse._SubParsersAction) -> None:
    g = _group(sub, "db", "database commands", "Commands on telemetry.db.")
    st = g.add_parser("stats", help="size, pages, schema version, rows by platform, type and day",
                      description="Statistics of telemetry.db, read-only (safe while the app runs): "
                                  "file and WAL size, page and freelist counts, schema version, rows "
                                  "by platform, event type and day for the last 14 days, and "
                                  "PRAGMA quick_check.")
    st.add_argument("--days", type=_positive_int, default=14, metavar="N", help="days to break down (default 14)")
    st.add_argument("--no-check", action="store_true", help="skip PRAGMA quick_check (slow on big databases)")
    add_json_flag(st)
    st.set_defaults(func=cmd_db_stats)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {value}")
    return value


# ----------------------------------------------------------------------------- handlers

def cmd_diagnostics_export(args: argparse.Namespace) -> int:
    from tray_app.diagnostics.bundle import export_bundle

    cfg = get_config(args)
    out: Path | None = args.out
    try:
        if out is not None and out.suffix.lower() == ".zip":
            if out.exists():
                raise UsageError(f"{out} already exists; choose another name or a folder")
            if not out.expanduser().parent.is_dir():
                raise UsageError(f"--out {out}: the folder {out.expanduser().parent} does not exist")
            path = export_bundle(cfg, out_file=out)
        else:
            if out is not None and out.exists() and not out.is_dir():
                raise UsageError(f"--out {out}: expected a folder or a name ending in .zip")
            if out is not None and not out.expanduser().is_dir():
                raise UsageError(f"--out {out}: no such folder (create it first, or name a .zip file)")
            path = export_bundle(cfg, out_dir=out)
    except OSError as exc:
        raise SupportIOError(f"cannot write the bundle: {exc.strerror or exc}"
                             f"{' (' + str(exc.filename) + ')' if getattr(exc, 'filename', None) else ''}") from None
    print(path)
    return 0


def _autostart_call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except OSError as exc:
        raise SupportIOError(f"start at login: {exc.strerror or exc}"
                         f"{' (' + str(exc.filename) + ')' if getattr(exc, 'filename', None) else ''}") from None


def cmd_autostart_enable(args: argparse.Namespace) -> int:
    from tray_app.support import autostart

    # the entry starts the app with this home and, when one was given, this config
    impl = autostart.for_platform(config_file=get_config(args).paths.config_file)
    _autostart_call(impl.enable)
    print(f"enabled: {impl.location()}")
    return 0


def cmd_autostart_disable(args: argparse.Namespace) -> int:
    from tray_app.support import autostart

    impl = autostart.for_platform()
    _autostart_call(impl.disable)
    print(f"disabled: {impl.location()}")
    return 0


def cmd_autostart_status(args: argparse.Namespace) -> int:
    from tray_app.support import autostart

    impl = autostart.for_platform()
    enabled = bool(_autostart_call(impl.is_enabled))
    if args.json:
        print_json({"enabled": enabled, "location": impl.location(),
                    "command": autostart.launch_command()})
    else:
        print(f"{'enabled' if enabled else 'disabled'}: {impl.location()}")
    return 0


@contextmanager
def _redis(args: argparse.Namespace) -> Iterator[Any]:
    """A client to the configured Redis. The private server, when it is not
    running, is started for this command only and stopped after it (as `init`
    does); the endpoint file hooks read is left alone."""
    import redis

    from tray_app.redis_conn import RedisProvider, translate

    cfg = get_config(args)
    provider = RedisProvider(cfg)
    ep = provider.start(take_ownership=False, write_endpoint=False)
    client = ep.client()
    try:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise translate(exc, ep) from None
        yield client
    finally:
        client.close()
        provider.stop()


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from tray_app.engine import dlq_ops as dlq

    with _redis(args) as client:
        entries = dlq.list_entries(client, args.limit, reason=args.reason)
        total = dlq.length(client)
    rows = [e.summary(show_payload=args.show_payload) for e in entries]
    if args.json:
        print_json({"total": total, "shown": len(rows), "entries": rows})
        return 0
    what = f" with reason {args.reason}" if args.reason else ""
    if not rows:
        print(f"no dead letters{what} ({total} in total)")
        return 0
    print(f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''}{what} shown, {total} in total")
    for r in rows:
        print(f"{r['id']}  {r['reason']}  failed {r['failed_at']}  deliveries {r['delivery_count']}")
        details = {k: v for k, v in r.items() if k not in ("id", "reason", "failed_at", "delivery_count")}
        for k, v in details.items():
            if v in ("", None):
                continue
            text = str(v).replace("\n", "\\n")
            print(f"    {k}: {text}")
    return 0


def cmd_dlq_retry(args: argparse.Namespace) -> int:
    from tray_app.engine import dlq_ops as dlq

    if not args.all and not args.ids:
        raise UsageError("dlq retry: give dead letter ids, or --all")
    with _redis(args) as client:
        n = dlq.retry(client, None if args.all else list(args.ids))
    print(f"re-queued {n} dead letter{'s' if n != 1 else ''} to telemetry:events")
    return 0


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    from tray_app.engine import dlq_ops as dlq

    with _redis(args) as client:
        if not args.yes:
            n = dlq.length(client)
            raise UsageError(f"dlq purge would delete {n} dead letter{'s' if n != 1 else ''}; "
                             "add --yes to do it")
        n = dlq.purge(client)
    print(f"purged {n} dead letter{'s' if n != 1 else ''}")
    return 0


def cmd_db_stats(args: argparse.Namespace) -> int:
    from tray_app.support import dbstats

    cfg = get_config(args)
    stats = dbstats.collect(cfg.paths.database, days=args.days, check=not args.no_check)
    if not stats["exists"]:
        raise DatabaseError(f"no database at {cfg.paths.database} yet "
                            "(the app creates it when it first starts)", kind="io")
    if args.json:
        print_json(stats)
    else:
        sys.stdout.write(dbstats.format_text(stats) + "\n")
    return 0
