"""Settings: TOML file + environment overrides, validated into frozen dataclasses.

Defaults are defined once, in the dataclasses below. Every setting can be
overridden from the environment as ``TELEMETRY_TRAY_<SECTION>_<KEY>`` (for
example ``TELEMETRY_TRAY_REDIS_URL``, ``TELEMETRY_TRAY_LOGGING_LEVEL``).
Precedence: environment > config file > defaults.

Any problem is a :class:`ConfigError` whose message is one line naming the
file (or variable), the key, what was expected and what was found.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from tray_app.errors import ConfigError
from tray_app.paths import Paths, resolve_paths

ENV_PREFIX = "TELEMETRY_TRAY_"
CaptureMode = Literal["full", "hash", "none"]


@dataclass(frozen=True)
class RedisSettings:
    #: empty = start and use the app's own private server
    url: str = ""
    #: "auto": manage a private server only when no url is set; "always": manage it
    #: even if a url is set (the url is then ignored); "never": never start one
    managed: Literal["auto", "always", "never"] = "auto"
    #: explicit valkey-server / redis-server binary for the managed server
    server_binary: str = ""
    socket_timeout_s: float = 5.0
    connect_timeout_s: float = 2.0


@dataclass(frozen=True)
class IngestSettings:
    batch_size_min: int = 50
    batch_size_max: int = 2000
    #: a batch is flushed when it is this old, even if small
    flush_interval_ms: int = 50
    #: flush as soon as a read finds the stream drained (low latency at low load);
    #: false: small batches wait for flush_interval_ms (fewer, larger commits)
    flush_on_drain: bool = True
    #: how long one XREADGROUP waits for new entries
    block_ms: int = 200
    #: adaptive batch sizing aims for commits about this long
    target_commit_ms: int = 100
    claim_idle_ms: int = 60_000
    claim_interval_s: float = 30.0
    max_retries: int = 5
    #: an entry bigger than this (all fields together) is a poison message
    max_entry_bytes: int = 2 * 1024 * 1024
    #: a batch in hand holds at most about this many bytes of entries: fewer
    #: entries are read at a time when entries are large (memory stays bounded)
    max_batch_bytes: int = 32 * 1024 * 1024
    cdc_maxlen: int = 100_000
    dlq_maxlen: int = 10_000
    #: the DLQ is also capped by bytes (its memory in Redis): the oldest dead letters
    #: beyond it are dropped, and counted in health (dlq_dropped)
    dlq_max_bytes: int = 64 * 1024 * 1024
    trim_interval_s: float = 30.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    spool_drain_interval_s: float = 5.0
    health_publish_interval_s: float = 1.0


@dataclass(frozen=True)
class CaptureSettings:
    prompts: CaptureMode = "full"
    responses: CaptureMode = "full"
    file_contents: CaptureMode = "full"
    shell_output: CaptureMode = "full"
    #: hook stdin beyond this is cut, with a truncation marker
    max_input_bytes: int = 1024 * 1024
    #: connect + write budget of one hook call before it spools instead
    hook_timeout_ms: int = 40


@dataclass(frozen=True)
class MonitorSettings:
    cursor_enabled: bool = True
    #: Cursor's "User" directory; empty = the platform default
    cursor_user_dir: str = ""
    claude_enabled: bool = True
    #: extra transcript roots; the defaults (~/.claude/projects, ...) are always searched
    claude_projects_dirs: list[str] = field(default_factory=list)
    poll_interval_s: float = 5.0
    sessions_enabled: bool = True
    session_idle_timeout_s: float = 1800.0


@dataclass(frozen=True)
class TraySettings:
    notify_interval_s: float = 300.0
    dlq_warn_threshold: int = 10
    spool_warn_threshold: int = 100
    notifications: bool = True


@dataclass(frozen=True)
class RetentionSettings:
    #: raw events (raw_traces, their content) older than this many days are removed
    #: once the usage tables hold what they contribute; 0 = keep forever
    raw_days: int = 90
    #: derived usage rows (tokens, cost, activity: no content) older than this; 0 = forever
    usage_days: int = 0
    #: size cap of telemetry.db in MB (10^6 bytes of used pages); past it the oldest raw
    #: events go first, down to cap_low_water_pct of it; 0 = no cap
    max_db_mb: int = 0
    cap_low_water_pct: int = 80
    #: the tray warns when the database reaches this share of the cap (above the low
    #: water: each time the cap removes, the warning ends)
    cap_warn_pct: int = 90
    #: the tray warns when the database's file system has less free space than
    #: disk_warn_free_mb or disk_warn_free_pct percent of its size
    disk_warn_free_mb: int = 1024
    disk_warn_free_pct: float = 5.0
    #: how often the rules are checked (work left over continues at once)
    check_interval_s: float = 60.0
    #: rows per delete transaction at most; fewer while transactions take longer than batch_ms
    batch_rows: int = 500
    batch_ms: float = 5.0
    #: pages returned to the file system per incremental-vacuum step
    vacuum_pages: int = 256
    #: a database made before incremental vacuum (auto_vacuum off) is switched over by
    #: one VACUUM at a quiet moment, when the disk has room for a second copy
    convert_old_db: bool = True


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_bytes: int = 5 * 1024 * 1024
    backup_count: int = 3


@dataclass(frozen=True)
class ExportSettings:
    #: a team's OpenTelemetry Collector, OTLP/HTTP base URL (e.g.
    #: "https://collector.example:4318"; /v1/metrics is appended). Empty: no export
    #: (the default): nothing leaves this computer
    otlp_endpoint: str = ""
    #: HTTP headers sent with every export, "name=value,name2=value2" (the
    #: OTEL_EXPORTER_OTLP_HEADERS format, values may be %-encoded), e.g.
    #: "Authorization=Bearer%20xyz". A secret: never logged, masked everywhere
    headers: str = ""
    #: how often the aggregated totals are sent
    interval_s: float = 60.0
    #: one export's whole budget, retries included
    timeout_s: float = 10.0


@dataclass(frozen=True)
class OtlpSettings:
    #: the local OTLP/HTTP receiver for Claude Code's own telemetry (tray_app/otlp)
    receiver_enabled: bool = True
    #: loopback only: 127.0.0.1, ::1 or localhost (anything else is refused)
    receiver_host: str = "127.0.0.1"
    receiver_port: int = 4318
    #: a request body (and a gzip body once decompressed) larger than this gets 413
    receiver_max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    redis: RedisSettings = field(default_factory=RedisSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    monitors: MonitorSettings = field(default_factory=MonitorSettings)
    tray: TraySettings = field(default_factory=TraySettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    otlp: OtlpSettings = field(default_factory=OtlpSettings)
    paths: Paths = field(default_factory=resolve_paths)
    #: where the settings came from: the file path, or "defaults" when it does not exist
    source: str = "defaults"


SECTIONS: dict[str, type] = {
    "redis": RedisSettings,
    "ingest": IngestSettings,
    "capture": CaptureSettings,
    "monitors": MonitorSettings,
    "tray": TraySettings,
    "retention": RetentionSettings,
    "logging": LoggingSettings,
    "export": ExportSettings,
    "otlp": OtlpSettings,
}

#: (min, max) inclusive, for numeric settings; absent = any value >= 0
RANGES: dict[str, tuple[float, float]] = {
    "redis.socket_timeout_s": (0.1, 300),
    "redis.connect_timeout_s": (0.05, 60),
    "ingest.batch_size_min": (1, 100_000),
    "ingest.batch_size_max": (1, 100_000),
    "ingest.flush_interval_ms": (1, 60_000),
    "ingest.block_ms": (1, 60_000),
    "ingest.target_commit_ms": (1, 60_000),
    "ingest.claim_idle_ms": (100, 86_400_000),
    "ingest.claim_interval_s": (0.1, 86_400),
    "ingest.max_retries": (1, 1000),
    "ingest.max_entry_bytes": (1024, 512 * 1024 * 1024),
    "ingest.max_batch_bytes": (64 * 1024, 4 * 1024 * 1024 * 1024),
    "ingest.cdc_maxlen": (100, 100_000_000),
    "ingest.dlq_maxlen": (10, 100_000_000),
    "ingest.dlq_max_bytes": (64 * 1024, 1024 * 1024 * 1024 * 1024),
    "ingest.trim_interval_s": (0.1, 86_400),
    "ingest.backoff_initial_s": (0.01, 60),
    "ingest.backoff_max_s": (0.1, 3600),
    "ingest.spool_drain_interval_s": (0.1, 3600),
    "ingest.health_publish_interval_s": (0.1, 60),
    "capture.max_input_bytes": (1024, 64 * 1024 * 1024),
    "capture.hook_timeout_ms": (1, 5000),
    "monitors.poll_interval_s": (0.05, 3600),
    "monitors.session_idle_timeout_s": (1, 30 * 86_400),
    "tray.notify_interval_s": (0, 86_400),
    "tray.dlq_warn_threshold": (1, 10_000_000),
    "tray.spool_warn_threshold": (1, 10_000_000),
    "retention.raw_days": (0, 36_500),
    "retention.usage_days": (0, 36_500),
    "retention.max_db_mb": (0, 100_000_000),
    "retention.cap_low_water_pct": (10, 99),
    "retention.cap_warn_pct": (1, 100),
    "retention.disk_warn_free_mb": (0, 100_000_000),
    "retention.disk_warn_free_pct": (0, 100),
    "retention.check_interval_s": (0.1, 86_400),
    "retention.batch_rows": (1, 100_000),
    "retention.batch_ms": (0.1, 10_000),
    "retention.vacuum_pages": (1, 1_000_000),
    "logging.max_bytes": (10_000, 1024 * 1024 * 1024),
    "logging.backup_count": (0, 100),
    "export.interval_s": (0.1, 86_400),
    "export.timeout_s": (0.5, 300),
    "otlp.receiver_port": (1, 65535),
    "otlp.receiver_max_body_bytes": (1024, 1024 * 1024 * 1024),
}

#: urls may carry a password; export headers carry the collector's credentials
SECRET_KEYS = {"redis.url", "export.headers"}


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _expected(key: str, typ: Any) -> str:
    lo_hi = RANGES.get(key)
    if get_origin(typ) is Literal:
        return "one of " + ", ".join(f'"{a}"' for a in get_args(typ))
    if typ is bool:
        return "true or false"
    if typ is int:
        return f"an integer from {int(lo_hi[0])} to {int(lo_hi[1])}" if lo_hi else "an integer"
    if typ is float:
        return f"a number from {lo_hi[0]:g} to {lo_hi[1]:g}" if lo_hi else "a number"
    if get_origin(typ) is list:
        return "a list of strings"
    return "a string"


def _check_value(key: str, typ: Any, value: Any, where: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{where}: {key}: expected {_expected(key, typ)}, found {_describe(value)}")

    if get_origin(typ) is Literal:
        if value not in get_args(typ):
            raise bad()
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if typ in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if typ is int and not isinstance(value, int):
            raise bad()
        lo, hi = RANGES.get(key, (0, float("inf")))
        if not lo <= value <= hi:
            raise bad()
        return typ(value)
    if get_origin(typ) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        return list(value)
    if not isinstance(value, str):
        raise bad()
    return value


def _parse_env(typ: Any, raw: str) -> Any:
    """Environment values are strings; convert them to the setting's type
    (leaving them as-is when they do not parse, so validation names them)."""
    if typ is bool:
        low = raw.strip().lower()
        return {"1": True, "true": True, "yes": True, "on": True,
                "0": False, "false": False, "no": False, "off": False}.get(low, raw)
    if typ is int:
        try:
            return int(raw.strip())
        except ValueError:
            return raw
    if typ is float:
        try:
            return float(raw.strip())
        except ValueError:
            return raw
    if get_origin(typ) is list:
        return [p for p in raw.split(os.pathsep) if p]
    return raw


def validate_redis_url(url: str, where: str) -> None:
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{where}: redis.url: expected a redis://, rediss:// or unix:// URL, "
            f"found scheme {parts.scheme + '://' if parts.scheme else 'none'} in {mask_url(url)!r}")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(f"{where}: redis.url: expected unix:///path/to/socket, found no socket path")
    if parts.scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ConfigError(f"{where}: redis.url: expected a host in {mask_url(url)!r}")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{where}: redis.url: expected a port number, found {mask_url(url)!r}") from None


def parse_headers(text: str, where: str) -> dict[str, str]:
    """``name=value,name2=value2`` (OTEL_EXPORTER_OTLP_HEADERS format, %-decoded)
    as a dict. The error names the entry by position, never its value."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for i, part in enumerate(p for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        name = unquote(name.strip())
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ConfigError(f"{where}: export.headers: expected name=value pairs separated by commas, "
                              f"entry {i + 1} is not one (the values are not shown: they are secret)")
        out[name] = unquote(value.strip())
    return out


