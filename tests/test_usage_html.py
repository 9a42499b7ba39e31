"""The HTML usage report, as a person sees it: rendered by a real headless Chromium.

The report is built from synthetic numbers (three models, one of them unpriced,
a month of days, sessions of both assistants over eight weeks, projects, tools),
written to a file, opened in Chromium with every host name unresolvable, and
checked on the DOM Chromium built and on the screenshot it took. With
TRAY_UPDATE_DOCS=1 the screenshot replaces docs/usage-report.png.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, need
from tray_app.usage.html import ReportData, fmt_tokens, render, write_report

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts" / "usage-report"
UNTIL = date(2026, 11, 30)
SINCE = UNTIL - timedelta(days=29)
PRICED = {"claude-sonnet-4-5": (3.0, 15.0), "claude-opus-4-1": (15.0, 75.0)}   # $/Mtok in, out
UNPRICED = "cursor-composer-1"
PROJECTS = ["3f9a1c0b7d2e4f56a8b9c0d1e2f3a4b5", "a7c41e90b2d3f4a5b6c7d8e9f0a1b2c3",
            "0d5e6f7a8b9c0d1e2f3a4b5c6d7e8f90", "c0ffee00badc0de0123456789abcdef0"]
TOOLS = [("Bash", 412), ("Read", 388), ("Edit", 201), ("Grep", 150), ("Write", 61), ("Task", 12)]


def _fields(inp: int, out: int, cw: int, cr: int, cost: float | None) -> dict[str, Any]:
    return {"input_tokens": inp, "output_tokens": out, "cache_creation_tokens": cw,
            "cache_read_tokens": cr, "total_tokens": inp + out + cw + cr, "cost_usd": cost}


def sample_data() -> ReportData:
    """A month of synthetic usage; every number is made up and exact."""
    days = []
    for i in range(30):
        d = SINCE + timedelta(days=i)
        if d.weekday() == 6 and i % 3:      # a few quiet Sundays
            continue
        models: dict[str, dict[str, Any]] = {}
        scale = 1 + (i * 7) % 5
        for n, (name, (pin, pout)) in enumerate(PRICED.items()):
            if name == "claude-opus-4-1" and i % 4:
                continue
            inp, out = 20_000 * scale + 1_000 * n, 6_000 * scale + 500 * i
            cw, cr = 40_000 * scale, 300_000 * scale
            cost = round((inp * pin + out * pout + cw * pin * 1.25 + cr * pin * 0.1) / 1e6, 6)
            models[name] = {**_fields(inp, out, cw, cr, cost), "requests": 30 * scale + n}
        if i % 2 == 0:
            models[UNPRICED] = {**_fields(15_000 * scale, 4_000 * scale, 0, 0, None), "requests": 9 * scale}
        day = {k: sum(m[k] for m in models.values())
               for k in ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
                         "total_tokens", "requests")}
        priced = [m["cost_usd"] for m in models.values() if m["cost_usd"] is not None]
        day.update(date=d.isoformat(), cost_usd=round(sum(priced), 6) if priced else None,
                   prompts=8 * scale, sessions=1 + i % 3, models=models)
        days.append(day)
    totals = {k: sum(d[k] for d in days)
              for k in ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens",
                        "total_tokens", "requests", "prompts", "sessions")}
    totals["cost_usd"] = round(sum(d["cost_usd"] or 0 for d in days), 6)
    sessions = []
    start0 = datetime(2026, 10, 6, 9, 0, tzinfo=timezone.utc)
    for k in range(46):
        start = start0 + timedelta(hours=29 * k + (k % 5))
        assistant = "claude_code" if k % 3 else "cursor"
        sessions.append({"assistant": assistant, "session_id": f"s-{k:03d}",
                         "project": PROJECTS[k % len(PROJECTS)], "start": start.isoformat(),
                         "end": (start + timedelta(minutes=20 + k)).isoformat(),
                         "duration_s": (20 + k) * 60, "prompts": 3 + k % 7, "tool_calls": 10 + k,
                         "total_tokens": 90_000 + 1_000 * k,
                         "cost_usd": None if assistant == "cursor" else 0.4 + k / 100})
    top_projects = [{"project": p, "total_tokens": 4_000_000 // (n + 1), "cost_usd": 12.5 / (n + 1),
                     "sessions": 20 - 4 * n} for n, p in enumerate(PROJECTS)]
    top_tools = [{"name": n, "calls": c} for n, c in TOOLS]
    return ReportData(daily={"days": days, "totals": totals,
                             "pricing": {"source": "genai-prices", "version": "0.0.29"}},
                      sessions=sessions, top_projects=top_projects, top_tools=top_tools,
                      generated_at=datetime(2026, 11, 30, 18, 5, tzinfo=timezone.utc), tz_name="UTC",
                      pricing={"source": "genai-prices", "version": "0.0.29"}, since=SINCE, until=UNTIL)


# ----------------------------------------------------------------------------- the DOM Chromium built

class Dom(HTMLParser):
    """A small tree of the dumped DOM: elements with attrs, children and text."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "col", "area", "base"}

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, Any] = {"tag": "#root", "attrs": {}, "children": [], "text": ""}
        self.stack = [self.root]
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = {"tag": tag, "attrs": {k: v or "" for k, v in attrs}, "children": [], "text": ""}
        self.stack[-1]["children"].append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1]["children"].append({"tag": tag, "attrs": {k: v or "" for k, v in attrs},
                                           "children": [], "text": ""})

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1]["children"].append({"tag": "#text", "attrs": {}, "children": [], "text": data})


