"""Start at login, per platform.

- Linux (and other XDG desktops): ``$XDG_CONFIG_HOME/autostart/telemetry-tray.desktop``.
  Status follows the XDG Autostart spec: the user's file overrides a same-named
  system one in ``$XDG_CONFIG_DIRS/autostart``; ``Hidden=true`` or
  ``X-GNOME-Autostart-enabled=false`` mean disabled. Disable removes our file,
  or writes ``Hidden=true`` when a system-wide entry would otherwise start us.
- macOS: ``~/Library/LaunchAgents/<LABEL>.plist`` with ``RunAtLoad`` and
  ``KeepAlive`` false (a crash or the "already running" exit never respawns it:
  no restart storm), limited to GUI (Aqua) sessions. We never call
  ``launchctl``: loading the agent now would start a second instance, and
  unloading it would kill the tray the user just clicked in.
- Windows: ``HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run``; status also
  reads ``...\\Explorer\\StartupApproved\\Run``, where Task Manager records that
  the user disabled it (first byte odd = disabled). Enable clears that flag:
  the user asked us to start at login.

Every entry starts the installed app by absolute path (:func:`launch_command`),
with the home and config file it was enabled from when those are not the
defaults (``/usr/bin/env TELEMETRY_TRAY_HOME=DIR <app> --config FILE``), so
the app started at login uses the same files as the one that enabled it.
The Windows Run key cannot set a variable: there TELEMETRY_TRAY_HOME must be
a user environment variable (``setx``); ``--config`` is carried.
The per-OS classes take their locations (and on Windows the registry) as
arguments so tests exercise them without touching the real system.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from tray_app import APP_NAME
from tray_app.fileutil import atomic_write

DISPLAY_NAME = "Telemetry Tray"
#: bundle identifier (packaging/) and LaunchAgent label
LABEL = "dev.telemetry-tray.app"
DESKTOP_FILE = f"{APP_NAME}.desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"
RUN_VALUE = "TelemetryTray"
#: StartupApproved value meaning "enabled": 0x02 then 11 zero bytes
APPROVED_ENABLED = bytes([2] + [0] * 11)


def launch_command(environ: Mapping[str, str] | None = None,
                   config_file: str | os.PathLike[str] | None = None) -> list[str]:
    """The absolute command line that starts this installed app's tray, with
    this app's home and config file when they are not the defaults (from
    ``environ``, default the process's, and ``config_file``, the --config
    option; see installers.location_args): ``/usr/bin/env
    TELEMETRY_TRAY_HOME=DIR <app> [--config FILE]``."""
    from tray_app.capture.installers import location_args
    from tray_app.paths import HOME_ENV

    loc = location_args(environ, config_file)
    where = dict(zip(loc[::2], loc[1::2]))
    command = app_command()
    if "--config" in where:
        command += ["--config", where["--config"]]
    if "--home" in where and sys.platform != "win32":
        env = shutil.which("env") or "/usr/bin/env"
        command = [os.path.abspath(env), f"{HOME_ENV}={where['--home']}", *command]
    return command


def app_command() -> list[str]:
    """The absolute command that starts this installed app (no arguments:
    the tray). A frozen (PyInstaller) app is its own executable; otherwise the
    ``telemetry-tray`` script beside this interpreter, or on PATH; otherwise
    this interpreter with ``-m tray_app``."""
    if getattr(sys, "frozen", False):
        return [os.path.abspath(sys.executable)]
    exe_dir = Path(sys.executable).parent
    for name in (APP_NAME, f"{APP_NAME}.exe"):
        candidate = exe_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate.absolute())]
    found = shutil.which(APP_NAME)
    if found:
        return [os.path.abspath(found)]
    return [os.path.abspath(sys.executable), "-m", "tray_app"]


class Autostart(Protocol):
    def is_enabled(self) -> bool: ...
    def enable(self) -> None: ...
    def disable(self) -> None: ...
    def location(self) -> str: ...


# ----------------------------------------------------------------------------- Linux / XDG

_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')


def desktop_exec(argv: list[str]) -> str:
    """An ``Exec=`` value for argv, quoted per the Desktop Entry spec: an
    argument with reserved characters is double-quoted with ``" ` $ \\``
    backslash-escaped; then, as the spec applies the string escape rule
    first, every backslash is doubled; ``%`` is written ``%%``."""
    parts = []
    for arg in argv:
        arg = arg.replace("%", "%%")
        if not arg or any(c in _RESERVED for c in arg) or "=" in arg:
            inner = "".join("\\" + c if c in '"`$\\' else c for c in arg)
            arg = f'"{inner}"'
        parts.append(arg.replace("\\", "\\\\"))
    return " ".join(parts)


def parse_desktop_entry(text: str) -> dict[str, str]:
    """The keys of the ``[Desktop Entry]`` group (no locale handling needed here)."""
    out: dict[str, str] = {}
    group = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        if group == "Desktop Entry" and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), value.strip())
    return out


def entry_enabled(keys: dict[str, str]) -> bool:
    if keys.get("Hidden", "false").lower() == "true":
        return False
    if keys.get("X-GNOME-Autostart-enabled", "true").lower() == "false":
        return False
    return True


class LinuxAutostart:
    def __init__(self, config_home: Path | None = None, config_dirs: list[Path] | None = None,
                 command: list[str] | None = None, icon: str = APP_NAME) -> None:
        env = os.environ
        # the XDG base directory spec: relative paths in these variables are ignored
        xdg_home = env.get("XDG_CONFIG_HOME", "")
        self.config_home = config_home or (Path(xdg_home) if os.path.isabs(xdg_home) else Path.home() / ".config")
        if config_dirs is None:
            config_dirs = [Path(p) for p in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(":")
                           if os.path.isabs(p)]
        self.config_dirs = config_dirs
        self._command = command
        self.icon = icon

    @property
    def path(self) -> Path:
        return self.config_home / "autostart" / DESKTOP_FILE

    def location(self) -> str:
        return str(self.path)

    def _system_entry(self) -> Path | None:
        for d in self.config_dirs:
            p = d / "autostart" / DESKTOP_FILE
            if p.is_file():
                return p
        return None

    def is_enabled(self) -> bool:
        target = self.path if self.path.is_file() else self._system_entry()
        if target is None:
            return False
        try:
            return entry_enabled(parse_desktop_entry(target.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            return False

    def render(self, hidden: bool = False) -> str:
        command = self._command or launch_command()
        return "\n".join([
            "[Desktop Entry]",
            "Type=Application",
            f"Name={DISPLAY_NAME}",
            "Comment=Local telemetry for AI coding assistants",
            f"Exec={desktop_exec(command)}",
            f"Icon={self.icon}",
            "Terminal=false",
            "Categories=Development;",
            "StartupNotify=false",
            f"Hidden={'true' if hidden else 'false'}",
            f"X-GNOME-Autostart-enabled={'false' if hidden else 'true'}",
            "X-GNOME-Autostart-Delay=5",
            "",
        ])

    def enable(self) -> None:
        atomic_write(self.path, self.render(), mode=0o600)

    def disable(self) -> None:
        if self._system_entry() is not None:
            atomic_write(self.path, self.render(hidden=True), mode=0o600)
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- macOS

class MacLaunchAgent:
    def __init__(self, agents_dir: Path | None = None, command: list[str] | None = None,
                 log_dir: Path | None = None) -> None:
        self.agents_dir = agents_dir or Path.home() / "Library" / "LaunchAgents"
        self._command = command
        self.log_dir = log_dir

    @property
    def path(self) -> Path:
        return self.agents_dir / f"{LABEL}.plist"

    def location(self) -> str:
        return str(self.path)

    def render(self) -> bytes:
        plist: dict[str, object] = {
            "Label": LABEL,
            "ProgramArguments": self._command or launch_command(),
            "RunAtLoad": True,
            # never respawned: a crash, or a second instance exiting 0, stays down
            "KeepAlive": False,
            "LimitLoadToSessionType": "Aqua",
            "ProcessType": "Interactive",
        }
        if self.log_dir is not None:
            plist["StandardErrorPath"] = str(self.log_dir / "launchd-stderr.log")
        return plistlib.dumps(plist)

    def is_enabled(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                data = plistlib.load(fh)
        except (OSError, plistlib.InvalidFileException, ValueError):
            return False
        return bool(data.get("RunAtLoad")) and not data.get("Disabled", False)

    def enable(self) -> None:
        atomic_write(self.path, self.render(), mode=0o600)

    def disable(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- Windows

REG_SZ = 1
REG_BINARY = 3


class Registry(Protocol):
    """The slice of HKEY_CURRENT_USER we need."""

    def get(self, key: str, name: str) -> tuple[object, int] | None: ...
    def set(self, key: str, name: str, value: object, kind: int) -> None: ...
    def delete(self, key: str, name: str) -> None: ...


class WinRegistry:
    """HKCU through the standard library's winreg (Windows only)."""

    def __init__(self) -> None:
        import winreg  # noqa: F401  (fails early off Windows)

    def get(self, key: str, name: str) -> tuple[object, int] | None:
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key) as k:  # type: ignore[attr-defined]
                value, kind = winreg.QueryValueEx(k, name)  # type: ignore[attr-defined]
                return value, kind
        except FileNotFoundError:
            return None

    def set(self, key: str, name: str, value: object, kind: int) -> None:
        import winreg

        with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, key, 0,  # type: ignore[attr-defined]
                                winreg.KEY_SET_VALUE) as k:  # type: ignore[attr-defined]
            winreg.SetValueEx(k, name, 0, kind, value)  # type: ignore[attr-defined]

    def delete(self, key: str, name: str) -> None:
        import winreg

        try:
            with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0,  # type: ignore[attr-defined]
                                winreg.KEY_SET_VALUE) as k:  # type: ignore[attr-defined]
                winreg.DeleteValue(k, name)  # type: ignore[attr-defined]
        except FileNotFoundError:
            pass


