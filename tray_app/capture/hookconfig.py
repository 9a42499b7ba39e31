"""Where the hook finds its settings and the Redis endpoint, cheaply.

The hook honours the same files and variables as the app (tray_app.paths,
tray_app.config) without importing them: they pull in platformdirs,
dataclasses and tomllib, ~30 ms under ``python -I -S``. Instead:

* paths: the same rules as tray_app.paths.resolve_paths (TELEMETRY_TRAY_HOME,
  TELEMETRY_TRAY_CONFIG, else platformdirs' defaults, mirrored here;
  tests/test_hook_config.py checks the two agree). The installed command
  carries the home and config file of the app that installed it
  (``hook.py claude --home DIR --config FILE``); when it does, those win and
  the assistant's environment is not asked for either;
* config: the few hook settings are parsed with tomllib only when the config
  file changes, and cached in ``<state>/hook-settings.json`` keyed on the
  file's path, mtime and size;
* endpoint: TELEMETRY_TRAY_REDIS_URL, else the endpoint file the running app
  writes (``<state>/redis-endpoint.json``), else ``[redis] url``.

Privacy fails closed: a config file that cannot be read or parsed, or a
capture mode that is not "full", "hash" or "none", means "none" for the
affected content, never "full".

Standard library only; loaded as a top-level module by hook.py.
"""

import sys

try:
    import posix as _os
except ImportError:  # Windows
    import nt as _os  # type: ignore[no-redef]

try:
    from . import fastjson
except ImportError:
    import fastjson  # type: ignore[no-redef]

APP_NAME = "telemetry-tray"
ENV_PREFIX = "TELEMETRY_TRAY_"
CACHE_NAME = "hook-settings.json"
ENDPOINT_NAME = "redis-endpoint.json"
MODES = ("full", "hash", "none")
CAPTURE_KEYS = ("prompts", "responses", "file_contents", "shell_output")
#: defaults and ranges: the same as tray_app.config.CaptureSettings / RANGES
DEFAULTS = {
    "redis_url": "",
    "prompts": "full",
    "responses": "full",
    "file_contents": "full",
    "shell_output": "full",
    "max_input_bytes": 1024 * 1024,
    "hook_timeout_ms": 40,
}
RANGES = {"max_input_bytes": (1024, 64 * 1024 * 1024), "hook_timeout_ms": (1, 5000)}
_WINDOWS = sys.platform == "win32"
SEP = "\\" if _WINDOWS else "/"

# ----------------------------------------------------------------------------- environment

_environ = _os.environ  # bytes keys on POSIX (os.environ is what decodes them)


def getenv(name, environ=None):
    """A variable as str (None when unset), from ``environ`` or the process."""
    if environ is not None:
        return environ.get(name)
    if _WINDOWS:
        return _environ.get(name.upper())
    value = _environ.get(name.encode())
    return None if value is None else value.decode("utf-8", "surrogateescape")


def join(*parts):
    return SEP.join(p.rstrip("/\\") if i < len(parts) - 1 else p for i, p in enumerate(parts))


def _is_abs(path):
    return path.startswith("/") or (_WINDOWS and len(path) > 2 and path[1] == ":")


def _expand_user(path, environ):
    if path.startswith("~"):
        home = getenv("USERPROFILE" if _WINDOWS else "HOME", environ) or ""
        if home:
            return home.rstrip("/\\") + path[1:]
    return path


def _absolute(path, environ):
    path = _expand_user(path, environ)
    if not _is_abs(path):
        path = join(_os.getcwd(), path)
    return path


# ----------------------------------------------------------------------------- paths

