"""Commands: `report daily|monthly|sessions|models`, `sessions`, `session ID`,
`usage rebuild|status`.

Reports read the derived tables. When they are behind ``raw_traces`` (the
engine is not running, or its worker is still catching up) the command first
applies the missing rows itself, with the worker's own idempotent code, so a
report is always complete.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

from tray_app.cli.common import add_json_flag, get_config, print_json
from tray_app.engine.schema import immediate
from tray_app.errors import DatabaseError
from tray_app.usage import schema

# query/worker (and the pricing library under them) are imported by the commands
# that use them: every other command's start-up stays as fast as before

REPORTS = ("daily", "monthly", "sessions", "models")


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="tokens and cost per day, month, session or model",
                       description="Token and cost reports from what Telemetry Tray recorded (Claude Code: "
                                   "one record per API request; Cursor: its own token counts). Costs from "
                                   "the genai-prices library, offline; unknown models are listed as unpriced.")
    r.add_argument("kind", choices=REPORTS, help="daily, monthly, sessions or models")
    _filters(r)
    add_json_flag(r)
    r.set_defaults(func=cmd_report)
    s = sub.add_parser("sessions", help="list sessions (assistant, project, start, duration, prompts, "
                                        "tool calls, tokens, cost)")
    _filters(s)
    s.add_argument("--limit", type=int, default=50, metavar="N", help="at most N sessions (default 50; 0 = all)")
    add_json_flag(s)
    s.set_defaults(func=cmd_sessions)
    one = sub.add_parser("session", help="one conversation as a timeline",
                         description="Print a session as a timeline: prompts, the assistant's turns, tool and "
                                     "shell calls with their outcome, file edits, subagents.")
    one.add_argument("session_id", metavar="ID", help="the session id (a unique prefix is enough)")
    one.add_argument("--no-content", action="store_true", help="structure only: no prompt or response text")
    one.add_argument("--timezone", metavar="TZ", help="IANA time zone for times (default: local)")
    add_json_flag(one)
    one.set_defaults(func=cmd_session)
    u = sub.add_parser("usage", help="the derived usage tables (rebuild, status)",
                       description="The usage tables are derived from raw_traces by a worker of the engine.")
    g = u.add_subparsers(dest="usage_command", metavar="SUBCOMMAND")
    rb = g.add_parser("rebuild", help="rebuild the usage tables from raw_traces (idempotent); rows whose raw "
                                      "events retention removed are kept")
    rb.set_defaults(func=cmd_rebuild)
    st = g.add_parser("status", help="how far the usage tables are")
    add_json_flag(st)
    st.set_defaults(func=cmd_status)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first day (local time zone unless --timezone)")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last day, inclusive")
    p.add_argument("--platform", choices=("cursor", "claude_code"), help="one assistant only")
    p.add_argument("--project", metavar="PATH|HASH", help="one project: its folder or its workspace hash")
    p.add_argument("--timezone", metavar="TZ", help="IANA time zone for days (default: local)")


# -- the database ------------------------------------------------------------------------------

def _open(args: argparse.Namespace) -> sqlite3.Connection:
    cfg = get_config(args)
    if not cfg.paths.database.exists():
        raise DatabaseError(f"{cfg.paths.database}: no database yet (start Telemetry Tray first)")
    try:
        conn = schema.open_db(cfg.paths.database)
    except sqlite3.Error as exc:
        raise DatabaseError(f"{cfg.paths.database}: {exc}") from exc
    try:
        catch_up(conn, _progress("Updating usage tables") if sys.stderr.isatty() else None)
    except sqlite3.Error as exc:  # the tables stay as they are: a report of what they hold
        print(f"telemetry-tray: warning: the usage tables could not be brought up to date ({exc}); "
              f"showing what they hold", file=sys.stderr)
    return conn


Progress = Callable[[int, int], None]


def _progress(label: str) -> Progress:
    state = {"last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - state["last"] < 0.1:
            return
        state["last"] = now
        pct = 100.0 * done / total if total else 100.0
        bar = "#" * int(pct // 4)
        sys.stderr.write(f"\r{label}: [{bar:<25}] {pct:5.1f}% ({done:,}/{total:,} rows)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def catch_up(conn: sqlite3.Connection, progress: Progress | None = None, start: int | None = None) -> int:
    """Apply every raw row above the position (or above ``start``). Returns rows applied."""
    pos = schema.position(conn) if start is None else start
    top = int(conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0])
    if pos >= top and not schema.unpriced(conn):
        return 0  # the usual case, and the fast one: the worker is imported only when there is work
    from tray_app.usage.worker import CHUNK_ROWS, price_pending, process_chunk

    total = int(conn.execute("SELECT COUNT(*) FROM raw_traces WHERE sequence > ? AND sequence <= ?",
                             (pos, top)).fetchone()[0])
    done = 0
    while pos < top:
        n, pos = process_chunk(conn, pos, CHUNK_ROWS * 4, top)
        if n == 0:
            break
        done += n
        if progress:
            progress(done, total)
    while price_pending(conn):
        pass
    if progress and done < total:
        progress(total, total)
    return done


# -- commands ------------------------------------------------------------------------------------

def _common(args: argparse.Namespace) -> dict[str, Any]:
    return {"since": args.since, "until": args.until, "tz": args.timezone, "platform": args.platform,
            "project": args.project}


def cmd_report(args: argparse.Namespace) -> int:
    from tray_app.usage import query

    conn = _open(args)
    try:
        if args.kind == "sessions":
            rows = query.sessions(conn, **_common(args))
            print_json(rows) if args.json else _print_sessions(rows)
            return 0
        rep = getattr(query, args.kind)(conn, **_common(args))
    finally:
        conn.close()
    if args.json:
        print_json(rep)
    else:
        _print_report(args.kind, rep)
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    from tray_app.usage import query

    conn = _open(args)
    try:
        rows = query.sessions(conn, **_common(args), limit=args.limit or None)
    finally:
        conn.close()
    print_json(rows) if args.json else _print_sessions(rows)
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    from tray_app.usage import query, timeline

    conn = _open(args)
    try:
        steps = timeline.build(conn, args.session_id, content=not args.no_content)
    finally:
        conn.close()
    if args.json:
        print_json(steps)
    else:
        timeline.print_text(steps, tz=query.zone(args.timezone))
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from tray_app.usage.worker import clear_derivable

    cfg = get_config(args)
    if not cfg.paths.database.exists():
        raise DatabaseError(f"{cfg.paths.database}: no database yet (start Telemetry Tray first)")
    conn = schema.open_db(cfg.paths.database)
    try:
        with immediate(conn):
            clear_derivable(conn)  # what retention removed cannot be derived again: it is kept
        done = catch_up(conn, _progress("Rebuilding usage tables") if sys.stderr.isatty() else None, start=0)
        n = conn.execute("SELECT COUNT(*) FROM usage_requests").fetchone()[0]
    finally:
        conn.close()
    print(f"Rebuilt the usage tables from {done:,} raw rows: {n:,} requests.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    cfg = get_config(args)
    if not cfg.paths.database.exists():
        raise DatabaseError(f"{cfg.paths.database}: no database yet (start Telemetry Tray first)")
    conn = sqlite3.connect(f"file:{cfg.paths.database}?mode=ro", uri=True, timeout=5)
    try:
        top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        have = schema.exists(conn)
        pos = schema.position(conn) if have else 0
        reqs = conn.execute("SELECT COUNT(*) FROM usage_requests").fetchone()[0] if have else 0
    finally:
        conn.close()
    out = {"position": pos, "raw_top": top, "behind": max(0, top - pos), "requests": reqs}
    if args.json:
        print_json(out)
    else:
        print(f"Usage tables at sequence {pos:,} of {top:,} ({out['behind']:,} behind); {reqs:,} requests.")
    return 0


# -- text output -----------------------------------------------------------------------------------

def _tok(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _cost(c: float | None) -> str:
    if c is None:
        return "unpriced"
    return f"${c:,.2f}" if c >= 1 or c == 0 else f"${c:.4f}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def _print_report(kind: str, rep: dict[str, Any]) -> None:
    key = {"daily": ("days", "date"), "monthly": ("months", "month"), "models": ("models", "model")}[kind]
    header = [key[1].capitalize(), "Input", "Output", "Cache write", "Cache read", "Total", "Cost", "Requests"]
    # Claude Code's own cost, where its telemetry reached us (not per model: it is per period)
    claude = kind != "models" and any(r.get("claude_reported") for r in rep[key[0]])
    if claude:
        header.append("Claude's cost")

    def line(name: str, r: dict[str, Any]) -> list[str]:
        cells = [name, _tok(r["input_tokens"]), _tok(r["output_tokens"]), _tok(r["cache_creation_tokens"]),
                 _tok(r["cache_read_tokens"]), _tok(r["total_tokens"]), _cost(r["cost_usd"]), str(r["requests"])]
        if claude:
            c = r.get("claude_reported")
            cells.append("-" if not c else _cost(c["cost_usd"]) + (" !" if c["differs"] else ""))
        return cells

    rows = [line(str(r[key[1]]), r) for r in rep[key[0]]]
    rows.append(line("Total", rep["totals"]))
    _table(header, rows)
    p = rep["pricing"]
    print(f"\nPrices: {p['source']} {p['version']} (offline).", end="")
    print(f" Unpriced models: {', '.join(rep['unpriced'])}." if rep["unpriced"] else "")
    if claude:
        print("Claude's cost: what Claude Code itself reported (its OpenTelemetry export); \"!\": it differs "
              "by more than 5% from ours for the same sessions (`--json` has both).")


def _print_sessions(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("No sessions recorded.")
        return
    out = []
    for r in rows:
        out.append([r["session_id"][:12], r["assistant"], (r["project"] or "-")[:8], (r["start"] or "")[:16],
                    _duration(r["duration_s"]), str(r["prompts"]), str(r["tool_calls"]), _tok(r["total_tokens"]),
                    _cost(r["cost_usd"])])
    _table(["Session", "Assistant", "Project", "Start (UTC)", "Duration", "Prompts", "Tools", "Tokens", "Cost"], out)


__all__ = ["register", "catch_up"]
