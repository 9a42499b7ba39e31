"""The OTLP/HTTP receiver: Claude Code's own telemetry onto ``telemetry:events``.

One thread of the engine (``otlp-receiver``, watched by the Supervisor) owns a
``ThreadingHTTPServer`` on a loopback address (``[otlp] receiver_host`` /
``receiver_port``, 127.0.0.1:4318 by default) and serves until ``stop()``
(which only signals: the loop looks at the flag between requests, every
``POLL_S``). Each request runs on a thread of its own.

A request: loopback peer and Host header (else 403) -> path (404) / method (405) -> content
type (415) -> Content-Length against ``receiver_max_body_bytes`` (413, body
not read) -> gzip (413 past the cap once decompressed) -> decode (400) ->
events (mapping.py) -> XADD through the monitors' Emitter, or, when Redis
cannot take them, one spool file per event as the hooks write them (the
engine's spool drain sends them later) -> the OTLP success reply. Only when
neither works is the answer 503, and the exporter retries: the ids are
deterministic, so a retry never makes a second row.

A port in use is not an error of the engine: the receiver says so in health
(``otlp_receiver``) and the log, and tries again with backoff; the rest of
the engine runs as usual.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tray_app import events
from tray_app.capture import spoolfile
from tray_app.config import Config
from tray_app.engine.backoff import Backoff
from tray_app.errors import RedisUnavailable
from tray_app.monitors.emit import Emitter, payload_budget
from tray_app.otlp import mapping, metrics, wire
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)

#: how often the serving loop looks at the stop flag
POLL_S = 0.25
#: a client that sends nothing for this long is dropped
SOCKET_TIMEOUT_S = 10.0
#: the same rejection is logged at most once per this many seconds
LOG_REPEAT_S = 60.0
#: after refusing a body unread, what the client still sends is discarded this long at most
DRAIN_S = 2.0
METHODS = ("GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def is_loopback_name(host_header: str | None) -> bool:
    """The request's ``Host`` names this machine (localhost or a loopback address),
    or is absent. A web page whose own name an attacker's DNS turned into
    127.0.0.1 (DNS rebinding) reaches a loopback socket with its own name here:
    refused, so no web site can write events into the record."""
    if host_header is None:
        return True
    host = host_header.strip()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.lower() == "localhost" or is_loopback(host)


def bind_host(host: str) -> str:
    return "127.0.0.1" if host.lower() == "localhost" else host


def describe_bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} in use: {exc.strerror or exc} (another program listens on {host}:{port})"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {host}:{port}: permission denied"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


class Stats:
    """The receiver's counters, published to health on every change. Kept
    across restarts of the thread (the supervisor hands them to the new one)."""

    def __init__(self, health: Any) -> None:
        self.health = health
        self._lock = threading.Lock()
        self.state = "starting"
        self.accepted = 0
        self.rejected = 0
        self.events = 0
        self.records_rejected = 0
        self.last_rejection = ""
        self._logged: dict[str, float] = {}

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state
        self._publish()

    def ok(self, n_events: int, records_rejected: int) -> None:
        with self._lock:
            self.accepted += 1
            self.events += n_events
            self.records_rejected += records_rejected
        self._publish()

    def refused(self, status: int, reason: str, peer: str) -> None:
        line = f"{status} {reason}"
        with self._lock:
            self.rejected += 1
            self.last_rejection = line
            now = time.monotonic()
            quiet = now - self._logged.get(line, -LOG_REPEAT_S) < LOG_REPEAT_S
            if not quiet:
                self._logged[line] = now
                if len(self._logged) > 100:
                    self._logged.clear()
        if not quiet:
            log.warning("otlp receiver: refused a request from %s: %s", peer, line)
        self._publish()

    def _publish(self) -> None:
        # under the lock: two request threads never publish their counts out of order
        with self._lock:
            self.health.update(otlp_receiver=self.state, otlp_requests_accepted=self.accepted,
                               otlp_requests_rejected=self.rejected, otlp_events_received=self.events,
                               otlp_records_rejected=self.records_rejected,
                               otlp_last_rejection=self.last_rejection)


class Delivery:
    """Events onto the stream (validated, pipelined XADD), or into the spool."""

    def __init__(self, cfg: Config, endpoint: Endpoint) -> None:
        self.emitter = Emitter(endpoint, socket_timeout_s=cfg.redis.socket_timeout_s,
                               connect_timeout_s=cfg.redis.connect_timeout_s)
        self.spool_dir = str(cfg.paths.spool_dir)
        self._lock = threading.Lock()  # one Redis connection, shared by the request threads

    def deliver(self, evs: list[dict[str, Any]]) -> str:
        """"sent" or "spooled"; raises OSError when the spool cannot be written either."""
        with self._lock:
            try:
                self.emitter.emit(evs)
                return "sent"
            except RedisUnavailable as exc:
                log.warning("otlp receiver: %s; spooling %d events", exc, len(evs))
        # Some may have reached Redis before the failure: same event_id, stored once.
        for ev in evs:
            fields = events.encode(ev)
            spoolfile.write(self.spool_dir, fields["event_id"], orjson.dumps(fields))
        return "spooled"

    def close(self) -> None:
        with self._lock:
            self.emitter.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: exporters reuse their connection
    server_version = "telemetry-tray-otlp"
    sys_version = ""
    timeout = SOCKET_TIMEOUT_S
    server: "_Server"
    #: this request's body was read (one handler serves every request of a connection)
    _body_read = False

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("otlp receiver: %s " + format, self.address_string(), *args)

    # -- replies ---------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, *, close: bool = False,
              allow: str | None = None) -> None:
        self.send_response(status)
        if allow:
            self.send_header("Allow", allow)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if close and self._has_body() and not self._body_read:
            self._drain()

    def _refuse(self, status: int, reason: str, kind: str | None, *, close: bool = False,
                allow: str | None = None) -> None:
        self.server.receiver.stats.refused(status, reason, self.client_address[0])
        code = wire.CODE_UNAVAILABLE if status >= 500 else wire.CODE_INVALID_ARGUMENT
        body, content_type = wire.status(code, reason, kind)
        self._send(status, body, content_type, close=close, allow=allow)

    def _drain(self) -> None:
        """A refused body is never read into memory, but the client may still be
        sending it: end our side, then discard what arrives for a moment, so the
        close does not reset the connection before the client read the reply."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(DRAIN_S)
            deadline = time.monotonic() + DRAIN_S
            while time.monotonic() < deadline and self.connection.recv(65536):
                pass
        except OSError:
            pass

    # -- methods ---------------------------------------------------------------------------

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _other_method(self) -> None:
        self._body_read = False
        if not is_loopback(self.client_address[0]):
            self._refuse(403, "only loopback clients may send telemetry", None, close=True)
        elif self._path() in wire.SIGNALS:
            self._refuse(405, f"method {self.command} not allowed (POST only)", None, allow="POST",
                         close=self._has_body())
        else:
            self._refuse(404, f"no such path {self._path()[:100]!r} (/v1/logs, /v1/metrics)", None,
                         close=self._has_body())

    def _has_body(self) -> bool:
        return bool(self.headers.get("Content-Length", "0").strip() not in ("", "0")
                    or self.headers.get("Transfer-Encoding"))

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other_method

    def do_POST(self) -> None:
        self._body_read = False
        kind = wire.media_type(self.headers.get("Content-Type"))
        try:
            path, body = self._read(kind)
            receiver = self.server.receiver
            request = wire.parse(path, kind or wire.PROTOBUF,
                                 wire.decompress(body, self.headers.get("Content-Encoding"),
                                                 receiver.max_body_bytes))
            del body
            result = receiver.handle(path, request)
        except wire.Refused as exc:
            self._refuse(exc.status, exc.reason, kind, close=exc.status in (403, 404, 411, 413, 415)
                         or self.close_connection)
            return
        except OSError as exc:  # the spool could not be written either: the exporter retries
            self._refuse(503, f"cannot store events now: {exc}", kind)
            return
        except Exception as exc:  # noqa: BLE001 - a bug here is this request's problem only
            log.exception("otlp receiver: request failed")
            self._refuse(500, f"internal error: {type(exc).__name__}", kind)
            return
        self._send(200, wire.success(path, kind or wire.PROTOBUF, result.rejected, result.message),
                   kind or wire.PROTOBUF)

    def _read(self, kind: str | None) -> tuple[str, bytes]:
        """The checks before the body, then the body (at most the cap, or refused unread)."""
        if not is_loopback(self.client_address[0]):
            raise wire.Refused(403, "only loopback clients may send telemetry")
        if not is_loopback_name(self.headers.get("Host")):
            raise wire.Refused(403, f"Host {str(self.headers.get('Host'))[:60]!r} is not this machine "
                                    "(localhost or a loopback address)")
        path = self._path()
        if path not in wire.SIGNALS:
            raise wire.Refused(404, f"no such path {path[:100]!r} (/v1/logs, /v1/metrics)")
        if kind is None:
            raise wire.Refused(415, f"Content-Type {str(self.headers.get('Content-Type'))[:60]!r} is not "
                                    f"{wire.PROTOBUF} or {wire.JSON}")
        if self.headers.get("Transfer-Encoding"):
            raise wire.Refused(411, "chunked bodies are not supported: send Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise wire.Refused(411, "Content-Length is required")
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            raise wire.Refused(400, f"Content-Length {length_text[:30]!r} is not a byte count") from None
        cap = self.server.receiver.max_body_bytes
        if length > cap:
            raise wire.Refused(413, f"body of {length} bytes is over the limit of {cap} bytes "
                                    "(otlp.receiver_max_body_bytes)")
        try:
            body = self.rfile.read(length)
        except OSError:  # timed out, or reset: nothing to answer on a dead connection
            self.close_connection = True
            raise wire.Refused(408, f"the body did not arrive within {SOCKET_TIMEOUT_S:.0f} s") from None
        self._body_read = True
        if len(body) < length:
            self.close_connection = True
            raise wire.Refused(400, f"body ended after {len(body)} of {length} bytes")
        return path, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    timeout = POLL_S
    receiver: "OtlpReceiver"

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn): not needed, and slow without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("otlp receiver: connection from %s failed", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


def make_server(host: str, port: int) -> _Server:
    host = bind_host(host)
    cls = _Server6 if ":" in host else _Server
    return cls((host, port), Handler)


class OtlpReceiver(threading.Thread):
    def __init__(self, cfg: Config, endpoint: Endpoint, health: Any, *, stats: Stats | None = None,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 30.0,
                 host: str | None = None) -> None:
        super().__init__(name="otlp-receiver", daemon=True)
        self.cfg = cfg
        self.host = bind_host(host or cfg.otlp.receiver_host)
        self.port = cfg.otlp.receiver_port
        self.max_body_bytes = cfg.otlp.receiver_max_body_bytes
        self.stats = stats or Stats(health)
        self.settings = mapping.capture_settings(
            cfg.capture, min(cfg.capture.max_input_bytes, payload_budget(cfg.ingest.max_entry_bytes)))
        self.delivery = Delivery(cfg, endpoint)
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._stopping = threading.Event()
        self.listening = threading.Event()
        self.server: _Server | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._stopping.set()

    def handle(self, path: str, request: Any) -> mapping.Mapped:
        """A decoded request -> events on the stream (or in the spool)."""
        mapper = mapping.map_logs if path == wire.LOGS_PATH else metrics.map_metrics
        result = mapper(request, self.settings)
        if result.events:
            self.delivery.deliver(result.events)
        self.stats.ok(len(result.events), result.rejected)
        return result

    def run(self) -> None:
        server = self._bind()
        if server is None:
            return
        try:
            while not self._stopping.is_set():
                server.handle_request()
        finally:
            server.server_close()
            self.delivery.close()
            self.listening.clear()
            self.stats.set_state("stopped")

    def _bind(self) -> _Server | None:
        last = ""
        while not self._stopping.is_set():
            try:
                server = make_server(self.host, self.port)
            except OSError as exc:
                problem = describe_bind_error(self.host, self.port, exc)
                delay = self._backoff.next_delay()
                if problem != last:
                    log.error("otlp receiver: %s; the rest of the app runs on, retrying", problem)
                    last = problem
                self.stats.set_state(f"{problem} (retrying every {self._backoff.max_s:.0f} s at most)")
                if self._stopping.wait(delay):
                    return None
                continue
            server.receiver = self
            self.server = server
            self.listening.set()
            self._backoff.reset()
            self.stats.set_state(f"listening on {self.url}")
            log.info("otlp receiver: listening on %s (/v1/logs, /v1/metrics)", self.url)
            return server
        return None


__all__ = ["OtlpReceiver", "Stats", "describe_bind_error", "is_loopback", "make_server"]
