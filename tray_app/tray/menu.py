"""The tray menu as plain data: a pure function of a health snapshot.

Nothing here imports pystray. ``build_menu`` returns a :class:`MenuModel`
(frozen, comparable), so the refresher can tell whether anything the user
would see changed; ``ui.py`` turns a model into pystray items. The same
model is written to ``<state dir>/tray-menu.json`` for tests and support.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tray_app.capture.norecord import describe_left
from tray_app.config import TraySettings
from tray_app.engine.health import (
    DEGRADED,
    PAUSED,
    RUNNING,
    STARTING,
    STOPPED,
    HealthSnapshot,
)
from tray_app.engine.storage import OK as STORAGE_OK
from tray_app.support.dbstats import human_bytes

APP_TITLE = "Telemetry Tray"

# Action keys: what a click on an item asks the action worker to do.
A_STATUS = "status"
A_PAUSE = "pause"
A_RESUME = "resume"
A_RETRY_DLQ = "retry_dlq"
A_EXPORT = "export"
A_OPEN_DATA = "open_data"
A_OPEN_LOGS = "open_logs"
A_AUTOSTART = "autostart"
A_QUIT = "quit"
A_NO_RECORD_30M = "no_record_30m"
A_NO_RECORD_1H = "no_record_1h"
A_NO_RECORD_TOMORROW = "no_record_tomorrow"
A_NO_RECORD = "no_record"
A_RECORD_AGAIN = "record_again"
A_USAGE_REPORT = "usage_report"
A_FORGET_HOUR = "forget_hour"

#: the "Don't record" submenu: (action, text, duration for EngineRuntime.no_record;
#: "" is until the user resumes)
NO_RECORD_CHOICES: tuple[tuple[str, str, str], ...] = (
    (A_NO_RECORD_30M, "For 30 minutes", "30m"),
    (A_NO_RECORD_1H, "For 1 hour", "1h"),
    (A_NO_RECORD_TOMORROW, "Until tomorrow", "tomorrow"),
    (A_NO_RECORD, "Until I resume", ""),
)


# Icon states (see icons.py): one look each.
I_RUNNING = "running"
I_PAUSED = "paused"
I_DEGRADED = "degraded"
I_ERROR = "error"
I_STARTING = "starting"
I_NOT_RECORDING = "not_recording"
ICON_STATES = (I_RUNNING, I_PAUSED, I_DEGRADED, I_ERROR, I_STARTING, I_NOT_RECORDING)

SQLITE_TEXT = {
    "locked": "locked by another program",
    "disk_full": "disk full",
    "read_only": "read-only",
    "corrupt": "file is corrupt",
    "io": "I/O error",
}


@dataclass(frozen=True)
class MenuEntry:
    text: str = ""
    #: action key (A_*); "" for an information line
    action: str = ""
    enabled: bool = True
    #: None: a plain item; True/False: a check item
    checked: bool | None = None
    #: the item run by a left click on the icon (shown bold)
    default: bool = False
    separator: bool = False
    submenu: tuple[MenuEntry, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if self.separator:
            return {"separator": True}
        d: dict[str, Any] = {"text": self.text, "action": self.action, "enabled": self.enabled}
        if self.checked is not None:
            d["checked"] = self.checked
        if self.default:
            d["default"] = True
        if self.submenu:
            d["submenu"] = [e.to_dict() for e in self.submenu]
        return d


SEPARATOR = MenuEntry(separator=True)


@dataclass(frozen=True)
class MenuModel:
    entries: tuple[MenuEntry, ...]
    tooltip: str
    icon_state: str
    #: the status line alone (also the title of the status notification)
    status: str = ""
    details: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The menu as a person reads it, one line per item."""
        lines: list[str] = []

        def walk(entries: tuple[MenuEntry, ...], indent: str) -> None:
            for e in entries:
                if e.separator:
                    lines.append(indent + "---")
                    continue
                mark = "" if e.checked is None else ("[x] " if e.checked else "[ ] ")
                lines.append(f"{indent}{mark}{e.text}")
                walk(e.submenu, indent + "    ")

        walk(self.entries, "")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"icon_state": self.icon_state, "tooltip": self.tooltip, "status": self.status,
                "items": [e.to_dict() for e in self.entries], "text": self.text()}

    def find(self, action: str) -> MenuEntry | None:
        for e in self.entries:
            if e.action == action:
                return e
            for s in e.submenu:
                if s.action == action:
                    return s
        return None


# ----------------------------------------------------------------------------- formatting

def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def format_rate(rate: float) -> str:
    if rate >= 100:
        return f"{rate:,.0f}"
    return f"{rate:,.1f}"