def mask_headers(text: str) -> str:
    """``name=***`` for every header: names are kept, values never shown."""
    return ",".join(f"{p.partition('=')[0].strip()}=***" for p in text.split(",") if p.strip())


def validate_export(export: "ExportSettings", where: str, headers_where: str | None = None) -> None:
    url = export.otlp_endpoint
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: export.otlp_endpoint: expected an http:// or https:// URL with a "
                              f"host, found {mask_url(url)!r}")
        if parts.username or parts.password:
            raise ConfigError(f"{where}: export.otlp_endpoint: credentials in the URL are not supported; "
                              f"put them in export.headers (e.g. Authorization=Bearer%20TOKEN)")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"{where}: export.otlp_endpoint: expected a port number, "
                              f"found {mask_url(url)!r}") from None
    parse_headers(export.headers, headers_where or where)


LOOPBACK_NAMES = ("localhost",)


def validate_loopback_host(host: str, where: str) -> None:
    """The OTLP receiver listens on loopback only: nothing else on the network may send events."""
    import ipaddress

    try:
        loopback = host.lower() in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(f"{where}: otlp.receiver_host: expected a loopback address (127.0.0.1, ::1 "
                          f"or localhost), found {_describe(host)}")


def mask_url(url: str) -> str:
    """The url with any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" not in netloc:
        masked = url
    else:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
        masked = f"{scheme}://{user}:***@{host}{slash}{tail}"
    # unix:///path?password=...
    return re.sub(r"(password=)[^&]*", r"\1***", masked)


def _build_section(name: str, cls: type, data: dict[str, Any], where: str,
                   env: dict[str, str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: [{name}] {key}: unknown key "
                              f"(expected one of: {', '.join(sorted(known))})")
        values[key] = _check_value(f"{name}.{key}", _resolve_type(cls, key), value, where)
    for key in known:
        var = f"{ENV_PREFIX}{name.upper()}_{key.upper()}"
        if var in env:
            typ = _resolve_type(cls, key)
            values[key] = _check_value(f"{name}.{key}", typ, _parse_env(typ, env[var]), var)
    return cls(**values)


def _resolve_type(cls: type, key: str) -> Any:
    import typing

    return typing.get_type_hints(cls)[key]


def load_config(config_file: str | os.PathLike[str] | None = None,
                environ: dict[str, str] | None = None) -> Config:
    """Load, validate and return the effective configuration."""
    env = dict(os.environ if environ is None else environ)
    paths = resolve_paths(config_file, env)
    path = paths.config_file
    where = str(path)
    data: dict[str, Any] = {}
    explicit = bool(config_file or env.get("TELEMETRY_TRAY_CONFIG"))
    if path.exists() or explicit:
        import tomllib  # only when there is a file: most commands run on the defaults

        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{where}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{where}: expected a config file, found a directory") from None
        except PermissionError:
            raise ConfigError(f"{where}: cannot read config file (permission denied)") from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read config file ({exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not valid TOML: {exc}") from None
        source = where
    else:
        source = "defaults"
    for name, value in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{where}: [{name}]: unknown section "
                              f"(expected one of: {', '.join(SECTIONS)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {name}: expected a [{name}] table, found {_describe(value)}")
    built = {name: _build_section(name, cls, data.get(name, {}), where, env)
             for name, cls in SECTIONS.items()}
    url_where = f"{ENV_PREFIX}REDIS_URL" if f"{ENV_PREFIX}REDIS_URL" in env else where
    validate_redis_url(built["redis"].url, url_where)
    validate_export(built["export"], *(f"{ENV_PREFIX}EXPORT_{k}" if f"{ENV_PREFIX}EXPORT_{k}" in env else where
                                       for k in ("OTLP_ENDPOINT", "HEADERS")))
    host_where = f"{ENV_PREFIX}OTLP_RECEIVER_HOST" if f"{ENV_PREFIX}OTLP_RECEIVER_HOST" in env else where
    validate_loopback_host(built["otlp"].receiver_host, host_where)
    ing: IngestSettings = built["ingest"]
    if ing.batch_size_min > ing.batch_size_max:
        raise ConfigError(f"{where}: ingest.batch_size_min: expected at most batch_size_max "
                          f"({ing.batch_size_max}), found {ing.batch_size_min}")
    ret: RetentionSettings = built["retention"]
    if ret.cap_low_water_pct >= ret.cap_warn_pct:
        raise ConfigError(f"{where}: retention.cap_low_water_pct: expected below cap_warn_pct "
                          f"({ret.cap_warn_pct}), found {ret.cap_low_water_pct}")
    return Config(paths=paths, source=source, **built)


def masked_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """The effective settings as plain data, secrets masked."""
    out: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        section = getattr(cfg, name)
        values = {}
        for f in fields(section):
            v = getattr(section, f.name)
            if f"{name}.{f.name}" in SECRET_KEYS and isinstance(v, str):
                v = mask_headers(v) if f"{name}.{f.name}" == "export.headers" else mask_url(v)
            values[f.name] = v
        out[name] = values
    return out


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, v in values.items():
            lines.append(f"{key} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


TEMPLATE_HEADER = """\
# Telemetry Tray configuration.
# Every key is optional; the values shown are the defaults.
# Any key can also be set from the environment as TELEMETRY_TRAY_<SECTION>_<KEY>,
# e.g. TELEMETRY_TRAY_REDIS_URL=redis://127.0.0.1:6379/0 (environment wins).
"""

COMMENTS = {
    "redis": "Empty url: the app runs its own private Redis-compatible server (unix socket,\n"
             "# random password, append-only file). Set url to use a Redis you already run:\n"
             "# redis://[:password@]host:port/db, rediss://... (TLS), unix:///path/to/socket.",
    "ingest": "How the engine moves events from the stream into SQLite.",
    "capture": 'What hooks keep of your content: "full", "hash" (sha256 only) or "none".',
    "monitors": "Readers of Cursor's state.vscdb and Claude Code's transcripts.",
    "tray": "Desktop notifications: at most one of each kind per notify_interval_s.",
    "retention": "How long telemetry.db keeps raw events (days; 0 = forever), an optional size cap\n"
                 "# (MB; 0 = none), and when the tray warns about the cap or a nearly full disk.",
    "logging": "Rotating log file in the log directory (telemetry-tray paths).",
    "export": "Opt-in: aggregated usage metrics (tokens, cost, requests, prompts, sessions, tool\n"
              "# calls per model, assistant and project hash; never content or paths) to a team's\n"
              "# OpenTelemetry Collector over OTLP/HTTP. Empty otlp_endpoint: nothing is sent.",
    "otlp": "The local OTLP/HTTP receiver for Claude Code's own telemetry (loopback only;\n"
            "# see docs/operations.md: point OTEL_EXPORTER_OTLP_ENDPOINT at http://127.0.0.1:4318).",
}


def template() -> str:
    """A commented config file with every default, commented out."""
    defaults = {name: {f.name: getattr(cls(), f.name) for f in fields(cls)}
                for name, cls in SECTIONS.items()}
    parts = [TEMPLATE_HEADER]
    for section, values in defaults.items():
        parts.append(f"# {COMMENTS[section]}")
        parts.append(f"[{section}]")
        for key, v in values.items():
            parts.append(f"# {key} = {_toml_value(v)}")
        parts.append("")
    return "\n".join(parts)


def write_template(path: Path) -> bool:
    """Write the template; never overwrite. Returns False if the file exists."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(template())
    return True


__all__ = ["Config", "load_config", "masked_dict", "mask_url", "mask_headers", "parse_headers", "template", "write_template",
           "to_toml", "replace"]