def location_from_argv(argv):
    """{"home": DIR, "config": FILE} from the hook's own command line
    (``hook.py <assistant> [--home DIR] [--config FILE]``, as the installers
    write it), or None when it names neither. Only a command line whose
    program is hook.py counts (not a test runner's)."""
    if not argv or not str(argv[0]).replace("\\", "/").endswith("hook.py"):
        return None
    found = {}
    args = list(argv[2:])
    for i, arg in enumerate(args[:-1]):
        if arg in ("--home", "--config") and args[i + 1]:
            found[arg[2:]] = args[i + 1]
    return found or None


def _location(environ, argv):
    """(home or None, chosen config file or None): from the command line when
    it names them, else from the environment."""
    if argv is None and environ is None:
        argv = sys.argv
    loc = location_from_argv(argv)
    if loc is not None:
        return loc.get("home"), loc.get("config")
    return getenv(ENV_PREFIX + "HOME", environ), getenv(ENV_PREFIX + "CONFIG", environ)


def resolve(environ=None, argv=None):
    """(config_file, state_dir) by the rules of tray_app.paths.resolve_paths;
    the hook's ``--home`` / ``--config`` arguments win over the environment
    (``argv`` defaults to the process's when ``environ`` is not given)."""
    home, chosen = _location(environ, argv)
    if home:
        root = _absolute(home, environ)
        config_dir, state_dir = join(root, "config"), join(root, "state")
    elif _WINDOWS:
        base = getenv("LOCALAPPDATA", environ) or _expand_user("~\\AppData\\Local", environ)
        config_dir = state_dir = join(base, APP_NAME)
    else:
        if sys.platform == "darwin":
            support = _expand_user("~/Library/Application Support", environ)
            config_base = state_base = support
        else:
            config_base = _expand_user("~/.config", environ)
            state_base = _expand_user("~/.local/state", environ)
        # platformdirs: an XDG variable counts only when it is an absolute path
        xdg = getenv("XDG_CONFIG_HOME", environ) or ""
        config_dir = join(xdg if _is_abs(xdg) else config_base, APP_NAME)
        xdg = getenv("XDG_STATE_HOME", environ) or ""
        state_dir = join(xdg if _is_abs(xdg) else state_base, APP_NAME)
    config_file = _absolute(chosen, environ) if chosen else join(config_dir, "config.toml")
    return config_file, state_dir


# ----------------------------------------------------------------------------- files

