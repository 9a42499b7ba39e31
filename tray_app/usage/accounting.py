"""Raw rows -> usage records (pure), and applying them to the derived tables.

Claude Code: one record per API request, keyed ``message.id`` + ``requestId``.
Every transcript line of a request (one per content block; the copies a
resumed or copied session writes with new ``uuid``s) carries the same ids and
usage; early streamed lines may carry a partial ``output_tokens``. The record
kept is the line with the largest ``output_tokens`` (all its other fields come
from that same line), on a tie the earliest by time, then by ``sequence`` (the
original, not a later session's copy), so the result does not depend on the
order lines are processed in. ``<synthetic>`` messages are skipped.

Cursor: an assistant bubble's ``tokenCount`` (Cursor's own numbers,
``cursor_reported = 1``), keyed by the bubble id, most complete version kept;
the model comes from the bubble, else from its conversation's composerData,
whose ``usageData`` (Cursor's own cost in cents per model, no tokens) is kept
per conversation as Cursor reported it.

Activity (prompts, responses, tool and shell calls, edits, subagents, errors)
is one row per raw row, ``origin`` ``hook`` (hook events) or ``store`` (the
assistant's own transcript / database, deduplicated across copies by
``dedup_key``). Reports prefer a session's ``store`` activity when it has any,
so a prompt seen by both the hook and the transcript counts once. Of the
copies of one store item the earliest (time, then sequence) is kept, so the
tables do not depend on the order rows are applied in either.

Claude Code's own account (``api_request`` events its OpenTelemetry export
sent to our receiver, ``metadata.source = "otlp"``): the cost it reports,
kept per event in ``usage_reported_costs`` beside our computed cost, never
added to it (the transcripts already count those requests).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tray_app import events, jsonutil
from tray_app.usage import pricing
from tray_app.usage.pricing import Tokens

log = logging.getLogger(__name__)

SYNTHETIC = "<synthetic>"
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit", "edit_file", "search_replace",
                        "write", "apply_patch"})
SHELL_TOOLS = frozenset({"Bash", "run_terminal_cmd", "run_terminal_command"})
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})

#: raw rows whose event_data is needed (everything else is derived from columns)
NEEDS_DATA_SQL = ("(event_type='transcript_trace' AND hook_type IN ('user','assistant')) OR "
                  "(event_type='database_trace' AND hook_type IN ('bubbleId','composerData')) OR "
                  "event_type IN ('tool_use','mcp_execution') OR "
                  "(event_type='api_request' AND source='otlp')")
#: raw_traces.source of the events our OTLP receiver makes of Claude Code's telemetry
OTLP_SOURCE = "otlp"
ROW_COLUMNS = ("sequence, platform, event_type, hook_type, session_id, workspace_hash, timestamp, source, "
               f"CASE WHEN {NEEDS_DATA_SQL} THEN event_data END")

_HOOK_KINDS = {"user_prompt": "prompt", "assistant_response": "response", "file_edit": "edit",
               "subagent_start": "subagent", "error": "error"}
_SKIP_HOOK_TYPES = frozenset({"afterShellExecution", "afterMCPExecution"})


@dataclass(frozen=True)
class Request:
    key: str
    platform: str
    message_id: str | None
    request_id: str | None
    session_id: str
    workspace_hash: str | None
    model: str | None
    timestamp: str
    tokens: Tokens
    cursor_reported: bool
    sequence: int
    cost_pusd: int | None = None
    pricing_version: str | None = None     # None: not priced yet


@dataclass(frozen=True)
class Activity:
    sequence: int
    platform: str
    session_id: str
    workspace_hash: str | None
    timestamp: str
    kind: str
    name: str | None
    origin: str
    dedup_key: str | None


@dataclass(frozen=True)
class Reported:
    """One API request as Claude Code reports it (its OpenTelemetry ``api_request``)."""
    sequence: int
    platform: str
    session_id: str
    workspace_hash: str | None
    model: str | None
    timestamp: str
    cost_pusd: int | None
    tokens: Tokens


@dataclass(frozen=True)
class Derived:
    requests: tuple[Request, ...] = ()
    activity: Activity | None = None
    composer: tuple[str, str | None, int | None] | None = None   # (session_id, model, cost in cents)
    reported: Reported | None = None


def norm_ts(value: str) -> str:
    """UTC ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (text order = time order)."""
    if len(value) == 27 and value[10] == "T" and value[26] == "Z":
        return value
    dt = events.parse_timestamp(value).astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(value: str) -> datetime:
    return events.parse_timestamp(value)


#: a token count above this is not one (no request has a trillion tokens): taken as not
#: given, so no sum of the usage tables (SQLite's 64-bit integers) can overflow
MAX_TOKENS = 10**12
#: the same for a cost Claude Code reports: a million dollars a request, in pico-USD
MAX_REPORTED_PUSD = 10**18


def _int(v: Any) -> int:
    return v if type(v) is int and 0 <= v <= MAX_TOKENS else 0


def _opt_int(v: Any) -> int | None:
    return v if type(v) is int and 0 <= v <= MAX_TOKENS else None


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _digest(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def derive(row: tuple[Any, ...]) -> Derived:
    """One raw_traces row (ROW_COLUMNS) -> what it contributes."""
    seq, platform, et, hook_type, sid, ws, ts, source, blob = row
    ts = norm_ts(ts)
    base = (seq, platform, sid, ws, ts)
    data: dict[str, Any] = {}
    if blob is not None:
        try:
            data = _dict(jsonutil.loads(zlib.decompress(blob)))
        except (zlib.error, ValueError) as exc:
            log.debug("usage: raw row %s unreadable: %s", seq, exc)
            return Derived()
    if et == "transcript_trace":
        return _transcript(base, hook_type, data)
    if et == "database_trace":
        return _cursor(base, hook_type, data)
    if et == "api_request" and source == OTLP_SOURCE:
        return Derived(reported=_reported(base, _dict(data.get("payload"))))
    if isinstance(source, str) and source.endswith("_hook") or et == "error":
        return Derived(activity=_hook(base, et, hook_type, data))
    return Derived()


def _activity(base: tuple[Any, ...], kind: str, name: str | None, origin: str,
              dedup: str | None) -> Activity:
    seq, platform, sid, ws, ts = base
    return Activity(seq, platform, sid, ws, ts, kind, name, origin, dedup)


def _hook(base: tuple[Any, ...], et: str, hook_type: str | None, data: dict[str, Any]) -> Activity | None:
    if hook_type in _SKIP_HOOK_TYPES:
        return None
    meta = _dict(data.get("metadata"))
    if et in ("tool_use", "mcp_execution"):
        name = meta.get("tool_name") or _dict(data.get("payload")).get("tool_name")
        name = name if isinstance(name, str) and name else None
        return _activity(base, tool_kind(name), name, "hook", None)
    if et == "shell_execution":
        return _activity(base, "shell", None, "hook", None)
    kind = _HOOK_KINDS.get(et)
    return _activity(base, kind, None, "hook", None) if kind else None


def _reported(base: tuple[Any, ...], p: dict[str, Any]) -> Reported:
    seq, platform, sid, ws, ts = base
    cost = p.get("cost_usd")
    pico = None
    if isinstance(cost, (int, float, str)) and not isinstance(cost, bool):
        try:  # the decimal text of the float Claude sent, exactly
            pico = pricing.to_pico(Decimal(str(cost)))
        except ArithmeticError:
            pico = None
        if pico is not None and abs(pico) > MAX_REPORTED_PUSD:
            pico = None  # would overflow the table's integer (and every sum of it)
    model = p.get("model") if isinstance(p.get("model"), str) else None
    return Reported(seq, platform, sid, ws, model, ts, pico,
                    Tokens(input=_int(p.get("input_tokens")), output=_int(p.get("output_tokens")),
                           cache_write=_int(p.get("cache_creation_tokens")),
                           cache_read=_int(p.get("cache_read_tokens"))))


def tool_kind(name: str | None) -> str:
    if name in SHELL_TOOLS:
        return "shell"
    if name in EDIT_TOOLS:
        return "edit"
    if name in SUBAGENT_TOOLS:
        return "subagent"
    return "tool"


# -- Claude Code transcripts -----------------------------------------------------------------

def _transcript(base: tuple[Any, ...], hook_type: str | None, data: dict[str, Any]) -> Derived:
    meta = _dict(data.get("metadata"))
    line = _dict(data.get("payload"))
    msg = _dict(line.get("message"))
    if hook_type == "assistant":
        return _assistant(base, meta, msg)
    if hook_type == "user":
        if meta.get("is_sidechain") or meta.get("subagent") or line.get("isMeta") or line.get("isCompactSummary"):
            return Derived()
        content = msg.get("content")
        if isinstance(content, list):
            if any(_dict(b).get("type") == "tool_result" for b in content):
                return Derived()
            if not any(_dict(b).get("type") == "text" for b in content):
                return Derived()
        elif isinstance(content, str):
            if content.lstrip().startswith(("<command-", "<local-command", "<bash-")):
                return Derived()
        else:
            return Derived()
        ts = base[4]
        return Derived(activity=_activity(base, "prompt", None, "store", "cc-prompt:" + _digest(ts, content)))
    return Derived()


def request_key(platform: str, message_id: str | None, request_id: str | None, fallback: str) -> str:
    if message_id and request_id:
        return f"{platform}:{message_id}:{request_id}"
    if message_id:
        return f"{platform}:{message_id}"
    return f"{platform}:row:{fallback}"


def _assistant(base: tuple[Any, ...], meta: dict[str, Any], msg: dict[str, Any]) -> Derived:
    seq, platform, sid, ws, ts = base
    model = meta.get("model") if isinstance(meta.get("model"), str) else msg.get("model")
    if model == SYNTHETIC:
        return Derived()
    mid = meta.get("message_id") if isinstance(meta.get("message_id"), str) else None
    rid = meta.get("request_id") if isinstance(meta.get("request_id"), str) else None
    key = request_key(platform, mid, rid, str(seq))
    reqs: tuple[Request, ...] = ()
    u = _dict(meta.get("usage"))
    if u:
        tokens = Tokens(input=_int(u.get("input_tokens")), output=_int(u.get("output_tokens")),
                        cache_write=_int(u.get("cache_creation_input_tokens")),
                        cache_write_5m=_opt_int(u.get("ephemeral_5m_input_tokens")),
                        cache_write_1h=_opt_int(u.get("ephemeral_1h_input_tokens")),
                        cache_read=_int(u.get("cache_read_input_tokens")))
        reqs = (Request(key, platform, mid, rid, sid, ws, model if isinstance(model, str) else None, ts,
                        tokens, False, seq),)
    tool = next((b for b in msg.get("content") or () if _dict(b).get("type") == "tool_use"), None) \
        if isinstance(msg.get("content"), list) else None
    if tool is not None:
        name = tool.get("name") if isinstance(tool.get("name"), str) else None
        tid = tool.get("id") if isinstance(tool.get("id"), str) else str(seq)
        act = _activity(base, tool_kind(name), name, "store", "cc-tool:" + tid)
    else:
        act = _activity(base, "response", None, "store", "cc-resp:" + key)
    return Derived(requests=reqs, activity=act)


# -- Cursor ----------------------------------------------------------------------------------

def _cursor(base: tuple[Any, ...], hook_type: str | None, data: dict[str, Any]) -> Derived:
    seq, platform, sid, ws, ts = base
    value = _dict(data.get("payload"))
    if hook_type == "composerData":
        model = _dict(value.get("modelConfig")).get("modelName")
        known: list[float] = []
        for v in _dict(value.get("usageData")).values():
            c = _dict(v).get("costInCents")
            if isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0:
                known.append(float(c))
        return Derived(composer=(sid, model if isinstance(model, str) and model else None,
                                 round(sum(known)) if known else None))
    if hook_type != "bubbleId":
        return Derived()
    key = str(_dict(data.get("metadata")).get("key") or "")
    bubble = key.rsplit(":", 1)[-1] if key.count(":") >= 2 else str(value.get("bubbleId") or seq)
    btype = value.get("type")
    if btype == 1:
        return Derived(activity=_activity(base, "prompt", None, "store", "cur-bubble:" + bubble))
    if btype != 2:
        return Derived()
    tool = _dict(value.get("toolFormerData"))
    name = tool.get("name") if isinstance(tool.get("name"), str) else None
    act = _activity(base, tool_kind(name) if tool else "response", name, "store", "cur-bubble:" + bubble)
    tc = _dict(value.get("tokenCount"))
    tokens = Tokens(input=_int(tc.get("inputTokens")), output=_int(tc.get("outputTokens")))
    if not (tokens.input or tokens.output):
        return Derived(activity=act)
    model = _dict(value.get("modelInfo")).get("modelName")
    rid = value.get("requestId") if isinstance(value.get("requestId"), str) else None
    req = Request(f"cursor:{bubble}", platform, bubble, rid, sid, ws, model if isinstance(model, str) else None,
                  ts, tokens, True, seq)
    return Derived(requests=(req,), activity=act)


# -- applying --------------------------------------------------------------------------------

_UPSERT_REQUEST = """
INSERT INTO usage_requests (request_key, platform, message_id, request_id, session_id, workspace_hash, model,
    timestamp, input_tokens, output_tokens, cache_creation_tokens, cache_creation_5m_tokens,
    cache_creation_1h_tokens, cache_read_tokens, cursor_reported, source_sequence, cost_pusd, pricing_version)
VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, (SELECT model FROM usage_cursor_composers WHERE session_id=?)),
    ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(request_key) DO UPDATE SET
    platform=excluded.platform, message_id=excluded.message_id, request_id=excluded.request_id,
    session_id=excluded.session_id, workspace_hash=excluded.workspace_hash, model=excluded.model,
    timestamp=excluded.timestamp, input_tokens=excluded.input_tokens, output_tokens=excluded.output_tokens,
    cache_creation_tokens=excluded.cache_creation_tokens,
    cache_creation_5m_tokens=excluded.cache_creation_5m_tokens,
    cache_creation_1h_tokens=excluded.cache_creation_1h_tokens, cache_read_tokens=excluded.cache_read_tokens,
    cursor_reported=excluded.cursor_reported, source_sequence=excluded.source_sequence,
    cost_pusd=excluded.cost_pusd, pricing_version=excluded.pricing_version
WHERE excluded.output_tokens > usage_requests.output_tokens
   OR (excluded.output_tokens = usage_requests.output_tokens
       AND (excluded.timestamp < usage_requests.timestamp
            OR (excluded.timestamp = usage_requests.timestamp
                AND excluded.source_sequence < usage_requests.source_sequence)))
"""

#: a raw row applied again changes nothing; of the copies of one store item (same
#: dedup_key) the earliest by time, then by sequence, is kept: the original, in
#: whatever order the rows are applied
_INSERT_ACTIVITY = """
INSERT INTO usage_activity (sequence, platform, session_id, workspace_hash, timestamp, kind, name, origin, dedup_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(sequence) DO NOTHING
ON CONFLICT(dedup_key) DO UPDATE SET
    sequence=excluded.sequence, platform=excluded.platform, session_id=excluded.session_id,
    workspace_hash=excluded.workspace_hash, timestamp=excluded.timestamp, kind=excluded.kind,
    name=excluded.name, origin=excluded.origin
WHERE excluded.timestamp < usage_activity.timestamp
   OR (excluded.timestamp = usage_activity.timestamp AND excluded.sequence < usage_activity.sequence)
"""


def apply(conn: sqlite3.Connection, derived: list[Derived], requests: list[Request] | None = None) -> int:
    """Inside the caller's transaction: the activity and composers of ``derived``,
    and ``requests`` (default: every request of ``derived``; the worker passes
    only the candidates that change a record, priced). Returns requests offered."""
    composers = [d.composer for d in derived if d.composer is not None]
    conn.executemany("INSERT INTO usage_cursor_composers (session_id, model, reported_cents) VALUES (?, ?, ?) "
                     "ON CONFLICT(session_id) DO UPDATE SET model=COALESCE(excluded.model, model), "
                     "reported_cents=COALESCE(excluded.reported_cents, reported_cents)", composers)
    reqs = requests if requests is not None else [r for d in derived for r in d.requests]
    conn.executemany(_UPSERT_REQUEST, [
        (r.key, r.platform, r.message_id, r.request_id, r.session_id, r.workspace_hash, r.model,
         r.session_id if r.platform == "cursor" else None, r.timestamp, r.tokens.input, r.tokens.output,
         r.tokens.cache_write, r.tokens.cache_write_5m, r.tokens.cache_write_1h, r.tokens.cache_read,
         int(r.cursor_reported), r.sequence, r.cost_pusd, r.pricing_version if r.model is not None else None)
        for r in reqs])
    # bubbles stored before their conversation's model was known get it now (and are priced again)
    conn.executemany("UPDATE usage_requests SET model=?, cost_pusd=NULL, pricing_version=NULL "
                     "WHERE platform='cursor' AND session_id=? AND model IS NULL",
                     [(model, sid) for sid, model, _cents in composers if model is not None])
    conn.executemany(_INSERT_ACTIVITY, [
        (a.sequence, a.platform, a.session_id, a.workspace_hash, a.timestamp, a.kind, a.name, a.origin, a.dedup_key)
        for d in derived if (a := d.activity) is not None])
    conn.executemany(
        "INSERT INTO usage_reported_costs (sequence, platform, session_id, workspace_hash, model, timestamp, "
        "cost_pusd, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sequence) DO NOTHING",
        [(r.sequence, r.platform, r.session_id, r.workspace_hash, r.model, r.timestamp, r.cost_pusd,
          r.tokens.input, r.tokens.output, r.tokens.cache_write, r.tokens.cache_read)
         for d in derived if (r := d.reported) is not None])
    return len(reqs)


PricedRow = tuple[int | None, str, str]


def pending_prices(conn: sqlite3.Connection, limit: int = 500) -> list[PricedRow]:
    """Records whose cost is not known for this pricing version, priced (no
    transaction needed: read, then computed)."""
    rows = conn.execute(
        "SELECT request_key, platform, model, timestamp, input_tokens, output_tokens, cache_creation_tokens, "
        "cache_creation_5m_tokens, cache_creation_1h_tokens, cache_read_tokens FROM usage_requests "
        "WHERE pricing_version IS NULL LIMIT ?", (limit,)).fetchall()
    out: list[PricedRow] = []
    for key, platform, model, ts, inp, outp, cw, cw5, cw1, cr in rows:
        cost = pricing.price(platform, model, Tokens(inp, outp, cw, cw5, cw1, cr), parse_ts(ts))
        out.append((pricing.to_pico(cost), pricing.VERSION, key))
    return out


def store_prices(conn: sqlite3.Connection, priced: list[PricedRow]) -> None:
    """Inside the caller's transaction."""
    conn.executemany("UPDATE usage_requests SET cost_pusd=?, pricing_version=? WHERE request_key=?", priced)


def stale_pricing(conn: sqlite3.Connection) -> int:
    """Forget costs of an older library version (they are priced again). Returns rows."""
    cur = conn.execute("UPDATE usage_requests SET pricing_version=NULL WHERE pricing_version IS NOT NULL "
                       "AND pricing_version != ?", (pricing.VERSION,))
    return cur.rowcount


__all__ = ["Request", "Activity", "Derived", "derive", "apply", "pending_prices", "store_prices", "stale_pricing",
           "ROW_COLUMNS", "norm_ts", "request_key", "tool_kind"]
