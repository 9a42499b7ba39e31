"""The local usage report: one self-contained HTML file with SVG charts.

``collect()`` reads the derived usage tables (through ``tray_app.usage.query``),
``render()`` turns that into HTML, and ``write_report()`` writes it user-only
(0600, atomically) into the data directory. The charts are drawn by pygal as
inline SVG; the page has its CSS inline and references nothing else: no script,
font, image or style sheet is loaded from anywhere, and no script is needed to
read it (each bar carries its exact value as a native tooltip).
"""

from __future__ import annotations

import os
import re
import sqlite3
import webbrowser
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tray_app.fileutil import atomic_write

if TYPE_CHECKING:
    from tray_app.config import Config

REPORT_NAME = "usage-report.html"
REPORT_MODE = 0o600
#: the sessions chart covers this many weeks, ending with the current one
WEEKS = 8
#: top projects and tools shown
TOP_N = 10
#: models beyond this many get one "other models" series in the charts
MAX_MODEL_SERIES = 8
OTHER_MODELS = "other models"
RECENT_SESSIONS = 12

SVG_NS = "http://www.w3.org/2000/svg"
FONT_STACK = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", sans-serif'
#: colour-blind friendly (Okabe-Ito, then Tableau) and stable per model across charts
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#6F4E7C", "#999999")
ASSISTANTS = {"claude_code": "Claude Code", "cursor": "Cursor"}
ASSISTANT_COLORS = {"claude_code": "#D55E00", "cursor": "#0072B2"}
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
                "total_tokens")


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows, already computed (``render`` does no I/O).

    ``daily`` is ``query.daily()``'s dict, ``sessions`` ``query.sessions()``'s
    list, ``top_projects``/``top_tools`` those of ``query.top_projects()`` and
    ``query.top_tools()``. ``since``/``until`` bound the period (inclusive, in
    ``tz_name``); when absent, the first and last day in ``daily`` do.
    """

    daily: Mapping[str, Any]
    sessions: Sequence[Mapping[str, Any]] = ()
    top_projects: Sequence[Mapping[str, Any]] = ()
    top_tools: Sequence[Mapping[str, Any]] = ()
    generated_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    tz_name: str = "UTC"
    pricing: Mapping[str, Any] = field(default_factory=dict)
    since: date | None = None
    until: date | None = None

    @property
    def is_empty(self) -> bool:
        days = self.daily.get("days") or []
        used = any(_int(d.get("total_tokens")) or _int(d.get("requests")) or _int(d.get("prompts"))
                   or _int(d.get("sessions")) for d in days)
        return not (used or self.sessions or self.top_projects or self.top_tools)


# ----------------------------------------------------------------------------- formatting

def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def fmt_count(n: int) -> str:
    """1234567 -> '1,234,567'."""
    return f"{n:,}"


def fmt_tokens(n: float) -> str:
    """A short token count: 950, 12.3k, 1.2M, 3.4B."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{n:.0f}"


def fmt_usd(v: float | None) -> str:
    """Dollars; None (no price known) is 'unpriced', never $0."""
    if v is None:
        return "unpriced"
    if 0 < v < 0.005:
        return "<$0.01"
    return f"${v:,.2f}"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def short_hash(project: Any) -> str:
    """Projects are workspace hashes: show the first 8 characters."""
    text = str(project or "")
    if not text:
        return "(no project)"
    return text[:8] if re.fullmatch(r"[0-9a-fA-F]{9,}", text) else text


