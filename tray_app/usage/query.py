"""Reports from the derived usage tables (never from raw rows, except one
session's timeline in timeline.py).

Days follow the local time zone unless ``tz`` names an IANA zone. Daily,
monthly and model reports read the per-UTC-quarter-hour rollups (rollup.py;
every zone's offset is a multiple of 15 minutes, so a quarter hour lies within
one local day) and group them per local day in Python: the work follows the
number of quarter hours, not of requests.

Costs are summed as integer pico-dollars and converted once: a report's cost
equals the pricing library's own sum. A model it does not know has cost
``null`` and is listed in ``unpriced``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tray_app.errors import UsageError
from tray_app.usage import pricing

log = logging.getLogger(__name__)

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
UNKNOWN_MODEL = "unknown"
#: activity of a session counts from the assistant's own store when it has any (a
#: prompt seen by the hook and by the transcript counts once)
PREFERRED = ("(a.origin='store' OR NOT EXISTS (SELECT 1 FROM usage_activity b WHERE "
             "b.platform=a.platform AND b.session_id=a.session_id AND b.origin='store'))")
TOOL_KINDS = ("tool", "shell", "edit", "subagent")
#: events.PLATFORMS (not imported: a report's start-up is most of its time; a test keeps them equal)
PLATFORMS = ("claude_code", "cursor")


def zone(tz: str | tzinfo | None) -> tzinfo | None:
    """None = the system's local zone (applied per timestamp, DST included)."""
    if tz is None or isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(f"--timezone: unknown time zone {tz!r} (expected an IANA name such as "
                         f"Europe/Paris or UTC)") from None


def local_date(dt: datetime, tz: tzinfo | None) -> date:
    return (dt.astimezone(tz) if tz is not None else dt.astimezone()).date()


