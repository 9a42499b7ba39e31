"""`telemetry-tray hooks install|uninstall|status`."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from tray_app.capture import claude_otel, installers
from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    h = sub.add_parser("hooks", help="install, remove or inspect the Cursor / Claude Code hooks",
                       description="Manage the hook entries that send Cursor and Claude Code "
                                   "events to Telemetry Tray. With neither --cursor nor --claude, "
                                   "both assistants are meant.")
    hsub = h.add_subparsers(dest="hooks_command", metavar="SUBCOMMAND")

    def targets(p: argparse.ArgumentParser) -> None:
        p.add_argument("--cursor", action="store_true", help="only Cursor (~/.cursor/hooks.json)")
        p.add_argument("--claude", action="store_true",
                       help="only Claude Code ($CLAUDE_CONFIG_DIR or ~/.claude, settings.json)")
        p.add_argument("--dry-run", action="store_true",
                       help="print the change as a unified diff and write nothing")

    i = hsub.add_parser("install", help="add our hook entries (idempotent; keeps your own hooks)",
                        description="Merge our hook entries into the assistants' settings files. "
                                    "Your own entries are kept as they are; running it again changes "
                                    "nothing; an entry from an older install is replaced. The file is "
                                    "written atomically and the previous version kept as "
                                    f"<file>{installers.BACKUP_SUFFIX}. A file that is not valid JSON "
                                    "is left untouched. The hooks are pointed at this app's home and "
                                    "config file (TELEMETRY_TRAY_HOME, --config or "
                                    "TELEMETRY_TRAY_CONFIG) when those are not the defaults.")
    targets(i)
    i.add_argument("--otel", action="store_true",
                   help="also turn on Claude Code's own OpenTelemetry export to this app's local OTLP "
                        "receiver (env variables in its settings.json; prompt text and tool details "
                        "only when [capture] keeps them in full; a value of yours is never overwritten)")
    i.set_defaults(func=cmd_install)

    u = hsub.add_parser("uninstall", help="remove exactly our hook entries",
                        description="Remove our hook entries (any install location) and nothing else. "
                                    "A settings file the install created is deleted again.")
    targets(u)
    u.add_argument("--otel", action="store_true",
                   help="remove only the OpenTelemetry variables `install --otel` added; keep the hooks")
    u.set_defaults(func=cmd_uninstall)

    s = hsub.add_parser("status", help="show where the hooks are installed and the spool's state",
                        description="For each assistant: the settings file, which of our events are "
                                    "installed, stale (an older install's command) or missing; the "
                                    "hook command; the offline spool (events waiting, unparseable).")
    add_json_flag(s)
    s.set_defaults(func=cmd_status)


def _chosen(args: argparse.Namespace) -> list[str]:
    picked = [a for a in installers.ASSISTANTS if getattr(args, a, False)]
    return picked or list(installers.ASSISTANTS)


def _run(args: argparse.Namespace, install: bool) -> int:
    # Plan every file first: one invalid file (or a conflict) stops the command before anything is written.
    config = getattr(args, "config", None)
    chosen = _chosen(args)
    otel = None
    if args.otel:
        if "claude" not in chosen:
            raise UsageError("--otel: Claude Code's OpenTelemetry export; use it with --claude (or neither)")
        if install:
            cfg = get_config(args)
            if not cfg.otlp.receiver_enabled:
                raise UsageError("--otel: the local OTLP receiver is off ([otlp] receiver_enabled = false): "
                                 "turn it on first, or Claude Code would send its telemetry to nothing "
                                 "(or to whatever else listens on its port)")
            otel = claude_otel.wanted(cfg)
    changes = [installers.plan(a, install, config_file=config, otel=otel if a == "claude" else None,
                               otel_only=bool(args.otel and not install))
               for a in chosen if not (args.otel and not install and a != "claude")]
    for change in changes:
        if not change.changed:
            print(f"{change.assistant}: {change.path}: already "
                  f"{'installed' if install else 'clean'}; unchanged")
            continue
        if args.dry_run:
            sys.stdout.write(change.diff())
            continue
        backup = installers.apply(change)
        note = f" (previous version: {backup})" if backup else ""
        if change.remove:
            note = " (the install had created the file: deleted)"
        print(f"{change.assistant}: {change.path}: {'installed' if install else 'removed'}{note}")
        if otel is not None and change.assistant == "claude":
            print(f"claude: OpenTelemetry export to {otel['OTEL_EXPORTER_OTLP_ENDPOINT']} "
                  f"(prompt text: {'yes' if claude_otel.PROMPTS in otel else 'no'}, tool details: "
                  f"{'yes' if claude_otel.TOOL_DETAILS in otel else 'no'}); applies to new Claude Code sessions")
    if args.dry_run:
        print("dry run: nothing written", file=sys.stderr)
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    return _run(args, install=True)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return _run(args, install=False)


def cmd_status(args: argparse.Namespace) -> int:
    from tray_app.engine import spool_drain as spool

    cfg = get_config(args)
    config = getattr(args, "config", None)
    location = installers.location_args(config_file=config)
    rows = [installers.status(a, config_file=config) for a in installers.ASSISTANTS]
    st = spool.stats(cfg.paths.spool_dir)
    commands = {a: installers.hook_command(a, location=location) for a in installers.ASSISTANTS}
    if args.json:
        data: dict[str, Any] = {
            r.assistant: {"path": str(r.path), "state": r.state, "exists": r.exists, "error": r.error,
                          "installed": list(r.installed), "stale": list(r.stale),
                          "missing": list(r.missing), "command": commands[r.assistant],
                          **({"otel": r.otel} if r.assistant == "claude" else {})}
            for r in rows}
        data["spool"] = {"dir": str(cfg.paths.spool_dir), "files": st.files, "bad": st.bad,
                         "oldest_age_s": round(st.oldest_age_s, 3), "bytes": st.bytes}
        print_json(data)
        return 0
    for r in rows:
        total = len(installers.CURSOR_EVENTS if r.assistant == "cursor" else installers.CLAUDE_EVENTS)
        detail = r.error or f"{len(r.installed)}/{total} events"
        print(f"{r.assistant:<7} {r.state}: {r.path} ({detail})")
        if r.assistant == "claude" and r.otel != "off":
            print(f"        OpenTelemetry export: {'ours (hooks install --otel)' if r.otel == 'on' else 'set up by you'}")
        if r.stale:
            print(f"        stale (older install): {', '.join(r.stale)}; run `telemetry-tray hooks install`")
    print(f"hook    {installers.hook_command('cursor|claude', location=location)}")
    warn = f", {st.bad} unparseable in {os.path.join(str(cfg.paths.spool_dir), 'bad')}" if st.bad else ""
    age = f", oldest {st.oldest_age_s:.0f}s" if st.files else ""
    print(f"spool   {st.files} waiting{age}{warn}")
    return 0
