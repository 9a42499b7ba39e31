"""Claude Code transcripts and a Cursor database with known token usage, and
the numbers a person computes by hand from them (tests/test_usage_*.py).

Claude Code (real line format, tests/monitor_fixtures.py's Transcript):
  day 1  session A /home/dev/shop: prompt; request R1 split over three lines
         (thinking with a partial streamed output_tokens=5, then text and
         tool_use with the final 120); a tool result; R2; a ``<synthetic>``
         message; a subagent file (sidechain) with its own prompt and R3.
  day 2  session B resumes A: copies of A's prompt, R1 and R2 lines with new
         uuids and B's session id; then a new prompt and R4 at 02:00 UTC.
  day 3  session C /home/dev/web: a copy of R4; a prompt; R5 (a model the
         pricing library does not know) and R6 (1-hour cache writes only).
Cursor: one conversation of two turns (assistant bubbles tokenCount 1834/212),
  composerData with modelConfig and usageData, on day 1.
"""

from __future__ import annotations

import copy
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices

from monitor_fixtures import ClaudeProjects, CursorFixture, Transcript, iso, uid

DAY1 = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)
DAY2 = datetime(2026, 3, 3, 1, 59, tzinfo=timezone.utc)
DAY3 = datetime(2026, 3, 4, 15, 0, tzinfo=timezone.utc)
SONNET, HAIKU, OPUS, MYSTERY = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001",
                                "claude-opus-4-1-20250805", "claude-mystery-9-20990101")
CID = uid("usage-composer", 1)
SESSIONS = {k: f"0000000{k.lower()}-5e55-4000-8000-00000000000{k.lower()}" for k in "ABC"}


@dataclass(frozen=True)
class Req:
    name: str
    model: str
    input: int
    output: int
    cache_write: int
    cache_5m: int | None
    cache_1h: int | None
    cache_read: int
    day: str
    at: datetime | None = None


REQUESTS = {
    "R1": Req("R1", SONNET, 10, 120, 300, 100, 200, 5000, "2026-03-02"),
    "R2": Req("R2", SONNET, 20, 50, 0, None, None, 6000, "2026-03-02"),
    "R3": Req("R3", HAIKU, 7, 30, 40, None, None, 0, "2026-03-02"),
    "R4": Req("R4", OPUS, 15, 200, 1000, 1000, 0, 2000, "2026-03-03"),
    "R5": Req("R5", MYSTERY, 5, 9, 0, None, None, 0, "2026-03-04"),
    "R6": Req("R6", SONNET, 3, 11, 64, 0, 64, 100, "2026-03-04"),
}
CURSOR_TOKENS = (2 * 1834, 2 * 212)  # two assistant bubbles: input, output


def usage(r: Req, output: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"input_tokens": r.input, "cache_creation_input_tokens": r.cache_write,
                         "cache_read_input_tokens": r.cache_read,
                         "output_tokens": r.output if output is None else output, "service_tier": "standard"}
    if r.cache_5m is not None:
        u["cache_creation"] = {"ephemeral_5m_input_tokens": r.cache_5m, "ephemeral_1h_input_tokens": r.cache_1h}
    return u


def assistant(t: Transcript, r: Req, blocks: list[dict[str, Any]], output: int | None = None,
              model: str | None = None) -> dict[str, Any]:
    d = t._base("assistant")
    d["requestId"] = f"req_{r.name}_0001"
    d["message"] = {"model": model or r.model, "id": f"msg_{r.name}_0001", "type": "message",
                    "role": "assistant", "content": blocks, "stop_reason": None, "stop_sequence": None,
                    "usage": usage(r, output)}
    t.write(d)
    return d


def copy_line(t: Transcript, line: dict[str, Any]) -> dict[str, Any]:
    """What a resumed / copied session writes: the line again, new uuid and session."""
    d = copy.deepcopy(line)
    d["uuid"] = uid("copy", t.path.name, d["uuid"])
    d["sessionId"] = t.session_id
    d["cwd"] = t.cwd
    t.write(d)
    return d


