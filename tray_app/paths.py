"""Every filesystem location the app uses, resolved in one place.

Default locations come from platformdirs (app name ``telemetry-tray``).
``TELEMETRY_TRAY_HOME=/dir`` puts every path under that one directory, which
is what tests and portable installs use. ``TELEMETRY_TRAY_CONFIG`` (or the
``--config`` option) picks another config file without moving the rest.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tray_app import APP_NAME

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


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError:
        pass


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
    # A unix socket path must stay under ~100 bytes; deep temp dirs in tests
    # can exceed that, so the socket lives in a short per-user dir then.
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