def read_file(path, limit=1 << 20):
    """The bytes of a small file, or None when it cannot be read."""
    try:
        fd = _os.open(path, _os.O_RDONLY | getattr(_os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = _os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        _os.close(fd)


def read_json(path):
    data = read_file(path)
    if data is None:
        return None
    try:
        value = fastjson.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def make_dirs(path, mode=0o700):
    """mkdir -p with private permissions for what it creates."""
    try:
        _os.mkdir(path, mode)
        return
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = path.rstrip("/\\").rpartition(SEP)[0]
        if not parent or parent == path:
            raise
        make_dirs(parent, mode)
        try:
            _os.mkdir(path, mode)
        except FileExistsError:
            pass


def write_atomic(path, data, mode=0o600):
    """Write ``data`` to ``path`` via a temp file and rename."""
    directory = path.rpartition(SEP)[0]
    make_dirs(directory)
    tmp = f"{directory}{SEP}.{path.rpartition(SEP)[2]}.{_os.getpid()}.tmp"
    flags = _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC | getattr(_os, "O_BINARY", 0)
    fd = _os.open(tmp, flags, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[_os.write(fd, view):]
    finally:
        _os.close(fd)
    try:
        _os.replace(tmp, path)
    except BaseException:
        try:
            _os.unlink(tmp)
        except OSError:
            pass
        raise


# ----------------------------------------------------------------------------- config

def parse_config(data):
    """The hook's settings from config.toml bytes (raises ValueError on bad TOML).

    Unlike the app we do not reject unknown keys here: the app reports those;
    the hook only needs its own few settings."""
    import tomllib  # ~13 ms: only when the config file changed

    doc = tomllib.loads(data.decode("utf-8"))
    out = {}
    redis = doc.get("redis")
    if isinstance(redis, dict) and "url" in redis:
        out["redis_url"] = redis["url"]
    capture = doc.get("capture")
    if isinstance(capture, dict):
        for key in CAPTURE_KEYS + ("max_input_bytes", "hook_timeout_ms"):
            if key in capture:
                out[key] = capture[key]
    return out


def _file_settings(config_file, state_dir, explicit):
    """Settings from the config file, through the cache. {} when there is no file."""
    try:
        st = _os.stat(config_file)
    except OSError:
        if explicit:
            return {"error": "config file not found"}  # the app refuses to start too
        return {}
    key = [config_file, st.st_mtime_ns, st.st_size]
    cache_path = join(state_dir, CACHE_NAME)
    cached = read_json(cache_path)
    if cached is not None and cached.get("key") == key and isinstance(cached.get("settings"), dict):
        return cached["settings"]
    data = read_file(config_file, limit=16 << 20)
    try:
        if data is None:
            raise ValueError("cannot read the config file")
        settings = parse_config(data)
    except Exception as exc:  # TOMLDecodeError, UnicodeDecodeError, ...
        settings = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    try:
        write_atomic(cache_path, fastjson.dumps({"key": key, "settings": settings}).encode())
    except (OSError, ValueError):
        pass  # next call parses again; still correct
    return settings


def _env_overrides(environ):
    out = {}
    url = getenv(ENV_PREFIX + "REDIS_URL", environ)
    if url is not None:
        out["redis_url"] = url
    for key in CAPTURE_KEYS:
        value = getenv(f"{ENV_PREFIX}CAPTURE_{key.upper()}", environ)
        if value is not None:
            out[key] = value
    for key in ("max_input_bytes", "hook_timeout_ms"):
        value = getenv(f"{ENV_PREFIX}CAPTURE_{key.upper()}", environ)
        if value is not None:
            try:
                out[key] = int(value.strip())
            except ValueError:
                out[key] = value  # rejected below: the default applies
    return out


def validate(raw):
    """Defaults filled in; bad modes become "none"; bad numbers the default."""
    settings = dict(DEFAULTS)
    failed = "error" in raw
    for key in CAPTURE_KEYS:
        value = raw.get(key, "none" if failed else DEFAULTS[key])
        settings[key] = value if value in MODES else "none"
    for key, (lo, hi) in RANGES.items():
        value = raw.get(key, DEFAULTS[key])
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
        settings[key] = value if ok else DEFAULTS[key]
    url = raw.get("redis_url", "")
    settings["redis_url"] = url if isinstance(url, str) else ""
    if failed:
        settings["config_error"] = str(raw["error"])
    return settings


def load(environ=None, argv=None):
    """Everything the hook needs: settings, state and spool dirs."""
    config_file, state_dir = resolve(environ, argv)
    raw = _file_settings(config_file, state_dir, bool(_location(environ, argv)[1]))
    env = _env_overrides(environ)
    if env:
        raw = dict(raw)
        raw.update(env)
    settings = validate(raw)
    settings["config_file"] = config_file
    settings["state_dir"] = state_dir
    settings["spool_dir"] = join(state_dir, "spool")
    settings["url_from_env"] = "redis_url" in env
    return settings


def endpoint(settings):
    """(url, password) of the Redis to use, or (None, None) when none is known.

    TELEMETRY_TRAY_REDIS_URL wins; then the endpoint file of the running app;
    then ``[redis] url`` from the config file."""
    if settings.get("url_from_env") and settings["redis_url"]:
        return settings["redis_url"], None
    data = read_json(join(settings["state_dir"], ENDPOINT_NAME))
    if data is not None and isinstance(data.get("url"), str) and data["url"]:
        password = data.get("password")
        return data["url"], password if isinstance(password, str) and password else None
    if settings["redis_url"]:
        return settings["redis_url"], None
    return None, None
