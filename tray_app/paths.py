"""Every filesystem location the app uses, resolved in one place.

Default locations come from platformdirs (app name ``telemetry-tray``).
``TELEMETRY_TRAY_HOME=/dir`` puts every path under that one directory, which
is what tests and portable installs use. ``TELEMETRY_TRAY_CONFIG`` (or the
``--config`` option) picks another config file without moving the rest.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from tray_app import APP_NAME
from tray_app.errors import UnsafeDirectory

HOME_ENV = "TELEMETRY_TRAY_HOME"
CONFIG_ENV = "TELEMETRY_TRAY_CONFIG"


@dataclass(frozen=True)
class Paths:
    config_file: Path
    config_dir: Path
    data_dir: Path
    database: Path
    state_dir: Path
    spool_dir: Path
    log_dir: Path
    log_file: Path
    runtime_dir: Path
    redis_dir: Path
    endpoint_file: Path
    lock_file: Path

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    def ensure(self) -> None:
        """Create the app's directories, user-only (0700)."""
        for d in (self.config_dir, self.data_dir, self.state_dir, self.spool_dir,
                  self.log_dir, self.runtime_dir, self.redis_dir):
            make_private_dir(d)


def private_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a private directory of ours, or None when it is one:
    it must exist, not be a symbolic link (checked with lstat), be a
    directory owned by the current user, with no group or other permission
    bits (0700). Windows has no uid/mode bits: only existence and type count."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if os.name == "nt":
        return None
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}, not 0700"
    return None


def ancestors_problem(path: str | os.PathLike[str]) -> str | None:
    """Why another user could swap ``path`` for a directory of their own, or
    None: every directory above it (symlinks resolved) must belong to root or
    to us, and be writable by nobody else unless it is sticky (like /tmp)."""
    if os.name == "nt":
        return None
    here = Path(os.path.realpath(Path(path).parent))
    uid = os.getuid()
    for d in (here, *here.parents):
        try:
            st = os.stat(d)
        except OSError as exc:
            return f"{d} cannot be checked ({exc.strerror or exc})"
        if st.st_uid not in (0, uid):
            return f"{d} is owned by uid {st.st_uid}"
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return f"{d} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def make_private_dir(path: Path) -> None:
    """Create ``path`` (0700), or check that the existing one is ours and private.

    An existing directory of ours with group/other bits is chmod-ed to 0700;
    one that belongs to someone else, stays open after the chmod, or is a
    symbolic link raises UnsafeDirectory: the caller must not put private
    files (sockets, passwords, events) there."""
    path = Path(path)
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    problem = private_dir_problem(path)
    if problem and problem.startswith("has mode"):
        try:  # through a descriptor opened without following a symlink
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
            try:
                os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
        except OSError:
            pass
        problem = private_dir_problem(path)
    if problem:
        raise UnsafeDirectory(f"{path} {problem}; refusing to keep private files there "
                              f"(remove it, or make it yours with mode 0700)")


def _base_dirs(home: str | None) -> dict[str, Path]:
    if home:
        root = Path(home).expanduser().resolve()
        return {
            "config": root / "config",
            "data": root / "data",
            "state": root / "state",
            "log": root / "logs",
            "runtime": root / "run",
        }
    import platformdirs

    dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
    with warnings.catch_warnings():
        # no XDG_RUNTIME_DIR (ssh, cron, containers): platformdirs warns on every
        # command and falls back to /tmp/runtime-<uid>, which the socket-directory
        # checks vet like any other directory
        warnings.simplefilter("ignore")
        runtime = Path(dirs.user_runtime_dir)
    return {
        "config": Path(dirs.user_config_dir),
        "data": Path(dirs.user_data_dir),
        "state": Path(dirs.user_state_dir),
        "log": Path(dirs.user_log_dir),
        "runtime": runtime,
    }


def resolve_paths(config_file: str | os.PathLike[str] | None = None,
                  environ: dict[str, str] | None = None) -> Paths:
    """Resolve every path. ``config_file`` (the --config option) wins over
    ``TELEMETRY_TRAY_CONFIG``, which wins over ``<config dir>/config.toml``."""
    env = os.environ if environ is None else environ
    base = _base_dirs(env.get(HOME_ENV) or None)
    chosen = config_file or env.get(CONFIG_ENV) or None
    cfg = Path(chosen).expanduser().absolute() if chosen else base["config"] / "config.toml"
    state = base["state"]
    runtime = base["runtime"]
    # A unix socket path must stay under ~100 bytes; when run/redis is too deep
    # the managed server puts its socket in a private directory of its own
    # choosing (redis_server.ManagedServer._choose_socket_dir).
    redis_dir = runtime / "redis"
    return Paths(
        config_file=cfg,
        config_dir=base["config"],
        data_dir=base["data"],
        database=base["data"] / "telemetry.db",
        state_dir=state,
        spool_dir=state / "spool",
        log_dir=base["log"],
        log_file=base["log"] / "telemetry-tray.log",
        runtime_dir=runtime,
        redis_dir=redis_dir,
        endpoint_file=state / "redis-endpoint.json",
        lock_file=runtime / "telemetry-tray.lock",
    )
