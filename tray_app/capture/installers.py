"""Install, remove and inspect our hook entries in the assistants' settings.

* Cursor: ``~/.cursor/hooks.json``:
  ``{"version": 1, "hooks": {"<event>": [{"command": "...", "timeout": 10}]}}``
* Claude Code: ``settings.json`` in ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``:
  ``{"hooks": {"<Event>": [{"matcher": "...", "hooks": [{"type": "command",
  "command": "...", "timeout": 10}]}]}}``

Rules: merge into what is there and touch nothing else; an entry is ours
when its command runs ``tray_app/capture/hook.py`` (any install location, so
a stale entry from an old checkout is replaced, never duplicated); running
install twice changes nothing (the file is not even rewritten); writes are
atomic and keep one backup (``<file>.telemetry-tray.bak``, the file as it
was before our latest change); a file that is not valid JSON, or whose
shape we do not understand, is refused with a one-line error and left as it
is; uninstall removes exactly our entries, and a file the install created
(nothing of the user's in it) is deleted with its backup, so nothing is left
where there was nothing. HOME and CLAUDE_CONFIG_DIR are read from the
environment, so tests point them at a temp dir.

The command carries the app's home and config file when they are not the
defaults (``hook.py claude --home DIR --config FILE``, see
:func:`location_args`): the hook then spools and reads its settings where the
app that installed it looks, whatever the assistant's environment holds.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tray_app.capture import claude_otel
from tray_app.errors import ConfigError
from tray_app.fileutil import atomic_write

ASSISTANTS = ("cursor", "claude")

#: Cursor hooks we install: every event of cursor.com/docs/agent/hooks
#: (checked 2026-12-02, docs/hooks.md), the generic tool hooks and the Tab
#: hooks included (bench/hook_bench.py measures what a call costs).
CURSOR_EVENTS = (
    "sessionStart", "sessionEnd", "beforeSubmitPrompt", "afterAgentResponse",
    "afterAgentThought", "beforeShellExecution", "afterShellExecution",
    "beforeMCPExecution", "afterMCPExecution", "beforeReadFile", "afterFileEdit", "stop",
    "preToolUse", "postToolUse", "postToolUseFailure", "subagentStart", "subagentStop",
    "preCompact", "beforeTabFileRead", "afterTabFileEdit",
)
#: Claude Code hook events we install: every event of
#: code.claude.com/docs/en/hooks (checked 2026-12-02, docs/hooks.md) except
#: CLAUDE_NOT_INSTALLED
CLAUDE_EVENTS = (
    "SessionStart", "SessionEnd", "UserPromptSubmit", "PreToolUse", "PostToolUse",
    "Stop", "SubagentStop", "PreCompact", "Notification",
    "Setup", "UserPromptExpansion", "PermissionRequest", "PermissionDenied",
    "PostToolUseFailure", "PostToolBatch", "MessageDisplay", "SubagentStart",
    "TaskCreated", "TaskCompleted", "StopFailure", "TeammateIdle", "InstructionsLoaded",
    "ConfigChange", "CwdChanged", "DirectoryAdded", "FileChanged", "PostCompact",
    "PreModelSwitch", "PostModelSwitch", "Elicitation", "ElicitationResult",
)
#: documented, mapped, but never installed, because a command hook there
#: cannot stay without effect: a WorktreeCreate hook replaces git's worktree
#: creation and must print the new path (ours would make creation fail), and
#: WorktreeRemove is its cleanup counterpart (a hook there decides whether
#: the removal succeeded)
CLAUDE_NOT_INSTALLED = ("WorktreeCreate", "WorktreeRemove")
#: events whose matcher is a tool name ("*": every tool); the others match everything with ""
CLAUDE_TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure",
                                "PermissionRequest", "PermissionDenied"})
#: events whose matcher we leave out: a FileChanged matcher is also the list of
#: files Claude Code starts watching; without one our hook adds no file to it
CLAUDE_NO_MATCHER = frozenset({"FileChanged"})
#: the per-hook timeout we write for both assistants, in seconds (both read
#: ``timeout`` in seconds on a command hook): a safety net well above the
#: hook's own total budget (runner.BUDGET_S, 3 s), so an assistant never kills
#: a hook that is still keeping its promise; the hook itself takes milliseconds
HOOK_TIMEOUT_S = 10
CLAUDE_TIMEOUT_S = HOOK_TIMEOUT_S
BACKUP_SUFFIX = ".telemetry-tray.bak"
HOOK_SCRIPT = Path(__file__).resolve().with_name("hook.py")
_OUR_MARK = "tray_app/capture/hook.py"
_SAFE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


# ----------------------------------------------------------------------------- command

def interpreter() -> Path:
    """The real interpreter binary: a venv's base interpreter, symlinks resolved.

    Never a version-manager shim (pyenv/asdf shims are shell scripts that cost
    ~80 ms per call): the running interpreter is what such a shim exec'd. In the
    packaged (PyInstaller) app, sys.executable is the app itself, which cannot
    run a script: the hooks then use a system Python >= 3.11 (stdlib only)."""
    if getattr(sys, "frozen", False):
        return system_python()
    exe = getattr(sys, "_base_executable", None) or sys.executable
    path = Path(os.path.realpath(exe))
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Python interpreter ({exc.strerror or exc})") from None
    if head == b"#!":
        raise ConfigError(f"{path}: the Python interpreter is a script (a version-manager shim?); "
                          f"run telemetry-tray with the real interpreter")
    return path


def system_python(names: tuple[str, ...] = ("python3.13", "python3.12", "python3.11", "python3"),
                  search_path: str | None = None) -> Path:
    """The first real (non-shim) Python >= 3.11 on PATH, for the packaged app."""
    import shutil

    for name in names:
        found = shutil.which(name, path=search_path)
        if not found:
            continue
        real = Path(os.path.realpath(found))
        try:
            with open(real, "rb") as fh:
                if fh.read(2) == b"#!":
                    continue  # a shim
            out = subprocess.run([str(real), "-I", "-S", "-c", "import sys; print(sys.version_info >= (3, 11))"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.stdout.strip() == "True":
            return real
    raise ConfigError("the packaged app's hooks need Python >= 3.11 on PATH (standard library only): "
                      "install python3 (e.g. `sudo apt install python3`, `brew install python`) and run "
                      "`telemetry-tray hooks install` again")


def quote(arg: str) -> str:
    """Quote one argument for the shell the assistants run hook commands with."""
    if sys.platform == "win32":
        return subprocess.list2cmdline([arg])
    if _SAFE.match(arg):
        return arg
    if not re.search(r'["$`\\!]', arg):
        return f'"{arg}"'  # readable, and what users expect around "Application Support"
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def location_args(env: Mapping[str, str] | None = None,
                  config_file: str | os.PathLike[str] | None = None) -> list[str]:
    """The hook arguments that point it at this app's home and config file:
    ``--home DIR`` when TELEMETRY_TRAY_HOME is set, ``--config FILE`` when a
    config file was chosen (``config_file``, the --config option, else
    TELEMETRY_TRAY_CONFIG) that is not the default one of that home; [] for
    the default locations. Absolute paths, resolved as tray_app.paths does."""
    from tray_app import APP_NAME
    from tray_app.paths import CONFIG_ENV, HOME_ENV

    env = os.environ if env is None else env
    out: list[str] = []
    home = env.get(HOME_ENV)
    if home:
        root = Path(home).expanduser().resolve()
        out += ["--home", str(root)]
        default = root / "config" / "config.toml"
    else:
        import platformdirs

        default = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"
    chosen = config_file or env.get(CONFIG_ENV)
    if chosen:
        path = Path(chosen).expanduser().absolute()
        if path != default:
            out += ["--config", str(path)]
    return out


def hook_command(assistant: str, python: Path | None = None, script: Path | None = None,
                 location: Sequence[str] = ()) -> str:
    """``<python> -I -S <hook.py> cursor|claude [--home DIR] [--config FILE]``
    with absolute, quoted paths (``location``: see :func:`location_args`)."""
    python = python or interpreter()
    script = script or HOOK_SCRIPT
    tail = "".join(f" {quote(str(a))}" for a in location)
    return f"{quote(str(python))} -I -S {quote(str(script))} {assistant}{tail}"


def is_ours(command: Any) -> bool:
    return isinstance(command, str) and _OUR_MARK in command.replace("\\", "/")


# ----------------------------------------------------------------------------- locations

def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME") or env.get("USERPROFILE")
    return Path(home) if home else Path.home()


def settings_path(assistant: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if assistant == "cursor":
        return _home(env) / ".cursor" / "hooks.json"
    if assistant == "claude":
        base = env.get("CLAUDE_CONFIG_DIR")
        return (Path(base).expanduser() if base else _home(env) / ".claude") / "settings.json"
    raise ValueError(f"unknown assistant {assistant!r}")


# ----------------------------------------------------------------------------- reading

def read_settings(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(text, parsed object); (None, {}) when the file does not exist.
    Raises ConfigError for anything we must not touch."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; left unchanged") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not text.strip():
        return text, {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); "
                          f"left unchanged, fix it and run again") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top, found {type(data).__name__}; "
                          f"left unchanged")
    return text, data


def _hooks_table(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    hooks = data.get("hooks", {})
    if not isinstance(hooks, dict):
        raise ConfigError(f'{path}: "hooks" should be an object, found {type(hooks).__name__}; '
                          f"left unchanged")
    for event, entries in hooks.items():
        if not isinstance(entries, list):
            raise ConfigError(f'{path}: "hooks.{event}" should be a list, found '
                              f"{type(entries).__name__}; left unchanged")
    return hooks


# ----------------------------------------------------------------------------- merging

def _place(entries: list[Any], ours: Any | None, mine: Callable[[Any], bool]) -> list[Any]:
    """``entries`` with every entry of ours removed and, when ``ours`` is given,
    the current one where the first of ours was (else at the end)."""
    out: list[Any] = []
    placed = ours is None
    for entry in entries:
        if mine(entry):
            if not placed:
                out.append(ours)
                placed = True
            continue
        out.append(entry)
    if not placed:
        out.append(ours)
    return out


def _cursor_entry_is_ours(entry: Any) -> bool:
    return isinstance(entry, dict) and is_ours(entry.get("command"))


def _claude_hook_is_ours(hook: Any) -> bool:
    return isinstance(hook, dict) and is_ours(hook.get("command"))


_ONLY_OURS = object()


def _strip_claude_group(group: Any) -> Any:
    """A matcher group without our commands; _ONLY_OURS when nothing else was in it."""
    if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
        return group
    rest = [h for h in group["hooks"] if not _claude_hook_is_ours(h)]
    if len(rest) == len(group["hooks"]):
        return group
    if not rest:
        return _ONLY_OURS
    return {**group, "hooks": rest}


def _merge(assistant: str, path: Path, data: dict[str, Any], command: str | None) -> dict[str, Any]:
    """``data`` with our entries installed (``command``) or removed (None)."""
    new = copy.deepcopy(data)
    hooks = _hooks_table(path, new)
    events = CURSOR_EVENTS if assistant == "cursor" else CLAUDE_EVENTS
    touched = False
    for event in list(hooks) + [e for e in events if e not in hooks]:
        entries = hooks.get(event, [])
        want = command is not None and event in events
        ours: dict[str, Any] | None
        if assistant == "cursor":
            ours = {"command": command, "timeout": HOOK_TIMEOUT_S} if want else None
            updated = _place(entries, ours, _cursor_entry_is_ours)
        else:
            ours = None
            if want:
                ours = {"matcher": "*" if event in CLAUDE_TOOL_EVENTS else "",
                        "hooks": [{"type": "command", "command": command, "timeout": CLAUDE_TIMEOUT_S}]}
                if event in CLAUDE_NO_MATCHER:
                    del ours["matcher"]
            # our commands taken out of every group; a group that held only ours marks
            # the place where the current one goes back (or nothing, on uninstall)
            stripped = [_strip_claude_group(group) for group in entries]
            updated = _place(stripped, ours, lambda group: group is _ONLY_OURS)
        if updated == entries:
            continue
        touched = True
        if updated:
            hooks[event] = updated
        else:
            hooks.pop(event, None)
    if not touched:
        return new
    if assistant == "cursor":
        if command is not None:
            new.setdefault("version", 1)
        new["hooks"] = hooks  # Cursor's file is ours to shape: keep "hooks" even when empty
    elif hooks:
        new["hooks"] = hooks
    else:
        new.pop("hooks", None)  # we emptied it: leave the settings as they were before us
    return new


# ----------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class Change:
    assistant: str
    path: Path
    old_text: str | None
    new_text: str
    changed: bool
    #: uninstall of a file the install created: the file (and our backup) are deleted
    remove: bool = False

    def diff(self) -> str:
        old = (self.old_text or "").splitlines(keepends=True)
        new = self.new_text.splitlines(keepends=True)
        return "".join(difflib.unified_diff(
            old, new, fromfile=str(self.path) if self.old_text is not None else "/dev/null",
            tofile="/dev/null" if self.remove else f"{self.path} (after)"))


def _indent_of(text: str | None) -> int | str:
    if text:
        m = re.search(r"\n([ \t]+)\S", text)
        if m:
            ws = m.group(1)
            return "\t" if ws.startswith("\t") else len(ws)
    return 2


def render(data: dict[str, Any], like: str | None = None) -> str:
    return json.dumps(data, indent=_indent_of(like), ensure_ascii=False) + "\n"


def _is_empty(assistant: str, data: dict[str, Any]) -> bool:
    """Whether ``data`` holds nothing but the frame an install writes into a new file."""
    if assistant == "cursor":
        return set(data) <= {"version", "hooks"} and data.get("hooks", {}) == {} \
            and data.get("version", 1) == 1
    return not data


_UNREADABLE = object()


def _without_ours(assistant: str, path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with everything we ever add removed: hook entries, and Claude
    Code's OpenTelemetry variables (claude_otel)."""
    new = _merge(assistant, path, data, None)
    return claude_otel.remove(path, new) if assistant == "claude" else new