def walk(node: dict[str, Any]):
    yield node
    for c in node["children"]:
        yield from walk(c)


def text(node: dict[str, Any]) -> str:
    return " ".join(" ".join(n["text"] for n in walk(node) if n["tag"] == "#text").split())


def by_id(dom: Dom, ident: str) -> dict[str, Any]:
    found = [n for n in walk(dom.root) if n["attrs"].get("id") == ident]
    assert len(found) == 1, f"expected one #{ident}, found {len(found)}"
    return found[0]


def has_class(node: dict[str, Any], cls: str) -> bool:
    return cls in node["attrs"].get("class", "").split()


def legend(svg: dict[str, Any]) -> list[str]:
    return [text(n) for n in walk(svg) if n["tag"] == "g" and has_class(n, "legend")]


def bars(svg: dict[str, Any]) -> list[dict[str, Any]]:
    """The drawn bars: rects with a non-zero height or width."""
    return [n for n in walk(svg) if n["tag"] == "rect" and has_class(n, "rect")
            and float(n["attrs"].get("height", 0)) > 0 and float(n["attrs"].get("width", 0)) > 0]


# ----------------------------------------------------------------------------- Chromium

def chromium(*args: str, tmp: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
           "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HOME": str(tmp)})


def page_requests(netlog: Path) -> list[str]:
    """URLs the page (not the browser itself) asked the network stack for."""
    log = json.loads(netlog.read_text())
    types = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    return [e["params"]["url"] for e in log["events"]
            if types.get(e["type"]) == "URL_REQUEST_START_JOB" and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    need(os.access(CHROMIUM, os.X_OK), "chromium not installed (packaging/system-deps.sh test)")
    tmp = tmp_path_factory.mktemp("usage-report")
    data = sample_data()
    page = tmp / "usage-report.html"
    html = render(data)
    page.write_text(html, encoding="utf-8")
    netlog = tmp / "netlog.json"
    dumped = chromium("--dump-dom", f"--log-net-log={netlog}", page.as_uri(), tmp=tmp)
    assert dumped.returncode == 0 and "</html>" in dumped.stdout, dumped.stderr[-2000:]
    shot = tmp / "usage-report.png"
    shooting = chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(), tmp=tmp)
    assert shooting.returncode == 0 and shot.exists(), shooting.stderr[-2000:]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / "usage-report.png")
    if os.environ.get("TRAY_UPDATE_DOCS") == "1":   # refresh the docs picture on purpose only
        shutil.copyfile(shot, ROOT / "docs" / "usage-report.png")
    return {"data": data, "html": html, "dom": Dom(dumped.stdout), "shot": shot, "netlog": netlog}


