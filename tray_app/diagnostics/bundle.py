"""The diagnostics bundle: one zip of plain-text files a user can read before sharing.

``export_bundle(cfg)`` writes ``telemetry-tray-diagnostics-<UTC time>.zip``
(mode 0600) into ``out_dir``; by default the user's Downloads folder when it
exists, else the home directory (where a person looks for a file they were
asked to send). It does file, SQLite and Redis I/O: call it from a worker
thread, never the UI thread.

What goes in: versions and backends, the effective config (secrets masked),
an allowlisted environment, the health snapshot, Redis INFO and XINFO of our
streams, dead-letter counts and a sample with payload/metadata as sizes,
database statistics, monitors' state, hook install status, spool counts, and
the last log lines.

What never goes in: event content (prompts, responses, file contents, shell
output), the Redis password, tokens, Cursor's ``cursorAuth/*`` values, other
environment variables. The bundle is assembled from facts (counts, sizes, ids,
versions); then every byte passes through :class:`~tray_app.diagnostics.redact.Redactor`,
which also knows the exact secrets and content strings it saw on the way
(see redact.py). Home paths are written ``~``. The whole bundle is capped
(``max_bytes``, uncompressed); a file that was cut ends with a note saying so,
and the manifest lists the cuts.

Each part is collected on its own: one that fails (Redis down, database
locked) records its one-line error and the rest of the bundle is still made.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tray_app import APP_NAME
from tray_app.config import Config
from tray_app.engine.health import HealthSnapshot
from tray_app.diagnostics import parts as parts_mod
from tray_app.diagnostics.redis_parts import RedisParts
from tray_app.diagnostics.learn import learn_recent_content, learn_secrets
from tray_app.diagnostics.util import section
from tray_app.diagnostics.redact import Redactor, allowed_env

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
LOG_LINES = 1000
DLQ_SAMPLE = 25
README = """\
Telemetry Tray diagnostics bundle
=================================

Every file here is plain text (JSON or log lines): read them before you share.

  manifest.json     versions, OS, tray and notification backends, what was cut
  config.json       effective settings (passwords masked) and the app's paths
  environment.json  only an allowlist of environment variables
  health.json       the engine's health snapshot
  redis.json        Redis INFO (server, memory, persistence, keyspace), XINFO of our streams
  dlq.json          dead letters: counts by reason, the oldest few with payload and
                    metadata replaced by their sizes
  database.json     telemetry.db: size, pages, schema version, rows by platform,
                    event type and day, PRAGMA quick_check, what retention removed
                    (rows and bytes per rule, auto_vacuum mode, last run)
  monitors.json     monitors' state: paths found, offsets, last pass
  hooks.json        whether our hooks are installed in Cursor and Claude Code
  spool.json        events waiting in the offline spool
  logs/             the last lines of each log file

Never included: prompt or response text, file contents, shell output, the Redis
password, tokens, Cursor's cursorAuth values, other environment variables. Home
directory paths are written as ~. Scrubbed values show as *** or <redacted ...>.
"""


# ----------------------------------------------------------------------------- names

def default_out_dir() -> Path:
    """The user's Downloads folder when it exists, else the home directory."""
    try:
        import platformdirs

        downloads = Path(platformdirs.user_downloads_dir())
        if downloads.is_dir():
            return downloads
    except Exception:  # noqa: BLE001 - platformdirs may fail without a desktop
        pass
    return Path.home()


def bundle_name(now: datetime) -> str:
    return f"{APP_NAME}-diagnostics-{now.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}.zip"


# ----------------------------------------------------------------------------- the zip

class _Writer:
    """Scrubs, caps and collects the files of the bundle."""

    def __init__(self, red: Redactor, max_bytes: int, prefix: str) -> None:
        self.red = red
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.files: list[tuple[str, bytes]] = []
        self.cuts: list[str] = []
        self.used = 0

    def add(self, name: str, text: str, reserve: int = 0, keep_tail: bool = False) -> None:
        """Add a file; past the cap it is cut (its head, or for logs its oldest
        lines) and says so."""
        text = self.red.text(text)
        data = text.encode("utf-8")
        room = max(0, self.max_bytes - self.used - reserve)
        if len(data) > room:
            keep = max(0, room - 200)
            note = (f"[cut: {len(data) - keep} of {len(data)} bytes omitted here: the bundle is "
                    f"capped at {self.max_bytes} bytes]\n")
            if keep_tail:
                tail = data[len(data) - keep:].decode("utf-8", "ignore")
                data = (note + tail.partition("\n")[2]).encode("utf-8")
            else:
                data = data[:keep].decode("utf-8", "ignore").encode("utf-8") + b"\n" + note.encode()
            self.cuts.append(f"{name}: {len(data)} of {len(text.encode('utf-8'))} bytes kept")
        self.used += len(data)
        self.files.append((f"{self.prefix}/{name}", data))

    def add_json(self, name: str, data: Any, reserve: int = 0) -> None:
        self.add(name, json.dumps(self.red.value(data), indent=2, default=str) + "\n", reserve)

    def write_zip(self, out: Path, now: datetime) -> None:
        stamp = now.astimezone(timezone.utc).timetuple()[:6]
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as fh:  # mkstemp made it 0600
                with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                    for name, data in self.files:
                        info = zipfile.ZipInfo(name, date_time=stamp)  # type: ignore[arg-type]
                        info.compress_type = zipfile.ZIP_DEFLATED
                        info.external_attr = (0o100600 << 16)
                        zf.writestr(info, data)
                fh.flush()
                os.fsync(fh.fileno())
            _place(Path(tmp), out)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def _place(tmp: Path, out: Path) -> None:
    """Move the finished zip to ``out`` without clobbering an existing file."""
    try:
        os.link(tmp, out)
        os.unlink(tmp)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this filesystem
        if out.exists():
            raise FileExistsError(str(out)) from None
        os.replace(tmp, out)