def _midnight_utc(d: date, tz: tzinfo | None) -> str:
    naive = datetime.combine(d, time())
    aware = naive.replace(tzinfo=tz) if tz is not None else naive.astimezone()
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_day(value: str | date | None, what: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{what}: expected a date YYYY-MM-DD, found {value!r}") from None


def project_hash(project: str | None) -> str | None:
    """A workspace hash (16 hex) as is; a folder path hashed like the producers do."""
    if not project:
        return None
    p = project.strip()
    if len(p) == 16 and all(c in "0123456789abcdef" for c in p.lower()):
        return p.lower()
    from tray_app.events import workspace_hash

    return workspace_hash(p.rstrip("/\\") or p)


@dataclass(frozen=True)
class Filter:
    lo: str | None = None
    hi: str | None = None
    platform: str | None = None
    project: str | None = None

    def where(self, alias: str = "") -> tuple[str, list[Any]]:
        a = f"{alias}." if alias else ""
        parts, args = ["1=1"], []
        for col, op, val in (("timestamp", ">=", self.lo), ("timestamp", "<", self.hi),
                             ("platform", "=", self.platform), ("workspace_hash", "=", self.project)):
            if val is not None:
                parts.append(f"{a}{col} {op} ?")
                args.append(val)
        return " AND ".join(parts), args

    def rollup_where(self, alias: str = "") -> tuple[str, list[Any]]:
        """The same filter on the rollups' keys (quarter hours: ``lo``/``hi`` are
        local midnights, which fall on quarter hours in every zone)."""
        a = f"{alias}." if alias else ""
        parts, args = ["1=1"], []
        for col, op, val in (("quarter", ">=", self.lo and self.lo[:16]), ("quarter", "<", self.hi and self.hi[:16]),
                             ("platform", "=", self.platform), ("workspace_hash", "=", self.project)):
            if val is not None:
                parts.append(f"{a}{col} {op} ?")
                args.append(val)
        return " AND ".join(parts), args


def make_filter(since: str | date | None, until: str | date | None, tz: tzinfo | None,
                platform: str | None, project: str | None) -> Filter:
    s, u = _parse_day(since, "--since"), _parse_day(until, "--until")
    if platform is not None and platform not in PLATFORMS:
        raise UsageError(f"--platform: expected cursor or claude_code, found {platform!r}")
    return Filter(_midnight_utc(s, tz) if s else None, _midnight_utc(u + timedelta(days=1), tz) if u else None,
                  platform, project_hash(project))


@dataclass
class Sums:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    requests: int = 0
    cost_pico: int = 0
    priced: int = 0

    def add(self, row: tuple[Any, ...]) -> None:
        inp, out, cw, cr, n, cost, priced = row
        self.input_tokens += inp or 0
        self.output_tokens += out or 0
        self.cache_creation_tokens += cw or 0
        self.cache_read_tokens += cr or 0
        self.requests += n or 0
        self.cost_pico += cost or 0
        self.priced += priced or 0

    def merge(self, o: "Sums") -> None:
        self.add((o.input_tokens, o.output_tokens, o.cache_creation_tokens, o.cache_read_tokens, o.requests,
                  o.cost_pico, o.priced))

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens

    def fields(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_creation_tokens": self.cache_creation_tokens, "cache_read_tokens": self.cache_read_tokens,
                "total_tokens": self.total_tokens,
                "cost_usd": pricing.usd(self.cost_pico) if self.priced else None}


@dataclass
class Bucket:
    models: dict[str, Sums] = field(default_factory=dict)
    prompts: int = 0
    sessions: int = 0

    def to_dict(self, unpriced: set[str]) -> dict[str, Any]:
        total = Sums()
        for m, s in self.models.items():
            total.merge(s)
            if s.priced < s.requests:
                unpriced.add(m)
        out = total.fields()
        out.update(requests=total.requests, prompts=self.prompts, sessions=self.sessions)
        out["models"] = {m: {**s.fields(), "requests": s.requests} for m, s in sorted(self.models.items())}
        return out


def _periods(conn: sqlite3.Connection, flt: Filter, tz: tzinfo | None, key: Callable[[date], str] | None
             ) -> list[tuple[str, str, str]]:
    """(name, lo, hi): the rollups' quarter range of each period (local days
    grouped by ``key``; None = one period, everything), over the data's span."""
    where, args = flt.rollup_where()
    lo, hi = conn.execute(f"SELECT MIN(quarter), MAX(quarter) FROM usage_rollup_sessions WHERE {where}",
                          args).fetchone()
    if lo is None:
        return []
    if key is None:
        return [("all", lo, hi + "~")]
    first = local_date(datetime.fromisoformat(lo + "+00:00"), tz)
    last = local_date(datetime.fromisoformat(hi + "+00:00"), tz)
    out: list[tuple[str, str, str]] = []
    d = first
    while d <= last:
        name, start = key(d), _midnight_utc(d, tz)[:16]
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1], _midnight_utc(d + timedelta(days=1), tz)[:16])
        else:
            out.append((name, start, _midnight_utc(d + timedelta(days=1), tz)[:16]))
        d += timedelta(days=1)
    return out


def _cte(periods: list[tuple[str, str, str]]) -> tuple[str, list[str]]:
    return ("WITH p(name, lo, hi) AS (VALUES " + ", ".join("(?, ?, ?)" for _ in periods) + ") ",
            [v for period in periods for v in period])


def buckets(conn: sqlite3.Connection, flt: Filter, periods: list[tuple[str, str, str]]
            ) -> tuple[dict[str, Bucket], int]:
    """Requests, prompts and sessions per period, and the sessions of all periods
    together, grouped in SQL from the rollups (rollup.py): the work follows the
    quarter hours with activity, not the requests."""
    if not periods:
        return {}, 0
    out = {name: Bucket() for name, _, _ in periods}
    cte, pargs = _cte(periods)
    where, args = flt.rollup_where("r")
    for name, model, *sums in conn.execute(
            f"{cte}SELECT p.name, r.model, SUM(r.input_tokens), SUM(r.output_tokens), "
            f"SUM(r.cache_creation_tokens), SUM(r.cache_read_tokens), SUM(r.requests), SUM(r.cost_pusd), "
            f"SUM(r.priced) FROM p JOIN usage_rollup_models r ON r.quarter >= p.lo AND r.quarter < p.hi "
            f"WHERE {where} GROUP BY 1, 2", pargs + args):
        out[name].models.setdefault(model or UNKNOWN_MODEL, Sums()).add(tuple(sums))
    # a session's prompts count from the assistant's own store when it has any
    # (PREFERRED; prompts without a session all count)
    swhere, sargs = flt.rollup_where("s")
    sessions = "COUNT(DISTINCT s.platform || char(0) || s.session_id)"
    for name, n, prompts in conn.execute(
            f"{cte}SELECT p.name, {sessions}, SUM(CASE WHEN s.session_id = '' THEN s.prompts_store + "
            f"s.prompts_other WHEN IFNULL(t.store_rows, 0) > 0 THEN s.prompts_store ELSE s.prompts_other END) "
            f"FROM p JOIN usage_rollup_sessions s ON s.quarter >= p.lo AND s.quarter < p.hi "
            f"LEFT JOIN usage_rollup_store t ON t.platform=s.platform AND t.session_id=s.session_id "
            f"WHERE {swhere} GROUP BY 1", pargs + sargs):
        out[name].sessions, out[name].prompts = n, prompts or 0
    total = conn.execute(f"SELECT {sessions} FROM usage_rollup_sessions s WHERE {swhere}", sargs).fetchone()[0]
    return out, int(total)