def _tz(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.utc if name.upper() == "UTC" else None


def local_zone_name(now: datetime | None = None) -> str:
    """The system's time zone, as an IANA name where it can be found (else its abbreviation)."""
    env = os.environ.get("TZ", "").lstrip(":")
    if env and _tz(env) is not None:
        return env
    try:
        target = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in target:
            name = target.split("/zoneinfo/", 1)[1]
            if _tz(name) is not None:
                return name
    except OSError:
        pass
    return (now or datetime.now()).astimezone().tzname() or "local"


def _local(ts: Any, tz: tzinfo | None) -> datetime | None:
    """A timestamp (datetime, ISO text or epoch seconds) in the report's time zone."""
    if ts is None or ts == "":
        return None
    if isinstance(ts, datetime):
        dt = ts
    elif isinstance(ts, (int, float)):
        dt = datetime.fromtimestamp(float(ts), timezone.utc)
    else:
        try:
            dt = datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(tz) if tz is not None else dt.astimezone()


def _day_label(d: date) -> str:
    return f"{d:%b} {d.day}"


def _period_label(since: date, until: date) -> str:
    if since == until:
        return f"{since.day} {since:%b %Y}"
    if since.year == until.year:
        return f"{since.day} {since:%b} – {until.day} {until:%b %Y}"
    return f"{since.day} {since:%b %Y} – {until.day} {until:%b %Y}"


# ----------------------------------------------------------------------------- aggregation

@dataclass
class _Model:
    name: str
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_FIELDS, 0))
    requests: int = 0
    cost: float = 0.0
    priced_days: int = 0
    unpriced_tokens: int = 0
    #: listed in the report's "unpriced": some of its requests have no price
    partly: bool = False

    @property
    def total(self) -> int:
        return self.tokens["total_tokens"]

    @property
    def unpriced(self) -> bool:
        return self.priced_days == 0

    def cost_text(self) -> str:
        if self.unpriced:
            return "unpriced"
        if self.unpriced_tokens or self.partly:
            return f"{fmt_usd(self.cost)} + unpriced"
        return fmt_usd(self.cost)


@dataclass
class _View:
    """What the page shows, derived from ReportData."""

    dates: list[date]
    by_day: dict[date, Mapping[str, Any]]
    models: list[_Model]             # by total tokens, largest first
    series: list[str]                # chart series: models, then maybe OTHER_MODELS
    totals: Mapping[str, Any]
    since: date
    until: date


def _dates(data: ReportData) -> tuple[list[date], dict[date, Mapping[str, Any]]]:
    by_day: dict[date, Mapping[str, Any]] = {}
    for d in data.daily.get("days") or []:
        try:
            by_day[date.fromisoformat(str(d["date"]))] = d
        except (KeyError, ValueError):
            continue
    since = data.since or (min(by_day) if by_day else data.generated_at.date())
    until = data.until or (max(by_day) if by_day else data.generated_at.date())
    if until < since:
        since, until = until, since
    n = (until - since).days + 1
    return [since + timedelta(days=i) for i in range(min(n, 3660))], by_day


def _view(data: ReportData) -> _View:
    dates, by_day = _dates(data)
    models: dict[str, _Model] = {}
    for day in by_day.values():
        for name, m in (day.get("models") or {}).items():
            agg = models.setdefault(str(name), _Model(str(name)))
            for f in TOKEN_FIELDS:
                agg.tokens[f] += _int(m.get(f))
            agg.requests += _int(m.get("requests"))
            cost = m.get("cost_usd")
            if cost is None:
                agg.unpriced_tokens += _int(m.get("total_tokens"))
            else:
                agg.cost += float(cost)
                agg.priced_days += 1
    for name in data.daily.get("unpriced") or ():
        if str(name) in models:
            models[str(name)].partly = True
    ordered = sorted(models.values(), key=lambda m: (-m.total, m.name))
    series = [m.name for m in ordered]
    if len(series) > MAX_MODEL_SERIES:
        series = series[:MAX_MODEL_SERIES - 1] + [OTHER_MODELS]
    totals = data.daily.get("totals") or {}
    return _View(dates, by_day, ordered, series, totals, dates[0], dates[-1])


# ----------------------------------------------------------------------------- charts

