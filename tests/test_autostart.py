"""Start at login: Linux for real (XDG autostart in a temp XDG_CONFIG_HOME);
macOS and Windows through the files and registry values they would get."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from tray_app import __version__
from tray_app.support import autostart
from tray_app.support.autostart import (
    APPROVED_KEY, LABEL, REG_BINARY, REG_SZ, RUN_KEY, RUN_VALUE, LinuxAutostart, MacLaunchAgent, WindowsRun,
    desktop_exec, parse_desktop_entry,
)


@pytest.fixture()
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "etc-xdg"))
    return home / ".config"


def exec_argv(value: str) -> list[str]:
    """Parse an Exec value as the Desktop Entry spec says: string unescaping
    (``\\\\`` -> ``\\``), then arguments split on spaces, a double-quoted one with
    backslash escaping the next character; ``%%`` is a literal ``%``."""
    text = value.replace("\\\\", "\\")
    args: list[str] = []
    cur: list[str] = []
    i, quoted, started = 0, False, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
                cur.append(text[i])
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = started = True
        elif ch == " ":
            if started:
                args.append("".join(cur))
            cur, started = [], False
        else:
            cur.append(ch)
            started = True
        i += 1
    if started:
        args.append("".join(cur))
    return [a.replace("%%", "%") for a in args]


# --------------------------------------------------------------------------- Linux, for real

def test_cli_enable_status_disable(xdg: Path) -> None:
    env = dict(os.environ)
    entry = xdg / "autostart" / "telemetry-tray.desktop"
    r = run_cli("autostart", "status", env=env)
    assert r.returncode == 0 and r.stdout.startswith("disabled")

    r = run_cli("autostart", "enable", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"enabled: {entry}"
    assert entry.stat().st_mode & 0o777 == 0o600
    keys = parse_desktop_entry(entry.read_text())
    assert keys["Type"] == "Application" and keys["Hidden"] == "false"
    assert keys["X-GNOME-Autostart-enabled"] == "true" and keys["Terminal"] == "false"
    argv = exec_argv(keys["Exec"])
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    # the entry starts this installed app: run its command with --version
    out = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"telemetry-tray {__version__}"

    r = run_cli("autostart", "status", "--json", env=env)
    assert r.returncode == 0
    import json
    data = json.loads(r.stdout)
    assert data == {"enabled": True, "location": str(entry), "command": data["command"]}

    r = run_cli("autostart", "disable", env=env)
    assert r.returncode == 0 and not entry.exists()
    r = run_cli("autostart", "status", env=env)
    assert r.stdout.startswith("disabled")
    assert run_cli("autostart", "disable", env=env).returncode == 0  # idempotent


def test_module_functions_use_this_platform(xdg: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("Linux autostart")
    assert not autostart.is_enabled()
    autostart.enable()
    assert autostart.is_enabled() and (xdg / "autostart" / "telemetry-tray.desktop").is_file()
    autostart.disable()
    assert not autostart.is_enabled()


@pytest.mark.parametrize("line", ["Hidden=true", "X-GNOME-Autostart-enabled=false"])
def test_status_honours_hidden_and_gnome_flag(xdg: Path, line: str) -> None:
    impl = LinuxAutostart(command=["/opt/tt/telemetry-tray"])
    impl.enable()
    assert impl.is_enabled()
    key = line.split("=")[0]
    text = "\n".join(ln for ln in impl.path.read_text().splitlines() if not ln.startswith(key + "="))
    impl.path.write_text(text + f"\n{line}\n")
    assert not impl.is_enabled()


def test_system_wide_entry_is_overridden_by_the_users(xdg: Path, tmp_path: Path) -> None:
    system = tmp_path / "etc-xdg" / "autostart" / "telemetry-tray.desktop"
    system.parent.mkdir(parents=True)
    system.write_text("[Desktop Entry]\nType=Application\nName=Telemetry Tray\nExec=/usr/bin/telemetry-tray\n")
    impl = LinuxAutostart(command=["/opt/tt/telemetry-tray"])
    assert impl.is_enabled()  # from the system entry
    impl.disable()
    assert parse_desktop_entry(impl.path.read_text())["Hidden"] == "true"
    assert not impl.is_enabled() and system.is_file()
    impl.enable()
    assert impl.is_enabled()


def test_exec_quoting_round_trips() -> None:
    argv = ["/home/a b/My Apps/telemetry-tray", "--config", '/tmp/we"ird $x `y` \\z 100%.toml']
    value = desktop_exec(argv)
    assert value.startswith('"/home/a b/My Apps/telemetry-tray" --config "')
    assert "%%" in value and "\\\\$x" in value
    assert exec_argv(value) == argv
    assert desktop_exec(["/usr/bin/telemetry-tray"]) == "/usr/bin/telemetry-tray"


def test_generated_entry_validates(xdg: Path) -> None:
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate not installed (Debian: desktop-file-utils)")
    impl = LinuxAutostart(command=["/opt/Telemetry Tray/telemetry-tray"])
    impl.enable()
    r = subprocess.run([tool, str(impl.path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_launch_command_is_absolute() -> None:
    cmd = autostart.launch_command()
    assert os.path.isabs(cmd[0])
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"telemetry-tray {__version__}"


# --------------------------------------------------------------------------- macOS, through its plist

def test_macos_launch_agent(tmp_path: Path) -> None:
    agents = tmp_path / "Library" / "LaunchAgents"
    impl = MacLaunchAgent(agents_dir=agents, command=["/Applications/Telemetry Tray.app/Contents/MacOS/telemetry-tray"])
    assert not impl.is_enabled()
    impl.enable()
    path = agents / f"{LABEL}.plist"
    assert impl.location() == str(path)
    data = plistlib.loads(path.read_bytes())
    assert data["Label"] == LABEL
    assert data["ProgramArguments"] == ["/Applications/Telemetry Tray.app/Contents/MacOS/telemetry-tray"]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] is False  # no restart storm
    assert data["LimitLoadToSessionType"] == "Aqua"
    assert impl.is_enabled()
    data["Disabled"] = True
    path.write_bytes(plistlib.dumps(data))
    assert not impl.is_enabled()
    impl.enable()
    assert impl.is_enabled()
    impl.disable()
    assert not path.exists() and not impl.is_enabled()
    path.write_text("not a plist")
    assert not impl.is_enabled()


# --------------------------------------------------------------------------- Windows, through the registry

class MemoryRegistry:
    """HKCU as a dict: (key, name) -> (value, type)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], tuple[object, int]] = {}

    def get(self, key: str, name: str):
        return self.values.get((key, name))

    def set(self, key: str, name: str, value: object, kind: int) -> None:
        self.values[(key, name)] = (value, kind)

    def delete(self, key: str, name: str) -> None:
        self.values.pop((key, name), None)


