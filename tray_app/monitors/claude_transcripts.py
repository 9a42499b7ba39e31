"""ClaudeCodeTranscriptMonitor: ``**/*.jsonl`` under Claude Code's projects
directories -> ``transcript_trace`` events (and ``error`` for malformed lines).

Per file it remembers (state store, survives restarts) the byte offset of
the first line not yet sent, the number of lines before it, the inode and a
digest of the file's first bytes. Rules:

* only complete lines are read; a partial last line waits for its newline;
* a file that shrank below the offset (truncated), has another inode
  (replaced), or whose first bytes changed (rewritten) is read again from
  the start; deterministic event ids make that safe;
* the offset advances only after the XADD of the lines before it succeeded;
* a malformed line becomes an ``error`` event naming the file and line
  number, and reading carries on.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tray_app.config import Config
from tray_app.events import utc_now_iso, workspace_hash
from tray_app.lifecycle.rule import Forgotten, RuleCache
from tray_app.monitors.base import Clock, MonitorThread, iso_from_unix
from tray_app.monitors.emit import Emitter, payload_budget
from tray_app.monitors.privacy import Capture
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.monitors.transcript_lines import (time_in_file, ToolNames, error_event, line_digest, line_event, line_time,
                                                parse_line, session_from_path)
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)

NAME = "claude_transcripts"
#: how often the log says how far an import of history has come
FILE_SCOPE = "file"
READ_CHUNK_BYTES = 4 * 1024 * 1024
HEAD_BYTES = 4096
BATCH_LINES = 500


def default_roots(env: dict[str, str] | None = None, home: Path | None = None) -> list[Path]:
    """Where Claude Code keeps transcripts: ``$CLAUDE_CONFIG_DIR/projects``,
    ``~/.claude/projects`` and ``$XDG_CONFIG_HOME/claude/projects``."""
    env = dict(os.environ) if env is None else env
    home = home or Path.home()
    roots: list[Path] = []
    for part in (env.get("CLAUDE_CONFIG_DIR") or "").split(","):
        if part.strip():
            roots.append(Path(part.strip()).expanduser() / "projects")
    roots.append(home / ".claude" / "projects")
    roots.append(Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "claude" / "projects")
    return roots


def unique_roots(roots: list[Path]) -> list[Path]:
    seen: set[str] = set()
    out: list[Path] = []
    for r in roots:
        key = os.path.realpath(r)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


@dataclass
class FileMark:
    ino: int = 0
    offset: int = 0
    line: int = 0
    size: int = 0
    mtime_ns: int = 0
    head: str = ""
    head_len: int = 0
    ws: str | None = None
    #: time of the last line that had one (for lines that have none)
    ts: str | None = None


class ClaudeCodeTranscriptMonitor(MonitorThread):
    def __init__(self, cfg: Config, endpoint: Endpoint, *, roots: list[Path] | None = None,
                 emitter: Emitter | None = None, store: StateStore | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 max_lines_per_pass: int = 20_000) -> None:
        super().__init__(NAME, cfg.monitors.poll_interval_s, clock=clock, monotonic=monotonic)
        self.cfg = cfg
        if roots is None:
            roots = [Path(p).expanduser() for p in cfg.monitors.claude_projects_dirs] + default_roots()
        self.roots = unique_roots(roots)
        self.emitter = emitter or Emitter(endpoint, socket_timeout_s=cfg.redis.socket_timeout_s,
                                          connect_timeout_s=cfg.redis.connect_timeout_s,
                                          state_dir=cfg.paths.state_dir)
        self.store = store or StateStore(state_file(cfg.paths.state_dir, NAME))
        self.capture = Capture(cfg.capture)
        self.payload_max = payload_budget(cfg.ingest.max_entry_bytes)
        self.max_lines_per_pass = max_lines_per_pass
        self._marks: dict[str, FileMark] | None = None
        self._forgotten = RuleCache(cfg.paths.state_dir)
        self._tools: dict[str, ToolNames] = {}
        self._backlog = False
        self._budget = 0
        self._set(roots=[str(r) for r in self.roots], files_tracked=0, malformed_lines=0,
                  restarts_from_zero=0, backlog=False)

    def next_wait_s(self) -> float:
        # a backlog goes on at once, unless the engine is far behind (Redis memory)
        return 0.0 if self._backlog and self.emitter.may_hurry() else self.poll_interval_s

    def close(self) -> None:
        self.emitter.close()
        self.store.close()

    # -- discovery ----------------------------------------------------------------------------

    def discover(self) -> list[tuple[Path, os.stat_result]]:
        """Every ``*.jsonl`` under the roots with its stat, each file once (by
        device and inode, so overlapping roots and symlinks do not double it)."""
        found: dict[tuple[int, int], tuple[Path, os.stat_result]] = {}
        stack = [str(r) for r in self.roots]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):  # no symlink loops
                        stack.append(e.path)
                    elif e.name.endswith(".jsonl") and e.is_file():
                        st = e.stat()
                        found.setdefault((st.st_dev, st.st_ino), (Path(e.path), st))
                except OSError:
                    continue
        return sorted(found.values(), key=lambda f: str(f[0]))

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self) -> int:
        if self._marks is None:
            self._marks = {k: FileMark(**v) for k, v in self.store.items(FILE_SCOPE).items()}
        files = self.discover()
        self._budget = self.max_lines_per_pass
        emitted = 0
        backlog = False
        present = set()
        forgotten = self._forgotten.get()
        for path, st in files:
            key = str(path)
            present.add(key)
            if self.stopping:
                break
            if forgotten and self._forgotten_file(path, forgotten):
                # `telemetry-tray forget`: not read, and no offset kept (its path names the session)
                self._marks.pop(key, None)
                self._tools.pop(key, None)
                continue
            if self._budget <= 0:
                backlog = True
                break
            try:
                n, more = self._pass_file(path, st)
            except OSError as exc:
                self.record_error(f"{path}: {exc.strerror or exc}")
                continue
            emitted += n
            backlog = backlog or more
        for gone in [k for k in self._marks if k not in present and not os.path.exists(k)]:
            del self._marks[gone]
            self._tools.pop(gone, None)
            self.store.delete(FILE_SCOPE, gone)
        self._backlog = backlog
        self._set(files_tracked=len(self._marks), backlog=backlog)
        self._report_progress(files, backlog)
        return emitted

    def _forgotten_file(self, path: Path, forgotten: Forgotten) -> bool:
        """A transcript of a forgotten session, or in a forgotten project's directory
        (``<root>/<project>/<session>.jsonl`` or ``.../<session>/subagents/agent-*.jsonl``)."""
        if forgotten.session(session_from_path(path)):
            return True
        if not forgotten.dirs:
            return False
        project = path.parents[2] if path.parent.name == "subagents" else path.parent
        return forgotten.transcript_dir(project.name)

    def _report_progress(self, files: list[tuple[Path, os.stat_result]], backlog: bool) -> None:
        assert self._marks is not None
        if not backlog and not self._importing:
            return
        total = sum(st.st_size for _, st in files)
        done = 0
        for path, st in files:
            mark = self._marks.get(str(path))
            if mark is not None:
                done += st.st_size if mark.size == st.st_size else min(max(mark.offset, 0), st.st_size)
        self.report_import(backlog, done, total, "transcripts", detail=f"{len(files)} files")

    def _pass_file(self, path: Path, st: os.stat_result) -> tuple[int, bool]:
        assert self._marks is not None
        key = str(path)
        saved = self._marks.get(key)
        if (saved is not None and saved.ino == st.st_ino and saved.size == st.st_size
                and saved.mtime_ns == st.st_mtime_ns and saved.offset <= st.st_size):
            return 0, False
        # work on a copy: only what _flush saved (after a successful XADD) is remembered
        mark = FileMark(**asdict(saved)) if saved is not None else None
        with open(path, "rb") as fh:
            if mark is None or self._must_restart(mark, st, fh):
                if mark is not None:
                    log.info("%s: %s was truncated or replaced: reading it again from the start", NAME, path)
                    self._bump("restarts_from_zero")
                    self._tools.pop(key, None)
                mark = FileMark(ino=st.st_ino)
            n, more = self._read(path, fh, mark, st.st_size)
        if not more:
            mark.size, mark.mtime_ns = st.st_size, st.st_mtime_ns
        else:
            mark.size = mark.mtime_ns = -1
        self._save(key, mark)
        return n, more

    def _must_restart(self, mark: FileMark, st: os.stat_result, fh: Any) -> bool:
        if mark.ino != st.st_ino or st.st_size < mark.offset:
            return True
        if mark.head_len:
            fh.seek(0)
            return line_digest(fh.read(mark.head_len)) != mark.head
        return False

    def _read(self, path: Path, fh: Any, mark: FileMark, size: int) -> tuple[int, bool]:
        """Send complete lines from mark.offset up to ``size``. Returns (emitted, more left)."""
        key = str(path)
        tools = self._tools.setdefault(key, ToolNames())
        file_session = session_from_path(path)
        fh.seek(mark.offset)
        pos = mark.offset
        buf = b""
        emitted = 0
        pending: list[dict[str, Any]] = []
        while pos + len(buf) < size and not self.stopping:
            chunk = fh.read(min(READ_CHUNK_BYTES, size - pos - len(buf)))
            if not chunk:
                break
            buf += chunk
            end = buf.rfind(b"\n")
            if end < 0:
                continue  # a long line: keep reading until its newline
            complete, buf = buf[:end + 1], buf[end + 1:]
            start = 0
            now_iso = utc_now_iso()
            while start < len(complete):
                nl = complete.index(b"\n", start)
                line = complete[start:nl]
                offset = pos + start
                mark.line += 1
                start = nl + 1
                ev = self._event_or_error(line.strip(), path, offset, mark, file_session, tools, now_iso)
                if ev is not None:
                    pending.append(ev)
                if len(pending) >= min(BATCH_LINES, max(1, self._budget)) or start >= len(complete):
                    emitted += self._flush(pending, mark, pos + start, key)
                    pending = []
                    if self._budget <= 0 and start < len(complete):
                        return emitted, True  # the rest of this chunk waits for the next pass
            pos += len(complete)
            if self._budget <= 0:
                return emitted, pos < size
        return emitted, False

    def _event_or_error(self, line: bytes, path: Path, offset: int, mark: FileMark, file_session: str,
                        tools: ToolNames, now_iso: str) -> dict[str, Any] | None:
        """One line's event; a line that cannot be turned into one (any error) is
        recorded as an ``error`` event and passed, never retried forever."""
        try:
            return self._event(line, path, offset, mark, file_session, tools, now_iso)
        except Exception as exc:  # noqa: BLE001 - one line's problem, never the monitor's
            self._bump("unprocessable_lines")
            log.warning("%s: line %d of %s could not be processed (%s: %s)", self.name, mark.line, path,
                        type(exc).__name__, exc)
            return error_event(line, f"could not process: {type(exc).__name__}: {exc}", path=path,
                               offset=offset, line_no=mark.line, file_session=file_session,
                               workspace_hash=mark.ws, now_iso=now_iso)

    def _event(self, line: bytes, path: Path, offset: int, mark: FileMark, file_session: str,
               tools: ToolNames, now_iso: str) -> dict[str, Any] | None:
        if not line:
            return None
        obj, why = parse_line(line)
        if obj is None:
            self._bump("malformed_lines")
            return error_event(line, why or "malformed", path=path, offset=offset, line_no=mark.line,
                               file_session=file_session, workspace_hash=mark.ws, now_iso=now_iso)
        cwd = obj.get("cwd")
        if isinstance(cwd, str) and cwd:
            mark.ws = workspace_hash(cwd)
        mark.ts = line_time(obj) or mark.ts
        if mark.ts is None:
            # a leading line with no time of its own (a summary): the time of the
            # line it refers to, else of the file's first timed line; the file's
            # modification time (its last write) only when the file has none
            leaf = obj.get("leafUuid")
            mark.ts = time_in_file(path, leaf if isinstance(leaf, str) else None) \
                or iso_from_unix(os.stat(path).st_mtime)
        return line_event(obj, line, path=path, offset=offset, line_no=mark.line, file_session=file_session,
                          workspace_hash=mark.ws, cap=self.capture, tools=tools, fallback_ts=mark.ts,
                          payload_max_bytes=self.payload_max)

    def _flush(self, pending: list[dict[str, Any]], mark: FileMark, new_offset: int, key: str) -> int:
        """XADD, then (only then) move the offset past the lines sent."""
        n = self.emitter.emit(pending)
        mark.offset = new_offset
        if mark.head_len < HEAD_BYTES and new_offset > mark.head_len:
            head_len = min(HEAD_BYTES, new_offset)
            with open(key, "rb") as fh:
                mark.head, mark.head_len = line_digest(fh.read(head_len)), head_len
        self._budget -= max(1, n)
        self._save(key, mark)
        return n

    def _save(self, key: str, mark: FileMark) -> None:
        assert self._marks is not None
        self._marks[key] = FileMark(**asdict(mark))
        self.store.put(FILE_SCOPE, key, asdict(mark))

    def _bump(self, key: str) -> None:
        with self._lock:
            self._h[key] = int(self._h.get(key, 0)) + 1
