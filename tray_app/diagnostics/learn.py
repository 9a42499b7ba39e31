"""What the diagnostics bundle must scrub, learned before anything is written.

Secrets: the team collector's export headers, the Redis password (config, environment, the endpoint file, the
private server's password file), environment values whose names suggest a
secret, and Cursor's credential values (``cursorAuth/*`` and token-like keys
of its global ``state.vscdb``, read read-only for this purpose only).

Content: the payload and metadata strings of the newest rows of
``raw_traces`` (and, in redis_parts, of every dead letter), so a prompt that
found its way into a log line verbatim is still cut out.

Nothing learned here is written anywhere; it only feeds the Redactor.
"""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tray_app.config import Config
from tray_app.events import OPTIONAL_FIELDS, REQUIRED_FIELDS
from tray_app.diagnostics.util import json_or_text, log, strings_in
from tray_app.diagnostics.redact import Redactor, secret_env_values

#: newest rows whose payload strings are remembered as content
CONTENT_SAMPLE_ROWS = 500
#: event fields that are ids, names, times or paths, not content (payload is the content;
#: unknown extra fields might be)
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS) | frozenset(OPTIONAL_FIELDS) | {"source", "ingested_at"}


def cursor_user_dir(cfg: Config) -> Path:
    if cfg.monitors.cursor_user_dir:
        return Path(cfg.monitors.cursor_user_dir).expanduser()
    from tray_app.monitors.cursor_files import default_user_dir

    return default_user_dir()


def _readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    return sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=timeout_s)


def learn_secrets(cfg: Config, red: Redactor) -> None:
    urls = [cfg.redis.url, os.environ.get("TELEMETRY_TRAY_REDIS_URL", "")]
    try:
        from tray_app.redis_conn import read_endpoint_file

        ep = read_endpoint_file(cfg)
        if ep is not None:
            urls.append(ep.url)
            red.add_secret(ep.password)
    except Exception as exc:  # noqa: BLE001
        log.debug("diagnostics: endpoint file unreadable: %s", exc)
    for url in urls:
        if not url:
            continue
        try:
            parts = urlsplit(url)
            if parts.password:
                red.add_secret(unquote(parts.password))
            for v in parse_qs(parts.query).get("password", []):
                red.add_secret(v)
        except ValueError:
            pass
    try:  # the private server's password (read, never created)
        red.add_secret((cfg.paths.data_dir / "redis" / "password").read_text().strip())
    except OSError:
        pass
    for value in secret_env_values():
        red.add_secret(value)
    _learn_export_headers(cfg, red)
    _learn_cursor_credentials(cursor_user_dir(cfg) / "globalStorage" / "state.vscdb", red)


def _learn_export_headers(cfg: Config, red: Redactor) -> None:
    """The team collector's headers ([export] headers: credentials): each value,
    and each word of it ("Bearer TOKEN": the token on its own too)."""
    from tray_app.config import parse_headers
    from tray_app.errors import ConfigError

    try:
        headers = parse_headers(cfg.export.headers, "export.headers")
    except ConfigError:
        return
    for value in headers.values():
        red.add_secret(value)
        for word in value.split()[1:]:  # after the scheme ("Bearer", "Basic")
            red.add_secret(word)


def _learn_cursor_credentials(db: Path, red: Redactor) -> None:
    if not db.is_file():
        return
    try:
        conn = _readonly(db, 0.5)
        try:
            rows = conn.execute(
                "SELECT value FROM ItemTable WHERE key LIKE 'cursorAuth/%' OR key LIKE 'secret:%' "
                "OR lower(key) LIKE '%token%' OR lower(key) LIKE '%secret%' "
                "OR lower(key) LIKE '%password%' OR lower(key) LIKE '%apikey%' "
                "OR lower(key) LIKE '%api_key%'").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        log.debug("diagnostics: cannot read %s for scrubbing: %s", db, exc)
        return
    for (value,) in rows:
        if isinstance(value, (str, bytes)):
            red.add_secret(value)
            for s in strings_in(json_or_text(value)):
                if len(s) >= 8:
                    red.add_secret(s)


def learn_recent_content(cfg: Config, red: Redactor) -> None:
    path = cfg.paths.database
    if not path.is_file():
        return
    conn = _readonly(path, 1.0)
    try:
        rows = conn.execute("SELECT event_data FROM raw_traces ORDER BY sequence DESC LIMIT ?",
                            (CONTENT_SAMPLE_ROWS,)).fetchall()
    except sqlite3.Error:
        return
    finally:
        conn.close()
    for (blob,) in rows:
        try:
            event = json_or_text(zlib.decompress(blob))
        except (zlib.error, TypeError):
            continue
        if isinstance(event, dict):
            for key, value in event.items():
                if key == "payload" or key not in KNOWN_FIELDS:
                    red.add_content(value)
