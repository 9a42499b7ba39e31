"""Core commands: paths, config, init, doctor."""

from __future__ import annotations

import argparse
import logging
import sys

from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.config import masked_dict, to_toml, write_template
from tray_app.paths import resolve_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("paths", help="print every path the app uses",
                       description="Print every path the app uses (config file, data dir, database, "
                                   "state dir, spool dir, log dir, runtime dir).")
    add_json_flag(p)
    p.set_defaults(func=cmd_paths)

    c = sub.add_parser("config", help="show the effective config or write a template",
                       description="Show the effective configuration or write a commented template.")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = csub.add_parser("show", help="print the effective config (secrets masked)",
                           description="Print the effective config: defaults, then the config file, "
                                       "then TELEMETRY_TRAY_* environment overrides. Secrets are masked.")
    add_json_flag(show)
    show.set_defaults(func=cmd_config_show)
    init = csub.add_parser("init", help="write a commented config template (never overwrites)",
                           description="Write a commented config.toml template to the config path. "
                                       "An existing file is never overwritten.")
    init.set_defaults(func=cmd_config_init)

    i = sub.add_parser("init", help="create the Redis streams and consumer group (idempotent)",
                       description="Connect to Redis (starting the private server if that is the "
                                   "configuration), then create, if missing, the stream "
                                   "telemetry:events with group processors, telemetry:dlq and "
                                   "cdc:events. Prints what it created or found.")
    i.set_defaults(func=cmd_init)

    d = sub.add_parser("doctor", help="check the installation; non-zero exit if a check fails",
                       description="One line per check: OK / WARN / FAIL with the fix.")
    add_json_flag(d)
    d.set_defaults(func=cmd_doctor)


def cmd_paths(args: argparse.Namespace) -> int:
    paths = resolve_paths(getattr(args, "config", None))
    data = paths.as_dict()
    if args.json:
        print_json(data)
    else:
        width = max(len(k) for k in data)
        for k, v in data.items():
            print(f"{k:<{width}}  {v}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    cfg = get_config(args)
    data = masked_dict(cfg)
    if args.json:
        print_json({"source": cfg.source, **data})
    else:
        print(f"# effective config (source: {cfg.source})")
        sys.stdout.write(to_toml(data))
    return 0


def cmd_config_init(args: argparse.Namespace) -> int:
    paths = resolve_paths(getattr(args, "config", None))
    if write_template(paths.config_file):
        print(f"wrote {paths.config_file}")
        return 0
    print(f"{paths.config_file} already exists; left unchanged", file=sys.stderr)
    return 1


def cmd_init(args: argparse.Namespace) -> int:
    from tray_app.redis_conn import RedisProvider, ensure_streams, translate
    import redis

    cfg = get_config(args)
    provider = RedisProvider(cfg)
    ep = provider.start(take_ownership=False)
    try:
        client = ep.client()
        try:
            report = ensure_streams(client)
        except redis.RedisError as exc:
            raise translate(exc, ep) from None
        print(f"redis: {ep.masked}{' (private server)' if ep.managed else ''}")
        for thing, what in report:
            print(f"{what:<8} {thing}")
    finally:
        # a server we started only for this command keeps its data (AOF) and stops here
        provider.stop()
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from tray_app.doctor import run_checks

    logging.disable(logging.CRITICAL)
    results = run_checks(getattr(args, "config", None))
    if args.json:
        print_json([r._asdict() for r in results])
    else:
        for r in results:
            line = f"{r.status:<4} {r.name}: {r.detail}"
            if r.fix and r.status != "OK":
                line += f" -> {r.fix}"
            print(line)
    return 1 if any(r.status == "FAIL" for r in results) else 0