def test_header_shows_the_period_and_exact_totals(rendered: dict[str, Any]) -> None:
    dom, totals = rendered["dom"], rendered["data"].daily["totals"]
    assert text(by_id(dom, "period")).startswith("1 Nov – 30 Nov 2026 · 30 days")
    tokens = text(by_id(dom, "total-tokens"))
    assert tokens == f"Tokens {fmt_tokens(totals['total_tokens'])} {totals['total_tokens']:,} tokens"
    assert re.fullmatch(r"Tokens \d+(\.\d)?M .*", tokens)
    cost = text(by_id(dom, "total-cost"))
    assert cost.startswith(f"Cost ${totals['cost_usd']:,.2f} "), cost
    assert "unpriced: cursor-composer-1" in cost
    assert text(by_id(dom, "total-requests")) == f"Requests {totals['requests']:,} API requests"
    assert text(by_id(dom, "total-prompts")) == f"Prompts {totals['prompts']:,} prompts sent"
    assert text(by_id(dom, "total-sessions")) == f"Sessions {totals['sessions']:,} sessions"


def test_three_charts_are_drawn_with_their_series(rendered: dict[str, Any]) -> None:
    dom, data = rendered["dom"], rendered["data"]
    tokens, cost, sessions = (by_id(dom, f"chart-{c}") for c in ("tokens", "cost", "sessions"))
    assert all(svg["tag"] == "svg" for svg in (tokens, cost, sessions))
    # tokens: every model, largest first; cost: the priced ones only
    assert legend(tokens) == ["claude-sonnet-4-5", "claude-opus-4-1", UNPRICED]
    assert legend(cost) == ["claude-sonnet-4-5", "claude-opus-4-1"]
    assert legend(sessions) == ["Claude Code", "Cursor"]
    # a bar per model and day with usage
    days = data.daily["days"]
    assert len(bars(tokens)) == sum(len(d["models"]) for d in days)
    assert len(bars(cost)) == sum(1 for d in days for m in d["models"].values() if m["cost_usd"])
    # each bar names its value in a tooltip readable without script
    titles = [text(c) for n in walk(tokens) if n["tag"] == "g" and has_class(n, "bar")
              for c in n["children"] if c["tag"] == "title"]
    first = days[0]
    label = f"{SINCE:%b} {SINCE.day}"
    expect = f"claude-sonnet-4-5 · {label} · {fmt_tokens(first['models']['claude-sonnet-4-5']['total_tokens'])}"
    assert expect in titles, titles[:5]
    # sessions per week: 8 weeks labelled, a bar per assistant and week with sessions
    week_labels = [text(n) for n in walk(sessions) if n["tag"] == "text" and text(n).startswith("wk of")]
    assert week_labels[0] == "wk of Oct 12" and week_labels[-1] == "wk of Nov 30" and len(week_labels) == 8
    assert 8 <= len(bars(sessions)) <= 16