def _backup_without_ours(assistant: str, path: Path) -> tuple[str, dict[str, Any], bool] | None | object:
    """(text, data with our entries removed, whether it held entries of ours) of
    the backup next to ``path``; None when there is none; _UNREADABLE when it
    is there but not a settings file we understand (then it is the user's)."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    try:
        text, data = read_settings(backup)
        if text is None:
            return None
        stripped = _without_ours(assistant, backup, data)
    except ConfigError:
        return _UNREADABLE
    return text, stripped, stripped != data


def plan(assistant: str, install: bool, env: Mapping[str, str] | None = None,
         command: str | None = None, config_file: str | os.PathLike[str] | None = None, *,
         otel: Mapping[str, str] | None = None, otel_only: bool = False) -> Change:
    """What install (or uninstall) would do to one assistant's settings file.
    The command installed is ``command``, else the hook with this app's
    home and config (:func:`location_args` of ``env`` and ``config_file``).

    Claude Code only: ``otel`` (install) are the OpenTelemetry variables to
    add to its env block (claude_otel.wanted; a conflict with the user's own
    raises ConfigError before anything is planned); ``otel_only`` touches
    those variables alone (install: no hook entries; uninstall: the hooks stay).
    Uninstall without ``otel_only`` removes the variables we added too.

    Uninstall restores what was there before the install: the user's file
    byte for byte when the backup holds it unchanged, and nothing (the file
    is deleted) when the install created it."""
    path = settings_path(assistant, env)
    real = path.resolve() if path.is_symlink() else path  # dotfile managers: write the target
    old_text, data = read_settings(real)
    if install and command is None and not otel_only:
        command = hook_command(assistant, location=location_args(env, config_file))
    if otel_only:
        new_data = data if install else claude_otel.remove(real, data)
    elif install:
        new_data = _merge(assistant, real, data, command)
    else:
        new_data = _without_ours(assistant, real, data)
    if install and otel is not None and assistant == "claude":
        new_data = claude_otel.add(real, new_data, otel)
    if new_data == data and (old_text is not None or not install):
        if not install and old_text is not None and _is_empty(assistant, data):
            # what an earlier version's uninstall left of a file its install created:
            # an empty frame, and a backup holding nothing but our entries
            found = _backup_without_ours(assistant, real)
            if isinstance(found, tuple) and found[2] and _is_empty(assistant, found[1]):
                return Change(assistant, real, old_text, "", True, remove=True)
        return Change(assistant, real, old_text, old_text or "", False)
    if not install and old_text is not None:
        found = _backup_without_ours(assistant, real)
        backup = found if isinstance(found, tuple) else None
        empty = _is_empty(assistant, new_data)
        if backup is not None and not backup[2] and (
                backup[1] == new_data or (empty and _is_empty(assistant, backup[1]))):
            # the backup is the user's file from before the install: put it back as it was
            return Change(assistant, real, old_text, backup[0], True)
        if empty and (found is None or (backup is not None and _is_empty(assistant, backup[1]))):
            # nothing of the user's, now or in the backup: the install created this file
            return Change(assistant, real, old_text, "", True, remove=True)
    return Change(assistant, real, old_text, render(new_data, old_text), True)


def apply(change: Change) -> Path | None:
    """Write a planned change atomically; returns the backup's path (None when
    there was no file before, nothing changed, or the file was removed)."""
    if not change.changed:
        return None
    path = change.path
    if change.remove:
        try:
            path.unlink(missing_ok=True)
            path.with_name(path.name + BACKUP_SUFFIX).unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot remove ({exc.strerror or exc})") from None
        try:
            path.parent.rmdir()  # only when empty: the folder the install created for it
        except OSError:
            pass
        return None
    backup = None
    mode = 0o600
    if change.old_text is not None:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            pass
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        atomic_write(backup, change.old_text, mode=mode)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, change.new_text, mode=mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write ({exc.strerror or exc}); left unchanged") from None
    return backup


# ----------------------------------------------------------------------------- status

@dataclass(frozen=True)
class Status:
    assistant: str
    path: Path
    exists: bool
    error: str | None
    #: events whose entry is ours and current
    installed: tuple[str, ...]
    #: events with an entry of ours that runs another command (old install)
    stale: tuple[str, ...]
    #: events we install that have no entry of ours
    missing: tuple[str, ...]
    #: Claude Code's OpenTelemetry export: "on" (our variables), "user" (the user's own), "off"
    otel: str = "off"

    @property
    def state(self) -> str:
        if self.error:
            return "unreadable"
        if not self.installed and not self.stale:
            return "not installed"
        if self.stale or self.missing:
            return "partly installed"
        return "installed"


def _our_commands(assistant: str, entries: list[Any]) -> list[tuple[str, Any]]:
    """(command, timeout) of each entry of ours."""
    found: list[tuple[str, Any]] = []
    for entry in entries:
        if assistant == "cursor":
            if _cursor_entry_is_ours(entry):
                found.append((entry["command"], entry.get("timeout")))
        elif isinstance(entry, dict) and isinstance(entry.get("hooks"), list):
            found.extend((h["command"], h.get("timeout")) for h in entry["hooks"] if _claude_hook_is_ours(h))
    return found


def status(assistant: str, env: Mapping[str, str] | None = None, command: str | None = None,
           config_file: str | os.PathLike[str] | None = None) -> Status:
    """Which of our events are installed with the current command: ``command``,
    else the hook with this app's home and config (as :func:`plan` installs it)."""
    path = settings_path(assistant, env)
    events = CURSOR_EVENTS if assistant == "cursor" else CLAUDE_EVENTS
    try:
        text, data = read_settings(path)
        hooks = _hooks_table(path, data)
    except ConfigError as exc:
        return Status(assistant, path, path.exists(), str(exc), (), (), events)
    want = command or hook_command(assistant, location=location_args(env, config_file))
    installed: list[str] = []
    stale: list[str] = []
    for event, entries in hooks.items():
        cmds = _our_commands(assistant, entries)
        if not cmds:
            continue
        # current: our command, with a timeout above the hook's budget (older installs wrote 5 s)
        current = all(c == want and t == HOOK_TIMEOUT_S for c, t in cmds)
        (installed if current else stale).append(event)
    missing = tuple(e for e in events if e not in installed and e not in stale)
    env_table = data.get("env")
    otel = claude_otel.state(env_table) if assistant == "claude" and isinstance(env_table, dict) else "off"
    return Status(assistant, path, text is not None, None, tuple(installed), tuple(stale), missing, otel)
