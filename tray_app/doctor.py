"""`telemetry-tray doctor`: one check per line, OK / WARN / FAIL with the fix."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tray_app.errors import TelemetryTrayError

if TYPE_CHECKING:
    from tray_app.config import Config
    from tray_app.redis_conn import Endpoint


class Check(NamedTuple):
    status: str  # OK, WARN, FAIL
    name: str
    detail: str
    fix: str = ""


def pystray_backend() -> tuple[str, bool, str]:
    """(backend name, supports menus, note) the app will use on this machine: the
    same choice as the app makes (tray_app.tray.systray), without importing
    pystray (its import connects to the display)."""
    from tray_app.tray import systray

    if sys.platform in ("darwin", "win32"):
        choice = systray.choose_backend(systray.TrayHost(None, "", None, ""), True, False)
        return choice.backend, choice.menus, ""
    host = systray.detect()
    choice = systray.choose_backend(host, *systray.available(), forced=os.environ.get("PYSTRAY_BACKEND"))
    return choice.backend, choice.menus, choice.why


def tray_check() -> Check:
    """Which backend the app uses and whether this desktop has a tray to show its icon in."""
    from tray_app.tray import systray

    if sys.platform in ("darwin", "win32"):
        name, _, _ = pystray_backend()
        return Check("OK", "tray", f"pystray backend {name} (menus supported)")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return Check("WARN", "tray", "no desktop session here (DISPLAY and WAYLAND_DISPLAY unset): the tray "
                     "app cannot show an icon",
                     "run `telemetry-tray` from your desktop session, or record without a tray: "
                     "telemetry-tray run --headless")
    host = systray.detect()
    forced = os.environ.get("PYSTRAY_BACKEND")
    choice = systray.choose_backend(host, *systray.available(), forced=forced)
    what = f"pystray backend {choice.backend}"
    if host.found is False:
        desktop = f" ({host.desktop})" if host.desktop else ""
        return Check("WARN", "tray", f"no system tray on this desktop{desktop}: {host.describe()}; {what} "
                     "would show no icon (the app keeps recording in the background; "
                     "`telemetry-tray status` shows it)", host.fix())
    needs_xembed = choice.backend in ("gtk", "xorg")
    if needs_xembed and host.xembed is False:
        return Check("WARN", "tray", f"{what} ({choice.why}) needs an XEmbed tray, and there is none: "
                     f"{host.describe()}; the icon will not show",
                     "unset PYSTRAY_BACKEND" if forced else host.fix())
    detail = f"{what} ({'menus supported' if choice.menus else 'no menus'}): {choice.why}"
    if host.found is None:
        return Check("WARN", "tray", f"{detail}; could not tell whether this desktop has a system tray "
                     f"({host.describe()})", host.fix())
    if not choice.menus:
        return Check("WARN", "tray", f"{detail}; clicking the icon shows a status notification instead "
                     "of a menu",
                     "sudo apt install gir1.2-ayatanaappindicator3-0.1 libgirepository1.0-dev "
                     "libcairo2-dev && pip install 'telemetry-tray[gtk]'")
    return Check("OK", "tray", detail)


def notification_service() -> tuple[bool, str]:
    """Whether a desktop notification service answers on the session bus."""
    if sys.platform != "linux":
        return True, "platform notification center"
    if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return False, "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS unset)"
    try:
        import subprocess

        out = subprocess.run(
            ["dbus-send", "--session", "--print-reply", "--dest=org.freedesktop.Notifications",
             "/org/freedesktop/Notifications", "org.freedesktop.Notifications.GetServerInformation"],
            capture_output=True, text=True, timeout=3)
    except FileNotFoundError:
        return False, "dbus-send not installed; cannot check"
    except Exception as exc:  # timeout
        return False, f"no answer ({exc.__class__.__name__})"
    if out.returncode != 0:
        return False, (out.stderr.strip().splitlines() or ["no notification service"])[-1][:120]
    names = [ln.split('"')[1] for ln in out.stdout.splitlines() if '"' in ln]
    return True, names[0] if names else "answers"


def _foreign_consumers_check(cfg: Config, ep: Endpoint) -> Check:
    """On a shared Redis: does another installation consume telemetry:events
    (its events then go to its own database, not this one's)?"""
    import redis

    from tray_app.engine.maintenance import foreign_consumers, installation_id

    try:
        ident = (cfg.paths.state_dir / "consumer-id").read_text().strip()
    except OSError:
        ident = ""
    own = f"{socket.gethostname().split('.')[0] or 'host'}-{ident}" if ident else ""
    try:
        c = ep.client(socket_timeout=3, connect_timeout=2)
        try:
            found = foreign_consumers(c, own, installation_id(cfg.paths.database))
        finally:
            c.close()
    except redis.RedisError as exc:
        return Check("WARN", "consumers", f"cannot list the consumers of telemetry:events: {exc}")
    if not found:
        return Check("OK", "consumers", "no other installation consumes telemetry:events")
    return Check("WARN", "consumers",
                 f"{len(found)} other installation{'s' if len(found) != 1 else ''} consume telemetry:events "
                 f"on this Redis, so the events are split between databases: {'; '.join(found)}",
                 "give each installation its own Redis (or database number in redis.url), or run one "
                 "engine per Redis")


def private_dirs_check(dirs: list[Path]) -> Check:
    """The private server's directories (run, data, socket) are the user's own,
    0700 and no symlinks, or missing (the app creates them)."""
    from tray_app.paths import private_dir_problem

    seen: list[Path] = []
    for d in dirs:
        if d in seen:
            continue
        seen.append(d)
        problem = private_dir_problem(d)
        if problem and problem != "does not exist":
            return Check("FAIL", "redis dirs", f"{d} {problem}; the app refuses to keep its socket, "
                         "password or data there",
                         "remove it (it is not the app's) or make it yours with mode 0700; or set "
                         "TELEMETRY_TRAY_HOME elsewhere")
    return Check("OK", "redis dirs", "the private server's directories are yours only (0700)")


def private_data_check(data_dir: Path, running: bool, binary: str | None = None) -> Check:
    """Whether the private server can load its append-only file at its next start:
    the files are parsed (manifest, commands, RDB frame) and, when the server is
    not running, a throwaway server loads a copy of them (RDB contents too)."""
    from tray_app import aof

    fix = (f"nothing to do by hand: at its next start the app moves the damaged files to "
           f"{data_dir}/corrupt-<time>/ (kept, never deleted) and starts with the part that loads; "
           f"restart the app (Quit, then telemetry-tray) to do it now")
    try:
        damage = aof.check(data_dir)
    except OSError as exc:
        return Check("FAIL", "redis data", f"{data_dir}: cannot be read ({exc.strerror or exc})",
                     "fix the directory's permissions (it is yours, 0700)")
    if running:  # a live server may be in the middle of appending a command
        damage = [d for d in damage if not d.truncated]
    corrupt = [d for d in damage if not d.truncated]
    if corrupt:
        return Check("FAIL", "redis data", f"{corrupt[0].path.parent}: {corrupt[0].describe()}; the private "
                     "server cannot load it", fix)
    if not damage and binary and not running:
        from tray_app.redis_server import trial_load

        problem = trial_load(binary, data_dir)
        if problem:
            return Check("FAIL", "redis data", f"{data_dir / aof.AOF_DIRNAME}: a copy does not load: "
                         f"{problem}", fix)
    if damage:
        return Check("WARN", "redis data", f"{damage[0].describe()}: the private server will load every "
                     "complete command and drop the cut-short last one (an event or two lost)",
                     "nothing to do: the app loads it and says so")
    aof_dir = data_dir / aof.AOF_DIRNAME
    return Check("OK", "redis data", f"{aof_dir} loads" if aof_dir.exists() else "no append-only file yet")


def cursor_format_check(cfg: Config) -> Check:
    """Whether Cursor's databases still look the way the Cursor monitor reads them:
    a fresh read-only scan (key families and tables from the key index, the shapes
    of a sample of conversations and messages), merged with what the monitor
    recorded at its last pass. Counts and key-family names only."""
    from tray_app.monitors import cursor_drift
    from tray_app.monitors.cursor_db import NAME
    from tray_app.monitors.state_store import state_file
    from tray_app.diagnostics.learn import cursor_user_dir

    if not cfg.monitors.cursor_enabled:
        return Check("OK", "cursor format", "the Cursor monitor is off ([monitors] cursor_enabled)")
    user_dir = cursor_user_dir(cfg)
    if not user_dir.is_dir():
        return Check("OK", "cursor format", f"no Cursor data at {user_dir}")
    try:
        reports = [cursor_drift.inspect_databases(user_dir)]
    except Exception as exc:  # noqa: BLE001 - a check reports, it never crashes doctor
        return Check("WARN", "cursor format", f"cannot read Cursor's databases under {user_dir}: "
                     f"{type(exc).__name__}: {exc}"[:300], "run doctor again while Cursor is idle")
    recorded = cursor_drift.recorded_report(state_file(cfg.paths.state_dir, NAME))
    if recorded:
        reports.append(recorded)
    report = cursor_drift.merge(reports)
    if report["status"] == "changed":
        return Check("WARN", "cursor format", report["message"],
                     "update telemetry-tray; meanwhile what it knows is still recorded. "
                     "`telemetry-tray diagnostics` bundles the counts (no content) for a bug report")
    return Check("OK", "cursor format", f"Cursor's databases under {user_dir} have the known format")


def export_check(cfg: Config) -> Check:
    """[export]: off, or on with the OpenTelemetry SDK installed (the endpoint is
    not contacted here: `status` shows how the last export went)."""
    import importlib.util

    if not cfg.export.otlp_endpoint:
        return Check("OK", "export", "off: nothing leaves this computer ([export] otlp_endpoint is empty)")
    from tray_app.otlp.exporter import metrics_url  # small: the SDK is imported by the thread only

    url = metrics_url(cfg.export.otlp_endpoint)
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        return Check("FAIL", "export", f"usage metrics to {url}, but the OpenTelemetry SDK is not installed",
                     "pip install 'telemetry-tray[export]', or clear [export] otlp_endpoint")
    return Check("OK", "export", f"usage metrics every {cfg.export.interval_s:g} s to {url} "
                                 f"(`telemetry-tray status` shows the last export)")


def run_checks(config_file: str | None = None) -> list[Check]:
    from tray_app.config import load_config

    results: list[Check] = []
    try:
        cfg = load_config(config_file)
        results.append(Check("OK", "config", f"valid ({cfg.source})"))
    except TelemetryTrayError as exc:
        results.append(Check("FAIL", "config", str(exc), "fix the key named above, or run "
                             "`telemetry-tray config init` for a template"))
        return results

    # Redis
    try:
        import redis

        from tray_app.redis_conn import RedisProvider, server_version, translate, wants_managed

        if wants_managed(cfg):
            from tray_app.redis_server import ManagedServer

            srv = ManagedServer(cfg.paths, server_binary=cfg.redis.server_binary)
            b = srv.binary
            running = srv._try_adopt(take_ownership=False)
            state = "running" if running else "not running (the app starts it)"
            results.append(Check("OK", "redis", f"private server {b.path} {b.version_text} ({b.source}), {state}"))
            results.append(private_dirs_check([srv.run_dir, srv.data_dir, srv.socket_dir]))
            results.append(private_data_check(srv.data_dir, running, b.path))
        else:
            provider = RedisProvider(cfg)
            ep = provider.start(spawn=False, write_endpoint=False)
            try:
                c = ep.client(socket_timeout=3, connect_timeout=2)
                v = server_version(c)
                c.close()
            except redis.RedisError as exc:
                raise translate(exc, ep) from None
            from tray_app.redis_server import check_version

            check_version(v, f"Redis at {ep.masked}")
            results.append(Check("OK", "redis", f"{ep.masked} reachable, version {'.'.join(map(str, v))}"))
            results.append(_foreign_consumers_check(cfg, ep))
    except TelemetryTrayError as exc:
        results.append(Check("FAIL", "redis", str(exc),
                             "start Redis, or fix redis.url / TELEMETRY_TRAY_REDIS_URL"))

    # Database directory
    data_dir = cfg.paths.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = data_dir / ".doctor-probe"
        probe.write_bytes(b"x")
        probe.unlink()
        free = shutil.disk_usage(data_dir).free
        mb = free / 1e6
        if free < 200e6:
            results.append(Check("WARN", "database", f"{cfg.paths.database}: only {mb:.0f} MB free",
                                 "free disk space on that volume"))
        else:
            results.append(Check("OK", "database", f"{data_dir} writable, {mb/1000:.1f} GB free"))
    except OSError as exc:
        results.append(Check("FAIL", "database", f"{data_dir} not writable: {exc.strerror or exc}",
                             "fix the directory's permissions, or set TELEMETRY_TRAY_HOME"))

    # Cursor's storage format
    results.append(cursor_format_check(cfg))

    results.append(export_check(cfg))

    # Tray backend and host
    results.append(tray_check())

    ok, detail = notification_service()
    results.append(Check("OK" if ok else "WARN", "notifications", detail,
                         "" if ok else "run a notification daemon (e.g. dunst) on a D-Bus session bus; "
                         "status stays visible in the tray icon"))
    return results