def _target(out_dir: Path | None, out_file: Path | None, now: datetime) -> Path:
    if out_file is not None:
        # a folder the user named is never created for them: a typo must not
        # scatter new directories (a missing one is an OSError the CLI reports)
        return Path(out_file).expanduser()
    if out_dir is not None:
        directory = Path(out_dir).expanduser()
        directory.mkdir(exist_ok=True, mode=0o700)  # its parent must exist
    else:
        directory = default_out_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = bundle_name(now)
    candidate = directory / base
    n = 1
    while candidate.exists():
        candidate = directory / base.replace(".zip", f"-{n}.zip")
        n += 1
    return candidate


def export_bundle(cfg: Config, out_dir: Path | None = None, health: HealthSnapshot | None = None, *,
                  out_file: Path | None = None, now: datetime | None = None,
                  max_bytes: int = DEFAULT_MAX_BYTES, log_lines: int = LOG_LINES,
                  dlq_sample: int = DLQ_SAMPLE, redis_client: Any = None) -> Path:
    """Write the diagnostics zip and return its path.

    ``out_dir``: the folder (default: :func:`default_out_dir`); ``out_file``: an
    exact file name instead. ``health``: the caller's snapshot (the tray passes
    its own); otherwise the one the engine publishes in Redis. ``redis_client``:
    a connection to use; otherwise one is made, never starting a server.
    A part that cannot be collected records its error; only a zip that cannot
    be written raises (OSError)."""
    now = now or datetime.now(timezone.utc)
    target = _target(out_dir, out_file, now)
    red = Redactor()
    # learn what to scrub before collecting anything
    section(lambda: learn_secrets(cfg, red), "learning secrets")
    section(lambda: learn_recent_content(cfg, red), "learning recent content")

    parts: dict[str, Any] = {
        "config.json": section(lambda: parts_mod.config(cfg), "config"),
        "environment.json": {"note": "only allowlisted variables; others are never included",
                             "variables": allowed_env()},
    }
    rp = RedisParts(cfg, redis_client)
    try:
        parts["health.json"] = ({"source": "the running app", "snapshot": health.to_dict()}
                                if health is not None else section(rp.health, "health"))
        parts["redis.json"] = section(rp.info, "redis")
        parts["dlq.json"] = section(lambda: rp.dead_letters(red, dlq_sample), "dead letters")
    finally:
        rp.close()
    parts["database.json"] = section(lambda: parts_mod.database(cfg), "database")
    parts["monitors.json"] = section(lambda: parts_mod.monitors(cfg), "monitors")
    snapshot = parts["health.json"].get("snapshot") if isinstance(parts["health.json"], dict) else None
    if isinstance(parts["monitors.json"], dict):
        # the monitors' own report (last pass, items emitted, errors), as the engine published it
        parts["monitors.json"]["live"] = (snapshot or {}).get("monitors") or None
    parts["hooks.json"] = section(lambda: parts_mod.hooks(cfg), "hooks")
    parts["spool.json"] = section(lambda: parts_mod.spool(cfg), "spool")
    logs = section(lambda: parts_mod.logs(cfg, log_lines), "logs")
    manifest = section(parts_mod.manifest, "manifest")

    w = _Writer(red, max_bytes, target.stem)
    reserve = 16 * 1024  # room for the manifest, written last
    w.add("README.txt", README, reserve)
    for name, data in parts.items():
        w.add_json(name, data, reserve)
    if isinstance(logs, dict) and "error" not in logs:
        if not logs:
            w.add("logs/README.txt", f"no log files in {cfg.paths.log_dir}\n", reserve)
        for name, lines in logs.items():
            w.add(f"logs/{name}.txt", "".join(red.log_line(ln) + "\n" for ln in lines), reserve,
                  keep_tail=True)
    else:
        w.add_json("logs/error.json", logs, reserve)
    if isinstance(manifest, dict):
        manifest.update(
            bundle_format=FORMAT_VERSION,
            created_at=now.astimezone(timezone.utc).isoformat(),
            files={n.split("/", 1)[1]: len(d) for n, d in w.files},
            cut=w.cuts or None,
            max_bytes=max_bytes,
            redaction={"known_secrets": red.secret_count, "home": "home directory written as ~"})
    w.max_bytes += reserve
    w.add_json("manifest.json", manifest)
    w.write_zip(target, now)
    log.info("diagnostics: wrote %s (%d files, %d bytes before compression%s)", target, len(w.files),
             w.used, f", {len(w.cuts)} cut to fit" if w.cuts else "")
    return target


__all__ = ["export_bundle", "default_out_dir", "bundle_name", "DEFAULT_MAX_BYTES"]
