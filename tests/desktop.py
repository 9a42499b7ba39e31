"""A real desktop for end-to-end tray tests: Xvfb, a D-Bus session bus,
a tray host (trayer), a notification daemon (dunst), and helpers to look at
it (screenshots) and use it (xdotool) as a person would.

Tools missing: the test is skipped locally and fails under CI=true (`need`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, need, wait_for

TOOLS = ("Xvfb", "dbus-daemon", "trayer", "dunst", "dunstctl", "xdotool", "xwininfo", "import")
ARTIFACTS = ROOT / "test-artifacts" / "desktop"
SCREEN = (1024, 640)

DUNSTRC = """\
[global]
    font = DejaVu Sans 10
    width = 360
    origin = top-right
    offset = 10x44
    frame_width = 2
    frame_color = "#888888"
    icon_position = left
    max_icon_size = 48
    show_indicators = yes
    dmenu = {dmenu}
    history_length = 50
    sticky_history = yes

[urgency_low]
    background = "#222222"
    foreground = "#eeeeee"
    timeout = 0

[urgency_normal]
    background = "#222222"
    foreground = "#eeeeee"
    timeout = 0

[urgency_critical]
    background = "#5a1010"
    foreground = "#ffffff"
    frame_color = "#ff5555"
    timeout = 0
"""

# dunst's context menu runs "dmenu"; this one picks the line matching $PICK_FILE's contents
DMENU = """#!/bin/sh
pick=$(cat "{pick}" 2>/dev/null)
tee "{seen}" | grep -m1 -F -- "$pick"
"""

# The session bus: only what the test starts is on it. With the standard
# service directories a query to org.freedesktop.Notifications that comes
# before our dunst owns the name (dunstctl while it starts) D-Bus-activates a
# second dunst with the system's config (no dmenu), and ours loses the name.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

# the file manager: record what the app asked to show
XDG_OPEN = """#!/bin/sh
printf '%s\\n' "$*" >> "{log}"
"""


@dataclass
class Desktop:
    dir: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)

    SESSION_KEYS = ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "PATH")

    def session_env(self) -> dict[str, str]:
        """Only what a program needs to join this desktop (merge into its env)."""
        return {k: self.env[k] for k in self.SESSION_KEYS if k in self.env}

    # ---- looking

    def run(self, *args: str, check: bool = True, timeout: float = 20) -> str:
        res = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {res.returncode}: {res.stderr.strip()}")
        return res.stdout

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.run("import", "-window", "root", str(path))
        self.shots.append(path)
        return path

    def windows(self) -> list[dict[str, Any]]:
        """Every window: id, name, geometry (absolute), from xwininfo -tree."""
        out = self.run("xwininfo", "-root", "-tree")
        found: list[dict[str, Any]] = []
        for line in out.splitlines():
            line = line.strip()
            if not line.startswith("0x"):
                continue
            wid, _, rest = line.partition(" ")
            name = rest.split('"')[1] if rest.startswith('"') else ""
            parts = rest.split()
            try:
                size, pos = parts[-2], parts[-1]
                w, h = (int(v) for v in size.split("+")[0].split("x"))
                x, y = (int(v) for v in pos.lstrip("+").split("+")[:2])
            except (ValueError, IndexError):
                continue
            cls = rest.split(": (")[1].split(")")[0] if ": (" in rest else ""
            found.append({"id": wid, "name": name, "class": cls, "w": w, "h": h, "x": x, "y": y})
        return found

    def tray_icon(self, title_prefix: str) -> dict[str, Any] | None:
        """The embedded tray icon whose title (tooltip) starts with ``title_prefix``,
        inside the panel's area."""
        for w in self.windows():
            if w["name"].startswith(title_prefix) and w["y"] < 40 and 8 <= w["w"] <= 64:
                return w
        return None

    def viewable(self, wid: str) -> bool:
        """Whether the window is on screen (mapped, and its parents too)."""
        out = self.run("xwininfo", "-id", wid, check=False)
        return "Map State: IsViewable" in out

    def popup_menus(self, wm_class: str) -> list[dict[str, Any]]:
        """Mapped popup windows of the app (GTK menus) at least 100 px tall."""
        return [w for w in self.windows()
                if wm_class in w["class"] and w["h"] >= 100 and w["w"] >= 100 and w["x"] >= 0]

    # ---- using

    def click(self, x: int, y: int, button: int = 1) -> None:
        self.run("xdotool", "mousemove", str(x), str(y), "click", str(button))

    def keys(self, *keys: str) -> None:
        self.run("xdotool", "key", "--delay", "60", *keys)

    # ---- notifications

    def dunst_history(self) -> list[dict[str, str]]:
        """Notifications dunst received, newest first. Closing the displayed ones
        moves them into the history first."""
        self.run("dunstctl", "close-all")
        data = json.loads(self.run("dunstctl", "history"))
        items = data.get("data", [[]])[0]
        return [{k: str(v.get("data", "")) for k, v in item.items()} for item in items]

    def dunst_displayed(self) -> int:
        try:
            return int(self.run("dunstctl", "count", "displayed").strip())
        except (AssertionError, ValueError):
            return 0


