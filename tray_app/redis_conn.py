"""Connecting to Redis: which server (private or the user's), the endpoint
file hooks read, the version check and idempotent stream setup."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import redis

from tray_app.config import Config, mask_url
from tray_app.errors import ConfigError, RedisUnavailable
from tray_app.fileutil import atomic_write
from tray_app.redis_server import ManagedServer, check_version, no_retry

log = logging.getLogger(__name__)

EVENTS_STREAM = "telemetry:events"
GROUP = "processors"
DLQ_STREAM = "telemetry:dlq"
CDC_STREAM = "cdc:events"
HEALTH_KEY = "telemetry:health"
DLQ_DROPPED_KEY = "telemetry:dlq:dropped"
STREAMS = (EVENTS_STREAM, DLQ_STREAM, CDC_STREAM)


def text(value: bytes | str | int) -> str:
    """A reply value as str (replies are bytes: clients use decode_responses=False)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def close_quietly(client: redis.Redis | None) -> None:
    """Close a client whose socket may already be broken."""
    if client is not None:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass


class LazyClient:
    """One thread's connection: made on first use with the thread's timeouts,
    closed and forgotten after a failure (the next use reconnects). ``generation``
    counts connections made, so state tied to one (a loaded script) can tell."""

    def __init__(self, endpoint: "Endpoint", *, socket_timeout: float, connect_timeout: float) -> None:
        self.endpoint = endpoint
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.generation = 0
        self._client: redis.Redis | None = None

    def get(self) -> redis.Redis:
        if self._client is None:
            self._client = self.endpoint.client(socket_timeout=self.socket_timeout,
                                                connect_timeout=self.connect_timeout)
            self.generation += 1
        return self._client

    def drop(self) -> None:
        close_quietly(self._client)
        self._client = None


def stream_id_key(sid: str) -> tuple[int, int]:
    """A stream id ("ms-seq") as a sortable tuple."""
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Endpoint:
    url: str
    password: str | None
    managed: bool

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def client(self, socket_timeout: float = 5.0, connect_timeout: float = 2.0,
               **kwargs: object) -> redis.Redis:
        kw: dict = {"socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
                    "health_check_interval": 0, "retry": no_retry()}
        kw.update(kwargs)
        if self.password is not None:
            kw["password"] = self.password
        return redis.Redis.from_url(self.url, **kw)


def wants_managed(cfg: Config) -> bool:
    mode = cfg.redis.managed
    if mode == "always":
        return True
    if mode == "never":
        if not cfg.redis.url:
            raise ConfigError(f"{cfg.source}: redis.url: expected a URL because managed = \"never\", "
                              f"found none (set it, or TELEMETRY_TRAY_REDIS_URL)")
        return False
    return not cfg.redis.url


def endpoint_from_url(url: str) -> Endpoint:
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    if parts.scheme == "unix":
        # unix://[:password@]/path?password=...
        m = re.search(r"(?:^|&)password=([^&]*)", parts.query or "")
        if m:
            password = unquote(m.group(1))
    return Endpoint(url=url, password=password, managed=False)


def write_endpoint_file(cfg: Config, ep: Endpoint) -> None:
    """The file hooks read to find the server (0600: it holds the password)."""
    data = {"url": ep.url, "password": ep.password or "", "managed": ep.managed, "pid": os.getpid()}
    atomic_write(cfg.paths.endpoint_file, json.dumps(data))