def _style(colors: Sequence[str]) -> Any:
    from pygal.style import Style

    return Style(
        background="transparent", plot_background="#ffffff",
        foreground="#2b2f36", foreground_strong="#111418", foreground_subtle="#d9dde3",
        opacity=".9", opacity_hover="1", transition="0ms",
        colors=tuple(colors) or PALETTE,
        font_family=FONT_STACK, label_font_family=FONT_STACK, major_label_font_family=FONT_STACK,
        legend_font_family=FONT_STACK, title_font_family=FONT_STACK, value_font_family=FONT_STACK,
        tooltip_font_family=FONT_STACK, no_data_font_family=FONT_STACK,
        label_font_size=13, major_label_font_size=13, legend_font_size=14, no_data_font_size=22,
        value_font_size=12,
        guide_stroke_color="#e6e8eb", major_guide_stroke_color="#d0d4da",
    )


def _pygal_css() -> list[str]:
    # absolute paths: pygal would otherwise prefer a style.css in the current directory
    import pygal

    base = Path(pygal.__file__).parent / "css"
    return [f"file://{base / 'style.css'}", f"file://{base / 'graph.css'}"]


def _chart(kind: str, colors: Sequence[str], **config: Any) -> Any:
    import pygal

    cls = {"stacked": pygal.StackedBar, "hbar": pygal.HorizontalBar}[kind]
    opts: dict[str, Any] = dict(
        style=_style(colors), css=_pygal_css(), js=[], disable_xml_declaration=True,
        width=1000, height=380, margin=12, spacing=8, truncate_legend=-1, truncate_label=-1,
        legend_at_bottom=True, legend_box_size=14, show_x_guides=False, print_values=False,
        no_data_text="Nothing recorded in this period", pretty_print=False,
    )
    opts.update(config)
    return cls(**opts)


def _finish_svg(svg: str, chart_id: str, label: str, series: Sequence[str]) -> str:
    """pygal's SVG made static and self-contained.

    Drops its config script and comments (both carry URLs; nothing needs them),
    gives it a stable id, names it, and puts each bar's exact value in a native
    tooltip (<title>), so hovering works without any script.
    """
    root = ET.fromstring(svg)
    uuid = root.get("id", "")
    ns = f"{{{SVG_NS}}}"
    for parent in list(root.iter()):
        for child in list(parent):
            if child.tag == f"{ns}script":
                parent.remove(child)
    root.set("id", chart_id)
    root.set("role", "img")
    root.set("aria-label", label)
    for el in root.iter():
        if el.tag == f"{ns}style" and el.text and uuid:
            el.text = el.text.replace(uuid, chart_id)
        elif el.tag == f"{ns}title" and el.text == "Pygal":
            el.text = label
    for g in root.iter(f"{ns}g"):
        cls = (g.get("class") or "").split()
        if "series" not in cls:
            continue
        idx = next((int(c[6:]) for c in cls if c.startswith("serie-") and c[6:].isdigit()), -1)
        name = series[idx] if 0 <= idx < len(series) else ""
        for bar in g.iter(f"{ns}g"):
            if "bar" not in (bar.get("class") or "").split():
                continue
            value = bar.find(f"{ns}desc[@class='value']")
            x = bar.find(f"{ns}desc[@class='x_label']")
            if value is None or not value.text:
                continue
            title = ET.Element(f"{ns}title")
            title.text = " · ".join(t for t in (name, x.text if x is not None else "", value.text) if t)
            bar.insert(0, title)
    ET.register_namespace("", SVG_NS)
    return ET.tostring(root, encoding="unicode")


def _model_colors(view: _View) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(view.series)}


def _series_values(view: _View, field_name: str) -> dict[str, list[float | None]]:
    """Per series, one value per date (None where nothing)."""
    head = set(view.series) - {OTHER_MODELS}
    out: dict[str, list[float | None]] = {s: [] for s in view.series}
    for d in view.dates:
        per: dict[str, float | None] = {s: None for s in view.series}
        for name, m in ((view.by_day.get(d) or {}).get("models") or {}).items():
            key = name if name in head else OTHER_MODELS
            if key not in per:
                continue
            v = m.get(field_name)
            if v is None:
                continue
            per[key] = (per[key] or 0) + float(v)
        for s in view.series:
            out[s].append(per[s] or None)
    return out