def _report(conn: sqlite3.Connection, unit: str, key: Callable[[date], str] | None, since: Any, until: Any,
            tz: Any, platform: str | None, project: str | None) -> dict[str, Any]:
    z = zone(tz)
    flt = make_filter(since, until, z, platform, project)
    periods = _periods(conn, flt, z, key)
    got, sessions = buckets(conn, flt, periods)
    claude = reported_costs(conn, flt, periods)
    unpriced: set[str] = set()
    rows, total, total_claude = [], Bucket(), Comparison()
    for name in sorted(got):
        b = got[name]
        if not b.models and not b.sessions:
            continue  # a day without activity inside the data's span
        c = claude.get(name)
        rows.append({unit: name, **b.to_dict(unpriced), "claude_reported": c.to_dict() if c else None})
        for m, s in b.models.items():
            total.models.setdefault(m, Sums()).merge(s)
        total.prompts += b.prompts
        if c:
            total_claude.merge(c)
    total.sessions = sessions
    return {f"{unit.replace('date', 'day')}s": rows,
            "totals": {**total.to_dict(unpriced),
                       "claude_reported": total_claude.to_dict() if total_claude.requests else None},
            "pricing": pricing.pricing_info(), "unpriced": sorted(unpriced)}


#: Claude Code's own cost and ours differ by more than this: the report flags it
DIFF_THRESHOLD = 0.05


@dataclass
class Comparison:
    """Claude Code's own account of its cost (its OpenTelemetry ``api_request``
    events) against ours, for the same sessions and period."""
    reported_pico: int = 0
    reported_priced: int = 0
    requests: int = 0
    ours_pico: int = 0
    ours_priced: int = 0
    ours_requests: int = 0

    def merge(self, o: "Comparison") -> None:
        for f in ("reported_pico", "reported_priced", "requests", "ours_pico", "ours_priced", "ours_requests"):
            setattr(self, f, getattr(self, f) + getattr(o, f))

    def to_dict(self) -> dict[str, Any]:
        theirs = pricing.usd(self.reported_pico) if self.reported_priced else None
        ours = pricing.usd(self.ours_pico) if self.ours_priced else None
        pct = None
        if theirs is not None and ours is not None and self.reported_pico:
            pct = round(100.0 * (self.ours_pico - self.reported_pico) / self.reported_pico, 2)
        differs = pct is not None and abs(pct) > DIFF_THRESHOLD * 100 or (
            theirs is not None and ours is not None and self.reported_pico == 0 and self.ours_pico != 0)
        return {"cost_usd": theirs, "requests": self.requests, "our_cost_usd": ours,
                "our_requests": self.ours_requests, "difference_pct": pct, "differs": differs}