def _start(cmd: list[str], env: dict[str, str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _read_line_from_fd(fd: int, timeout: float, what: str) -> str:
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip().splitlines()[0] if buf.strip() else ""


@pytest.fixture()
def desktop(tmp_path: Path) -> Iterator[Desktop]:
    """A desktop with a system tray (trayer, XEmbed) and a notification daemon."""
    with make_desktop(tmp_path, tray=True) as desk:
        yield desk


@pytest.fixture()
def desktop_no_tray(tmp_path: Path) -> Iterator[Desktop]:
    """The same desktop without any tray host: no XEmbed tray on the X display and
    no StatusNotifierWatcher on the bus (like stock GNOME without the AppIndicator
    extension). Notifications still work."""
    with make_desktop(tmp_path, tray=False) as desk:
        yield desk


def zombie_children(pid: int) -> list[str]:
    """The Z-state (defunct, not reaped) children of process ``pid``, as "pid name"."""
    found: list[str] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                stat = Path(f"/proc/{child}/stat").read_text()
            except OSError:
                continue
            name, state = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:][:1]
            if state == "Z":
                found.append(f"{child} {name}")
    return found


@contextmanager
def make_desktop(tmp_path: Path, tray: bool = True) -> Iterator[Desktop]:
    for tool in TOOLS:
        need(shutil.which(tool) is not None, f"{tool} not installed (see scripts: xvfb trayer dunst "
                                             "xdotool dbus-x11 imagemagick x11-utils)")
    d = tmp_path / "desktop"
    d.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY",
                                                             "DBUS_SESSION_BUS_ADDRESS")}
    env["XDG_RUNTIME_DIR"] = str(d / "xdg-runtime")
    (d / "xdg-runtime").mkdir(mode=0o700)
    bin_dir = d / "bin"
    bin_dir.mkdir()
    (bin_dir / "xdg-open").write_text(XDG_OPEN.format(log=d / "xdg-open.log"))
    (bin_dir / "dmenu").write_text(DMENU.format(pick=d / "dmenu.pick", seen=d / "dmenu.seen"))
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    desk = Desktop(dir=d, env=env)
    try:
        # X server: -displayfd tells us which display it took
        r, w = os.pipe()
        xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0",
                                 f"{SCREEN[0]}x{SCREEN[1]}x24", "-nolisten", "tcp"],
                                pass_fds=(w,), stdout=open(d / "xvfb.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        desk.procs.append(xvfb)
        os.close(w)
        try:
            display = _read_line_from_fd(r, 20, "Xvfb to report its display")
        finally:
            os.close(r)
        env["DISPLAY"] = f":{display}"

        # D-Bus session bus: it prints its address once it listens
        r, w = os.pipe()
        (d / "bus.conf").write_text(BUS_CONFIG)
        bus = subprocess.Popen(["dbus-daemon", f"--config-file={d / 'bus.conf'}", "--nofork",
                                f"--print-address={w}"],
                               pass_fds=(w,), env=env, stdout=open(d / "dbus.log", "wb"),
                               stderr=subprocess.STDOUT, start_new_session=True)
        desk.procs.append(bus)
        os.close(w)
        try:
            env["DBUS_SESSION_BUS_ADDRESS"] = _read_line_from_fd(r, 20, "dbus-daemon's address")
        finally:
            os.close(r)

        if tray:
            # trayer exits at once when it cannot open the display (seen when another
            # X server on this machine was tearing down the display we were given):
            # start it again, a bounded number of times, before giving up
            for attempt in range(3):
                trayer = _start(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel",
                                 "--width", "240", "--height", "32", "--SetDockType", "true",
                                 "--transparent", "true", "--alpha", "0", "--tint", "0x2b2b2b",
                                 "--expand", "false"], env, d / f"trayer-{attempt}.log")
                desk.procs.append(trayer)
                wait_for(lambda: trayer.poll() is not None
                         or any(w["name"] == "panel" for w in desk.windows()), timeout=20,
                         what="trayer's panel")
                if trayer.poll() is None:
                    break
            wait_for(lambda: any(w["name"] == "panel" for w in desk.windows()), timeout=5,
                     what="trayer's panel")

        rc = d / "dunstrc"
        rc.write_text(DUNSTRC.format(dmenu=bin_dir / "dmenu"))
        desk.procs.append(_start(["dunst", "-config", str(rc)], env, d / "dunst.log"))

        def dunst_answers() -> bool:
            res = subprocess.run(["dunstctl", "is-paused"], env=env, capture_output=True, timeout=10)
            return res.returncode == 0

        wait_for(dunst_answers, timeout=20, what="dunst on the session bus")
        yield desk
    finally:
        for p in reversed(desk.procs):
            _stop(p)