def _x_config(dates: Sequence[date]) -> dict[str, Any]:
    labels = [_day_label(d) for d in dates]
    cfg: dict[str, Any] = {"x_labels": labels}
    if len(dates) > 14:
        # a label a week (Mondays), the other days stay unlabelled
        cfg["x_labels_major"] = [lab for d, lab in zip(dates, labels) if d.weekday() == 0]
        cfg["show_minor_x_labels"] = False
    return cfg


def _stacked_by_model(view: _View, field_name: str, chart_id: str, label: str,
                      fmt: Callable[[float], str], only: Sequence[str]) -> str:
    colors = _model_colors(view)
    values = _series_values(view, field_name)
    names = [s for s in view.series if s in only]
    chart = _chart("stacked", [colors[s] for s in names], value_formatter=fmt, **_x_config(view.dates))
    for s in names:
        chart.add(s, values[s])
    return _finish_svg(chart.render(is_unicode=True), chart_id, label, names)


def _weeks(data: ReportData, until: date) -> list[date]:
    last = until - timedelta(days=until.weekday())
    return [last - timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]


def _sessions_chart(data: ReportData, until: date) -> tuple[str, int]:
    tz = _tz(data.tz_name)
    weeks = _weeks(data, until)
    index = {w: i for i, w in enumerate(weeks)}
    counts: dict[str, list[int]] = {}
    for s in data.sessions:
        start = _local(s.get("start"), tz)
        if start is None:
            continue
        d = start.date()
        i = index.get(d - timedelta(days=d.weekday()))
        if i is None:
            continue
        counts.setdefault(str(s.get("assistant") or "other"), [0] * WEEKS)[i] += 1
    names = sorted(counts, key=lambda a: (a not in ASSISTANTS, ASSISTANTS.get(a, a)))
    titles = [ASSISTANTS.get(a, a) for a in names]
    colors = [ASSISTANT_COLORS.get(a, PALETTE[(i + 3) % len(PALETTE)]) for i, a in enumerate(names)]
    chart = _chart("stacked", colors, height=320, x_labels=[f"wk of {_day_label(w)}" for w in weeks],
                   value_formatter=lambda v: f"{v:.0f}",
                   no_data_text="No sessions in these weeks")
    for a, title in zip(names, titles):
        chart.add(title, [c or None for c in counts[a]])
    total = sum(sum(c) for c in counts.values())
    return _finish_svg(chart.render(is_unicode=True), "chart-sessions", "Sessions per week", titles), total


def _hbar(items: Sequence[tuple[str, float]], chart_id: str, label: str, color: str,
          fmt: Callable[[float], str], series: str) -> str:
    items = list(items)[::-1]   # pygal draws the first label at the bottom
    chart = _chart("hbar", [color], width=520, height=max(150, 50 + 30 * len(items)), show_legend=False,
                   x_labels=[n for n, _ in items], value_formatter=fmt, print_values=True,
                   print_values_position="top", no_data_text="Nothing yet")
    chart.add(series, [v for _, v in items])
    return _finish_svg(chart.render(is_unicode=True), chart_id, label, [series])


# ----------------------------------------------------------------------------- page