def reported_costs(conn: sqlite3.Connection, flt: Filter, periods: list[tuple[str, str, str]]
                   ) -> dict[str, Comparison]:
    """Per period: Claude Code's reported cost, and our cost of the Claude Code
    requests of the sessions it reported on (what the two should both count)."""
    if not periods or flt.platform not in (None, "claude_code"):
        return {}
    if conn.execute("SELECT 1 FROM usage_reported_costs LIMIT 1").fetchone() is None:
        return {}  # the usual case: Claude Code's telemetry is not sent to us
    cte, pargs = _cte(periods)
    out: dict[str, Comparison] = {}
    where, args = flt.where("c")
    for name, pico, priced, n in conn.execute(
            f"{cte}SELECT p.name, SUM(c.cost_pusd), COUNT(c.cost_pusd), COUNT(*) FROM p "
            f"JOIN usage_reported_costs c ON c.timestamp >= p.lo AND c.timestamp < p.hi "
            f"WHERE c.platform='claude_code' AND {where} GROUP BY 1", pargs + args):
        out[name] = Comparison(reported_pico=pico or 0, reported_priced=priced, requests=n)
    where, args = flt.where("r")
    for name, pico, priced, n in conn.execute(
            f"{cte}SELECT p.name, SUM(r.cost_pusd), COUNT(r.cost_pusd), COUNT(*) FROM p "
            f"JOIN usage_requests r ON r.timestamp >= p.lo AND r.timestamp < p.hi "
            f"WHERE r.platform='claude_code' AND r.session_id IN (SELECT session_id FROM usage_reported_costs "
            f"WHERE platform='claude_code') AND {where} GROUP BY 1", pargs + args):
        if name in out:
            out[name].ours_pico, out[name].ours_priced, out[name].ours_requests = pico or 0, priced, n
    return out


def daily(conn: sqlite3.Connection, *, since: Any = None, until: Any = None, tz: Any = None,
          platform: str | None = None, project: str | None = None) -> dict[str, Any]:
    """``report daily --json``: {"days": [{"date", tokens, cost_usd, requests, prompts,
    sessions, "models": {model: {tokens, cost_usd, requests}}, "claude_reported"}], "totals",
    "pricing", "unpriced"}. ``claude_reported`` (null unless Claude Code's own telemetry
    reached our OTLP receiver): {"cost_usd" (Claude Code's), "requests", "our_cost_usd"
    (ours, for the same sessions), "our_requests", "difference_pct", "differs" (> 5%)}."""
    return _report(conn, "date", date.isoformat, since, until, tz, platform, project)


def monthly(conn: sqlite3.Connection, *, since: Any = None, until: Any = None, tz: Any = None,
            platform: str | None = None, project: str | None = None) -> dict[str, Any]:
    return _report(conn, "month", lambda d: d.isoformat()[:7], since, until, tz, platform, project)


def models(conn: sqlite3.Connection, *, since: Any = None, until: Any = None, tz: Any = None,
           platform: str | None = None, project: str | None = None) -> dict[str, Any]:
    """{"models": [{"model", tokens, cost_usd, requests}] (most tokens first), "totals", "pricing", "unpriced"}."""
    rep = _report(conn, "all", None, since, until, tz, platform, project)
    tot = rep["totals"]
    listing = [{"model": m, **v} for m, v in tot.pop("models").items()]
    listing.sort(key=lambda r: (-r["total_tokens"], r["model"]))
    return {"models": listing, "totals": tot, "pricing": rep["pricing"], "unpriced": rep["unpriced"]}


def today(conn: sqlite3.Connection, tz: Any = None) -> dict[str, Any]:
    """For the tray line: {"date", "total_tokens", "cost_usd", "prompts", "requests"}."""
    z = zone(tz)
    d = local_date(datetime.now(timezone.utc), z)
    rep = daily(conn, since=d, until=d, tz=z)
    t = rep["totals"]
    return {"date": d.isoformat(), "total_tokens": t["total_tokens"], "cost_usd": t["cost_usd"],
            "prompts": t["prompts"], "requests": t["requests"]}


def top_projects(conn: sqlite3.Connection, since: Any = None, limit: int = 10, tz: Any = None
                 ) -> list[dict[str, Any]]:
    """[{"project" (workspace hash or null), "total_tokens", "cost_usd", "requests", "sessions"}], most tokens first."""
    where, args = make_filter(since, None, zone(tz), None, None).where()
    rows = conn.execute(
        f"SELECT workspace_hash, SUM(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens), "
        f"SUM(cost_pusd), COUNT(cost_pusd), COUNT(*), COUNT(DISTINCT platform || ':' || session_id) "
        f"FROM usage_requests WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?", (*args, limit)).fetchall()
    return [{"project": ws, "total_tokens": tok or 0, "cost_usd": pricing.usd(cost) if priced else None,
             "requests": n, "sessions": s} for ws, tok, cost, priced, n, s in rows]


