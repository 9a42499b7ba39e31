"""What may leave the machine in a diagnostics bundle, and how it is scrubbed.

A :class:`Redactor` turns any text (or JSON-like value) into a shareable
form, in this order:

1. exact known secrets (the Redis password, secret-looking environment
   values, Cursor's ``cursorAuth/*`` values) become ``***``;
2. exact known content (prompt and payload strings we read from the DLQ
   and the newest rows) becomes ``<redacted content>``;
3. the home directory becomes ``~`` (also in Claude Code's dashed project
   directory names, ``-home-alice-proj``);
4. secret shapes: passwords in URLs, ``key=value`` / ``"key": "value"``
   pairs whose key names a secret, bearer tokens, well-known token formats,
   private keys;
5. content shapes: the value of any JSON / repr field whose key names
   content (``prompt``, ``text``, ``content``, ``stdout``, ...).

Words the app itself defines (capture modes, hook event names, event types,
platforms, sources, dead-letter reasons: :func:`public_words`) are never
treated as content, so a bundle keeps the settings, mode values, event and
hook names support needs even when the same words appear in captured payloads.

Layers 1-2 catch what we know; 3-5 catch what we can recognise. Neither is
perfect alone, which is why the bundle is built from an allowlist of facts
(counts, sizes, ids, versions) and this scrubbing runs over all of it anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SECRET = "***"
CONTENT = "<redacted content>"

#: environment variables whose values may appear in a bundle (after scrubbing)
ENV_ALLOWLIST = frozenset({
    "DISPLAY", "WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "XDG_SESSION_TYPE", "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION", "GDMSESSION", "KDE_FULL_SESSION", "PYSTRAY_BACKEND", "LANG", "LC_ALL",
    "LC_CTYPE", "TERM", "SHELL", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
    "XDG_RUNTIME_DIR", "CLAUDE_CONFIG_DIR", "CI", "CONTAINER", "container", "WSL_DISTRO_NAME",
})
#: of these only presence is reported (their values say nothing useful and may identify)
ENV_PRESENCE_ONLY = frozenset({"DBUS_SESSION_BUS_ADDRESS", "SSH_CONNECTION", "VIRTUAL_ENV"})

_SECRET_NAME = re.compile(r"(?i)(pass|secret|token|key|auth|credential|cookie|session|private|sig)")

_SECRET_WORDS = (r"password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key|"
                 r"auth|credential|cookie|private[_-]?key|client[_-]?secret|signature")

_CONTENT_KEYS = (
    "prompt|prompts|text|content|contents|response|responses|output|stdout|stderr|command|"
    "input|thinking|thought|file_content|body|query|new_string|old_string|tool_input|"
    "tool_response|tool_result|result|answer|completion|richText|code|selection|diff|patch|"
    "message|messages|summary|transcript|value|description|instructions|context|args|arguments"
)

_URL_PASSWORD = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*:)(?P<pw>[^\s/\"']+)@")
_QUERY_SECRET = re.compile(
    r"(?i)(?P<pre>[?&;](?:password|pass|pwd|token|auth|key|secret|access_token|sig|signature)=)"
    r"(?P<v>[^&\s#\"']+)")
_BEARER = re.compile(r"(?i)\b(?P<pre>bearer|basic|token)\s+(?P<v>[A-Za-z0-9._~+/=-]{8,})")
_KV_SECRET = re.compile(
    r"(?i)(?P<k>\b[\w.-]*(?:" + _SECRET_WORDS + r")[\w.-]*)(?P<q>\\?[\"']?)(?P<sep>\s*[:=]\s*)"
    r"(?P<v>\\\"(?:[^\\\n]|\\[^\"])*?\\\"|\"(?:[^\"\\\n]|\\.)*(?:\"|$)|'(?:[^'\\\n]|\\.)*(?:'|$)"
    r"|[^\s\"',;&}\])]+)")
_TOKEN_SHAPES = re.compile("|".join([
    r"\bsk-[A-Za-z0-9_-]{16,}",
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}",
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",
    r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
    r"\bAKIA[0-9A-Z]{16}\b",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
]))
# "key": "value" (JSON), 'key': 'value' (repr), \"key\": \"value\" (JSON inside a string)
_CONTENT_FIELD = re.compile(
    r"(?P<k>(?P<q>\\?[\"'])(?:" + _CONTENT_KEYS + r")(?P=q)\s*[:=]\s*)"
    r"(?P<v>\\\"(?:[^\\\n]|\\[^\"])*?(?:\\\"|$)|\"(?:[^\"\\\n]|\\.)*(?:\"|$)|'(?:[^'\\\n]|\\.)*(?:'|$))")
_CONTENT_KEY_ONLY = re.compile(r"(?i)^(?:" + _CONTENT_KEYS + r")$")
_PLAIN_VALUE = re.compile(r"(?i)^(?:-?\d+(?:\.\d+)?|true|false|null|none|bearer|basic|\*\*\*|\"\"|'')$")
_LONG_QUOTED = re.compile(r"\"(?:[^\"\\\n]|\\.){200,}\"|'(?:[^'\\\n]|\\.){200,}'")


_PUBLIC: frozenset[str] | None = None


def public_words() -> frozenset[str]:
    """Words the app defines and a bundle must keep readable: capture modes and
    keys, hook event names of both assistants, event types, platforms, sources,
    dead-letter reasons, engine and health states."""
    global _PUBLIC
    if _PUBLIC is None:
        from typing import get_args

        from tray_app import config, events
        from tray_app.capture import hookconfig, mapping
        from tray_app.engine import batch, health

        words: set[str] = set(hookconfig.MODES) | set(hookconfig.CAPTURE_KEYS)
        words |= set(get_args(config.CaptureMode))
        words |= set(mapping.CURSOR_EVENTS) | set(mapping.CLAUDE_EVENTS)
        words |= {v for v in mapping.CURSOR_EVENTS.values() if isinstance(v, str)}
        words |= {v for v in mapping.CLAUDE_EVENTS.values() if isinstance(v, str)}
        words |= set(events.EVENT_TYPES) | set(events.PLATFORMS) | set(mapping.SOURCES.values())
        words |= {v for k, v in vars(events).items() if k.startswith("R_") and isinstance(v, str)}
        words |= {v for k, v in vars(batch).items() if k.startswith("R_") and isinstance(v, str)}
        words |= {v for k, v in vars(health).items() if k.isupper() and isinstance(v, str)}
        _PUBLIC = frozenset(w for w in words if w)
    return _PUBLIC


def _kv_sub(m: re.Match[str]) -> str:
    v = m.group("v")
    if _PLAIN_VALUE.match(v) or v.strip("\"'\\") == SECRET:
        return m.group(0)
    quote = ""
    if v[:2] == '\\"':
        quote = '\\"'
    elif v[:1] in "\"'":
        quote = v[0]
    return f"{m.group('k')}{m.group('q')}{m.group('sep')}{quote}{SECRET}{quote}"


def _content_sub(m: re.Match[str]) -> str:
    v = m.group("v")
    q = '\\"' if v.startswith('\\"') else v[0]
    inner = len(v) - 2 * len(q)
    if inner <= 0 or v[len(q):].startswith("<redacted") or v[len(q):len(v) - len(q)] in public_words():
        return m.group(0)
    return f"{m.group('k')}{q}<redacted {inner} chars>{q}"


def home_variants(home: str | os.PathLike[str] | None = None) -> list[str]:
    """Every spelling of the home directory worth replacing, longest first."""
    cands: set[str] = set()
    raw = [str(home)] if home is not None else [str(Path.home()), os.environ.get("HOME", "")]
    for h in raw:
        if not h:
            continue
        for v in (h, os.path.realpath(h)):
            v = v.rstrip("/\\")
            if len(v) > 1:
                cands.add(v)
                if "\\" in v:
                    cands.add(v.replace("\\", "/"))
    return sorted(cands, key=len, reverse=True)


class Redactor:
    """Scrubs text for sharing. Add what you know (``add_secret``,
    ``add_content``) before scrubbing."""

    MIN_SECRET_LEN = 4
    MIN_CONTENT_LEN = 12
    MAX_CONTENT_STRINGS = 5000

    def __init__(self, home: str | os.PathLike[str] | None = None,
                 secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._content: set[str] = set()
        self._known_re: re.Pattern[str] | None = None
        self._homes = home_variants(home)
        pats = []
        for h in self._homes:
            pats.append(re.escape(h) + r"(?=$|[/\\\s\"'`:,;)\]}>|])")
            # Claude Code names project dirs after the path with / -> -
            dashed = h.replace("/", "-").replace("\\", "-")
            if dashed != h and len(dashed) > 2:
                pats.append(re.escape(dashed) + r"(?=$|-|[\s\"'/\\])")
        self._home_re = re.compile("|".join(pats)) if pats else None
        for s in secrets:
            self.add_secret(s)

    # -- what we know ----------------------------------------------------------------------

    def add_secret(self, value: str | bytes | None) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not value:
            return
        value = value.strip()
        if len(value) >= self.MIN_SECRET_LEN:
            self._secrets.add(value)
            from urllib.parse import quote

            q = quote(value, safe="")
            if q != value:
                self._secrets.add(q)
            self._known_re = None

    def add_content(self, value: Any) -> None:
        """Remember the strings inside ``value`` (str, or JSON-like) as content
        that must not appear, whole or line by line."""
        if len(self._content) >= self.MAX_CONTENT_STRINGS:
            return
        for s in _leaf_strings(value):
            for piece in [s, *s.splitlines()]:
                piece = piece.strip()
                if len(piece) >= self.MIN_CONTENT_LEN and not _looks_like_identifier(piece) \
                        and not _looks_like_path(piece) and piece not in public_words():
                    self._content.add(piece)
                    self._known_re = None
                    if len(self._content) >= self.MAX_CONTENT_STRINGS:
                        return

    @property
    def secret_count(self) -> int:
        return len(self._secrets)

    # -- scrubbing -------------------------------------------------------------------------

    def _known(self) -> re.Pattern[str] | None:
        if self._known_re is None and (self._secrets or self._content):
            alts = sorted(self._secrets | self._content, key=len, reverse=True)
            self._known_re = re.compile("|".join(re.escape(a) for a in alts))
        return self._known_re

    def path(self, p: str | os.PathLike[str]) -> str:
        return self.text(str(p))

    def text(self, s: str) -> str:
        """Scrub any text: known secrets and content, home dir, secret and content shapes."""
        if not s:
            return s
        known = self._known()
        if known is not None:
            secrets = self._secrets
            s = known.sub(lambda m: SECRET if m.group(0) in secrets else CONTENT, s)
        if self._home_re is not None:
            s = self._home_re.sub("~", s)
        s = _URL_PASSWORD.sub(lambda m: m.group("pre") + SECRET + "@", s)
        s = _QUERY_SECRET.sub(lambda m: m.group("pre") + SECRET, s)
        s = _BEARER.sub(lambda m: m.group("pre") + " " + SECRET, s)
        s = _TOKEN_SHAPES.sub(SECRET, s)
        s = _KV_SECRET.sub(_kv_sub, s)
        s = _CONTENT_FIELD.sub(_content_sub, s)
        return s

    def log_line(self, line: str, max_chars: int = 1000) -> str:
        """A log line: scrubbed, long quoted strings dropped, length capped."""
        dropped = max(0, len(line) - 4 * max_chars)  # bound the scrubbing work on huge lines
        s = self.text(line[:4 * max_chars] if dropped else line)
        s = _LONG_QUOTED.sub(lambda m: f"<{len(m.group(0)) - 2} chars>", s)
        if len(s) > max_chars or dropped:
            extra = max(0, len(s) - max_chars) + dropped
            s = s[:max_chars] + f" [line cut: {extra} more chars]"
        return s

    def value(self, obj: Any) -> Any:
        """Scrub every string (keys too) inside a JSON-like value. A string under
        a key that names content is replaced by its size."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, bytes):
            return self.text(obj.decode("utf-8", "replace"))
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                key = self.text(str(k))
                if isinstance(v, str) and _CONTENT_KEY_ONLY.match(str(k)) and v and v not in public_words():
                    out[key] = f"<redacted {len(v)} chars>"
                elif _KV_SECRET.fullmatch(f"{k}=x") and isinstance(v, str) and v \
                        and not _PLAIN_VALUE.match(v):
                    out[key] = SECRET
                else:
                    out[key] = self.value(v)
            return out
        if isinstance(obj, (list, tuple, set)):
            return [self.value(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float)):
            return obj
        return self.text(str(obj))