def windows_command_line(argv: list[str]) -> str:
    """argv as one command line, every part double-quoted (paths with spaces)."""
    return " ".join(f'"{a}"' for a in argv)


class WindowsRun:
    def __init__(self, registry: Registry | None = None, command: list[str] | None = None) -> None:
        self.registry = registry if registry is not None else WinRegistry()
        self._command = command

    def location(self) -> str:
        return f"HKCU\\{RUN_KEY}\\{RUN_VALUE}"

    def is_enabled(self) -> bool:
        if self.registry.get(RUN_KEY, RUN_VALUE) is None:
            return False
        approved = self.registry.get(APPROVED_KEY, RUN_VALUE)
        if approved is None:
            return True
        data = approved[0]
        if isinstance(data, (bytes, bytearray)) and data:
            return data[0] % 2 == 0  # 0x02/0x06 enabled, 0x03/0x07 disabled by the user
        return True

    def enable(self) -> None:
        self.registry.set(RUN_KEY, RUN_VALUE, windows_command_line(self._command or launch_command()), REG_SZ)
        approved = self.registry.get(APPROVED_KEY, RUN_VALUE)
        if approved is not None:
            self.registry.set(APPROVED_KEY, RUN_VALUE, APPROVED_ENABLED, REG_BINARY)

    def disable(self) -> None:
        self.registry.delete(RUN_KEY, RUN_VALUE)
        self.registry.delete(APPROVED_KEY, RUN_VALUE)


# ----------------------------------------------------------------------------- this platform

def for_platform(platform: str | None = None,
                 config_file: str | os.PathLike[str] | None = None) -> Autostart:
    """The implementation for ``platform`` (default: this one). Its entry
    starts the app with this process's home and ``config_file`` (the --config
    option, when one was given)."""
    plat = platform or sys.platform
    command = launch_command(config_file=config_file) if config_file else None
    if plat == "darwin":
        return MacLaunchAgent(command=command)
    if plat == "win32":
        return WindowsRun(command=command)
    return LinuxAutostart(command=command)


def is_enabled() -> bool:
    return for_platform().is_enabled()


def enable(config_file: str | os.PathLike[str] | None = None) -> None:
    for_platform(config_file=config_file).enable()


def disable() -> None:
    for_platform().disable()


__all__ = ["is_enabled", "enable", "disable", "for_platform", "launch_command", "app_command", "LinuxAutostart",
           "MacLaunchAgent", "WindowsRun", "Registry", "WinRegistry", "desktop_exec",
           "parse_desktop_entry", "LABEL", "RUN_KEY", "APPROVED_KEY", "RUN_VALUE"]