def _is_paused(snap: HealthSnapshot, paused: bool | None) -> bool:
    return snap.state == PAUSED if paused is None else paused


def not_recording_text(window: tuple[float, float | None], now: float | None = None) -> str:
    """ "Not recording: 25 min left" / "Not recording until you resume"."""
    end = window[1]
    if end is None:
        return "Not recording until you resume"
    now = time.time() if now is None else now
    return f"Not recording: {describe_left(end - now)}"


def icon_state(snap: HealthSnapshot, tray: TraySettings, paused: bool | None = None,
               not_recording: tuple[float, float | None] | None = None) -> str:
    """Which of the icon looks this snapshot gets. Error means events are not
    being stored (database failing, engine stopped); degraded means they are
    not lost but something needs attention (Redis down and spooling, dead
    letters or spool past their thresholds). A problem outranks "paused".
    "Don't record" (``not_recording``: the window in force) outranks the
    warnings and "paused" (nothing is captured, so those matter less than
    being sure of it), not an error or the start.

    ``paused`` is the engine's own flag when known (a paused engine with
    Redis down reports state "degraded")."""
    if snap.state == STOPPED or not snap.sqlite_ok:
        return I_ERROR
    if snap.state == STARTING:
        return I_STARTING
    if not_recording is not None:
        return I_NOT_RECORDING
    if snap.state == DEGRADED or not snap.redis_ok:
        return I_DEGRADED
    if _is_paused(snap, paused):
        return I_PAUSED
    if (snap.dlq_length >= tray.dlq_warn_threshold
            or snap.spool_files >= tray.spool_warn_threshold
            or snap.storage_state not in ("", STORAGE_OK)):
        return I_DEGRADED
    return I_RUNNING


def _problem(snap: HealthSnapshot) -> str:
    if not snap.sqlite_ok:
        return f"Database: {SQLITE_TEXT.get(snap.sqlite_status, snap.sqlite_status.replace('_', ' '))}"
    if not snap.redis_ok:
        # the app's private server died and the runtime is restarting it
        what = "Redis unreachable" if snap.server_status in ("", "ok") else "Redis restarting"
        if snap.spool_files:
            return f"{what}: {plural(snap.spool_files, 'event')} spooled"
        return what
    if snap.state == DEGRADED:
        return next((r for r in snap.reasons if r not in ("Paused", "Running")), "Degraded")
    return ""


def status_line(snap: HealthSnapshot, tray: TraySettings, paused: bool | None = None,
                not_recording: tuple[float, float | None] | None = None, now: float | None = None) -> str:
    """One line: the state, or the most important thing wrong; a "don't
    record" window in force comes first ("Not recording: 25 min left; Paused")."""
    engine = _engine_status(snap, tray, paused)
    if not_recording is None:
        return engine
    text = not_recording_text(not_recording, now)
    return text if engine == "Running" else f"{text}; {engine}"


def _engine_status(snap: HealthSnapshot, tray: TraySettings, paused: bool | None) -> str:
    if snap.state == STARTING:
        return f"Starting: {snap.last_error}" if snap.last_error else "Starting..."
    if snap.state == STOPPED:
        return f"Stopped: {snap.last_error}" if snap.last_error else "Stopped"
    problem = _problem(snap)
    if _is_paused(snap, paused):
        return f"Paused; {problem}" if problem else "Paused"
    if problem:
        return problem
    if snap.dlq_length >= tray.dlq_warn_threshold:
        return f"Running, {plural(snap.dlq_length, 'dead letter')}"
    if snap.spool_files >= tray.spool_warn_threshold:
        return f"Running, {plural(snap.spool_files, 'event')} spooled"
    if snap.storage_warning:
        return snap.storage_warning  # the database near its cap, or its disk nearly full
    return "Running"


def format_tokens(n: int) -> str:
    """1234 -> "1,234"; 1_234_567 -> "1.2M"; 12_345 -> "12.3k"."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1_000:.1f}k"
    return f"{n:,}"


def usage_line(snap: HealthSnapshot) -> str:
    """ "Today: 1.2M tokens · $3.41 · 42 prompts" (from the derived usage tables)."""
    parts = [f"{format_tokens(snap.usage_today_tokens)} tokens"]
    if snap.usage_today_cost_usd is not None:
        parts.append(f"${snap.usage_today_cost_usd:,.2f}")
    parts.append(plural(snap.usage_today_prompts, "prompt"))
    return "Usage today: " + " · ".join(parts)


def database_line(snap: HealthSnapshot) -> str:
    """ "Database: 1.8 GB of 2.0 GB" while a size cap is set ([retention] max_db_mb), else ""."""
    if not snap.db_cap_bytes:
        return ""
    return f"Database: {human_bytes(snap.db_used_bytes)} of {human_bytes(snap.db_cap_bytes)}"


def import_progress(snap: HealthSnapshot) -> float | None:
    """How far a monitor's import of history has come (percent), while one runs."""
    values = [m.get("import_progress_pct") for m in snap.monitors.values() if isinstance(m, dict)]
    found = [float(v) for v in values if isinstance(v, (int, float))]
    return min(found) if found else None