CSS = """
:root { color-scheme: light; --fg:#1d2127; --muted:#5d6670; --line:#e3e6ea; --card:#f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font-family: %(font)s; color: var(--fg); background: #fff; line-height: 1.45; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 48px; }
header h1 { font-size: 26px; margin: 0 0 4px; }
header .period { color: var(--muted); margin: 0 0 18px; }
.stats { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; margin: 0 0 8px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.stat .label { font-size: 13px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.stat .value { font-size: 28px; font-weight: 650; margin-top: 2px; }
.stat .exact { font-size: 13px; color: var(--muted); font-variant-numeric: tabular-nums; }
section { margin-top: 30px; }
section h2 { font-size: 19px; margin: 0 0 2px; }
section .sub { color: var(--muted); font-size: 14px; margin: 0 0 8px; }
.chart svg { width: 100%%; height: auto; display: block; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 28px; }
table { border-collapse: collapse; width: 100%%; font-size: 14px; font-variant-numeric: tabular-nums; }
th, td { text-align: right; padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th:first-child, td:first-child, th.l, td.l { text-align: left; }
th { color: var(--muted); font-weight: 600; }
td.unpriced, span.unpriced { color: #8a5a00; font-style: italic; }
tr.differs td { color: #a33a00; font-weight: 600; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px; }
.note { color: var(--muted); font-size: 14px; }
.empty { background: var(--card); border: 1px dashed #c5cad1; border-radius: 12px; padding: 36px;
         text-align: center; margin-top: 24px; }
.empty h2 { margin: 0 0 8px; }
footer { margin-top: 36px; padding-top: 14px; border-top: 1px solid var(--line); color: var(--muted);
         font-size: 13px; }
details summary { cursor: pointer; color: var(--muted); margin: 8px 0; }
""" % {"font": FONT_STACK}


def _tool_name(t: Mapping[str, Any]) -> str:
    return str(t.get("name") or t.get("tool") or t.get("kind") or "?")


def _cost_td(cost: float | None) -> str:
    if cost is None:
        return '<td class="unpriced">unpriced</td>'
    return f"<td>{escape(fmt_usd(float(cost)))}</td>"


def _stat(key: str, label: str, value: str, exact: str) -> str:
    return (f'<div class="stat" id="total-{key}"><div class="label">{escape(label)}</div>'
            f'<div class="value">{escape(value)}</div><div class="exact">{escape(exact)}</div></div>')


def _header(data: ReportData, view: _View) -> str:
    t = view.totals
    tokens = _int(t.get("total_tokens"))
    unpriced = [m.name for m in view.models if m.unpriced or m.partly or m.unpriced_tokens]
    cost = t.get("cost_usd")
    cost_exact = ("no price known for " + ", ".join(unpriced)) if cost is None and unpriced else (
        ("+ unpriced: " + ", ".join(unpriced)) if unpriced else "at list prices")
    ndays = len(view.dates)
    stats = "".join([
        _stat("tokens", "Tokens", fmt_tokens(tokens), f"{fmt_count(tokens)} tokens"),
        _stat("cost", "Cost", fmt_usd(None if cost is None else float(cost)), cost_exact),
        _stat("requests", "Requests", fmt_count(_int(t.get("requests"))), "API requests"),
        _stat("prompts", "Prompts", fmt_count(_int(t.get("prompts"))), "prompts sent"),
        _stat("sessions", "Sessions", fmt_count(_int(t.get("sessions"))), "sessions"),
    ])
    return (f'<header><h1>Claude Code and Cursor usage</h1>'
            f'<p class="period" id="period">{escape(_period_label(view.since, view.until))} · '
            f'{ndays} day{"s" if ndays != 1 else ""} · days in {escape(data.tz_name)}</p>'
            f'<div class="stats">{stats}</div></header>')