def read_endpoint_file(cfg: Config) -> Endpoint | None:
    try:
        data = json.loads(cfg.paths.endpoint_file.read_text())
        return Endpoint(url=str(data["url"]), password=data.get("password") or None,
                        managed=bool(data.get("managed")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RedisProvider:
    """Owns the decision and, when managed, the private server.

    ``start()`` returns the endpoint to use; ``stop()`` shuts down a server
    this process owns. ``start(spawn=False)`` only finds a running server
    (for commands such as ``status`` that must not start one). Only the app
    (``take_ownership=True``, the default) writes the endpoint file."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.server: ManagedServer | None = None
        self.endpoint: Endpoint | None = None
        self._lock = threading.Lock()
        self._ping_client: redis.Redis | None = None

    def start(self, spawn: bool = True, take_ownership: bool = True,
              write_endpoint: bool | None = None) -> Endpoint:
        """The endpoint to use. The endpoint file the hooks read is published
        by the owner only: ``write_endpoint`` defaults to ``take_ownership``,
        so a command that borrows the server (``init``, ``dlq``, ``status``)
        never rewrites what the running app wrote."""
        cfg = self.cfg
        if write_endpoint is None:
            write_endpoint = take_ownership
        if wants_managed(cfg):
            server = ManagedServer(cfg.paths, server_binary=cfg.redis.server_binary)
            if spawn:
                server.start(take_ownership=take_ownership)
            elif not server._try_adopt(take_ownership=False):
                raise RedisUnavailable("the app's private Redis is not running "
                                       "(start the app, or run `telemetry-tray init`)")
            self.server = server
            ep = Endpoint(url=server.url, password=server.password(), managed=True)
        else:
            ep = endpoint_from_url(cfg.redis.url)
        self.endpoint = ep
        if write_endpoint:
            write_endpoint_file(cfg, ep)
        return ep

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop the private server if we own it, within about ``timeout_s``."""
        with self._lock:
            close_quietly(self._ping_client)
            self._ping_client = None
        if self.server is not None:
            if timeout_s is None:
                self.server.stop()
            else:
                self.server.stop(timeout_s=timeout_s)

    # -- supervision -------------------------------------------------------------------

    @property
    def last_recovery(self) -> str | None:
        """One line saying what the private server's last recovery set aside and
        where (a corrupt append-only file moved to ``data/redis/corrupt-<time>/``,
        or a truncated tail loaded with its last events lost), or None when
        nothing had to be recovered. It changes only when a new recovery happens
        (each message names its own directory), so a supervisor can notify the
        user once per value."""
        return self.server.last_recovery if self.server is not None else None

    def ensure_running(self) -> bool:
        """True when the server answers PING. Cheap when it does (one PING on a
        kept connection, no spawn), so a supervisor may call it every second.

        When the server is the private one and it does not answer, it is
        restarted with the same data directory, configuration, socket (or
        port) and password, so the endpoint file and the hooks keep working;
        returns whether it answers afterwards. For a Redis the user runs
        (``[redis] url``) it only pings. Never raises: a failure is logged and
        gives False. Call ``start()`` first."""
        try:
            if self._ping():
                return True
            server = self.server
            if server is None or self.endpoint is None or not self.endpoint.managed:
                return False
            with self._lock:
                if self._ping():  # another thread restarted it meanwhile
                    return True
                log.warning("managed redis: not answering; restarting it")
                server.restart()
                ep = Endpoint(url=server.url, password=server.password(), managed=True)
                self.endpoint = ep
                close_quietly(self._ping_client)  # the socket may have moved (a new socket dir)
                self._ping_client = None
                write_endpoint_file(self.cfg, ep)
            return self._ping()
        except Exception as exc:  # noqa: BLE001 - a supervisor's probe must never raise
            log.warning("managed redis: could not bring it back: %s", exc)
            return False

    def _ping(self) -> bool:
        ep = self.endpoint
        if ep is None:
            return False
        try:
            if self._ping_client is None:
                self._ping_client = ep.client(socket_timeout=1.0, connect_timeout=1.0)
            return bool(self._ping_client.ping())
        except (redis.RedisError, OSError):
            close_quietly(self._ping_client)
            self._ping_client = None
            return False


def translate(exc: BaseException, ep: Endpoint | None = None) -> RedisUnavailable:
    where = f" at {ep.masked}" if ep else ""
    if isinstance(exc, redis.AuthenticationError):
        return RedisUnavailable(f"Redis{where} rejected the password (check redis.url)")
    if isinstance(exc, redis.ResponseError) and "NOAUTH" in str(exc):
        return RedisUnavailable(f"Redis{where} needs a password (add it to redis.url)")
    return RedisUnavailable(f"Redis unreachable{where}: {exc}")


def server_version(client: redis.Redis) -> tuple[int, int, int]:
    info = client.info("server")
    text = str(info.get("valkey_version") or info.get("redis_version") or "0.0.0")
    nums = [int(x) for x in re.findall(r"\d+", text)[:3]] + [0, 0, 0]
    return nums[0], nums[1], nums[2]


def ensure_group(client: redis.Redis) -> bool:
    """Create the consumer group (and the stream) if missing. True when created."""
    try:
        client.xgroup_create(EVENTS_STREAM, GROUP, id="0", mkstream=True)
        return True
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False


def ensure_streams(client: redis.Redis) -> list[tuple[str, str]]:
    """Create, idempotently, our streams and the consumer group.
    Returns (thing, "created" | "found") pairs."""
    check_version(server_version(client), "the Redis server")
    report: list[tuple[str, str]] = []
    for stream in STREAMS:
        existed = bool(client.exists(stream))
        if not existed and stream != EVENTS_STREAM:
            # XADD + XDEL leaves an empty stream; MKSTREAM via a throwaway group is
            # the other way, but a stray group would hold back trimming.
            entry = client.xadd(stream, {"init": "1"})
            client.xdel(stream, entry)
        report.append((f"stream {stream}", "found" if existed else "created"))
        if stream == EVENTS_STREAM:
            created = ensure_group(client)
            report.append((f"group {GROUP} on {stream}", "created" if created else "found"))
    return report