def test_unpriced_model_is_shown_as_unpriced_never_zero(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    row = next(n for n in walk(by_id(dom, "models")) if n["attrs"].get("data-model") == UNPRICED)
    cells = [text(c) for c in row["children"] if c["tag"] == "td"]
    assert cells[-1] == "unpriced" and "$" not in " ".join(cells)
    assert "unpriced cursor-composer-1" in text(by_id(dom, "unpriced-note"))
    for m in PRICED:
        row = next(n for n in walk(by_id(dom, "models")) if n["attrs"].get("data-model") == m)
        assert re.fullmatch(r"\$[\d,]+\.\d\d", text(row["children"][-1]))
    recent = by_id(dom, "recent-sessions")
    cursor_rows = [r for r in walk(recent) if r["tag"] == "tr" and "Cursor" in text(r)]
    assert cursor_rows and all(text(r).endswith("unpriced") for r in cursor_rows)


def test_top_projects_and_tools(rendered: dict[str, Any]) -> None:
    dom = rendered["dom"]
    projects = by_id(dom, "chart-projects")
    axis = [text(n) for n in walk(projects) if n["tag"] == "text"]
    for p in PROJECTS:
        assert p[:8] in axis and p not in text(projects)   # short hashes on the chart
    assert len(bars(projects)) == len(PROJECTS)
    rows = [r for r in walk(by_id(dom, "projects")) if r["tag"] == "tr"][1:]
    assert [text(r).split()[0] for r in rows] == [p[:8] for p in PROJECTS]
    tools = by_id(dom, "chart-tools")
    assert len(bars(tools)) == len(TOOLS)
    labels = [text(n) for n in walk(tools) if n["tag"] == "text"]
    assert all(name in labels for name, _ in TOOLS) and "412" in labels
    footer = text(by_id(dom, "pricing"))
    assert footer == "genai-prices 0.0.29"
    assert "stays here" in text(by_id(dom, "local-note"))


def test_nothing_leaves_the_machine(rendered: dict[str, Any]) -> None:
    html = rendered["html"]
    urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>)]*", html))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    assert not re.search(r"<script|<link|<img|<iframe|@import|url\(|src=", html, re.I)
    # what the page asked Chromium's network stack for (its own background requests,
    # unresolvable here anyway, are told apart by their initiator): nothing
    assert page_requests(rendered["netlog"]) == []


def test_the_network_check_sees_what_a_page_asks_for(tmp_path: Path) -> None:
    """The check above is not blind: a page with a remote image and style sheet is caught."""
    need(os.access(CHROMIUM, os.X_OK), "chromium not installed (packaging/system-deps.sh test)")
    page = tmp_path / "control.html"
    page.write_text('<!DOCTYPE html><html><body><img src="https://cdn.example.org/x.png">'
                    '<link rel="stylesheet" href="http://fonts.example.net/a.css"></body></html>')
    netlog = tmp_path / "netlog.json"
    out = chromium("--dump-dom", f"--log-net-log={netlog}", page.as_uri(), tmp=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(page_requests(netlog)) == ["http://fonts.example.net/a.css", "https://cdn.example.org/x.png"]


def test_the_screenshot_shows_the_charts(rendered: dict[str, Any]) -> None:
    from PIL import Image

    img = Image.open(rendered["shot"]).convert("RGB")
    assert img.size == (1280, 2400)
    colors = img.getcolors(maxcolors=1 << 20) or []
    seen = {c for _, c in colors}

    def painted(hex_color: str, min_px: int) -> bool:
        want = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        # bars are drawn at opacity .9 on white: allow for the blend
        return sum(n for n, c in colors if all(abs(a - b) <= 30 for a, b in zip(c, want))) >= min_px

    assert len(seen) > 50                       # not a blank or error page
    assert painted("#0072B2", 5000)             # sonnet (tokens + cost) and the projects bars
    assert painted("#E69F00", 1000)             # opus
    assert painted("#009E73", 1000)             # the unpriced model's tokens, the tools bars
    assert painted("#D55E00", 1000)             # Claude Code sessions


def test_render_is_deterministic_and_escapes_names() -> None:
    data = sample_data()
    assert render(data) == render(data)
    odd = '<img src=x onerror="alert(1)">'
    days = [dict(d, models={**d["models"], odd: d["models"]["claude-sonnet-4-5"]}) for d in data.daily["days"]]
    html = render(ReportData(daily={**data.daily, "days": days}, since=SINCE, until=UNTIL,
                             top_tools=[{"name": odd, "calls": 3}]))
    assert odd not in html and "&lt;img src=x" in html


def test_empty_data_gives_a_friendly_page() -> None:
    html = render(ReportData(daily={"days": [], "totals": {}, "pricing": {}}, since=SINCE, until=UNTIL))
    assert "Nothing recorded yet" in html and "<svg" not in html
    assert "stays here" in html


def test_write_report_is_user_only(app_home: Path, tmp_path: Path) -> None:
    from tray_app.config import load_config

    cfg = load_config()
    out = write_report(cfg)
    assert out == cfg.paths.data_dir / "usage-report.html"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "Nothing recorded yet" in out.read_text()   # no database yet: not an error
    mine = tmp_path / "elsewhere" / "report.html"
    mine.parent.mkdir()
    mine.write_text("old")
    mine.chmod(0o644)
    assert write_report(cfg, mine) == mine
    assert stat.S_IMODE(mine.stat().st_mode) == 0o600 and "<svg" not in mine.read_text()
    assert not [p for p in mine.parent.iterdir() if p != mine]   # no temp file left behind


def test_write_report_from_the_usage_tables(app_home: Path) -> None:
    """collect() + write_report() on a real database through tray_app.usage.query."""
    from tray_app.config import load_config
    from tray_app.engine import schema
    from tray_app.usage import schema as usage_schema

    cfg = load_config()
    cfg.paths.ensure()
    conn = schema.connect(cfg.paths.database)
    try:
        usage_schema.ensure(conn)
        out = write_report(cfg, tz="UTC")
        assert "Nothing recorded yet" in out.read_text()       # tables there, nothing in them

        ts = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        ws = "3f9a1c0b7d2e4f56"
        conn.executemany(
            "INSERT INTO usage_requests (request_key, platform, session_id, workspace_hash, model, timestamp, "
            "input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, source_sequence, cost_pusd, "
            "pricing_version) VALUES (?, 'claude_code', 's1', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [("m1:r1", ws, "claude-sonnet-4-5", ts, 1000, 200, 3000, 40000, 1, 1_250_000_000_000, "0.0.29"),
             ("m2:r2", ws, "claude-sonnet-4-5", ts, 500, 100, 0, 20000, 2, 250_000_000_000, "0.0.29"),
             ("m3:r3", ws, "mystery-model-7", ts, 700, 300, 0, 0, 3, None, None)])
        conn.executemany(
            "INSERT INTO usage_activity (sequence, platform, session_id, workspace_hash, timestamp, kind, name, "
            "origin) VALUES (?, 'claude_code', 's1', ?, ?, ?, ?, 'store')",
            [(4, ws, ts, "prompt", None), (5, ws, ts, "tool", "Bash"), (6, ws, ts, "tool", "Bash"),
             (7, ws, ts, "tool", "Read")])
    finally:
        conn.close()
    out = write_report(cfg, tz="UTC")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    dom = Dom(out.read_text())
    assert text(by_id(dom, "total-tokens")) == "Tokens 65.8k 65,800 tokens"
    assert text(by_id(dom, "total-cost")).startswith("Cost $1.50 + unpriced: mystery-model-7")
    assert text(by_id(dom, "total-requests")) == "Requests 3 API requests"
    assert text(by_id(dom, "total-prompts")) == "Prompts 1 prompts sent"
    assert text(by_id(dom, "total-sessions")) == "Sessions 1 sessions"
    assert legend(by_id(dom, "chart-tokens")) == ["claude-sonnet-4-5", "mystery-model-7"]
    assert legend(by_id(dom, "chart-cost")) == ["claude-sonnet-4-5"]
    row = next(n for n in walk(by_id(dom, "models")) if n["attrs"].get("data-model") == "mystery-model-7")
    assert text(row).endswith("unpriced")
    tools = [text(n) for n in walk(by_id(dom, "chart-tools")) if n["tag"] == "text"]
    assert "Bash" in tools and "Read" in tools
    assert "3f9a1c0b" in text(by_id(dom, "projects"))
    assert text(by_id(dom, "pricing")).startswith("genai-prices ")