def _leaf_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, bytes):
        yield value.decode("utf-8", "replace")
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaf_strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaf_strings(v)


_IDENTIFIER = re.compile(r"^(?:[0-9a-fA-F-]{8,}|\d{4}-\d\d-\d\dT[\d:.]+Z?|[a-z_]+)$")


_PATH = re.compile(r"^(?:~|/|[A-Za-z]:[\\/]|file://)\S*$")


def _looks_like_path(s: str) -> bool:
    """A bare path: not secret (home paths become ~ anyway), and scrubbing it
    as content would blank out the bundle's own paths."""
    return bool(_PATH.match(s))


def _looks_like_identifier(s: str) -> bool:
    """uuids, hashes, timestamps and enum words: not worth redacting (and
    redacting them would blank out ids everywhere in the bundle)."""
    return bool(_IDENTIFIER.match(s))


def secret_env_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names suggest a secret."""
    env = os.environ if environ is None else environ
    out = []
    for name, value in env.items():
        if name in ENV_ALLOWLIST or name in ENV_PRESENCE_ONLY:
            continue
        if _SECRET_NAME.search(name) and value and len(value) >= 6 and os.sep not in value[:1]:
            out.append(value)
    return out


def allowed_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment variables a bundle may show: the allowlist, TELEMETRY_TRAY_*
    (values scrubbed by the caller), and presence-only markers."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name in sorted(env):
        if name in ENV_ALLOWLIST or name.startswith("TELEMETRY_TRAY_"):
            out[name] = env[name]
        elif name in ENV_PRESENCE_ONLY:
            out[name] = "(set)"
    return out


__all__ = ["Redactor", "SECRET", "CONTENT", "public_words", "ENV_ALLOWLIST", "allowed_env", "secret_env_values",
           "home_variants"]
