"""Claude Code's own OpenTelemetry export, pointed at our local OTLP receiver.

``hooks install --claude --otel`` adds to the ``env`` block of Claude Code's
settings.json the variables of code.claude.com/docs/en/monitoring-usage
(checked 2026-12-02): telemetry on, metrics and logs over OTLP/HTTP protobuf
to ``http://127.0.0.1:<[otlp] receiver_port>``, and prompt text / tool
details only when our ``[capture]`` settings keep them in full.

What we added is recorded in the same file, the way our hook entries mark
themselves: ``env.TELEMETRY_TRAY_ADDED_ENV`` lists the keys we wrote. Only
those are ever changed or removed again; a key the user set is theirs. A
user value that differs from ours (or a signal-specific override that would
send the data elsewhere, or prompt logging switched on while [capture]
prompts is not "full") is a conflict: nothing is written, and the error
names every conflicting key and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tray_app.config import Config
from tray_app.errors import ConfigError

#: the env key that lists, comma-separated, the keys we added
MARK = "TELEMETRY_TRAY_ADDED_ENV"
#: content switches: "1" asks Claude Code to put the text in its events
PROMPTS = "OTEL_LOG_USER_PROMPTS"
TOOL_DETAILS = "OTEL_LOG_TOOL_DETAILS"
#: variables that would send one signal elsewhere (or in another protocol) than ours
OVERRIDES = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
             "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")
_WILDCARD = ("", "0.0.0.0", "::", "[::]")


def receiver_url(cfg: Config) -> str:
    """The local receiver's base URL, from the ``[otlp]`` section."""
    port, host = cfg.otlp.receiver_port, cfg.otlp.receiver_host
    if host in _WILDCARD:
        host = "127.0.0.1"  # a listen-everywhere address: Claude Code connects to loopback
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def wanted(cfg: Config) -> dict[str, str]:
    """The variables we want set (content switches only when [capture] keeps
    that content in full; absent means Claude Code's default: off)."""
    env = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver_url(cfg),
    }
    capture = cfg.capture
    if capture.prompts == "full":
        env[PROMPTS] = "1"
    # tool details are tool inputs: bash commands, file paths, MCP tool arguments
    if capture.file_contents == "full":
        env[TOOL_DETAILS] = "1"
    return env


def _env_table(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    env = data.get("env", {})
    if not isinstance(env, dict):
        raise ConfigError(f'{path}: "env" should be an object, found {type(env).__name__}; left unchanged')
    return env


def ours(env: Mapping[str, Any]) -> list[str]:
    mark = env.get(MARK)
    if not isinstance(mark, str):
        return []
    return [k for k in (p.strip() for p in mark.split(",")) if k]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def add(path: Path, data: dict[str, Any], want: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with our variables in its env block. Raises ConfigError naming
    every conflict (nothing is changed then)."""
    env = dict(_env_table(path, data))
    mine = ours(env)
    conflicts: list[str] = []
    for key, value in want.items():
        if key in env and key not in mine and env[key] != value:
            conflicts.append(f"{key}={env[key]!r} (we would set {value!r})")
    for key in OVERRIDES:
        if key in env and key not in mine:
            conflicts.append(f"{key}={env[key]!r} (would send that signal elsewhere)")
    for key, setting in ((PROMPTS, "prompts"), (TOOL_DETAILS, "file_contents")):
        if key not in want and key in env and key not in mine and _truthy(env[key]):
            conflicts.append(f"{key}={env[key]!r} (your [capture] {setting} is not \"full\")")
    if conflicts:
        raise ConfigError(f"{path}: env already sets {'; '.join(conflicts)}; nothing written: change or "
                          f"remove these in settings.json (or run `hooks install` without --otel)")
    added = [k for k in mine if k in want]  # ours from an earlier install, still wanted
    for key, value in want.items():
        if key in mine or key not in env:
            env[key] = value
            if key not in added:
                added.append(key)
    for key in mine:
        if key not in want:
            env.pop(key, None)  # ours, no longer wanted (e.g. prompts is no longer "full")
    env.pop(MARK, None)
    if added:
        env[MARK] = ",".join(added)
    new = dict(data)
    new["env"] = env
    return new


def remove(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the variables we added (and without an env block we emptied)."""
    if "env" not in data:
        return data
    env = _env_table(path, data)
    mine = ours(env)
    if not mine and MARK not in env:
        return data
    rest = {k: v for k, v in env.items() if k not in mine and k != MARK}
    new = dict(data)
    if rest:
        new["env"] = rest
    else:
        new.pop("env")
    return new


def state(env: Mapping[str, Any]) -> str:
    """"on" when Claude Code's export is ours, "user" when the user set it up, "off"."""
    if ours(env):
        return "on"
    return "user" if _truthy(env.get("CLAUDE_CODE_ENABLE_TELEMETRY", "")) else "off"


__all__ = ["MARK", "add", "remove", "wanted", "receiver_url", "ours", "state"]