def test_windows_run_and_startup_approved() -> None:
    reg = MemoryRegistry()
    exe = r"C:\Program Files\Telemetry Tray\telemetry-tray.exe"
    impl = WindowsRun(registry=reg, command=[exe])
    assert not impl.is_enabled()
    impl.enable()
    assert reg.get(RUN_KEY, RUN_VALUE) == (f'"{exe}"', REG_SZ)
    assert reg.get(APPROVED_KEY, RUN_VALUE) is None
    assert impl.is_enabled()
    # the user turned it off in Task Manager: first byte odd
    reg.set(APPROVED_KEY, RUN_VALUE, bytes([3, 0, 0, 0]) + b"\x11" * 8, REG_BINARY)
    assert not impl.is_enabled()
    reg.set(APPROVED_KEY, RUN_VALUE, bytes([6]) + bytes(11), REG_BINARY)
    assert impl.is_enabled()
    reg.set(APPROVED_KEY, RUN_VALUE, bytes([7]) + bytes(11), REG_BINARY)
    assert not impl.is_enabled()
    impl.enable()  # the user asked for it here: the Task Manager flag is cleared
    assert reg.get(APPROVED_KEY, RUN_VALUE) == (bytes([2]) + bytes(11), REG_BINARY)
    assert impl.is_enabled()
    impl.disable()
    assert reg.values == {} and not impl.is_enabled()


def test_for_platform() -> None:
    assert isinstance(autostart.for_platform("linux"), LinuxAutostart)
    assert isinstance(autostart.for_platform("darwin"), MacLaunchAgent)
    if sys.platform != "win32":
        with pytest.raises(ImportError):
            autostart.for_platform("win32")  # the real registry exists only on Windows