def top_tools(conn: sqlite3.Connection, since: Any = None, limit: int = 10, tz: Any = None
              ) -> list[dict[str, Any]]:
    """[{"tool", "kind", "calls"}], most calls first (tool, shell, edit and subagent calls)."""
    where, args = make_filter(since, None, zone(tz), None, None).where("a")
    kinds = ",".join(f"'{k}'" for k in TOOL_KINDS)
    rows = conn.execute(
        f"SELECT COALESCE(a.name, a.kind), MIN(a.kind), COUNT(*) FROM usage_activity a "
        f"WHERE a.kind IN ({kinds}) AND {where} AND {PREFERRED} GROUP BY 1 ORDER BY 3 DESC, 1 LIMIT ?",
        (*args, limit)).fetchall()
    return [{"tool": name, "kind": kind, "calls": n} for name, kind, n in rows]


def sessions(conn: sqlite3.Connection, *, since: Any = None, until: Any = None, tz: Any = None,
             platform: str | None = None, project: str | None = None, limit: int | None = None
             ) -> list[dict[str, Any]]:
    """One dict per session, latest start first: assistant, session_id, project, start,
    end, duration_s, prompts, tool_calls, requests, token fields, total_tokens, cost_usd, models,
    cursor_reported_cost_usd (a Cursor conversation's cost as Cursor reports it, composer usageData)."""
    from tray_app.events import parse_timestamp

    flt = make_filter(since, until, zone(tz), platform, project)
    where, args = flt.where()
    awhere, aargs = flt.where("a")
    info: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(p: str, s: str) -> dict[str, Any]:
        return info.setdefault((p, s), {"assistant": p, "session_id": s, "project": None, "start": None,
                                        "end": None, "prompts": 0, "tool_calls": 0, "sums": Sums(),
                                        "models": set()})

    for p, s, ws, lo, hi in conn.execute(
            f"SELECT platform, session_id, MAX(workspace_hash), MIN(timestamp), MAX(timestamp) FROM ("
            f"SELECT platform, session_id, workspace_hash, timestamp FROM usage_activity WHERE {where} UNION ALL "
            f"SELECT platform, session_id, workspace_hash, timestamp FROM usage_requests WHERE {where}) "
            f"GROUP BY 1, 2", args + args):
        e = entry(p, s)
        e.update(project=ws, start=lo, end=hi)
    kinds = ",".join(f"'{k}'" for k in TOOL_KINDS)
    for p, s, prompts, tools in conn.execute(
            f"SELECT a.platform, a.session_id, SUM(a.kind='prompt'), SUM(a.kind IN ({kinds})) "
            f"FROM usage_activity a WHERE {awhere} AND {PREFERRED} GROUP BY 1, 2", aargs):
        e = entry(p, s)
        e["prompts"], e["tool_calls"] = prompts or 0, tools or 0
    for p, s, model, *row in conn.execute(
            f"SELECT platform, session_id, model, SUM(input_tokens), SUM(output_tokens), "
            f"SUM(cache_creation_tokens), SUM(cache_read_tokens), COUNT(*), SUM(cost_pusd), COUNT(cost_pusd) "
            f"FROM usage_requests WHERE {where} GROUP BY 1, 2, 3", args):
        e = entry(p, s)
        e["sums"].add(tuple(row))
        e["models"].add(model or UNKNOWN_MODEL)
    reported = dict(conn.execute("SELECT session_id, reported_cents FROM usage_cursor_composers "
                                 "WHERE reported_cents IS NOT NULL").fetchall())
    out = []
    for e in info.values():
        sums: Sums = e.pop("sums")
        cents = reported.get(e["session_id"]) if e["assistant"] == "cursor" else None
        start, end = e["start"], e["end"]
        dur = (parse_timestamp(end) - parse_timestamp(start)).total_seconds() if start and end else 0.0
        out.append({**{k: e[k] for k in ("assistant", "session_id", "project", "start", "end")},
                    "duration_s": round(dur, 3), "prompts": e["prompts"], "tool_calls": e["tool_calls"],
                    "requests": sums.requests, **sums.fields(), "models": sorted(e["models"]),
                    "cursor_reported_cost_usd": cents / 100 if cents is not None else None})
    out.sort(key=lambda r: (r["start"] or "", r["session_id"]), reverse=True)
    return out[:limit] if limit else out


__all__ = ["daily", "monthly", "models", "sessions", "today", "top_projects", "top_tools", "zone",
           "project_hash", "TOKEN_FIELDS"]