def detail_lines(snap: HealthSnapshot) -> tuple[str, str, str, str]:
    importing = import_progress(snap)
    return (
        f"Ingest: {format_rate(snap.rate_1m)} events/s"
        + (f" (importing history: {importing:.0f}%)" if importing is not None else ""),
        f"Today: {plural(snap.today_events, 'event')}, {plural(snap.today_sessions, 'session')}",
        f"Backlog: {snap.backlog:,}, pending: {snap.pending:,}",
        f"Dead letters: {snap.dlq_length:,}",
    )


def tooltip(snap: HealthSnapshot, tray: TraySettings, paused: bool | None = None,
            not_recording: tuple[float, float | None] | None = None, now: float | None = None) -> str:
    status = status_line(snap, tray, paused, not_recording, now)
    if snap.state in (RUNNING, DEGRADED) and not _is_paused(snap, paused) and not_recording is None:
        return f"{APP_TITLE}: {status}, {format_rate(snap.rate_10s)} events/s"
    return f"{APP_TITLE}: {status}"


def build_menu(snap: HealthSnapshot, tray: TraySettings, *, paused: bool | None = None,
               autostart: bool | None = None, busy: str = "",
               not_recording: tuple[float, float | None] | None = None,
               now: float | None = None) -> MenuModel:
    """The whole menu for this snapshot.

    ``autostart`` is the "Start at login" state, or None to hide the item
    (no autostart support on this build). ``busy`` names an action in
    progress (e.g. "Pausing..."), shown in place of Pause/Resume.
    ``not_recording`` is the "don't record" window in force at ``now`` (the
    status line then says so with the time left, and "Record again" takes
    the place of the "Don't record" submenu)."""
    is_paused = _is_paused(snap, paused)
    status = status_line(snap, tray, paused, not_recording, now)
    ingest, today, backlog, dead = detail_lines(snap)
    entries: list[MenuEntry] = [
        MenuEntry(status, A_STATUS, default=True),
        MenuEntry(ingest, enabled=False),
        MenuEntry(today, enabled=False),
        MenuEntry(usage_line(snap), enabled=False),
        MenuEntry(backlog, enabled=False),
    ]
    if database_line(snap):
        entries.insert(4, MenuEntry(database_line(snap), enabled=False))
    if snap.dlq_length > 0:
        retry = MenuEntry(f"Retry {plural(snap.dlq_length, 'dead letter')}", A_RETRY_DLQ,
                          enabled=snap.redis_ok)
        entries.append(MenuEntry(dead, submenu=(retry,)))
    else:
        entries.append(MenuEntry(dead, enabled=False))
    entries.append(SEPARATOR)
    can_toggle = snap.state not in (STARTING, STOPPED) and not busy
    if busy:
        entries.append(MenuEntry(busy, enabled=False))
    elif is_paused:
        entries.append(MenuEntry("Resume", A_RESUME, enabled=can_toggle))
    else:
        entries.append(MenuEntry("Pause", A_PAUSE, enabled=can_toggle))
    if not_recording is not None:
        entries.append(MenuEntry("Record again", A_RECORD_AGAIN))
    else:
        entries.append(MenuEntry("Don't record", submenu=tuple(
            MenuEntry(text, action) for action, text, _ in NO_RECORD_CHOICES)))
    entries.append(MenuEntry("Forget the last hour", A_FORGET_HOUR))
    entries += [
        MenuEntry("Usage report...", A_USAGE_REPORT),
        MenuEntry("Export diagnostics bundle...", A_EXPORT),
        MenuEntry("Open data folder", A_OPEN_DATA),
        MenuEntry("Open logs", A_OPEN_LOGS),
    ]
    if autostart is not None:
        entries.append(MenuEntry("Start at login", A_AUTOSTART, checked=autostart))
    entries += [SEPARATOR, MenuEntry("Quit", A_QUIT)]
    return MenuModel(entries=tuple(entries), tooltip=tooltip(snap, tray, paused, not_recording, now),
                     icon_state=icon_state(snap, tray, paused, not_recording), status=status,
                     details=(ingest, today, backlog, dead))