def write_claude(root: Path) -> dict[str, datetime]:
    """Writes every transcript; returns the time of each request's kept line
    (the first line with its final output_tokens)."""
    projects = ClaudeProjects(root)
    # ids in file order (the monitor reads files sorted by path), so every copy comes after its original
    sa, sb, sc = SESSIONS["A"], SESSIONS["B"], SESSIONS["C"]
    a = projects.session("/home/dev/shop", sa, start=DAY1)
    lines_a = [a.user("Add a sum helper and run the tests")]
    lines_a.append(assistant(a, REQUESTS["R1"], [{"type": "thinking", "thinking": "Plan.", "signature": "x"}],
                             output=5))
    lines_a.append(assistant(a, REQUESTS["R1"], [{"type": "text", "text": "Adding total()."}]))
    kept = {"R1": lines_a[-1]}
    lines_a.append(assistant(a, REQUESTS["R1"], [{"type": "tool_use", "id": "toolu_R1_bash", "name": "Bash",
                                                  "input": {"command": "pytest -q"}}]))
    lines_a.append(a.tool_result("toolu_R1_bash", "5 passed", {"stdout": "5 passed", "stderr": "",
                                                                "interrupted": False, "isImage": False}))
    kept["R2"] = assistant(a, REQUESTS["R2"], [{"type": "tool_use", "id": "toolu_R2_task", "name": "Task",
                                                  "input": {"description": "Review", "prompt": "Review app.py"}}])
    lines_a.append(kept["R2"])
    sub = projects.subagent(a, "agent01")
    sub.user("Review app.py")
    kept["R3"] = assistant(sub, REQUESTS["R3"], [{"type": "text", "text": "Looks fine."}])
    a.tool_result("toolu_R2_task", "Looks fine.", {"status": "completed", "agentId": "agent01"})
    syn = a._base("assistant")
    syn["message"] = {"model": "<synthetic>", "id": "msg_synthetic_1", "type": "message", "role": "assistant",
                      "content": [{"type": "text", "text": "No response requested."}],
                      "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                                "cache_read_input_tokens": 0}}
    syn["requestId"] = "req_synthetic_1"
    a.write(syn)

    b = projects.session("/home/dev/shop", sb, start=DAY2)
    for line in lines_a:
        copy_line(b, line)
    b.user("Now make it faster")
    r4 = kept["R4"] = assistant(b, REQUESTS["R4"], [{"type": "text", "text": "Done."}])

    c = projects.session("/home/dev/web", sc, start=DAY3)
    copy_line(c, r4)
    c.user("Write the API docs")
    kept["R5"] = assistant(c, REQUESTS["R5"], [{"type": "text", "text": "Docs written."}])
    kept["R6"] = assistant(c, REQUESTS["R6"], [{"type": "tool_use", "id": "toolu_R6_edit", "name": "Edit",
                                   "input": {"file_path": "/home/dev/web/README.md", "old_string": "a",
                                             "new_string": "b"}}])
    return {k: datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")) for k, v in kept.items()}


def write_cursor(user_dir: Path) -> CursorFixture:
    cursor = CursorFixture(user_dir)
    cursor.make_global()
    cursor.add_conversation(CID, 2, at=DAY1, terminal=True)
    cursor.make_workspace("7a1c2a9e0b3d", "/home/dev/shop", [CID], at=DAY1)
    return cursor


def library_cost(r: Req, at: datetime) -> Decimal:
    """genai-prices' own answer, asked directly (input_tokens counts every input token)."""
    kw: dict[str, int] = {"input_tokens": r.input + r.cache_write + r.cache_read, "output_tokens": r.output}
    if r.cache_write:
        kw["cache_write_tokens"] = r.cache_write
        if r.cache_5m:
            kw["cache_write_5m_tokens"] = r.cache_5m
        if r.cache_1h:
            kw["cache_write_1h_tokens"] = r.cache_1h
    if r.cache_read:
        kw["cache_read_tokens"] = r.cache_read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Decimal(genai_prices.calc_price(genai_prices.Usage(**kw), r.model, provider_id="anthropic",
                                               genai_request_timestamp=at).total_price)


def expected_claude(times: dict[str, datetime]) -> dict[str, Any]:
    """Per day and per model, by hand: the six requests once each, R5 unpriced."""
    days: dict[str, dict[str, Any]] = {}
    for r in REQUESTS.values():
        d = days.setdefault(r.day, {"input_tokens": 0, "output_tokens": 0, "cache_creation_tokens": 0,
                                    "cache_read_tokens": 0, "requests": 0, "models": {}})
        for k, v in (("input_tokens", r.input), ("output_tokens", r.output),
                     ("cache_creation_tokens", r.cache_write), ("cache_read_tokens", r.cache_read)):
            d[k] += v
        d["requests"] += 1
        m = d["models"].setdefault(r.model, {"requests": 0, "cost": Decimal(0), "priced": r.model != MYSTERY})
        m["requests"] += 1
        if r.model != MYSTERY:
            m["cost"] += library_cost(r, times[r.name])
    return days


@contextmanager
def recording_engine(tmp_path: Path, redis_url: str, monkeypatch: Any, **env: str
                     ) -> Iterator[tuple[Any, dict[str, datetime]]]:
    """The fixtures written, read by the real monitors and stored by a real engine
    whose usage tables caught up; yields (engine, request times); stops it after.
    ``env``: more TELEMETRY_TRAY_* settings for that engine."""
    from conftest import wait_for
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url, ensure_streams

    cursor = write_cursor(tmp_path / "Cursor" / "User")
    times = write_claude(tmp_path / "claude-projects")
    for key, value in {"TELEMETRY_TRAY_MONITORS_CURSOR_USER_DIR": str(cursor.user_dir),
                       "TELEMETRY_TRAY_MONITORS_CLAUDE_PROJECTS_DIRS": str(tmp_path / "claude-projects"),
                       "TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S": "0.1", **env}.items():
        monkeypatch.setenv(key, value)
    ep = endpoint_from_url(redis_url)
    ensure_streams(ep.client())
    eng = Engine(load_config(), ep)
    eng.start()
    try:
        wait_for(lambda: settled(eng), timeout=60, what="rows stored and the usage tables caught up")
        yield eng, times
    finally:
        assert eng.stop(10)
        cursor.close()


def settled(eng: Any) -> bool:
    """Every fixture line stored, each monitor passed again since, and applied by the worker."""
    db = eng.cfg.paths.database
    if not db.exists() or eng.usage is None:
        return False
    h = {m.name: m.health() for m in eng.monitors}
    # every transcript line (22) sent, and each monitor has passed again since
    if h["claude_transcripts"]["items_emitted"] != 22 or any(v["passes"] < 3 for v in h.values()):
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        pos = conn.execute("SELECT last_sequence FROM usage_state WHERE worker='usage'").fetchone()
        # every monitor event stored (the consumer caught up) and applied by the worker
        return bool(pos) and pos[0] == top and eng.health().backlog == 0 and eng.health().pending == 0
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


__all__ = ["recording_engine", "settled", "write_claude", "write_cursor", "expected_claude", "library_cost", "REQUESTS", "CURSOR_TOKENS",
           "MYSTERY", "SONNET", "HAIKU", "OPUS", "iso", "DAY1", "DAY2", "DAY3", "timedelta"]
