"""Forgetting in the app's files: the hook spool, the monitors' state stores,
the log files and the usage report."""

from __future__ import annotations

import os
from contextlib import closing
from pathlib import Path

from tray_app.capture import spoolfile
from tray_app.config import Config
from tray_app.engine.spool_drain import parse as parse_spool
from tray_app.lifecycle import rule
from tray_app.lifecycle.db_sweep import compact_sqlite, connect, tables
from tray_app.lifecycle.selector import Outcome, Selector
from tray_app.monitors.transcript_lines import session_from_path


def _scrub(path: Path) -> None:
    """Overwrite a file's bytes with zeros before unlinking it (on filesystems
    that write in place the content is then gone from the disk too)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        pass
    path.unlink(missing_ok=True)


def sweep_spool(spool_dir: Path, sel: Selector, r: rule.Forgotten, dry_run: bool) -> int:
    """Spool files (and unparseable ones in ``bad/``) of the selector."""
    n = 0
    for d in (spool_dir, spool_dir / spoolfile.BAD_DIR):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = d / name
            if not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            fields = parse_spool(data)
            if fields is not None:
                hit = sel.matches_fields(dict(fields), r)
            else:
                created = spoolfile.created_ns(name.lstrip("."))
                hit = any(n_ in data for n_ in sel.raw_needles()) or (
                    created is not None and sel.end is not None and r.covers(created / 1e9))
            if hit:
                n += 1
                if not dry_run:
                    _scrub(path)
    return n


def sweep_monitor_state(state_dir: Path, sel: Selector, dry_run: bool, out: Outcome) -> int:
    """The monitors' state stores: Claude transcript offsets of the session's or
    project's files (their paths name them; the monitor no longer reads those
    files), Cursor item digests keyed by the session's ids. Offsets of a
    time range stay: they keep the monitors from reading the transcripts again."""
    n = 0
    for path in sorted((state_dir / "monitors").glob("*.sqlite3")):
        with closing(connect(path)) as conn:
            if "kv" not in tables(conn):
                continue
            keys = [(t, s, k) for t in ("kv", "fingerprints") if t in tables(conn)
                    for s, k in conn.execute(f"SELECT scope, key FROM {t}")]
            doomed = [(t, s, k) for t, s, k in keys if _state_key_matches(str(k), sel)]
            if sel.session_id:
                doomed += [("kv", str(s), str(k)) for s, k in conn.execute(
                    "SELECT scope, key FROM kv WHERE instr(CAST(value AS TEXT), ?) > 0", (sel.session_id,))
                    if ("kv", s, k) not in doomed]
            n += len(doomed)
            if doomed and not dry_run:
                conn.execute("BEGIN IMMEDIATE")
                for t, s, k in doomed:
                    conn.execute(f"DELETE FROM {t} WHERE scope=? AND key=?", (s, k))
                conn.execute("COMMIT")
        if doomed and not dry_run:
            compact_sqlite(path, out)
    return n


def _state_key_matches(key: str, sel: Selector) -> bool:
    if sel.session_id:
        if sel.session_id in key:
            return True
        return key.endswith(".jsonl") and session_from_path(Path(key)) == sel.session_id
    if sel.transcript_dir and key.endswith(".jsonl"):
        p = Path(key)
        project = p.parents[2] if p.parent.name == "subagents" and len(p.parents) > 2 else p.parent
        return project.name == sel.transcript_dir
    return False


def sweep_logs(log_dir: Path, sel: Selector, dry_run: bool) -> int:
    """Log lines naming the session or project (a transcript's path in a
    warning, say) are removed from the app's logs. Returns the lines."""
    needles = [x for x in (sel.session_id, sel.project, sel.transcript_dir) if x]
    if not needles:
        return 0
    n = 0
    for path in sorted(log_dir.glob("*.log*")) if log_dir.is_dir() else []:
        try:
            lines = path.read_text("utf-8", "replace").splitlines(keepends=True)
        except OSError:
            continue
        kept = [ln for ln in lines if not any(x in ln for x in needles)]
        if len(kept) != len(lines):
            n += len(lines) - len(kept)
            if not dry_run:
                with open(path, "w", encoding="utf-8") as fh:  # in place: the log handler keeps its file
                    fh.writelines(kept)
    return n


def refresh_report(cfg: Config, dry_run: bool) -> int:
    """The usage HTML report, when there is one, is written again without what went."""
    from tray_app.usage.html import REPORT_NAME, write_report

    if not (cfg.paths.data_dir / REPORT_NAME).exists():
        return 0
    if not dry_run:
        write_report(cfg)
    return 1