def _models_table(view: _View) -> str:
    rows = []
    for m in view.models:
        cls = ' class="unpriced"' if m.unpriced else ""
        rows.append(
            f'<tr data-model="{escape(m.name)}"><td><code>{escape(m.name)}</code></td>'
            + "".join(f"<td>{fmt_count(m.tokens[f])}</td>" for f in TOKEN_FIELDS)
            + f"<td{cls}>{escape(m.cost_text())}</td></tr>")
    return ('<table id="models"><thead><tr><th>Model</th><th>Input</th><th>Output</th>'
            '<th>Cache write</th><th>Cache read</th><th>Total tokens</th><th>Cost</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _daily_table(view: _View) -> str:
    rows = []
    for d in reversed(view.dates):
        day = view.by_day.get(d)
        if not day:
            continue
        rows.append(f"<tr><td>{d.isoformat()}</td><td>{fmt_count(_int(day.get('total_tokens')))}</td>"
                    f"<td>{escape(fmt_usd(day.get('cost_usd')))}</td><td>{_int(day.get('requests'))}</td>"
                    f"<td>{_int(day.get('prompts'))}</td><td>{_int(day.get('sessions'))}</td></tr>")
    return ('<details><summary>Numbers per day</summary><table id="days"><thead><tr><th>Day</th>'
            '<th>Tokens</th><th>Cost</th><th>Requests</th><th>Prompts</th><th>Sessions</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></details>')


def _claude_section(view: _View) -> str:
    """Claude Code's own account of its cost (its OpenTelemetry export reached our
    receiver) beside ours for the same sessions; days more than 5% apart flagged.
    Empty when Claude Code's telemetry is not sent to us."""
    total = view.totals.get("claude_reported")
    if not total:
        return ""

    def usd(v: Any) -> str:  # a comparison needs the fractions of a cent of small amounts
        return "unpriced" if v is None else (f"${v:,.4f}" if v < 10 else fmt_usd(v))

    rows = []
    for d in reversed(view.dates):
        c = (view.by_day.get(d) or {}).get("claude_reported")
        if not c:
            continue
        pct = c.get("difference_pct")
        flag = ' class="differs"' if c.get("differs") else ""
        rows.append(f'<tr{flag} data-date="{d.isoformat()}"><td>{d.isoformat()}</td>'
                    f'<td>{escape(usd(c.get("cost_usd")))}</td><td>{escape(usd(c.get("our_cost_usd")))}</td>'
                    f'<td>{"" if pct is None else f"{pct:+.1f}%"}{" ⚠" if c.get("differs") else ""}</td>'
                    f'<td>{_int(c.get("requests"))}</td></tr>')
    ndiff = sum(1 for d in view.dates if ((view.by_day.get(d) or {}).get("claude_reported") or {}).get("differs"))
    summary = (f'{ndiff} day{"s differ" if ndiff != 1 else " differs"} by more than 5%.' if ndiff
               else "No day differs by more than 5%.")


    return ('<section id="claude-cost"><h2>Claude Code\'s own cost</h2><p class="sub">What Claude Code reported '
            f'(its OpenTelemetry export): {escape(usd(total.get("cost_usd")))}, against '
            f'{escape(usd(total.get("our_cost_usd")))} computed here for the same sessions. '
            f'<span id="claude-differs">{summary}</span></p>'
            '<table id="claude-days"><thead><tr><th>Day</th><th>Claude Code</th><th>Ours</th><th>Difference</th>'
            f'<th>Requests</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _sessions_table(data: ReportData) -> str:
    tz = _tz(data.tz_name)

    def key(s: Mapping[str, Any]) -> datetime:
        return _local(s.get("start"), tz) or datetime.min.replace(tzinfo=timezone.utc)

    rows = []
    for s in sorted(data.sessions, key=key, reverse=True)[:RECENT_SESSIONS]:
        start = _local(s.get("start"), tz)
        cost = s.get("cost_usd")
        rows.append(
            f"<tr><td>{escape(start.strftime('%Y-%m-%d %H:%M') if start else '–')}</td>"
            f"<td class=\"l\">{escape(ASSISTANTS.get(str(s.get('assistant')), str(s.get('assistant') or '')))}</td>"
            f"<td class=\"l\"><code>{escape(short_hash(s.get('project')))}</code></td>"
            f"<td>{fmt_duration(s.get('duration_s'))}</td><td>{_int(s.get('prompts'))}</td>"
            f"<td>{_int(s.get('tool_calls'))}</td><td>{fmt_count(_int(s.get('total_tokens')))}</td>"
            f"{_cost_td(cost)}</tr>")
    if not rows:
        return ""
    return ('<section><h2>Recent sessions</h2><table id="recent-sessions"><thead><tr><th>Started</th>'
            '<th class="l">Assistant</th><th class="l">Project</th><th>Duration</th><th>Prompts</th><th>Tool calls</th>'
            f'<th>Tokens</th><th>Cost</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


def _footer(data: ReportData) -> str:
    pricing = data.pricing or data.daily.get("pricing") or {}
    source = str(pricing.get("source") or "")
    version = str(pricing.get("version") or "")
    price = (f'Prices: <span id="pricing">{escape(source or "pricing library")}'
             f'{" " + escape(version) if version else ""}</span>. A model it does not know is shown as '
             '<span class="unpriced">unpriced</span>, never as $0.' if source or version else
             'No pricing information was available for this report.')
    generated = data.generated_at.astimezone(_tz(data.tz_name) or timezone.utc)
    return (f'<footer><p>{price} Generated {generated:%Y-%m-%d %H:%M} ({escape(data.tz_name)}) by '
            'Telemetry Tray.</p><p id="local-note">Everything in this report was computed on this machine '
            'from its own database and stays here: this file loads nothing from the internet, '
            'and no server is involved.</p></footer>')


def _page(title: str, body: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="no-referrer"><title>{escape(title)}</title>'
            f'<style>{CSS}</style></head><body><main>{body}</main></body></html>\n')


def render(data: ReportData) -> str:
    """The whole report as one self-contained HTML document (pure: no I/O)."""
    view = _view(data)
    title = f"Usage report · {_period_label(view.since, view.until)}"
    if data.is_empty:
        body = (f'{_header(data, view)}<div class="empty" id="empty"><h2>Nothing recorded yet</h2>'
                '<p>Telemetry Tray has no Claude Code or Cursor usage for this period. Use either '
                'assistant while the tray is running, then open this report again.</p></div>'
                f'{_footer(data)}')
        return _page(title, body)

    priced = [s for s in view.series
              if s == OTHER_MODELS or not next(m for m in view.models if m.name == s).unpriced]
    unpriced = [m for m in view.models if m.unpriced]
    tokens_svg = _stacked_by_model(view, "total_tokens", "chart-tokens", "Tokens per day by model",
                                   fmt_tokens, view.series)
    cost_svg = _stacked_by_model(view, "cost_usd", "chart-cost", "Cost per day by model",
                                 lambda v: fmt_usd(v), priced)
    sessions_svg, nsessions = _sessions_chart(data, view.until)
    missing = ""
    if unpriced:
        names = ", ".join(f'<code>{escape(m.name)}</code> ({fmt_tokens(m.total)} tokens)' for m in unpriced)
        missing = (f'<p class="note" id="unpriced-note">Not in this chart: <span class="unpriced">'
                   f'unpriced</span> {names}: the pricing library has no price for '
                   f'{"it" if len(unpriced) == 1 else "them"}.</p>')
    projects = [(short_hash(p.get("project")), float(_int(p.get("total_tokens"))))
                for p in list(data.top_projects)[:TOP_N]]
    tools = [(_tool_name(t), float(_int(t.get("calls")))) for t in list(data.top_tools)[:TOP_N]]
    project_rows = "".join(
        f'<tr><td><code title="{escape(str(p.get("project") or ""))}">{escape(short_hash(p.get("project")))}'
        f'</code></td><td>{fmt_count(_int(p.get("total_tokens")))}</td>'
        f'{_cost_td(p.get("cost_usd"))}<td>{_int(p.get("sessions"))}</td></tr>' for p in list(data.top_projects)[:TOP_N])
    body = "".join([
        _header(data, view),
        '<section><h2>Tokens per day</h2><p class="sub">Input, output and cache tokens, stacked by model.</p>'
        f'<div class="chart">{tokens_svg}</div>{_models_table(view)}{_daily_table(view)}</section>',
        '<section><h2>Cost per day</h2><p class="sub">US dollars at list prices, stacked by model.</p>'
        f'<div class="chart">{cost_svg}</div>{missing}</section>',
        f'<section><h2>Sessions per week</h2><p class="sub">{nsessions} sessions started in the last '
        f'{WEEKS} weeks, by assistant.</p><div class="chart">{sessions_svg}</div></section>',
        '<section class="pair"><div><h2>Top projects</h2><p class="sub">By tokens; projects are '
        'workspace hashes (first 8 characters).</p><div class="chart">'
        f'{_hbar(projects, "chart-projects", "Top projects by tokens", "#0072B2", fmt_tokens, "tokens")}'
        '</div><table id="projects"><thead><tr><th>Project</th><th>Tokens</th><th>Cost</th>'
        f'<th>Sessions</th></tr></thead><tbody>{project_rows}</tbody></table></div>'
        '<div><h2>Top tools</h2><p class="sub">Tool and shell calls.</p><div class="chart">'
        f'{_hbar(tools, "chart-tools", "Top tools by calls", "#009E73", lambda v: f"{v:,.0f}", "calls")}'
        '</div></div></section>',
        _claude_section(view),
        _sessions_table(data),
        _footer(data),
    ])
    return _page(title, body)


# ----------------------------------------------------------------------------- I/O

def collect(conn: sqlite3.Connection, *, days: int = 30, tz: str | None = None,
            now: datetime | None = None) -> ReportData:
    """The report's numbers for the last ``days`` days (today included) from the usage tables."""
    from tray_app.usage import query

    zone = _tz(tz)
    now = (now or datetime.now(timezone.utc)).astimezone(zone) if zone else (now or datetime.now()).astimezone()
    tz_name = tz or local_zone_name(now)
    until = now.date()
    since = until - timedelta(days=max(1, days) - 1)
    weeks_since = _weeks_start(until)
    first = min(since, weeks_since)
    daily = query.daily(conn, since=since, until=until, tz=tz)
    sessions = query.sessions(conn, since=first, until=until, tz=tz)
    top_projects = query.top_projects(conn, since, TOP_N, tz=tz)
    top_tools = query.top_tools(conn, since, TOP_N, tz=tz)
    return ReportData(daily=daily, sessions=list(sessions), top_projects=list(top_projects),
                      top_tools=list(top_tools), generated_at=now, tz_name=tz_name,
                      pricing=dict(daily.get("pricing") or {}), since=since, until=until)


def _weeks_start(until: date) -> date:
    return until - timedelta(days=until.weekday()) - timedelta(weeks=WEEKS - 1)


def empty_data(*, days: int = 30, tz: str | None = None) -> ReportData:
    """The report of an install that has recorded nothing (yet)."""
    zone = _tz(tz)
    now = datetime.now(zone) if zone else datetime.now().astimezone()
    until = now.date()
    return ReportData(daily={"days": [], "totals": {}}, generated_at=now,
                      tz_name=tz or local_zone_name(now),
                      since=until - timedelta(days=max(1, days) - 1), until=until)


def write_report(cfg: Config, path: Path | None = None, *, days: int = 30,
                 tz: str | None = None) -> Path:
    """Write the report (0600, atomically) and return its path.

    Default place: ``<data_dir>/usage-report.html``. A database that does not
    exist yet, or has no usage tables yet, gives the "nothing recorded yet" page.
    """
    from tray_app.engine import schema

    target = Path(path) if path is not None else cfg.paths.data_dir / REPORT_NAME
    db = cfg.paths.database
    data: ReportData | None = None
    if Path(db).exists():
        conn = schema.connect(db, readonly=True, timeout_s=5.0)
        try:
            data = collect(conn, days=days, tz=tz)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
        finally:
            conn.close()
    atomic_write(target, render(data or empty_data(days=days, tz=tz)), mode=REPORT_MODE)
    os.chmod(target, REPORT_MODE)   # atomic_write sets it on the temp file; keep it explicit
    return target


def open_report(path: Path) -> bool:
    """Open the written report in the user's browser (a local file: no server)."""
    return webbrowser.open(Path(path).resolve().as_uri())
